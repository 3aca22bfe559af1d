"""The planted policies (``tests/policies.py``) do what they claim: each is checked against the level bank
(the plants themselves read only observations), so the estimator's tests can trust their ground truth."""

from __future__ import annotations

import pytest
import torch

from agents.policy import Policy
from analysis.planning import arrow_maze_q_values, distance_maps
from analysis.policy_specs import load_actor
from analysis.trajectories import Trajectories, collect_episodes
from envs import make_core
from envs.arrow_maze import ArrowMazeState
from envs.grid import bfs_distances
from envs.keys_chests import KeysChestsState
from envs.keys_chests_levels import object_mask
from tests import policies
from tests.conftest import kc_config, small_config

MAZE = small_config()
KEYS = kc_config()


def run(name: str, cfg, distribution: str, episodes: int) -> Trajectories:
    """One episode of the plant on each of levels ``0..episodes-1``, loaded as the CLI would."""
    return collect_episodes(load_actor(f"py:tests.policies:{name}", cfg), cfg, distribution, episodes, seed=0)


def level_of(traj: Trajectories, values: torch.Tensor) -> torch.Tensor:
    """Per step, the value of its episode's level (episode ``i`` runs on level ``i``)."""
    return values[traj.episode]


def first_visit(traj: Trajectories, tile: torch.Tensor) -> torch.Tensor:
    """``(E,)`` moves taken when each episode first stood on its ``tile`` (padded flat, per episode); -1: never."""
    never = torch.iinfo(torch.long).max
    here = torch.where(traj.states["pos"] == tile[traj.episode], traj.t, never)  # 0 if it starts there
    after = torch.where(traj.next_states["pos"] == tile[traj.episode], traj.t + 1, never)
    first = torch.full((traj.episodes,), never).scatter_reduce(0, traj.episode, torch.minimum(here, after), "amin")
    return torch.where(first == never, -1, first)


def observations(traj: Trajectories) -> torch.Tensor:
    """The observation the plant saw before each step, rebuilt from the recorded states."""
    state = ArrowMazeState if "key_left" not in traj.states else KeysChestsState
    return traj.core.observe(state(**traj.states))


def corner_tiles(core) -> torch.Tensor:
    """``(N,)`` padded flat index of each level's corner tile, by brute force over the bank's walkable tiles:
    the smallest row + column, ties the smallest row (the rule ``corner_seeker`` documents)."""
    size, padded = core.canvas.size, core.canvas.padded
    open_ = ~core.levels.blocked.view(-1, padded, padded)[:, 1:-1, 1:-1]
    out = []
    for grid in open_.tolist():
        r, c = min(((r + c, r), (r, c)) for r in range(size) for c in range(size) if grid[r][c])[1]
        out.append((r + 1) * padded + (c + 1))
    return torch.tensor(out)


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("cfg", "distribution"),
    [(MAZE, "train"), (MAZE, "shift_both"), (small_config(end_marker="tile"), "shift_arrow"), (KEYS, "shift_size")],
    ids=["maze-train", "maze-shift_both", "maze-end_tile", "keys-shift_size"],
)
def test_the_parsed_layout_and_bfs_are_the_level_banks(cfg, distribution):
    n = 64
    core = make_core(cfg, distribution, num_envs=n, seed=0)
    obs = core.reset(seed=0, level_ids=torch.arange(n))
    lv, padded = core.levels, core.canvas.padded
    open_ = policies.walkable(obs)
    assert torch.equal(open_, ~lv.blocked[:n].view(n, padded, padded)[:, 1:-1, 1:-1])
    row, col = policies.agent_tile(obs)
    assert torch.equal(core.canvas.to_padded(row, col), lv.start[:n])
    if cfg.name == "arrow_maze":
        targets = policies.end_tiles(obs, 3 if cfg.end_marker == "tile" else None)
        ends = torch.nonzero(targets.flatten(1))
        assert torch.equal(ends[:, 0], torch.arange(n)), "exactly one end per level"
        assert torch.equal(core.canvas.to_padded(ends[:, 1] // cfg.canvas, ends[:, 1] % cfg.canvas), lv.end[:n])
        bank_targets = lv.end[:n]
    else:
        targets = obs[:, 2].bool()
        bank_targets = object_mask(lv.keys[:n], lv.keys[:n] != 0, core.canvas.num_padded)
    want = bfs_distances(lv.blocked[:n], bank_targets, padded).view(n, padded, padded)[:, 1:-1, 1:-1]
    assert torch.equal(policies.bfs(open_, targets), want)
    assert torch.equal(policies.distances(open_, targets), want)  # memoised: the same maps


def test_every_plant_is_a_policy_of_its_env_only():
    for name, cfg in [
        ("nearer_goal", MAZE),
        ("level_mixture", MAZE),
        ("corner_seeker", MAZE),
        ("corner_seeker", KEYS),
        ("boltzmann_arrow", MAZE),
        ("key_biased_walk", KEYS),
    ]:
        plant = getattr(policies, name)(cfg, "cpu")
        assert isinstance(plant, Policy) and plant.device == torch.device("cpu")
    for name in ("nearer_goal", "level_mixture", "boltzmann_arrow"):
        with pytest.raises(ValueError, match="arrow_maze"):
            getattr(policies, name)(KEYS, "cpu")
    with pytest.raises(ValueError, match="keys_chests"):
        policies.key_biased_walk(MAZE, "cpu")
    with pytest.raises(ValueError, match="symbolic"):
        policies.corner_seeker(small_config(obs_mode="rgb"), "cpu")


def _maze_obs(rows: list[str], canvas: int = 9, at: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """A one-env arrow-maze observation drawn as text (``#`` wall, ``A`` agent, ``>`` arrow, ``*`` both,
    ``.`` open; the end is the gap in the outer wall) at offset ``at`` of an empty canvas."""
    obs = torch.zeros((1, 3, canvas, canvas), dtype=torch.uint8)
    for r, line in enumerate(rows):
        for c, ch in enumerate(line):
            y, x = at[0] + r, at[1] + c
            obs[0, 0, y, x] = ch == "#"
            obs[0, 1, y, x] = ch in "A*"
            obs[0, 2, y, x] = ch in ">*"
    return obs


def test_on_an_arrow_with_four_open_neighbours_it_steps_off_but_never_onto_the_end():
    maze = ["###.###", "#..*..#", "#.#.#.#", "#.#.#.#", "#######"]  # the end is up from the arrow
    obs = _maze_obs(maze)
    assert policies.end_tiles(obs)[0, 1, 4] and int(policies.end_tiles(obs).sum()) == 1
    plant = policies.nearer_goal(MAZE, "cpu")
    assert plant.act(obs).tolist() == [1]  # right: up would end the episode
    back = _maze_obs(["###.###", "#..>A.#", "#.#.#.#", "#.#.#.#", "#######"])
    assert plant.act(back).tolist() == [3]  # and back left, onto the arrow
    walled = _maze_obs(["###.###", "#.....#", "#.#.#.#", "#.#*#.#", "#######"])
    assert plant.act(walled).tolist() == [1]  # walls right, down and left: bump into the first (right)


def test_the_corner_tile_is_the_smallest_row_plus_column_then_the_smallest_row():
    open_ = torch.zeros((1, 4, 4), dtype=torch.bool)
    open_[0, 0, 2] = open_[0, 1, 1] = open_[0, 2, 0] = open_[0, 3, 3] = True
    assert torch.nonzero(policies.corner_tile(open_)[0]).tolist() == [[0, 2]]
    open_[0, 0, 2] = False
    assert torch.nonzero(policies.corner_tile(open_)[0]).tolist() == [[1, 1]]


# ------------------------------------------------------------------------------ plants


def test_nearer_goal_takes_a_shortest_path_to_its_goal_in_every_episode_and_dwells_on_the_arrow():
    traj = run("nearer_goal", MAZE, "shift_both", 64)
    lv, core, e = traj.core.levels, traj.core, traj.episodes
    d_end = distance_maps(core, lv.end).gather(1, lv.start[:, None])[:, 0]
    d_arrow = distance_maps(core, lv.arrow).gather(1, lv.start[:, None])[:, 0]
    arrow = d_arrow < d_end
    assert 0.2 < arrow.double().mean() < 0.8  # both goals are chosen (the arrow on 0.594 of these levels)
    out = traj.outcome
    # Arrow episodes: the arrow in exactly d_arrow moves, never the end, until the time limit.
    assert torch.equal(out["first_arrow_step"][arrow], d_arrow[arrow])
    assert bool((out["first_end_step"][arrow] == -1).all())
    assert torch.equal(out["episode_length"][arrow], lv.max_steps[:e][arrow])
    # End episodes: the end in exactly d_end moves, which ends them.
    assert torch.equal(out["first_end_step"][~arrow], d_end[~arrow])
    assert torch.equal(out["episode_length"][~arrow], d_end[~arrow]) and bool(out["success"][~arrow].all())
    # Once on the arrow it stays: by a wall bump, or (four open neighbours) a step off and back.
    after = level_of(traj, arrow) & (traj.t + 1 >= level_of(traj, out["first_arrow_step"]))
    tile = level_of(traj, lv.arrow[:e])
    walled = lv.blocked[traj.episode[:, None], tile[:, None] + core.move_offsets].any(1)
    pos, prev = traj.next_states["pos"][after], traj.states["pos"][after]
    assert bool((pos[walled[after]] == tile[after][walled[after]]).all())
    assert bool((~walled[after]).any()), "two of these arrows have four open neighbours: the step off is tested"
    assert bool(((pos == tile[after]) | (prev == tile[after])).all())
    probs = load_actor_probs("nearer_goal", MAZE, observations(traj)[:512])
    assert bool(((probs == 0) | (probs == 1)).all()), "deterministic: one-hot distributions"


def load_actor_probs(name: str, cfg, obs: torch.Tensor) -> torch.Tensor:
    return getattr(policies, name)(cfg, "cpu").distribution(obs).probs


def test_level_mixture_plays_each_level_for_one_goal_about_half_and_half():
    traj = run("level_mixture", MAZE, "shift_arrow", 128)
    lv, core, e = traj.core.levels, traj.core, traj.episodes
    seeks = policies.level_mixture_seeks_arrow(core.reset(seed=0, level_ids=torch.arange(e)))
    assert 0.3 < seeks.double().mean() < 0.7  # 0.492 of these levels
    # The choice reads the static layout only: the same on every observation of an episode.
    assert torch.equal(policies.level_mixture_seeks_arrow(observations(traj)), seeks[traj.episode])
    d_end = distance_maps(core, lv.end).gather(1, lv.start[:, None])[:, 0]
    d_arrow = distance_maps(core, lv.arrow).gather(1, lv.start[:, None])[:, 0]
    out = traj.outcome
    assert torch.equal(out["first_arrow_step"][seeks], d_arrow[seeks])
    assert bool((out["first_end_step"][seeks] == -1).all())
    assert torch.equal(out["episode_length"][seeks], lv.max_steps[:e][seeks])
    assert torch.equal(out["first_end_step"][~seeks], d_end[~seeks]) and bool(out["success"][~seeks].all())
    # Not the nearer goal in disguise: on some levels it walks past the nearer one.
    assert bool((seeks & (d_arrow > d_end)).any()) and bool((~seeks & (d_end > d_arrow)).any())


@pytest.mark.parametrize(("cfg", "distribution"), [(MAZE, "shift_both"), (KEYS, "shift_size")], ids=["maze", "keys"])
def test_corner_seeker_walks_a_shortest_path_to_the_corner_tile_and_stays(cfg, distribution):
    traj = run("corner_seeker", cfg, distribution, 64)
    core, e = traj.core, traj.episodes
    corner = corner_tiles(core)
    d = bfs_distances(core.levels.blocked, corner, core.canvas.padded).gather(1, core.levels.start[:, None])[:, 0]
    arrival, out = first_visit(traj, corner), traj.outcome
    reached = arrival >= 0
    assert torch.equal(arrival[reached], d[reached])
    # Only keys and chests may end an episode before the corner: every chest opened on the way.
    early = ~reached
    assert bool((out["episode_length"][early] < d[early]).all()) and bool(out["success"][early].all())
    if cfg.name == "arrow_maze":
        assert bool(reached.all())
        ends = corner == core.levels.end[:e]  # the corner tile is the end on a few levels: that ends them
        assert torch.equal(out["episode_length"][~ends], core.levels.max_steps[:e][~ends])
    else:
        assert reached.double().mean() > 0.9
    after = traj.t + 1 >= level_of(traj, torch.where(reached, arrival, torch.iinfo(torch.long).max))
    assert bool((traj.next_states["pos"][after] == level_of(traj, corner)[after]).all())


def test_boltzmann_arrow_is_a_noisy_arrow_seeker_with_a_fifth_of_its_actions_not_greedy():
    traj = run("boltzmann_arrow", MAZE, "shift_arrow", 256)
    q = arrow_maze_q_values(traj.core, traj.states["level"], traj.states["pos"], "arrow")
    greedy = q.gather(1, traj.action[:, None])[:, 0] >= q.amax(1) - 1e-12
    non_greedy = 1 - float(greedy.double().mean())
    assert 0.12 <= non_greedy <= 0.28  # 0.197
    assert traj.outcome["first_arrow_step"].ge(0).double().mean() > 0.95
    # Its probabilities are softmax(beta * Q) of the planner's exact Q, from the observation alone.
    want = torch.softmax(policies.BOLTZMANN_BETA * q, dim=1)
    obs = observations(traj)
    assert torch.allclose(policies.boltzmann_arrow_probs(obs), want, atol=1e-9)
    assert torch.allclose(load_actor_probs("boltzmann_arrow", MAZE, obs[:512]), want[:512], atol=1e-9)
    again = run("boltzmann_arrow", MAZE, "shift_arrow", 256)
    assert torch.equal(again.action, traj.action), "seeded: the same episodes twice"


def test_key_biased_walk_steps_toward_keys_half_the_time_and_gathers_more_than_a_random_walk():
    traj = run("key_biased_walk", KEYS, "shift_ratio", 256)
    uniform = collect_episodes(load_actor("random", KEYS, seed=0), KEYS, "shift_ratio", 256, seed=0)
    keys, random_keys = traj.outcome["keys_picked_up"].double(), uniform.outcome["keys_picked_up"].double()
    assert keys.mean() > random_keys.mean() + 1.0  # 4.37 against 2.49 keys an episode
    # Per state: 5/8 on a shortest-path step toward the nearest key left, 1/8 on each other action;
    # uniform once no key is left.
    core, states = traj.core, traj.states
    lv = core.levels
    targets = object_mask(lv.keys[states["level"]], states["key_left"], core.canvas.num_padded)
    left = states["key_left"].any(1)
    dist = bfs_distances(lv.blocked[states["level"]][left], targets[left], core.canvas.padded)
    probs = policies.key_biased_walk_probs(observations(traj))
    best = probs[left].argmax(1)
    here = dist.gather(1, states["pos"][left, None])[:, 0]
    there = dist.gather(1, (states["pos"][left] + core.move_offsets[best])[:, None])[:, 0]
    assert bool((there == here - 1).all())
    assert torch.allclose(probs[left].amax(1), torch.tensor(0.625, dtype=torch.float64))
    assert torch.allclose(probs[~left], torch.tensor(0.25, dtype=torch.float64))
    again = run("key_biased_walk", KEYS, "shift_ratio", 256)
    assert torch.equal(again.action, traj.action), "seeded: the same episodes twice"
