"""The one registration of each environment: everything the rest of the suite reads about it.

An :class:`EnvSpec` names the env's config name, gymnasium id, batched core, config schema, candidate
objectives, preset, gymnasium views and what the demo shows of it. :func:`register_env` adds one (and
its gymnasium id); ``make_core``, ``load_env_config``, ``objectives_of``, ``gym_id``, the gymnasium
registration and the demo all read this registry, so adding an env is writing its core, schema and
objectives and one ``register_env`` call. The built-in envs are :data:`BUILTIN_ENVS`.

Kept light (no torch): the core, objectives, views and demo display are import strings
(``"module:attr"``, or the object itself), resolved only when used. Objectives and demo displays live
above ``envs`` (``analysis``, ``experiments``), which resolve them; ``envs`` never imports them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.config import ArrowMazeConfig, ConfigError, GridEnvConfig, KeysChestsConfig

Ref = str | Callable[..., Any]
"""An import string ``"package.module:attr"`` or the object itself."""

GENERIC_ENV = "envs.gym_views:CoreEnv"
GENERIC_VECTOR_ENV = "envs.gym_views:CoreVectorEnv"


@dataclass(frozen=True)
class EnvSpec:
    """Everything the suite needs to know about one environment."""

    name: str
    """Config name: ``cfg.name`` of its configs (what ``make_core`` dispatches on), ``env=<name>``."""
    gym_id: str
    """Its gymnasium id, e.g. ``misgen/ArrowMaze-v0``."""
    core: Ref
    """The batched core class (a ``GridCore``), called ``(cfg, distribution, num_envs, seed, device)``."""
    config: type[GridEnvConfig]
    """The config schema (a dataclass extending ``GridEnvConfig`` whose ``name`` defaults to :attr:`name`)."""
    objectives: Ref
    """The candidate objectives class, called ``(env_cfg, gamma)`` (``analysis.objectives.Objectives``)."""
    preset: str | Path | Mapping[str, Any] | None = None
    """The config's values: a YAML path, or a mapping; ``None``: ``configs/env/<name>.yaml`` of the package."""
    env: Ref | None = None
    """Gymnasium entry point of the single env; ``None``: ``envs.gym_views.CoreEnv`` with ``env_name``."""
    vector_env: Ref | None = None
    """Gymnasium vector entry point; ``None``: ``envs.gym_views.CoreVectorEnv`` with ``env_name``."""
    demo: Ref | None = None
    """What ``experiments.levels`` shows beyond level sheets (its ``DemoDisplay``); ``None``: sheets only."""

    def __post_init__(self) -> None:
        schema_name = getattr(self.config, "name", None)
        if schema_name != self.name:
            raise ValueError(f"env {self.name!r}: its config schema {self.config.__name__} has name={schema_name!r}")

    def core_class(self) -> Callable[..., Any]:
        """The batched core class (imported on first use)."""
        return resolve(self.core)

    def gym_entry_points(self) -> tuple[Ref, Ref, dict[str, Any]]:
        """``(entry_point, vector_entry_point, kwargs)`` of the gymnasium registration (the generic views
        are told the env by ``env_name``)."""
        env = self.env if self.env is not None else GENERIC_ENV
        vector_env = self.vector_env if self.vector_env is not None else GENERIC_VECTOR_ENV
        generic = env == GENERIC_ENV or vector_env == GENERIC_VECTOR_ENV
        return env, vector_env, {"env_name": self.name} if generic else {}


def resolve(ref: Ref) -> Any:
    """The object an import string ``"package.module:attr"`` names (any other object: itself)."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    if not attr:
        raise ValueError(f"{ref!r} is not an import string 'package.module:attr'")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


_REGISTRY: dict[str, EnvSpec] = {}


def register_env(spec: EnvSpec) -> EnvSpec:
    """Add ``spec`` to the registry and its gymnasium id to gymnasium's. A name or gymnasium id that is
    already registered raises ``ValueError`` (gymnasium's own registration of the same entry points, as
    left by a module reload, is reused)."""
    from gymnasium.envs.registration import register, registry

    if spec.name in _REGISTRY:
        raise ValueError(f"env {spec.name!r} is already registered ({_REGISTRY[spec.name].gym_id})")
    taken = next((s.name for s in _REGISTRY.values() if s.gym_id == spec.gym_id), None)
    if taken is not None:
        raise ValueError(f"gymnasium id {spec.gym_id!r} is already registered, by env {taken!r}")
    entry_point, vector_entry_point, kwargs = spec.gym_entry_points()
    existing = registry.get(spec.gym_id)
    if existing is None:
        register(id=spec.gym_id, entry_point=entry_point, vector_entry_point=vector_entry_point, kwargs=kwargs)
    elif (existing.entry_point, existing.vector_entry_point, existing.kwargs) != (
        entry_point,
        vector_entry_point,
        kwargs,
    ):
        raise ValueError(f"gymnasium id {spec.gym_id!r} is already registered with entry point {existing.entry_point}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_env(name: str) -> None:
    """Remove a registered env and its gymnasium id (for tests and plugins that register their own)."""
    from gymnasium.envs.registration import registry

    spec = env_spec(name)
    del _REGISTRY[name]
    registry.pop(spec.gym_id, None)


def env_spec(name: str) -> EnvSpec:
    """The registration of env ``name``; an unknown name raises ``ConfigError`` listing the known ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"env={name!r} is not one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def find_env(name: str) -> EnvSpec | None:
    """The registration of env ``name``, or ``None`` if there is none."""
    return _REGISTRY.get(name)


def registered_envs() -> tuple[EnvSpec, ...]:
    """Every registered env, in registration order."""
    return tuple(_REGISTRY.values())


class RegistryView(Mapping[str, Any]):
    """A read-only, live mapping env name -> ``field(spec)`` (the old per-module tables, e.g.
    ``envs.config.SCHEMAS``)."""

    def __init__(self, field: Callable[[EnvSpec], Any]) -> None:
        self._field = field

    def __getitem__(self, name: str) -> Any:
        if name not in _REGISTRY:
            raise KeyError(name)
        return self._field(_REGISTRY[name])

    def __iter__(self) -> Iterator[str]:
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)


# The built-in environments: the one place they are registered.
BUILTIN_ENVS = (
    EnvSpec(
        name="arrow_maze",
        gym_id="misgen/ArrowMaze-v0",
        core="envs.arrow_maze:ArrowMazeCore",
        config=ArrowMazeConfig,
        objectives="analysis.objectives:ArrowMazeObjectives",
        env="envs.arrow_maze:ArrowMazeEnv",
        vector_env="envs.arrow_maze:ArrowMazeVectorEnv",
        demo="experiments.levels:ARROW_MAZE_DISPLAY",
    ),
    EnvSpec(
        name="keys_chests",
        gym_id="misgen/KeysChests-v0",
        core="envs.keys_chests:KeysChestsCore",
        config=KeysChestsConfig,
        objectives="analysis.objectives:KeysChestsObjectives",
        env="envs.keys_chests:KeysChestsEnv",
        vector_env="envs.keys_chests:KeysChestsVectorEnv",
        demo="experiments.levels:KEYS_CHESTS_DISPLAY",
    ),
)
for _spec in BUILTIN_ENVS:
    register_env(_spec)
