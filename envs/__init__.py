"""misgen environments. Importing this package registers the gymnasium ids below.

Kept light: the registrations name their entry points as strings, so torch and the cores are
imported only when an environment is made.
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

# One explicit table of the suite's environments: config name (``configs/env/<name>.yaml``) ->
# (gymnasium id, module holding its batched core and its two gymnasium views, their class prefix).
ENVIRONMENTS = {
    "arrow_maze": ("misgen/ArrowMaze-v0", "envs.arrow_maze", "ArrowMaze"),
    "keys_chests": ("misgen/KeysChests-v0", "envs.keys_chests", "KeysChests"),
}


def make_core(cfg: Any, distribution: str = "train", num_envs: int = 1, seed: int | None = None, device: Any = None):
    """The batched core of the environment named by ``cfg.name``."""
    import importlib

    if cfg.name not in ENVIRONMENTS:
        raise ValueError(f"env name {cfg.name!r} is not one of {sorted(ENVIRONMENTS)}")
    _, module, prefix = ENVIRONMENTS[cfg.name]
    return getattr(importlib.import_module(module), f"{prefix}Core")(cfg, distribution, num_envs, seed, device)


def gym_id(env_name: str) -> str:
    """The gymnasium id of the environment named ``env_name``."""
    return ENVIRONMENTS[env_name][0]


def _register_all() -> None:
    for env_id, module, prefix in ENVIRONMENTS.values():
        entry_point, vector_entry_point = f"{module}:{prefix}Env", f"{module}:{prefix}VectorEnv"
        existing = registry.get(env_id)
        if existing is not None:
            if existing.entry_point != entry_point:
                raise RuntimeError(f"{env_id} is already registered with entry point {existing.entry_point}")
            continue
        register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point)


_register_all()
