"""Gymnasium views of the batched cores: a single ``Env`` and a ``VectorEnv``, no rules of their own.

Both only convert between numpy and the core's tensors, check actions, and arrange ``info`` the
gymnasium way; every rule stays in the core. The single env runs a core of one env on the CPU; the
vector env runs one core of ``num_envs`` on the configured device and resets finished envs in the
same step (``AutoresetMode.SAME_STEP``), with their last observation in ``info["final_obs"]``.
Either view serves any registered environment (``envs.registry``): by ``env_name=``, or through a pair
of subclasses naming it (``envs.arrow_maze.ArrowMazeEnv``), which are then its gymnasium entry points.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from envs.core import StepResult

RENDER_MODES = ["rgb_array", "ansi"]


class Core(Protocol):
    """What the views need of a batched core (``envs.arrow_maze.ArrowMazeCore`` and its siblings)."""

    cfg: Any
    device: torch.device
    num_actions: int
    observation_shape: tuple[int, ...]
    level: torch.Tensor

    def reset(self, seed: int | None = None, level_ids: torch.Tensor | None = None) -> torch.Tensor: ...
    def step(self, action: torch.Tensor) -> StepResult: ...
    def final_obs(self) -> torch.Tensor: ...
    def render_rgb(self, index: int = 0, tile_size: int = 16, final: bool = False) -> torch.Tensor: ...
    def render_ansi(self, index: int = 0, final: bool = False) -> str: ...


def observation_space(obs_mode: str, shape: tuple[int, ...]) -> spaces.Box:
    """The observation space of a core: ``uint8``, 0/1 channels (``symbolic``) or 0..255 pixels (``rgb``)."""
    return spaces.Box(low=0, high=1 if obs_mode == "symbolic" else 255, shape=tuple(shape), dtype=np.uint8)


def _observation_space(core: Core) -> spaces.Box:
    return observation_space(core.cfg.obs_mode, core.observation_shape)


def _check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode={render_mode!r} is not one of {RENDER_MODES}")


def _check_actions(actions: np.ndarray, num_actions: int) -> None:
    if actions.size and (actions.min() < 0 or actions.max() >= num_actions):
        raise ValueError(f"actions must be integers in [0, {num_actions}), got {actions.tolist()}")


class _CoreView:
    """Config handling shared by both views: the env is a registered one (``envs.registry``), named by
    the subclass's ``env_name`` or the ``env_name`` argument."""

    env_name: ClassVar[str | None] = None

    def _make_core(
        self, env_name: str | None, distribution: str, num_envs: int, device: str | None, config: Any, overrides: dict
    ) -> Core:
        from envs import make_core
        from envs.config import load_env_config

        name = env_name or type(self).env_name
        if name is None:
            raise TypeError(f"{type(self).__name__} needs env_name=<a registered env>")
        if config is not None and overrides:
            raise TypeError(f"pass either config= or keyword overrides, not both (got {sorted(overrides)})")
        cfg = config if config is not None else load_env_config(name, overrides)
        if cfg.name != name:
            raise ValueError(f"config= is a {cfg.name!r} config, not one of {name!r}")
        return make_core(cfg, distribution, num_envs=num_envs, device=device)


class CoreEnv(_CoreView, gym.Env):
    """A batched core of one env as a standard single gymnasium environment.

    Keyword arguments other than ``distribution``, ``render_mode``, ``device``, ``config`` and
    ``env_name`` are overrides of the env's YAML preset. ``reset(options={"level": i})`` starts on level ``i``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": RENDER_MODES, "render_fps": 8}

    def __init__(
        self,
        distribution: str = "train",
        render_mode: str | None = None,
        device: str = "cpu",
        config: Any = None,
        env_name: str | None = None,
        **overrides: Any,
    ) -> None:
        _check_render_mode(render_mode)
        self.core = self._make_core(env_name, distribution, 1, device, config, overrides)
        self.render_mode = render_mode
        self.observation_space = _observation_space(self.core)
        self.action_space = spaces.Discrete(self.core.num_actions)
        self._ended = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        level = None if not options or "level" not in options else torch.tensor([int(options["level"])])
        obs = self.core.reset(seed=int(self.np_random.integers(2**62)), level_ids=level)
        self._ended = False
        return obs[0].cpu().numpy(), {"level": int(self.core.level[0])}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        _check_actions(np.asarray(action), self.core.num_actions)
        result = self.core.step(torch.as_tensor([int(action)], device=self.core.device))
        self._ended = bool(result.done[0])
        obs = self.core.final_obs() if self._ended else result.obs
        info = {key: value[0].item() for key, value in result.info.items()}
        reward, terminated, truncated = float(result.reward[0]), bool(result.terminated[0]), bool(result.truncated[0])
        return obs[0].cpu().numpy(), reward, terminated, truncated, info

    def render(self) -> np.ndarray | str | None:
        if self.render_mode == "rgb_array":
            return self.core.render_rgb(0, final=self._ended).cpu().numpy()
        if self.render_mode == "ansi":
            return self.core.render_ansi(0, final=self._ended)
        return None


class CoreVectorEnv(_CoreView, gym.vector.VectorEnv):
    """``num_envs`` envs of one batched core as a gymnasium ``VectorEnv``.

    ``reset(options={"level": [i0, i1, ...]})`` starts env k on level ``i_k`` (a single int: all
    envs on that level). ``reset(seed=[...])`` seeds with the first seed: one core has one generator.
    Actions may be a numpy array or a tensor; observations and infos come back as numpy arrays.
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
        config: Any = None,
        env_name: str | None = None,
        **overrides: Any,
    ) -> None:
        _check_render_mode(render_mode)
        self.core = self._make_core(env_name, distribution, num_envs, device, config, overrides)
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
            seed = seed[0]
        super().reset(seed=seed)
        level = None if not options or "level" not in options else torch.as_tensor(options["level"])
        obs = self.core.reset(seed=int(self.np_random.integers(2**62)), level_ids=level)
        self._ended = np.zeros(self.num_envs, dtype=bool)
        return obs.cpu().numpy(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        host = actions.cpu().numpy() if torch.is_tensor(actions) else np.asarray(actions)
        _check_actions(host, self.core.num_actions)
        result = self.core.step(torch.as_tensor(host, dtype=torch.long, device=self.core.device))
        done = result.done.cpu().numpy().copy()
        self._ended = done
        infos: dict[str, Any] = {}
        if done.any():
            final_obs = self.core.final_obs().cpu().numpy()
            objects = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                objects[i] = final_obs[i].copy()
            infos["final_obs"], infos["_final_obs"] = objects, done.copy()
            final_info: dict[str, np.ndarray] = {}
            for key, value in result.info.items():
                final_info[key], final_info["_" + key] = value.cpu().numpy().copy(), done.copy()
            infos["final_info"], infos["_final_info"] = final_info, done.copy()
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
