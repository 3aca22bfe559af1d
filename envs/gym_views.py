"""Gymnasium views of the batched cores: a single ``Env`` and a ``VectorEnv``, no rules of their own.

Both only convert between numpy and the core's tensors and arrange ``info`` the gymnasium way;
every rule stays in the core (``envs.arrow_maze``). The single env runs a core of one env on the
CPU; the vector env runs one core of ``num_envs`` on the configured device and resets finished envs
in the same step (``AutoresetMode.SAME_STEP``), with their last observation in ``info["final_obs"]``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from envs.arrow_maze import ArrowMazeCore, StepResult
from envs.config import ArrowMazeConfig, load_arrow_maze_config

RENDER_MODES = ["rgb_array", "ansi"]


def _make_core(
    distribution: str,
    num_envs: int,
    device: str | None,
    config: ArrowMazeConfig | None,
    overrides: dict[str, Any],
) -> ArrowMazeCore:
    if config is not None and overrides:
        raise TypeError(f"pass either config= or keyword overrides, not both (got {sorted(overrides)})")
    cfg = config if config is not None else load_arrow_maze_config(overrides)
    return ArrowMazeCore(cfg, distribution=distribution, num_envs=num_envs, device=device)


def _observation_space(core: ArrowMazeCore) -> spaces.Box:
    high = 1 if core.cfg.obs_mode == "symbolic" else 255
    return spaces.Box(low=0, high=high, shape=core.observation_shape, dtype=np.uint8)


def _episode_info(result: StepResult) -> dict[str, torch.Tensor]:
    """What an ended (or ongoing) episode reports, as ``(B,)`` tensors."""
    return {
        "success": result.terminated,
        "episode_length": result.episode_length,
        "level": result.episode_level,
        "first_end_step": result.first_end_step,
        "first_arrow_step": result.first_arrow_step,
    }


def _check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode={render_mode!r} is not one of {RENDER_MODES}")


class ArrowMazeEnv(gym.Env):
    """``misgen/ArrowMaze-v0`` as a standard single gymnasium environment (see ``envs.arrow_maze``).

    Keyword arguments other than ``distribution``, ``render_mode``, ``device`` and ``config`` are
    overrides of ``configs/env/arrow_maze.yaml`` (e.g. ``base_objective="arrow"``).
    ``reset(options={"level": i})`` starts on level ``i`` of the distribution's level set.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": RENDER_MODES, "render_fps": 8}

    def __init__(
        self,
        distribution: str = "train",
        render_mode: str | None = None,
        device: str = "cpu",
        config: ArrowMazeConfig | None = None,
        **overrides: Any,
    ) -> None:
        _check_render_mode(render_mode)
        self.core = _make_core(distribution, 1, device, config, overrides)
        self.render_mode = render_mode
        self.observation_space = _observation_space(self.core)
        self.action_space = spaces.Discrete(self.core.num_actions)
        self._ended = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        level = None if not options or "level" not in options else torch.tensor([int(options["level"])])
        core_seed = int(self.np_random.integers(2**62))
        obs = self.core.reset(seed=core_seed, level_ids=level)
        self._ended = False
        return obs[0].cpu().numpy(), {"level": int(self.core.level[0])}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        result = self.core.step(torch.as_tensor([int(action)], device=self.core.device))
        self._ended = bool(result.done[0])
        obs = self.core.final_obs() if self._ended else result.obs
        info = {k: v[0].item() for k, v in _episode_info(result).items()}
        return (
            obs[0].cpu().numpy(),
            float(result.reward[0]),
            bool(result.terminated[0]),
            bool(result.truncated[0]),
            info,
        )

    def render(self) -> np.ndarray | str | None:
        if self.render_mode == "rgb_array":
            return self.core.render_rgb(0, final=self._ended).cpu().numpy()
        if self.render_mode == "ansi":
            return self.core.render_ansi(0, final=self._ended)
        return None


class ArrowMazeVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` arrow mazes as one gymnasium ``VectorEnv`` over the batched core.

    ``reset(options={"level": [i0, i1, ...]})`` starts env k on level ``i_k``. Actions may be a
    numpy array or a tensor; observations and infos come back as numpy arrays.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": RENDER_MODES,
        "render_fps": 8,
        "autoreset_mode": AutoresetMode.SAME_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        distribution: str = "train",
        render_mode: str | None = None,
        device: str | None = None,
        config: ArrowMazeConfig | None = None,
        **overrides: Any,
    ) -> None:
        _check_render_mode(render_mode)
        self.core = _make_core(distribution, num_envs, device, config, overrides)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = _observation_space(self.core)
        self.single_action_space = spaces.Discrete(self.core.num_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._ended = np.zeros(num_envs, dtype=bool)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        if isinstance(seed, list):
            seed = seed[0]  # one core, one generator: the first seed seeds the batch
        super().reset(seed=seed)
        core_seed = int(self.np_random.integers(2**62))
        level = None if not options or "level" not in options else torch.as_tensor(options["level"])
        obs = self.core.reset(seed=core_seed, level_ids=level)
        self._ended[:] = False
        return obs.cpu().numpy(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        result = self.core.step(
            torch.as_tensor(
                np.asarray(actions) if not torch.is_tensor(actions) else actions, device=self.core.device
            ).long()
        )
        done = result.done.cpu().numpy()
        self._ended = done
        infos: dict[str, Any] = {}
        if done.any():
            final_obs = self.core.final_obs().cpu().numpy()
            objects = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                objects[i] = final_obs[i]
            infos["final_obs"], infos["_final_obs"] = objects, done
            final_info: dict[str, np.ndarray] = {}
            for key, value in _episode_info(result).items():
                final_info[key], final_info["_" + key] = value.cpu().numpy(), done
            infos["final_info"], infos["_final_info"] = final_info, done
        return (
            result.obs.cpu().numpy(),
            result.reward.cpu().numpy(),
            result.terminated.cpu().numpy(),
            result.truncated.cpu().numpy(),
            infos,
        )

    def render(self) -> tuple[np.ndarray, ...] | tuple[str, ...] | None:
        if self.render_mode == "rgb_array":
            return tuple(
                self.core.render_rgb(i, final=bool(self._ended[i])).cpu().numpy() for i in range(self.num_envs)
            )
        if self.render_mode == "ansi":
            return tuple(self.core.render_ansi(i, final=bool(self._ended[i])) for i in range(self.num_envs))
        return None
