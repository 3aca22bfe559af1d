"""misgen environments. Importing this package registers the built-in envs (``envs.registry``) and
their gymnasium ids.

Kept light: the registrations name cores, views and objectives as import strings, so torch and the
cores are imported only when an environment is made.
"""

from __future__ import annotations

try:
    from configs._ownership import ensure_ours
except ModuleNotFoundError:  # this `configs` is not misgen's: our helper, run from its file, says whose it is
    import os
    import runpy

    helper = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "_ownership.py")
    ensure_ours = runpy.run_path(helper)["ensure_ours"]

ensure_ours(__name__)  # ImportError if a top-level package of ours is another distribution's: configs/_ownership.py

from typing import Any  # noqa: E402

from envs.registry import (  # noqa: E402
    BUILTIN_ENVS,
    EnvSpec,
    env_spec,
    find_env,
    register_env,
    registered_envs,
    resolve,
    unregister_env,
)

__all__ = [
    "BUILTIN_ENVS",
    "EnvSpec",
    "env_spec",
    "find_env",
    "gym_id",
    "make_core",
    "register_env",
    "registered_envs",
    "resolve",
    "unregister_env",
]


def make_core(
    cfg: Any, distribution: str = "train", num_envs: int = 1, seed: int | None = None, device: Any = None
) -> Any:
    """The batched core of the registered env named by ``cfg.name`` (an ``envs.core.GridCore``)."""
    return env_spec(cfg.name).core_class()(cfg, distribution, num_envs, seed, device)


def gym_id(env_name: str) -> str:
    """The gymnasium id of the registered env ``env_name``."""
    return env_spec(env_name).gym_id
