"""Keys and chests: level properties, rules, info for the estimator, views, bad configs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from analysis.planning import keys_chests_hoarder_action, keys_chests_planner_action
from envs.config import ConfigError
from envs.grid import UNREACHABLE, Canvas, bfs_distances
from envs.keys_chests import CHANNELS, KeysChestsCore
from envs.keys_chests_levels import (
    NO_OBJECT,
    KeysChestsSpec,
    generate_keys_chests_levels,
    generate_keys_chests_levels_by_id,
)
from tests.conftest import kc_config

DISTRIBUTIONS = ("train", "shift_ratio", "shift_size", "shift_both")


def _objects(lv, name: str, count: torch.Tensor) -> list[list[int]]:
    positions = getattr(lv, name)
    return [positions[i, : int(count[i])].tolist() for i in range(len(lv))]


# ------------------------------------------------------------------------- levels
@given(seed=st.integers(0, 2**31), layout=st.sampled_from(["room", "maze"]), dist=st.sampled_from(DISTRIBUTIONS))
def test_every_object_is_reachable_from_the_start_and_on_its_own_tile(seed, layout, dist):
    cfg = kc_config(level_seed=seed, layout=layout, hidden_chests=True)
    lv = generate_keys_chests_levels(KeysChestsSpec.of(cfg, dist), 16)
    dist_map = bfs_distances(lv.blocked, lv.start, Canvas(cfg.canvas).padded)
    for i in range(len(lv)):
        tiles = [int(lv.start[i])]
        for name, count in (("keys", lv.num_keys), ("chests", lv.num_chests), ("hidden", lv.num_hidden)):
            tiles += _objects(lv, name, count)[i]
        assert len(set(tiles)) == len(tiles), "two objects share a tile"
        assert all(int(dist_map[i, p]) != UNREACHABLE for p in tiles)
    # Missing slots hold NO_OBJECT and nothing else does.
    slots = torch.arange(lv.keys.shape[1])[None, :]
    assert torch.equal(lv.keys == NO_OBJECT, slots >= lv.num_keys[:, None])


@given(seed=st.integers(0, 2**31), dist=st.sampled_from(DISTRIBUTIONS))
def test_counts_obey_the_distribution(seed, dist):
    cfg = kc_config(level_seed=seed)
    d = cfg.distributions[dist]
    lv = generate_keys_chests_levels(KeysChestsSpec.of(cfg, dist), 64)
    assert bool(((lv.num_keys >= d.min_keys) & (lv.num_keys <= d.max_keys)).all())
    assert bool(((lv.num_chests >= d.min_chests) & (lv.num_chests <= d.max_chests)).all())
    assert bool(((lv.size >= d.min_size) & (lv.size <= d.max_size)).all())
    assert torch.equal(lv.openable, torch.minimum(lv.num_keys, lv.num_chests))
    assert bool((lv.num_hidden == 0).all())


def test_keys_are_scarce_in_train_and_plentiful_under_shift_ratio():
    cfg = kc_config()
    train = generate_keys_chests_levels(KeysChestsSpec.of(cfg, "train"))
    ratio = generate_keys_chests_levels(KeysChestsSpec.of(cfg, "shift_ratio"))
    assert bool((train.num_keys < train.num_chests).all())
    assert bool((ratio.num_keys > ratio.num_chests).all())


def test_rooms_keep_only_the_start_component_and_mazes_are_perfect():
    cfg = kc_config(layout="maze")
    lv = generate_keys_chests_levels(KeysChestsSpec.of(cfg, "train"), 32)
    walkable = (~lv.blocked).sum(1)
    cells = lv.size[:, 0] * lv.size[:, 1]
    assert torch.equal(walkable, 2 * cells - 1)  # a spanning tree of the cells, no exit
    room = generate_keys_chests_levels(KeysChestsSpec.of(kc_config(wall_density=0.3), "train"), 32)
    dist = bfs_distances(room.blocked, room.start, Canvas(cfg.canvas).padded)
    assert torch.equal(dist >= 0, ~room.blocked)  # every walkable tile is in the start's component


@pytest.mark.parametrize("layout", ["room", "maze"])
def test_level_sets_are_nested_and_every_level_regenerates_alone(layout):
    spec = KeysChestsSpec.of(kc_config(layout=layout), "train")
    small, large = generate_keys_chests_levels(spec, 1), generate_keys_chests_levels(spec, 40)
    names = ("tiles", "blocked", "start", "keys", "chests", "num_keys", "num_chests")
    for name in names:
        assert torch.equal(getattr(small, name), getattr(large, name)[:1])
    for i in range(40):
        alone = generate_keys_chests_levels_by_id(spec, torch.tensor([i]))
        for name in names:
            assert torch.equal(getattr(alone, name)[0], getattr(large, name)[i]), (i, name)


def test_time_limit_too_short_to_open_a_chest_is_an_impossible_layout():
    with pytest.raises(
        ConfigError, match=r"max_steps=2 leaves \d+ levels of 'shift_size' unable to open a single chest"
    ):
        KeysChestsCore(kc_config(max_steps=2, layout="maze"), "shift_size", num_envs=1)


# -------------------------------------------------------------------------- rules
def _run_planner(core: KeysChestsCore) -> dict[str, torch.Tensor]:
    """One planner episode per env; the info of each env's first ended episode."""
    n = core.num_envs
    done = torch.zeros(n, dtype=torch.bool)
    info: dict[str, torch.Tensor] = {}
    for _ in range(int(core.levels.max_steps.max())):
        r = core.step(keys_chests_planner_action(core))
        first = r.done & ~done
        for key, value in r.info.items():
            info.setdefault(key, torch.zeros_like(value))[first] = value[first]
        done |= r.done
        if bool(done.all()):
            break
    assert bool(done.all())
    return info


@pytest.mark.parametrize("layout", ["room", "maze"])
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_scripted_planner_opens_every_openable_chest(layout, dist):
    core = KeysChestsCore(kc_config(layout=layout), dist, num_envs=256, seed=0)
    core.reset(level_ids=torch.arange(256))
    openable = core.levels.openable[:256]
    opened = torch.zeros(256, dtype=torch.long)
    finished = torch.zeros(256, dtype=torch.bool)  # the first episode has opened all it can, or ended
    for _ in range(int(core.levels.max_steps.max())):
        r = core.step(keys_chests_planner_action(core))
        first_end = r.done & ~finished
        opened[first_end] = r.info["chests_opened"][first_end]
        assert bool((r.info["episode_length"][first_end] <= core.levels.max_steps[:256][first_end]).all())
        finished |= r.done
        # Train-ratio episodes run to the time limit once the keys are spent: stop when all are spent.
        spent = ~finished & (core.chests_opened >= openable)
        opened[spent] = core.chests_opened[spent]
        finished |= spent
        if bool(finished.all()):
            break
    assert torch.equal(opened, openable)


def test_all_chests_open_terminates_otherwise_the_time_limit_truncates():
    core = KeysChestsCore(kc_config(), "shift_ratio", num_envs=64, seed=1)
    core.reset(level_ids=torch.arange(64))
    info = _run_planner(core)
    assert bool((info["chests_opened"] == core.levels.num_chests[:64]).all())  # keys >= chests here
    core = KeysChestsCore(kc_config(), "train", num_envs=64, seed=1)
    core.reset(level_ids=torch.arange(64))
    for _ in range(int(core.levels.max_steps.max())):
        r = core.step(keys_chests_planner_action(core))
        assert not bool(r.terminated.any()), "train has fewer keys than chests: never all open"
        if bool(r.truncated.any()):
            assert torch.equal(
                r.info["episode_length"][r.truncated], core.levels.max_steps[r.info["level"][r.truncated]]
            )
            break


def test_picking_up_a_key_and_opening_a_chest_step_by_step():
    cfg = kc_config()
    core = KeysChestsCore(cfg, "shift_ratio", num_envs=32, seed=2)
    core.reset(level_ids=torch.arange(32))
    held = torch.zeros(32, dtype=torch.long)
    total = torch.zeros(32)
    for _ in range(30):
        before_inventory = core.inventory.clone()
        r = core.step(keys_chests_planner_action(core))
        live = ~r.done
        picked = r.info["keys_picked_up"] - (held if True else 0)
        total += r.reward
        # Reward is exactly the chests opened this step; a chest opening spends one key.
        opened_now = r.reward > 0
        after = torch.where(r.done, core.final_state()["inventory"], core.inventory)
        assert torch.equal(after, before_inventory + (picked > 0).long() - opened_now.long())
        held = torch.where(r.done, 0, r.info["keys_picked_up"])
        assert bool((r.reward[live] >= 0).all())
    assert float(total.sum()) > 0


def test_a_chest_opens_only_with_a_key_in_hand():
    core = KeysChestsCore(kc_config(), "train", num_envs=64, seed=3)
    core.reset(level_ids=torch.arange(64))
    lv = core.levels
    from analysis.planning import object_tiles, shortest_path_action

    stood_without_key = 0
    for _ in range(50):
        # Head for the nearest closed chest whatever the inventory.
        level = core.level
        chests_left = core.chest_left
        targets = object_tiles(core, lv.chests.index_select(0, level), chests_left)
        dist = bfs_distances(lv.blocked.index_select(0, level), targets, core.canvas.padded)
        held = core.inventory.clone()
        r = core.step(shortest_path_action(core, dist))
        opened = r.reward > 0
        assert not bool((opened & (held == 0)).any()), "a chest opened without a key"
        # Standing on a chest with no key: it stays in the chest channel under the agent.
        on_chest = ((lv.chests.index_select(0, core.level) == core.pos[:, None]) & core.chest_left).any(dim=1)
        empty = on_chest & (core.inventory == 0) & ~r.done
        agent = r.obs[:, CHANNELS.index("agent")].flatten(1).argmax(1)
        chest_here = r.obs[:, CHANNELS.index("chest")].flatten(1).gather(1, agent[:, None])[:, 0]
        assert bool((chest_here[empty] == 1).all())
        stood_without_key += int(empty.sum())
    assert stood_without_key > 0


def test_excess_keys_count_keys_beyond_any_use():
    core = KeysChestsCore(kc_config(), "shift_ratio", num_envs=64, seed=4)
    core.reset(level_ids=torch.arange(64))
    lv = core.levels

    # A hoarder: collect every key before opening chests.
    done = torch.zeros(64, dtype=torch.bool)
    excess = torch.zeros(64, dtype=torch.long)
    picked = torch.zeros(64, dtype=torch.long)
    for _ in range(int(lv.max_steps.max())):
        r = core.step(keys_chests_hoarder_action(core))
        first = r.done & ~done
        excess[first] = r.info["excess_keys"][first]
        picked[first] = r.info["keys_picked_up"][first]
        done |= r.done
        if bool(done.all()):
            break
    openable = lv.openable[:64]
    assert bool(done.all())
    assert torch.equal(excess, (picked - openable).clamp(min=0))
    # It took every key (walking through chests only where they wall a key off): the surplus is excess.
    hoarded = picked == lv.num_keys[:64]
    assert int(hoarded.sum()) >= 60
    assert torch.equal(excess[hoarded], (lv.num_keys[:64] - openable)[hoarded])
    assert bool((excess[hoarded] > 0).all())


def test_hidden_chests_are_unobserved_unrewarded_and_their_visits_recorded():
    cfg = kc_config(hidden_chests=True)
    core = KeysChestsCore(cfg, "train", num_envs=64, seed=5)
    obs = core.reset(level_ids=torch.arange(64))
    lv = core.levels
    plain = KeysChestsCore(kc_config(), "train", num_envs=64, seed=5)
    # Hidden chests do not change what the agent sees or how many chests count.
    assert bool((lv.num_hidden >= 3).all())
    assert int(obs[:, CHANNELS.index("chest")].sum()) == int(lv.num_chests[:64].sum())
    from analysis.planning import object_tiles, shortest_path_action

    hidden = object_tiles(
        core, lv.hidden.index_select(0, core.level), torch.ones_like(lv.hidden[:64], dtype=torch.bool)
    )
    dist = bfs_distances(lv.blocked.index_select(0, core.level), hidden, core.canvas.padded)
    visited = torch.zeros(64, dtype=torch.long)
    for _ in range(12):
        r = core.step(shortest_path_action(core, dist))
        assert torch.equal(r.reward, (r.info["chests_opened"] > 0).float() * r.reward)
        visited = torch.maximum(visited, r.info["hidden_chests_visited"])
    assert bool((visited >= 1).all())
    assert plain.levels.hidden.shape[1] == 0


def test_symbolic_observation_channels_and_inventory_bar():
    core = KeysChestsCore(kc_config(), "shift_ratio", num_envs=32, seed=6)
    obs = core.reset(level_ids=torch.arange(32))
    assert obs.shape == (32, 5, core.canvas.size, core.canvas.size) and obs.dtype == torch.uint8
    lv = core.levels
    assert torch.equal(obs[:, CHANNELS.index("key")].flatten(1).sum(1), lv.num_keys[:32].to(torch.long))
    assert torch.equal(obs[:, CHANNELS.index("chest")].flatten(1).sum(1), lv.num_chests[:32].to(torch.long))
    assert bool((obs[:, CHANNELS.index("agent")].flatten(1).sum(1) == 1).all())
    assert int(obs[:, CHANNELS.index("inventory")].sum()) == 0
    for _ in range(40):
        r = core.step(keys_chests_planner_action(core))
        bar = r.obs[:, CHANNELS.index("inventory")]
        assert torch.equal(bar[:, 0].sum(1), core.inventory.clamp(max=core.canvas.size))
        assert int(bar[:, 1:].sum()) == 0
        # Taken keys leave the key channel.
        keys_left = core.key_left.sum(1)
        assert torch.equal(r.obs[:, CHANNELS.index("key")].flatten(1).sum(1), keys_left)


def test_same_seed_same_trajectory():
    def rollout(seed: int) -> list[torch.Tensor]:
        core = KeysChestsCore(kc_config(), "train", num_envs=8, seed=seed)
        g = torch.Generator().manual_seed(0)
        out = [core.reset(seed=seed)]
        for _ in range(120):
            r = core.step(torch.randint(0, 4, (8,), generator=g))
            out += [r.obs, r.reward]
        return out

    assert all(torch.equal(a, b) for a, b in zip(rollout(1), rollout(1), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(rollout(1), rollout(2), strict=True))


# -------------------------------------------------------------------------- views
# API checks and view equivalence for every registered env: tests/test_gym_views.py.


def test_rgb_frames_show_keys_held_in_a_bottom_row():
    core = KeysChestsCore(kc_config(obs_mode="rgb", rgb_tile_size=4), "shift_ratio", num_envs=2, seed=0)
    obs = core.reset(level_ids=torch.tensor([0, 1]))
    s = core.canvas.size
    assert obs.shape == (2, (s + 1) * 4, s * 4, 3)
    frame = core.render_rgb(0, tile_size=8)
    assert frame.shape == ((s + 1) * 8, s * 8, 3)
    assert "keys held: 0" in core.render_ansi(0)


# -------------------------------------------------------------------- bad configs
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"distributions": {"train": {"min_keys": -1}}}, r"distributions\.train\.min_keys=-1 must be >= 0"),
        ({"distributions": {"train": {"min_chests": 0}}}, r"distributions\.train\.min_chests=0 must be >= 1"),
        ({"distributions": {"train": {"max_chests": 2}}}, r"distributions\.train\.max_chests=2 is below"),
        ({"layout": "cave"}, r"layout='cave' is not one of \['room', 'maze'\]"),
        ({"wall_density": 1.0}, r"wall_density=1\.0 must be in \[0, 1\)"),
        ({"key_penalty": float("nan")}, r"key_penalty=nan must be finite"),
    ],
)
def test_bad_config_names_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        kc_config(**overrides)


def test_more_objects_than_free_tiles_is_an_impossible_layout():
    cfg = kc_config(distributions={"train": {"min_size": 2, "max_size": 2, "max_keys": 9, "min_keys": 9}})
    with pytest.raises(ConfigError, match=r"may place 15 objects .* only 9 free tiles"):
        KeysChestsCore(cfg, "train", num_envs=1)


def test_walls_too_dense_to_hold_the_objects_is_reported():
    cfg = kc_config(wall_density=0.95)
    with pytest.raises(ConfigError, match=r"wall_density=0\.95 leaves some rooms of 'train' too cut up"):
        KeysChestsCore(cfg, "train", num_envs=1)
