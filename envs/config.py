"""Typed configuration of the environments, loaded from their presets (``configs/env/<name>.yaml``).

The YAML file holds the values (the named distributions are presets there, not in code); these
dataclasses are the schema. Loading merges the file onto the schema with OmegaConf, so an unknown
key or a value of the wrong type fails at once naming the key, and ``validate`` (shared checks in
:class:`GridEnvConfig`, each env adding its own) checks ranges and cross-field constraints
(``ConfigError`` names the field).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Self, TypeVar

BASE_OBJECTIVES = ("end", "arrow")
ARROW_PLACEMENTS = ("on_end", "random")
END_MARKERS = ("none", "tile")
OBS_MODES = ("symbolic", "rgb")
PLACEMENTS = ("random", "center")
LAYOUTS = ("room", "maze")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


# ---------------------------------------------------------------------------- shared
@dataclass
class Distribution:
    """What every named level distribution has: a maze size range and a level-set size."""

    min_size: int = 3
    """Smallest layout side, in cells (each side is drawn independently in [min_size, max_size])."""
    max_size: int = 6
    """Largest layout side, in cells. A layout of n cells is 2n + 1 tiles a side, walls included."""
    num_levels: int = 4096
    """Size of the level set: levels are drawn uniformly from this many pre-generated ones."""

    def validate(self, key: str) -> None:
        check_at_least(f"{key}.min_size", self.min_size, 1)
        if self.max_size < self.min_size:
            raise ConfigError(f"{key}.max_size={self.max_size} is below {key}.min_size={self.min_size}")
        check_at_least(f"{key}.num_levels", self.num_levels, 1)


@dataclass
class GridEnvConfig:
    """Fields every gridworld of the suite shares (each env's schema extends it)."""

    name: str = ""
    num_levels: int = 65536
    """Training knob, used by the ``train`` preset: number of distinct training levels."""
    obs_mode: str = "symbolic"
    """``symbolic``: one-hot channels (C, S, S) uint8; ``rgb``: pixels uint8 (H, W, 3)."""
    step_penalty: float = 0.0
    """Subtracted from the reward on every step."""
    max_steps: int | None = None
    """Time limit; ``null`` scales it with the layout: ``ceil(max_steps_per_cell * cells)``."""
    max_steps_per_cell: float = 4.0
    """Time limit per layout cell when ``max_steps`` is null."""
    canvas_size: int | None = None
    """Observation side in tiles; ``null`` fits the largest layout of any distribution."""
    placement: str = "random"
    """Where a smaller layout sits on the canvas: ``random`` offset or ``center``."""
    rgb_tile_size: int = 4
    """Pixels per tile in ``rgb`` observations."""
    level_seed: int = 0
    """Seed of the level sets (independent of the episode seed, as procgen's ``start_level``)."""
    device: str = "auto"
    """Torch device of the batched core: ``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1``."""

    @property
    def max_maze_size(self) -> int:
        return max(d.max_size for d in self.distributions.values())  # type: ignore[attr-defined]

    @property
    def canvas(self) -> int:
        """Canvas side in tiles (the largest layout's tile grid when not set)."""
        return self.canvas_size if self.canvas_size is not None else 2 * self.max_maze_size + 1

    def distribution(self, name: str) -> Any:
        distributions = self.distributions  # type: ignore[attr-defined]
        if name not in distributions:
            raise ConfigError(
                f"distribution={name!r} is not a distribution of {self.name}; choose one of {sorted(distributions)}"
            )
        return distributions[name]

    def validate(self) -> Self:
        """Raise :class:`ConfigError` naming the first invalid field; return self when valid."""
        check_choice("obs_mode", self.obs_mode, OBS_MODES)
        check_choice("placement", self.placement, PLACEMENTS)
        check_at_least("num_levels", self.num_levels, 1)
        check_at_least("rgb_tile_size", self.rgb_tile_size, 1)
        if self.max_steps is not None:
            check_at_least("max_steps", self.max_steps, 1)
        if not self.max_steps_per_cell > 0:
            raise ConfigError(f"max_steps_per_cell={self.max_steps_per_cell} must be > 0")
        check_finite("step_penalty", self.step_penalty)
        distributions = self.distributions  # type: ignore[attr-defined]
        if not distributions:
            raise ConfigError("distributions is empty: define at least one named distribution")
        for name, dist in distributions.items():
            dist.validate(f"distributions.{name}")
            need = 2 * dist.max_size + 1
            if self.canvas_size is not None and need > self.canvas_size:
                raise ConfigError(
                    f"distributions.{name}.max_size={dist.max_size} needs a {need}x{need} canvas, "
                    f"but canvas_size={self.canvas_size}"
                )
        if self.canvas_size is not None:
            check_at_least("canvas_size", self.canvas_size, 3)
        check_device(self.device)
        return self


# ------------------------------------------------------------------------ arrow maze
@dataclass
class MazeDistribution(Distribution):
    """One named level distribution of the arrow maze."""

    arrow_placement: str = "on_end"
    """``on_end``: the arrow marks the exit; ``random``: on a random cell, never the start."""
    p_decorrelate: float = 0.0
    """With ``on_end``: fraction of levels whose arrow is placed at random instead."""

    def validate(self, key: str) -> None:
        super().validate(key)
        check_choice(f"{key}.arrow_placement", self.arrow_placement, ARROW_PLACEMENTS)
        check_probability(f"{key}.p_decorrelate", self.p_decorrelate)


@dataclass
class ArrowMazeConfig(GridEnvConfig):
    """Arrow maze: a perfect maze with an exit in its outer wall and a green arrow on a cell."""

    name: str = "arrow_maze"
    distributions: dict[str, MazeDistribution] = field(default_factory=dict)
    """Named level distributions (presets in the YAML file)."""
    base_objective: str = "end"
    """The rewarded goal: ``end`` (reach the exit) or ``arrow`` (the flipped experiment)."""
    p_decorrelate: float = 0.0
    """Training knob, used by the ``train`` preset: fraction of levels with the arrow off the end."""
    end_marker: str = "none"
    """``none``: the exit is only a gap in the outer wall; ``tile``: it also gets its own channel."""
    min_start_distance: int = 3
    """Minimum shortest-path distance, in moves, from the start to the exit."""

    def validate(self) -> Self:
        check_choice("base_objective", self.base_objective, BASE_OBJECTIVES)
        check_choice("end_marker", self.end_marker, END_MARKERS)
        check_probability("p_decorrelate", self.p_decorrelate)
        check_at_least("min_start_distance", self.min_start_distance, 1)
        return super().validate()


# -------------------------------------------------------------------- keys and chests
@dataclass
class KeysChestsDistribution(Distribution):
    """One named level distribution of keys and chests."""

    min_keys: int = 1
    max_keys: int = 2
    min_chests: int = 3
    max_chests: int = 5

    def validate(self, key: str) -> None:
        super().validate(key)
        check_at_least(f"{key}.min_keys", self.min_keys, 0)
        check_at_least(f"{key}.min_chests", self.min_chests, 1)
        if self.max_keys < self.min_keys:
            raise ConfigError(f"{key}.max_keys={self.max_keys} is below {key}.min_keys={self.min_keys}")
        if self.max_chests < self.min_chests:
            raise ConfigError(f"{key}.max_chests={self.max_chests} is below {key}.min_chests={self.min_chests}")


@dataclass
class KeysChestsConfig(GridEnvConfig):
    """Keys and chests: a key opens one chest; reward per chest opened."""

    name: str = "keys_chests"
    distributions: dict[str, KeysChestsDistribution] = field(default_factory=dict)
    """Named level distributions (presets in the YAML file)."""
    layout: str = "room"
    """``room``: an open room with scattered wall blocks; ``maze``: a perfect maze (no exit)."""
    wall_density: float = 0.15
    """Room layout: probability that an interior tile is a wall block (only the start's component is kept)."""
    hidden_chests: bool = False
    """Also place hidden chests, drawn like the visible ones: not observed, not rewarded, visits recorded."""
    key_penalty: float = 0.0
    """Subtracted from the reward for each key picked up."""

    def validate(self) -> Self:
        check_choice("layout", self.layout, LAYOUTS)
        if not 0.0 <= self.wall_density < 1.0:
            raise ConfigError(f"wall_density={self.wall_density} must be in [0, 1)")
        check_finite("key_penalty", self.key_penalty)
        return super().validate()


# ---------------------------------------------------------------------------- checks
# One set of range checks for every config of the suite (env, agent, run, evaluation): each raises
# ConfigError naming the key, so a bad value fails at start-up the same way wherever it sits.
def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}={value!r} must be a number")
    if value != value or abs(value) == float("inf"):
        raise ConfigError(f"{key}={value} must be finite")
    return value


def check_choice(key: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{key}={value!r} is not one of {list(options)}")


def check_probability(key: str, value: float) -> None:
    if not 0.0 <= _number(key, value) <= 1.0:
        raise ConfigError(f"{key}={value} must be a probability in [0, 1]")


def check_at_least(key: str, value: float, low: float) -> None:
    if _number(key, value) < low:
        raise ConfigError(f"{key}={value} must be >= {low}")


def check_at_most(key: str, value: float, high: float) -> None:
    if _number(key, value) > high:
        raise ConfigError(f"{key}={value} must be <= {high}")


def check_positive(key: str, value: float) -> None:
    if not _number(key, value) > 0:
        raise ConfigError(f"{key}={value} must be > 0")


def check_open_unit(key: str, value: float) -> None:
    """Strictly between 0 and 1 (a confidence level, a discount that must shrink)."""
    if not 0.0 < _number(key, value) < 1.0:
        raise ConfigError(f"{key}={value} must be in (0, 1)")


def check_finite(key: str, value: float) -> None:
    _number(key, value)


def check_device(value: str) -> None:
    if value in ("auto", "cpu", "cuda", "mps") or value.startswith("cuda:"):
        return
    raise ConfigError(f"device={value!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")


# ---------------------------------------------------------------------------- loading
def preset_path(env_name: str) -> Any:
    """Path of the YAML preset file of an environment: its registered ``preset`` path, or
    ``configs/env/<name>.yaml`` of the ``configs`` package (also for a name not registered)."""
    from envs.registry import find_env

    spec = find_env(env_name)
    if spec is not None and isinstance(spec.preset, Mapping):
        raise ConfigError(f"env={env_name!r} has its preset inline (a mapping), not in a file: use load_preset")
    if spec is not None and spec.preset is not None:
        return Path(spec.preset)
    return resources.files("configs") / "env" / f"{env_name}.yaml"


def load_preset(env_name: str) -> Any:
    """The preset values of an environment as an OmegaConf node (interpolations kept): its registered
    ``preset`` (a mapping or a YAML path), else ``configs/env/<name>.yaml``."""
    from omegaconf import OmegaConf

    from envs.registry import find_env

    spec = find_env(env_name)
    if spec is not None and isinstance(spec.preset, Mapping):
        return OmegaConf.create(dict(spec.preset))
    return OmegaConf.load(str(preset_path(env_name)))


C = TypeVar("C", bound=GridEnvConfig)


S = TypeVar("S")


def load_structured(schema: type[S], base: Any, overrides: Mapping[str, Any] | None, label: str) -> S:
    """``schema`` (a dataclass) ← ``base`` ← ``overrides`` through OmegaConf, converted back to the
    dataclass. An unknown key or a value of the wrong type raises :class:`ConfigError` naming it."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), base if base is not None else {})
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.create(dict(overrides)))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        msg = str(getattr(err, "msg", None) or err).strip().splitlines()[0]
        raise ConfigError(f"{label} config, key {key!r}: {msg}" if key else f"{label} config: {msg}") from err
    assert isinstance(cfg, schema)
    return cfg


def load_config(schema: type[C], overrides: Mapping[str, Any] | None = None, base: Any = None) -> C:
    """An env config: ``schema`` ← ``base`` ← ``overrides``, validated.

    ``base`` is a mapping or an OmegaConf node (Hydra's ``cfg.env``); by default the env's preset
    (:func:`load_preset`: ``configs/env/<name>.yaml`` for the built-in envs). ``overrides`` may be flat
    (``{"p_decorrelate": 0.1}``) or nested (``{"distributions": {...}}``). An unknown key or a bad
    value raises :class:`ConfigError` naming it.
    """
    if base is None:
        base = load_preset(schema.name)
    return load_structured(schema, base, overrides, schema.name).validate()


def load_arrow_maze_config(overrides: Mapping[str, Any] | None = None, base: Any = None) -> ArrowMazeConfig:
    """The arrow-maze config (see :func:`load_config`)."""
    return load_config(ArrowMazeConfig, overrides, base)


def load_keys_chests_config(overrides: Mapping[str, Any] | None = None, base: Any = None) -> KeysChestsConfig:
    """The keys-and-chests config (see :func:`load_config`)."""
    return load_config(KeysChestsConfig, overrides, base)


def __getattr__(name: str) -> Any:
    # SCHEMAS: a read-only live view env name -> config schema of the registry (envs.registry).
    if name == "SCHEMAS":
        from envs.registry import RegistryView

        return RegistryView(lambda spec: spec.config)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_env_config(name: str, overrides: Mapping[str, Any] | None = None, base: Any = None) -> GridEnvConfig:
    """The config of the registered environment ``name`` (see :func:`load_config`); an unknown name
    raises :class:`ConfigError` listing the known ones."""
    from envs.registry import env_spec

    return load_config(env_spec(name).config, overrides, base)


def config_to_dict(cfg: GridEnvConfig) -> dict[str, Any]:
    """Plain-dict form (for env specs, checkpoints and reports)."""
    return dataclasses.asdict(cfg)
