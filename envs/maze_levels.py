"""Level sets of the arrow maze: pre-generated banks of levels on the canvas, as tensors.

A level is a perfect maze placed on the ``S x S`` canvas, its exit (the maze end), the green
arrow and the agent's start. Banks are generated on the CPU from ``(level_seed, distribution)``,
so the same config gives the same levels on any device, then moved to the core's device once.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import torch

from envs.config import ArrowMazeConfig, ConfigError
from envs.grid import Canvas
from envs.layout import END, TensorBatch, place_on_canvas, time_limit_setting, time_limits
from envs.level_random import ARROW, ARROW_RANDOM, SIZE_H, SIZE_W, START, LevelRandom
from envs.maze_gen import generate_mazes


@dataclass
class MazeLevels(TensorBatch):
    """A bank of N arrow-maze levels. Positions are padded flat indices (see ``envs.grid``)."""

    tiles: torch.Tensor  # (N, S, S) uint8: FLOOR / WALL / END (outside the maze is FLOOR, impassable)
    blocked: torch.Tensor  # (N, (S+2)^2) bool: not walkable (walls, outside the maze, the border)
    start: torch.Tensor  # (N,) int64
    end: torch.Tensor  # (N,) int64: the exit tile in the outer wall
    arrow: torch.Tensor  # (N,) int64
    max_steps: torch.Tensor  # (N,) int64 time limit
    size: torch.Tensor  # (N, 2) int64 maze height and width in cells
    start_distance: torch.Tensor  # (N,) int64 shortest path from start to end, in moves

    @property
    def arrow_on_end(self) -> torch.Tensor:
        return self.arrow == self.end


def distribution_seed(level_seed: int, distribution: str) -> int:
    """Seed of one distribution's level set: distinct distributions never share a level stream."""
    return (level_seed * 1_000_003 + zlib.crc32(distribution.encode())) % (2**63)


@dataclass(frozen=True)
class LevelSpec:
    """Everything that shapes a level set (and nothing else, so it is the cache key of banks)."""

    distribution: str
    min_size: int
    max_size: int
    p_arrow_random: float
    num_levels: int
    canvas: int
    placement: str
    min_start_distance: int
    max_steps: int | None
    max_steps_per_cell: float
    seed: int

    @classmethod
    def of(cls, cfg: ArrowMazeConfig, distribution: str) -> LevelSpec:
        dist = cfg.distribution(distribution)
        return cls(
            distribution=distribution,
            min_size=dist.min_size,
            max_size=dist.max_size,
            p_arrow_random=1.0 if dist.arrow_placement == "random" else dist.p_decorrelate,
            num_levels=dist.num_levels,
            canvas=cfg.canvas,
            placement=cfg.placement,
            min_start_distance=cfg.min_start_distance,
            max_steps=cfg.max_steps,
            max_steps_per_cell=cfg.max_steps_per_cell,
            seed=distribution_seed(cfg.level_seed, distribution),
        )


def generate_maze_levels(spec: LevelSpec, num: int | None = None) -> MazeLevels:
    """The first ``num`` (default: all ``spec.num_levels``) levels of a level set, on the CPU.

    Level ``i`` is the same whatever ``num`` is, so level sets of different sizes are nested.
    """
    num = spec.num_levels if num is None else num
    return generate_maze_levels_by_id(spec, torch.arange(num))


def generate_maze_levels_by_id(spec: LevelSpec, ids: torch.Tensor) -> MazeLevels:
    """Levels ``ids`` of the level stream of ``spec`` (each depends only on its own id), on the CPU."""
    num = ids.shape[0]
    canvas = Canvas(spec.canvas)
    rand = LevelRandom(spec.seed, ids)
    heights = rand.integers(spec.min_size, spec.max_size + 1, SIZE_H)
    widths = rand.integers(spec.min_size, spec.max_size + 1, SIZE_W)
    mazes = generate_mazes(heights, widths, rand)
    open_tiles = mazes.open_tiles()  # (N, 2H+1, 2W+1), maze tile grid
    cells = mazes.cell_mask()
    cell_dist = mazes.cell_distances()
    # A cell at tree distance d from the exit cell is 2d + 1 moves from the exit tile.
    move_dist = 2 * cell_dist + 1
    rows = torch.arange(num)

    # Start: a uniformly random cell at least min_start_distance moves from the exit.
    eligible = cells & (move_dist >= spec.min_start_distance)
    if not bool(eligible.flatten(1).any(1).all()):
        worst = int(move_dist.flatten(1).max(1).values.min())
        raise ConfigError(
            f"min_start_distance={spec.min_start_distance} is impossible for distribution "
            f"{spec.distribution!r}: some of its mazes have no cell farther than {worst} moves from the exit"
        )
    start_cell = rand.choice(eligible, START)
    start_dist = move_dist.flatten(1)[rows, start_cell]

    # Arrow: on the exit, or on a uniformly random cell other than the start.
    arrow_random = rand.uniform(ARROW_RANDOM) < spec.p_arrow_random
    not_start = cells.flatten(1).clone()
    not_start[rows, start_cell] = False
    if bool((arrow_random & ~not_start.any(1)).any()):
        raise ConfigError(
            f"distribution {spec.distribution!r} places arrows at random but min_size={spec.min_size} allows "
            "1-cell mazes, which have no cell for the arrow besides the start; use min_size >= 2"
        )
    arrow_cell = rand.choice(not_start.view_as(cells), ARROW)

    placed = place_on_canvas(open_tiles, 2 * heights + 1, 2 * widths + 1, canvas, spec.placement, rand)
    tiles = placed.tiles

    def cell_pos(cell: torch.Tensor) -> torch.Tensor:
        r, c = cell // mazes.max_w, cell % mazes.max_w
        return placed.to_padded(canvas, 2 * r + 1, 2 * c + 1)

    end = placed.to_padded(canvas, mazes.exit_tile[:, 0], mazes.exit_tile[:, 1])
    ey, ex = canvas.to_yx(end)
    tiles[rows, ey, ex] = END
    arrow = torch.where(arrow_random, cell_pos(arrow_cell), end)
    max_steps = time_limits(spec.max_steps, spec.max_steps_per_cell, heights * widths)
    if bool((max_steps < start_dist).any()):
        key = time_limit_setting(spec.max_steps, spec.max_steps_per_cell)
        raise ConfigError(
            f"{key} leaves some levels of {spec.distribution!r} unsolvable: their start is farther from the end "
            "than the time limit allows"
        )
    return MazeLevels(
        tiles=tiles,
        blocked=placed.blocked,
        start=cell_pos(start_cell),
        end=end,
        arrow=arrow,
        max_steps=max_steps,
        size=torch.stack([heights, widths], dim=1),
        start_distance=start_dist,
    )


@functools.lru_cache(maxsize=16)
def level_set(spec: LevelSpec, device: str) -> MazeLevels:
    """The whole level set of ``spec`` on ``device``, generated once per process and shared."""
    return generate_maze_levels(spec).to(device)
