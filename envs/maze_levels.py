"""Level sets of the arrow maze: pre-generated banks of levels on the canvas, as tensors.

A level is a perfect maze placed on the ``S x S`` canvas, its exit (the maze end), the green
arrow and the agent's start. Banks are generated on the CPU from ``(level_seed, distribution)``,
so the same config gives the same levels on any device, then moved to the core's device once.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, fields

import torch

from envs.config import ArrowMazeConfig, ConfigError
from envs.grid import Canvas
from envs.maze_gen import generate_mazes

# Tile kinds of the static map (what is under the agent and the arrow).
FLOOR, WALL, END = 0, 1, 2


@dataclass
class MazeLevels:
    """A bank of N arrow-maze levels. Positions are padded flat indices (see ``envs.grid``)."""

    tiles: torch.Tensor  # (N, S, S) uint8: FLOOR / WALL / END (outside the maze is FLOOR, impassable)
    blocked: torch.Tensor  # (N, (S+2)^2) bool: not walkable (walls, outside the maze, the border)
    start: torch.Tensor  # (N,) int64
    end: torch.Tensor  # (N,) int64: the exit tile in the outer wall
    arrow: torch.Tensor  # (N,) int64
    max_steps: torch.Tensor  # (N,) int64 time limit
    size: torch.Tensor  # (N, 2) int64 maze height and width in cells
    start_distance: torch.Tensor  # (N,) int64 shortest path from start to end, in moves

    def __len__(self) -> int:
        return self.start.shape[0]

    @property
    def arrow_on_end(self) -> torch.Tensor:
        return self.arrow == self.end

    def to(self, device: torch.device | str) -> MazeLevels:
        return MazeLevels(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def subset(self, index: torch.Tensor) -> MazeLevels:
        return MazeLevels(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


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
    """The first ``num`` (default: all ``spec.num_levels``) levels of a level set, on the CPU."""
    num = spec.num_levels if num is None else num
    canvas = Canvas(spec.canvas)
    g = torch.Generator().manual_seed(spec.seed)
    heights = torch.randint(spec.min_size, spec.max_size + 1, (num,), generator=g)
    widths = torch.randint(spec.min_size, spec.max_size + 1, (num,), generator=g)
    mazes = generate_mazes(heights, widths, g)
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
    start_cell = _uniform_choice(eligible.flatten(1), g)
    start_dist = move_dist.flatten(1)[rows, start_cell]

    # Arrow: on the exit, or on a uniformly random cell other than the start.
    arrow_random = torch.rand(num, generator=g) < spec.p_arrow_random
    not_start = cells.flatten(1).clone()
    not_start[rows, start_cell] = False
    if bool((arrow_random & ~not_start.any(1)).any()):
        raise ConfigError(
            f"distribution {spec.distribution!r} places arrows at random but min_size={spec.min_size} allows "
            "1-cell mazes, which have no cell for the arrow besides the start; use min_size >= 2"
        )
    arrow_cell = _uniform_choice(not_start, g)

    # Placement of the maze's tile grid on the canvas.
    th, tw = 2 * heights + 1, 2 * widths + 1
    room_y, room_x = canvas.size - th, canvas.size - tw
    if spec.placement == "center":
        oy, ox = room_y // 2, room_x // 2
    else:
        oy = (torch.rand(num, generator=g) * (room_y + 1)).long().clamp_max(room_y)
        ox = (torch.rand(num, generator=g) * (room_x + 1)).long().clamp_max(room_x)

    # Static map on the canvas: gather each canvas tile from the maze grid.
    ys = torch.arange(canvas.size)[None, :, None] - oy[:, None, None]
    xs = torch.arange(canvas.size)[None, None, :] - ox[:, None, None]
    inside = (ys >= 0) & (ys < th[:, None, None]) & (xs >= 0) & (xs < tw[:, None, None])
    gy = ys.clamp(0, open_tiles.shape[1] - 1)
    gx = xs.clamp(0, open_tiles.shape[2] - 1)
    walkable = inside & open_tiles[rows[:, None, None], gy, gx]
    tiles = torch.where(inside & ~walkable, WALL, FLOOR).to(torch.uint8)

    def cell_pos(cell: torch.Tensor) -> torch.Tensor:
        r, c = cell // mazes.max_w, cell % mazes.max_w
        return canvas.to_padded(oy + 2 * r + 1, ox + 2 * c + 1)

    end = canvas.to_padded(oy + mazes.exit_tile[:, 0], ox + mazes.exit_tile[:, 1])
    ey, ex = canvas.to_yx(end)
    tiles[rows, ey, ex] = END
    arrow = torch.where(arrow_random, cell_pos(arrow_cell), end)
    if spec.max_steps is not None:
        max_steps = torch.full((num,), spec.max_steps, dtype=torch.long)
    else:
        max_steps = torch.ceil(spec.max_steps_per_cell * (heights * widths).double()).long()
    return MazeLevels(
        tiles=tiles,
        blocked=canvas.pad(~walkable, value=True),
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


def _uniform_choice(mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per row, a uniformly random column index among the True entries of ``mask`` (N, K)."""
    scores = torch.rand(mask.shape, generator=g)
    return torch.where(mask, scores, -1.0).argmax(dim=1)
