"""Gymnasium views: API checkers, registration, and agreement with the batched core step for step."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.arrow_maze import ArrowMazeEnv, ArrowMazeVectorEnv
from tests.conftest import kc_config, small_config

ENV_ID = "misgen/ArrowMaze-v0"


# Every registered environment, with a small CPU config factory.
ENVS = {
    "misgen/ArrowMaze-v0": small_config,
    "misgen/KeysChests-v0": kc_config,
}
assert set(ENVS) == {spec.gym_id for spec in envs.BUILTIN_ENVS}, "a built-in env has no view tests"


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("obs_mode", ["symbolic", "rgb"])
def test_gymnasium_check_env_passes(env_id, obs_mode):
    env = gym.make(env_id, config=ENVS[env_id](obs_mode=obs_mode), render_mode="rgb_array")
    gym_check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("obs_mode", ["symbolic", "rgb"])
def test_sb3_check_env_passes(env_id, obs_mode):
    env = gym.make(env_id, config=ENVS[env_id](obs_mode=obs_mode)).unwrapped
    with warnings.catch_warnings():
        # SB3 warns that a 0/1 uint8 image is not in [0, 255] and is smaller than its default CNN's
        # input; both are true of symbolic observations and are not errors.
        warnings.simplefilter("ignore", UserWarning)
        sb3_check_env(env, warn=True)


def test_importing_envs_registers_the_ids_with_a_vector_entry_point():
    spec = gym.spec(ENV_ID)
    assert spec.entry_point == "envs.arrow_maze:ArrowMazeEnv"
    assert spec.vector_entry_point == "envs.arrow_maze:ArrowMazeVectorEnv"


def test_make_vec_uses_the_batched_core_and_sync_mode_uses_gymnasium():
    venv = gym.make_vec(ENV_ID, num_envs=4, config=small_config())
    assert isinstance(venv, ArrowMazeVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    sync = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync", config=small_config())
    assert isinstance(sync, SyncVectorEnv)


def test_make_passes_overrides_to_the_config():
    env = gym.make(ENV_ID, distribution="shift_arrow", base_objective="arrow", end_marker="tile", num_levels=32)
    core = env.unwrapped.core
    assert core.cfg.base_objective == "arrow" and core.distribution == "shift_arrow"
    assert env.observation_space.shape[0] == 4


def test_make_with_a_misspelt_override_names_the_key():
    with pytest.raises(ValueError, match="base_objectve"):
        gym.make(ENV_ID, base_objectve="arrow")


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("distribution", ["train", "shift_both"])
def test_vector_view_and_single_envs_agree_step_for_step(env_id, distribution):
    cfg = ENVS[env_id]()
    n = 6
    levels = [3, 17, 42, 99, 100, 255]
    venv = gym.make_vec(env_id, num_envs=n, distribution=distribution, device="cpu", config=cfg)
    singles = [gym.make(env_id, distribution=distribution, config=cfg).unwrapped for _ in range(n)]
    obs, _ = venv.reset(seed=0, options={"level": levels})
    for i, env in enumerate(singles):
        o, info = env.reset(seed=i, options={"level": levels[i]})
        assert info["level"] == levels[i]
        np.testing.assert_array_equal(o, obs[i])
    rng = np.random.default_rng(0)
    live = np.ones(n, dtype=bool)  # compare each env's first episode, until it ends
    for _ in range(int(venv.core.levels.max_steps.max())):
        actions = rng.integers(0, 4, n)
        obs, rew, term, trunc, info = venv.step(actions)
        for i in np.flatnonzero(live):
            o, r, te, tr, inf = singles[i].step(actions[i])
            assert (r, te, tr) == (rew[i], term[i], trunc[i])
            if te or tr:
                np.testing.assert_array_equal(o, info["final_obs"][i])
                for key, value in inf.items():
                    assert value == info["final_info"][key][i], key
                live[i] = False
            else:
                np.testing.assert_array_equal(o, obs[i])
        if not live.any():
            break
    assert not live.any()  # every env reached its time limit at the latest


def test_single_env_same_seed_same_episode():
    def episode(seed: int) -> list:
        env = ArrowMazeEnv(config=small_config())
        obs, _ = env.reset(seed=seed)
        out = [obs]
        rng = np.random.default_rng(1)
        for _ in range(30):
            out.append(env.step(int(rng.integers(4)))[0])
        return out

    assert all(np.array_equal(a, b) for a, b in zip(episode(5), episode(5), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(episode(5), episode(6), strict=True))


def test_render_modes():
    env = ArrowMazeEnv(config=small_config(), render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[0] == env.core.canvas.size * 16
    text = ArrowMazeEnv(config=small_config(), render_mode="ansi")
    text.reset(seed=0)
    picture = text.render()
    assert picture.count("@") == 1 and "#" in picture


def test_vector_env_accepts_tensor_actions_and_renders():
    venv = ArrowMazeVectorEnv(num_envs=3, device="cpu", config=small_config(), render_mode="ansi")
    venv.reset(seed=0)
    venv.step(torch.tensor([0, 1, 2]))
    frames = venv.render()
    assert len(frames) == 3 and all("@" in f for f in frames)


def test_unknown_render_mode_is_rejected():
    with pytest.raises(ValueError, match="render_mode='human'"):
        ArrowMazeEnv(config=small_config(), render_mode="human")
