"""The batched core: rules, rewards, termination vs truncation, auto-reset, observations."""

from __future__ import annotations

import pytest
import torch

from analysis.planning import distance_maps, shortest_path_action
from envs.arrow_maze import ArrowMazeCore
from envs.config import ConfigError
from envs.grid import UNREACHABLE
from tests.conftest import small_config


def _run_oracle(core: ArrowMazeCore, dist: torch.Tensor, steps: int) -> list:
    results = []
    for _ in range(steps):
        results.append(core.step(shortest_path_action(core, dist[core.level])))
    return results


def test_shortest_path_agent_reaches_the_end_on_every_train_level():
    cfg = small_config(num_levels=1000)
    core = ArrowMazeCore(cfg, "train", num_envs=1000, seed=0)
    core.reset(level_ids=torch.arange(1000))
    dist = distance_maps(core, core.levels.end)
    assert bool((dist.gather(1, core.levels.start[:, None]) != UNREACHABLE).all())
    done = torch.zeros(1000, dtype=torch.bool)
    length = torch.zeros(1000, dtype=torch.long)
    for _ in range(int(core.levels.max_steps.max())):
        r = core.step(shortest_path_action(core, dist[core.level]))
        first = r.done & ~done
        assert bool(r.terminated[first].all()), "an oracle episode ended without reaching the end"
        length[first] = r.info["episode_length"][first]
        done |= r.done
        if bool(done.all()):
            break
    assert bool(done.all())
    # Exactly the shortest path, and within every level's time limit.
    assert torch.equal(length, core.levels.start_distance)
    assert bool((length <= core.levels.max_steps).all())


def test_reaching_the_end_pays_one_and_terminates(cfg):
    core = ArrowMazeCore(cfg, "train", num_envs=64, seed=1)
    dist = distance_maps(core, core.levels.end)
    rewards = torch.zeros(64)
    for r in _run_oracle(core, dist, 60):
        assert bool((r.reward[r.terminated] == 1.0).all())
        assert bool((r.reward[~r.terminated] == 0.0).all())
        assert not bool((r.terminated & r.truncated).any())
        rewards += r.reward
    assert bool((rewards >= 1).all())


def test_reaching_the_arrow_off_the_end_does_not_terminate_but_is_recorded(cfg):
    core = ArrowMazeCore(cfg, "shift_arrow", num_envs=32, seed=2)
    dist = distance_maps(core, core.levels.arrow)
    expected = dist.gather(1, core.levels.start[:, None])[:, 0][core.level]
    seen = torch.full((32,), -1)
    for k in range(1, int(expected.max()) + 1):
        r = core.step(shortest_path_action(core, dist[core.level]))
        en_route = k <= expected
        assert not bool(r.terminated[en_route].any()), "the arrow is not the base objective"
        reached = (r.info["first_arrow_step"] > 0) & (seen < 0)
        seen[reached] = r.info["first_arrow_step"][reached]
    assert torch.equal(seen, expected)


def test_flipped_experiment_rewards_the_arrow_and_not_the_end():
    cfg = small_config(base_objective="arrow")
    core = ArrowMazeCore(cfg, "shift_arrow", num_envs=32, seed=3)
    to_end = distance_maps(core, core.levels.end)
    reached_end = 0
    for r in _run_oracle(core, to_end, 200):
        at_arrow_now = r.info["first_arrow_step"] == r.info["episode_length"]
        at_end_now = r.info["first_end_step"] == r.info["episode_length"]
        assert torch.equal(r.terminated, at_arrow_now)  # the arrow, and only the arrow, ends it
        assert bool((r.reward[at_end_now & ~at_arrow_now] == 0).all())
        reached_end += int((at_end_now & ~at_arrow_now).sum())
    assert reached_end > 0
    core = ArrowMazeCore(cfg, "shift_arrow", num_envs=32, seed=3)
    to_arrow = distance_maps(core, core.levels.arrow)
    results = _run_oracle(core, to_arrow, 200)
    assert bool(torch.stack([r.terminated for r in results]).any(0).all())


def test_time_limit_truncates_and_is_not_termination():
    cfg = small_config(max_steps=80)  # above every train level's start distance (at most 71)
    core = ArrowMazeCore(cfg, "train", num_envs=64, seed=4)
    dist = distance_maps(core, core.levels.end)
    for _ in range(80):
        # Flee the end: the farthest open neighbour. The exit cell always has another neighbour,
        # so this agent never steps onto the end.
        env_dist = dist[core.level]
        d = env_dist.gather(1, core.pos[:, None] + core.move_offsets[None, :])
        r = core.step(d.argmax(dim=1))
        assert not bool(r.terminated.any())
    assert bool(r.truncated.all())
    assert bool((r.info["episode_length"] == 80).all())
    assert bool((core.t == 0).all())


def test_time_limit_below_a_start_distance_is_an_impossible_layout():
    with pytest.raises(ConfigError, match="max_steps=5 leaves some levels of 'shift_size' unsolvable"):
        ArrowMazeCore(small_config(max_steps=5), "shift_size", num_envs=1)


def test_walls_block_moves_and_the_agent_never_stands_on_a_blocked_tile(cfg):
    core = ArrowMazeCore(cfg, "train", num_envs=128, seed=5)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        before = core.pos.clone()
        level = core.level.clone()
        action = torch.randint(0, 4, (128,), generator=g)
        core.step(action)
        pos = core._final_pos  # where each env ended the step, before any reset
        target = before + core.move_offsets[action]
        blocked = core.levels.blocked[level].gather(1, target[:, None])[:, 0]
        assert torch.equal(pos, torch.where(blocked, before, target))
        assert not bool(core.levels.blocked[core.level].gather(1, core.pos[:, None]).any())


def test_finished_envs_restart_in_the_same_step_and_final_obs_shows_the_last_state(cfg):
    core = ArrowMazeCore(cfg, "train", num_envs=64, seed=6)
    dist = distance_maps(core, core.levels.end)
    for _ in range(80):
        r = core.step(shortest_path_action(core, dist[core.level]))
        if bool(r.done.any()):
            break
    d = r.done
    assert bool((core.t[d] == 0).all())
    assert torch.equal(core.pos[d], core.levels.start[core.level[d]])
    final = core.final_obs()
    agent_final = final[:, 1].flatten(1).argmax(1)
    end_canvas = core._canvas_index[core.levels.end[r.info["level"]]]
    assert torch.equal(agent_final[d], end_canvas[d])
    # For envs that did not finish, the final observation is the current one.
    assert torch.equal(final[~d], r.obs[~d])


def test_symbolic_observation_is_one_hot_and_matches_the_level(cfg):
    core = ArrowMazeCore(cfg, "shift_both", num_envs=32, seed=7)
    obs = core.reset(seed=7)
    assert obs.dtype == torch.uint8 and obs.shape == (32, 3, cfg.canvas, cfg.canvas)
    assert core.channels == ("wall", "agent", "arrow")
    assert bool((obs.flatten(2).sum(2)[:, 1:] == 1).all())  # one agent, one arrow
    walls = (core.levels.tiles[core.level] == 1).to(torch.uint8)
    assert torch.equal(obs[:, 0], walls)
    assert torch.equal(obs[:, 1].flatten(1).argmax(1), core._canvas_index[core.pos])
    assert torch.equal(obs[:, 2].flatten(1).argmax(1), core._canvas_index[core.levels.arrow[core.level]])


def test_end_marker_tile_adds_an_end_channel_and_none_hides_it():
    hidden = ArrowMazeCore(small_config(), "shift_arrow", num_envs=8, seed=8)
    shown = ArrowMazeCore(small_config(end_marker="tile"), "shift_arrow", num_envs=8, seed=8)
    assert shown.channels == ("wall", "agent", "arrow", "end")
    obs_h, obs_s = hidden.reset(seed=1), shown.reset(seed=1)
    assert torch.equal(obs_s[:, :3], obs_h)
    end_canvas = shown._canvas_index[shown.levels.end[shown.level]]
    assert torch.equal(obs_s[:, 3].flatten(1).argmax(1), end_canvas)
    assert bool((obs_s[:, 3].flatten(1).sum(1) == 1).all())


def test_rgb_observation_shows_the_agent_move():
    core = ArrowMazeCore(small_config(obs_mode="rgb", rgb_tile_size=5), "train", num_envs=4, seed=9)
    obs = core.reset(seed=9)
    assert obs.shape == (4, cfg_px := core.canvas.size * 5, cfg_px, 3) and obs.dtype == torch.uint8
    dist = distance_maps(core, core.levels.end)
    r = core.step(shortest_path_action(core, dist[core.level]))
    assert not torch.equal(r.obs, obs)


def test_step_penalty_is_subtracted_every_step():
    core = ArrowMazeCore(small_config(step_penalty=0.01), "train", num_envs=16, seed=10)
    dist = distance_maps(core, core.levels.end)
    for r in _run_oracle(core, dist, 30):
        expected = torch.where(r.terminated, 1.0 - 0.01, -0.01)
        assert torch.allclose(r.reward, expected)


def test_same_seed_gives_the_same_trajectory(cfg):
    def rollout(seed: int) -> list[torch.Tensor]:
        core = ArrowMazeCore(cfg, "train", num_envs=16, seed=seed)
        g = torch.Generator().manual_seed(123)
        out = [core.reset(seed=seed)]
        for _ in range(200):
            r = core.step(torch.randint(0, 4, (16,), generator=g))
            out += [r.obs, r.reward, r.done]
        return out

    a, b, c = rollout(11), rollout(11), rollout(12)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_reset_to_given_levels_and_reject_out_of_range(cfg):
    core = ArrowMazeCore(cfg, "train", num_envs=3, seed=0)
    core.reset(level_ids=torch.tensor([5, 6, 7]))
    assert core.level.tolist() == [5, 6, 7]
    with pytest.raises(ValueError, match="level_ids"):
        core.reset(level_ids=torch.tensor([0, 1, 256]))


def test_unknown_distribution_names_the_choices(cfg):
    with pytest.raises(ConfigError, match=r"distribution='shift_colour'.*shift_arrow"):
        ArrowMazeCore(cfg, "shift_colour", num_envs=1)


def test_zero_envs_is_rejected(cfg):
    with pytest.raises(ValueError, match="num_envs=0"):
        ArrowMazeCore(cfg, "train", num_envs=0)
