"""Typed configuration of the arrow maze, loaded from ``configs/env/arrow_maze.yaml``.

The YAML file holds the values (the named distributions are presets there, not in code); these
dataclasses are the schema. Loading merges the file onto the schema with OmegaConf, so an unknown
key or a value of the wrong type fails at once naming the key, and :meth:`ArrowMazeConfig.validate`
checks ranges and cross-field constraints (``ConfigError`` names the field).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

BASE_OBJECTIVES = ("end", "arrow")
ARROW_PLACEMENTS = ("on_end", "random")
END_MARKERS = ("none", "tile")
OBS_MODES = ("symbolic", "rgb")
PLACEMENTS = ("random", "center")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass
class MazeDistribution:
    """One named level distribution of the arrow maze."""

    min_size: int = 3
    """Smallest maze side, in cells (each side is drawn independently in [min_size, max_size])."""
    max_size: int = 6
    """Largest maze side, in cells."""
    arrow_placement: str = "on_end"
    """``on_end``: the arrow marks the exit; ``random``: on a random cell, never the start."""
    p_decorrelate: float = 0.0
    """With ``on_end``: fraction of levels whose arrow is placed at random instead."""
    num_levels: int = 4096
    """Size of the level set: levels are drawn uniformly from this many pre-generated ones."""


@dataclass
class ArrowMazeConfig:
    """Arrow maze: a perfect maze with an exit in its outer wall and a green arrow on a cell."""

    name: str = "arrow_maze"
    distributions: dict[str, MazeDistribution] = field(default_factory=dict)
    """Named level distributions (presets in the YAML file)."""
    base_objective: str = "end"
    """The rewarded goal: ``end`` (reach the exit) or ``arrow`` (the flipped experiment)."""
    p_decorrelate: float = 0.0
    """Training knob, used by the ``train`` preset: fraction of levels with the arrow off the end."""
    num_levels: int = 65536
    """Training knob, used by the ``train`` preset: number of distinct training levels."""
    end_marker: str = "none"
    """``none``: the exit is only a gap in the outer wall; ``tile``: it also gets its own channel."""
    obs_mode: str = "symbolic"
    """``symbolic``: one-hot channels (C, S, S) uint8; ``rgb``: pixels (S*t, S*t, 3) uint8."""
    step_penalty: float = 0.0
    """Subtracted from the reward on every step."""
    max_steps: int | None = None
    """Time limit; ``null`` scales it with the maze: ``ceil(max_steps_per_cell * cells)``."""
    max_steps_per_cell: float = 4.0
    """Time limit per maze cell when ``max_steps`` is null."""
    min_start_distance: int = 3
    """Minimum shortest-path distance, in moves, from the start to the exit."""
    canvas_size: int | None = None
    """Observation side in tiles; ``null`` fits the largest maze of any distribution."""
    placement: str = "random"
    """Where a smaller maze sits on the canvas: ``random`` offset or ``center``."""
    rgb_tile_size: int = 4
    """Pixels per tile in ``rgb`` observations."""
    level_seed: int = 0
    """Seed of the level sets (independent of the episode seed, as procgen's ``start_level``)."""
    device: str = "auto"
    """Torch device of the batched core: ``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1``."""

    # ------------------------------------------------------------------ derived
    @property
    def max_maze_size(self) -> int:
        return max(d.max_size for d in self.distributions.values())

    @property
    def canvas(self) -> int:
        """Canvas side in tiles (the largest maze's tile grid when not set)."""
        return self.canvas_size if self.canvas_size is not None else 2 * self.max_maze_size + 1

    def distribution(self, name: str) -> MazeDistribution:
        if name not in self.distributions:
            raise ConfigError(
                f"distribution={name!r} is not a distribution of {self.name}; "
                f"choose one of {sorted(self.distributions)}"
            )
        return self.distributions[name]

    # --------------------------------------------------------------- validation
    def validate(self) -> ArrowMazeConfig:
        """Raise :class:`ConfigError` naming the first invalid field; return self when valid."""
        _choice("base_objective", self.base_objective, BASE_OBJECTIVES)
        _choice("end_marker", self.end_marker, END_MARKERS)
        _choice("obs_mode", self.obs_mode, OBS_MODES)
        _choice("placement", self.placement, PLACEMENTS)
        _probability("p_decorrelate", self.p_decorrelate)
        _at_least("num_levels", self.num_levels, 1)
        _at_least("min_start_distance", self.min_start_distance, 1)
        _at_least("rgb_tile_size", self.rgb_tile_size, 1)
        if self.max_steps is not None:
            _at_least("max_steps", self.max_steps, 1)
        if not self.max_steps_per_cell > 0:
            raise ConfigError(f"max_steps_per_cell={self.max_steps_per_cell} must be > 0")
        if self.step_penalty != self.step_penalty or abs(self.step_penalty) == float("inf"):
            raise ConfigError(f"step_penalty={self.step_penalty} must be finite")
        if not self.distributions:
            raise ConfigError("distributions is empty: define at least one named distribution")
        for name, dist in self.distributions.items():
            key = f"distributions.{name}"
            _at_least(f"{key}.min_size", dist.min_size, 1)
            if dist.max_size < dist.min_size:
                raise ConfigError(f"{key}.max_size={dist.max_size} is below {key}.min_size={dist.min_size}")
            _choice(f"{key}.arrow_placement", dist.arrow_placement, ARROW_PLACEMENTS)
            _probability(f"{key}.p_decorrelate", dist.p_decorrelate)
            _at_least(f"{key}.num_levels", dist.num_levels, 1)
            need = 2 * dist.max_size + 1
            if self.canvas_size is not None and need > self.canvas_size:
                raise ConfigError(
                    f"{key}.max_size={dist.max_size} needs a {need}x{need} canvas, but canvas_size={self.canvas_size}"
                )
        if self.canvas_size is not None:
            _at_least("canvas_size", self.canvas_size, 3)
        _device(self.device)
        return self


def _choice(key: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{key}={value!r} is not one of {list(options)}")


def _probability(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key}={value} must be a probability in [0, 1]")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{key}={value} must be >= {low}")


def _device(value: str) -> None:
    if value == "auto" or value == "cpu" or value == "cuda" or value.startswith("cuda:") or value == "mps":
        return
    raise ConfigError(f"device={value!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")


def preset_path(env_name: str) -> Any:
    """Path of the YAML preset file of an environment in the ``configs`` package."""
    return resources.files("configs") / "env" / f"{env_name}.yaml"


def load_arrow_maze_config(overrides: Mapping[str, Any] | None = None, base: Any = None) -> ArrowMazeConfig:
    """The arrow-maze config: schema ← ``base`` ← ``overrides``, validated.

    ``base`` is a mapping or an OmegaConf node (Hydra's ``cfg.env``); by default the preset file
    ``configs/env/arrow_maze.yaml``. ``overrides`` may be flat (``{"p_decorrelate": 0.1}``) or nested
    (``{"distributions": {...}}``). An unknown key or a bad value raises :class:`ConfigError` naming it.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.structured(ArrowMazeConfig)
    try:
        if base is None:
            base = OmegaConf.load(str(preset_path("arrow_maze")))
        merged = OmegaConf.merge(schema, base)
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.create(dict(overrides)))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"arrow_maze config: {err}") from err
    assert isinstance(cfg, ArrowMazeConfig)
    return cfg.validate()


def config_to_dict(cfg: ArrowMazeConfig) -> dict[str, Any]:
    """Plain-dict form (for env specs, checkpoints and reports)."""
    return dataclasses.asdict(cfg)
