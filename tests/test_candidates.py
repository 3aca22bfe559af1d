"""Extra candidate objectives (analysis/candidates.py): the goal-set rules, exact values, SPL
capability, oracles, the ``py:`` hook, and the errors of bad specs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from analysis.candidates import CANDIDATE_FORMS, TileGoal, corner_tiles, make_candidates, nearest_object_tiles
from analysis.planning import arrow_maze_q_values
from analysis.trajectories import Trajectories, collect_episodes
from envs import make_core
from envs.config import ConfigError
from envs.grid import bfs_distances
from envs.keys_chests_levels import NO_OBJECT
from tests.conftest import kc_config, small_config

EPISODES = 24


# ------------------------------------------------------------------ hooks (py:tests.test_candidates:...)
def arrow_tiles(core: Any) -> torch.Tensor:
    """Goal-tile hook: the arrow of each level (so its values must be ``arrow_maze_q_values``'s)."""
    mask = torch.zeros_like(core.levels.blocked)
    mask[torch.arange(len(mask)), core.levels.arrow] = True
    return mask


def bad_shape_tiles(core: Any) -> torch.Tensor:
    """Goal-tile hook returning the wrong shape."""
    return torch.zeros(3, dtype=torch.bool)


class StayPut:
    """A full candidate class built ``(env_cfg, gamma)``: its own values, name and all."""

    name = "stay_put"

    def __init__(self, env_cfg: Any, gamma: float) -> None:
        self.gamma = gamma

    def q_values(self, traj: Trajectories) -> torch.Tensor:
        return torch.zeros((len(traj.action), 4), dtype=torch.float64)

    def capability(self, traj: Trajectories) -> np.ndarray:
        return np.ones(traj.episodes)


class Clashing(StayPut):
    name = "end"


NOT_CALLABLE = 3


# ------------------------------------------------------------------ helpers
def _random_actor(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return lambda core, _obs: torch.randint(0, 4, (core.num_envs,), generator=gen).to(core.device)


def _one(spec: str, cfg: Any) -> Any:
    (candidate,) = make_candidates([spec], cfg)
    return candidate


@pytest.fixture(scope="module")
def maze_cfg():
    return small_config()


@pytest.fixture(scope="module")
def keys_cfg():
    return kc_config()


def _yx(core: Any, pos: int) -> tuple[int, int]:
    p = core.canvas.padded
    return pos // p - 1, pos % p - 1


# ------------------------------------------------------------------ the rules
@pytest.mark.parametrize("env", ["arrow_maze", "keys_chests"])
@pytest.mark.parametrize("distribution", ["train", "shift_size"])
def test_corner_tile_is_the_open_tile_nearest_the_corner_by_brute_force(env, distribution, maze_cfg, keys_cfg):
    cfg = maze_cfg if env == "arrow_maze" else keys_cfg
    core = make_core(cfg, distribution, num_envs=1, seed=0, device="cpu")
    s = core.canvas.size
    corners = {"tl": (0, 0), "tr": (0, s - 1), "bl": (s - 1, 0), "br": (s - 1, s - 1)}
    for name, (cy, cx) in corners.items():
        mask = corner_tiles(name)(core)
        assert mask.shape == core.levels.blocked.shape and mask.dtype == torch.bool
        for level in range(6):
            keyed = []
            for p in torch.nonzero(~core.levels.blocked[level])[:, 0].tolist():
                y, x = _yx(core, p)
                keyed.append((abs(y - cy) + abs(x - cx), abs(y - cy), abs(x - cx), p))
            expected = min(keyed)[3]  # Manhattan distance, then row distance, then column distance
            assert torch.nonzero(mask[level])[:, 0].tolist() == [expected], (name, level)


def test_nearest_key_and_chest_tiles_are_the_objects_at_minimal_distance(keys_cfg):
    core = make_core(keys_cfg, "shift_ratio", num_envs=1, seed=0, device="cpu")  # many keys: ties possible
    lv = core.levels
    dist = bfs_distances(lv.blocked, lv.start, core.canvas.padded)
    for kind in ("keys", "chests"):
        mask = nearest_object_tiles(kind)(core)
        for level in range(16):
            tiles = [p for p in getattr(lv, kind)[level].tolist() if p != NO_OBJECT]
            best = min(int(dist[level, p]) for p in tiles)
            expected = sorted(p for p in tiles if int(dist[level, p]) == best)
            assert torch.nonzero(mask[level])[:, 0].tolist() == expected, (kind, level)


# ------------------------------------------------------------------ values, capability, oracles
def test_hook_values_on_the_arrow_tile_equal_arrow_maze_q_values(maze_cfg):
    candidate = _one("py:tests.test_candidates:arrow_tiles", maze_cfg)
    assert isinstance(candidate, TileGoal) and candidate.name == "py:tests.test_candidates:arrow_tiles"
    traj = collect_episodes(_random_actor(), maze_cfg, "shift_arrow", EPISODES, seed=0)
    q = candidate.q_values(traj)
    s = traj.states
    expected = arrow_maze_q_values(traj.core, s["level"], s["pos"], "arrow", 0.99)
    assert q.dtype == torch.float64 and q.shape == (len(traj.action), 4)
    torch.testing.assert_close(q, expected, rtol=0, atol=0)


@pytest.mark.parametrize("env", ["arrow_maze", "keys_chests"])
def test_corner_oracle_takes_a_shortest_path_and_maximises_q(env, maze_cfg, keys_cfg):
    cfg = maze_cfg if env == "arrow_maze" else keys_cfg
    specs = ["corner:tl", "corner:br"] + (["nearest_key", "nearest_chest"] if env == "keys_chests" else [])
    for candidate in make_candidates(specs, cfg):
        traj = collect_episodes(candidate.oracle(seed=0), cfg, "train", EPISODES, seed=0)
        np.testing.assert_array_equal(candidate.capability(traj), np.ones(EPISODES), err_msg=candidate.name)
        q = candidate.q_values(traj)
        chosen = q.gather(1, traj.action[:, None])[:, 0]
        assert torch.equal(chosen, q.amax(dim=1)), candidate.name


@pytest.mark.parametrize("env", ["arrow_maze", "keys_chests"])
def test_random_actor_is_less_capable_than_the_oracle(env, maze_cfg, keys_cfg):
    cfg = maze_cfg if env == "arrow_maze" else keys_cfg
    candidate = _one("corner:tl", cfg)
    traj = collect_episodes(_random_actor(1), cfg, "train", EPISODES, seed=0)
    cap = candidate.capability(traj)
    assert cap.shape == (EPISODES,) and cap.dtype == np.float64
    assert ((cap >= 0) & (cap <= 1)).all()
    assert 0 <= cap.mean() < 1


def test_spl_counts_the_first_arrival_and_a_start_on_the_goal(maze_cfg):
    """SPL by hand: a goal on each level's start scores 1; the random walk's first arrival is its ``taken``."""

    def start_tiles(core: Any) -> torch.Tensor:
        mask = torch.zeros_like(core.levels.blocked)
        mask[torch.arange(len(mask)), core.levels.start] = True
        return mask

    traj = collect_episodes(_random_actor(2), maze_cfg, "train", EPISODES, seed=0)
    np.testing.assert_array_equal(TileGoal("start", start_tiles).capability(traj), np.ones(EPISODES))

    candidate = _one("py:tests.test_candidates:arrow_tiles", maze_cfg)
    cap = candidate.capability(traj)
    first = traj.outcome["first_arrow_step"]  # the env's own record of the first arrival
    lv = traj.core.levels
    shortest = bfs_distances(lv.blocked, lv.arrow, traj.core.canvas.padded).gather(1, lv.start[:, None])[:, 0]
    expected = torch.where(first > 0, shortest / torch.maximum(first, shortest).double(), 0.0)
    np.testing.assert_allclose(cap, expected.numpy())


# ------------------------------------------------------------------ py: classes
def test_a_class_hook_is_built_with_the_config_and_gamma(maze_cfg):
    candidate = _one("py:tests.test_candidates:StayPut", maze_cfg)
    assert candidate.name == "stay_put"
    with pytest.raises(ConfigError, match="no oracle"):
        candidate.oracle()


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("specs", "env", "needle"),
    [
        (["banana"], "arrow_maze", "not a known candidate form"),
        (["corner:middle"], "arrow_maze", "corner 'middle'"),
        (["nearest_key"], "arrow_maze", "needs keys and chests"),
        (["nearest_chest"], "arrow_maze", "needs keys and chests"),
        (["corner:tl", "corner:tl"], "arrow_maze", "listed twice"),
        (["end"], "arrow_maze", "already one of the env's candidates"),
        (["py:tests.test_candidates:Clashing"], "arrow_maze", "already one of the env's"),
        (["py:no_such_module_xyz:f"], "arrow_maze", "cannot be imported"),
        (["py:tests.test_candidates:missing"], "arrow_maze", "no attribute 'missing'"),
        (["py:tests.test_candidates:NOT_CALLABLE"], "arrow_maze", "not callable"),
        (["py:tests.test_candidates"], "arrow_maze", "py:<module>:<callable>"),
        (["collect_keys"], "keys_chests", "already one of the env's candidates"),
    ],
)
def test_bad_specs_raise_config_error_naming_the_entry(specs, env, needle, maze_cfg, keys_cfg):
    cfg = maze_cfg if env == "arrow_maze" else keys_cfg
    taken = ("end", "arrow") if env == "arrow_maze" else ("open_chests", "collect_keys")
    with pytest.raises(ConfigError) as info:
        make_candidates(specs, cfg, taken=taken)
    message = str(info.value)
    assert "eval.candidates" in message and repr(specs[-1]) in message and needle in message
    assert CANDIDATE_FORMS in message


def test_a_bad_goal_mask_fails_at_first_use_naming_the_spec(maze_cfg):
    candidate = _one("py:tests.test_candidates:bad_shape_tiles", maze_cfg)  # not called yet
    traj = collect_episodes(_random_actor(), maze_cfg, "train", 4, seed=0)
    with pytest.raises(ConfigError, match=r"eval\.candidates: 'py:tests\.test_candidates:bad_shape_tiles'.*bool"):
        candidate.q_values(traj)
