"""Level sets of keys and chests: rooms or mazes holding keys, chests and (optionally) hidden chests.

Every placed object is reachable from the start: a room keeps only the connected component of its
start, and a maze is connected by construction. Objects occupy distinct walkable tiles. A level
with ``k`` keys and ``c`` chests lets ``min(k, c)`` chests be opened (``openable``).
Like the arrow maze's, levels are generated on the CPU from counter-based randomness, so level ``i``
depends only on ``(level_seed, distribution, i)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from envs.config import ConfigError, KeysChestsConfig
from envs.grid import Canvas, bfs_distances
from envs.layout import TensorBatch, place_on_canvas, time_limit_setting, time_limits
from envs.level_random import (
    COUNT_CHESTS,
    COUNT_HIDDEN,
    COUNT_KEYS,
    OBJECTS,
    ROOM_BLOCKS,
    ROOM_SOURCE,
    SIZE_H,
    SIZE_W,
    LevelRandom,
)
from envs.maze_gen import generate_mazes
from envs.maze_levels import distribution_seed

# Padded flat index of a missing object slot: the blocked corner of the padded grid, which the
# agent never occupies and which maps to a canvas tile no object is ever on.
NO_OBJECT = 0
# Attempts at drawing a room whose start component holds every object, before giving up.
ROOM_ATTEMPTS = 64


@dataclass
class KeysChestsLevels(TensorBatch):
    """A bank of N keys-and-chests levels. Positions are padded flat indices (see ``envs.grid``)."""

    tiles: torch.Tensor  # (N, S, S) uint8 FLOOR / WALL
    blocked: torch.Tensor  # (N, (S+2)^2) bool
    start: torch.Tensor  # (N,)
    keys: torch.Tensor  # (N, K) positions, NO_OBJECT beyond num_keys
    chests: torch.Tensor  # (N, C)
    hidden: torch.Tensor  # (N, H), H = 0 without hidden chests
    num_keys: torch.Tensor  # (N,)
    num_chests: torch.Tensor  # (N,)
    num_hidden: torch.Tensor  # (N,)
    max_steps: torch.Tensor  # (N,)
    size: torch.Tensor  # (N, 2) layout height and width in cells

    @property
    def openable(self) -> torch.Tensor:
        """Chests that can be opened: one per key."""
        return torch.minimum(self.num_keys, self.num_chests)


@dataclass(frozen=True)
class KeysChestsSpec:
    """Everything that shapes a keys-and-chests level set (the cache key of banks)."""

    distribution: str
    min_size: int
    max_size: int
    min_keys: int
    max_keys: int
    min_chests: int
    max_chests: int
    hidden_chests: bool
    num_levels: int
    layout: str
    wall_density: float
    canvas: int
    placement: str
    max_steps: int | None
    max_steps_per_cell: float
    seed: int

    @classmethod
    def of(cls, cfg: KeysChestsConfig, distribution: str) -> KeysChestsSpec:
        d = cfg.distribution(distribution)
        return cls(
            distribution=distribution,
            min_size=d.min_size,
            max_size=d.max_size,
            min_keys=d.min_keys,
            max_keys=d.max_keys,
            min_chests=d.min_chests,
            max_chests=d.max_chests,
            hidden_chests=cfg.hidden_chests,
            num_levels=d.num_levels,
            layout=cfg.layout,
            wall_density=cfg.wall_density,
            canvas=cfg.canvas,
            placement=cfg.placement,
            max_steps=cfg.max_steps,
            max_steps_per_cell=cfg.max_steps_per_cell,
            seed=distribution_seed(cfg.level_seed, distribution),
        )

    @property
    def max_hidden(self) -> int:
        return self.max_chests if self.hidden_chests else 0

    @property
    def max_objects(self) -> int:
        """Tiles a level may need: every key, chest and hidden chest, and the start."""
        return self.max_keys + self.max_chests + self.max_hidden + 1

    def check_room(self) -> None:
        """Raise if the smallest layout cannot hold the most objects at all."""
        n = self.min_size
        free = (2 * n - 1) ** 2 if self.layout == "room" else 2 * n * n - 1
        if self.max_objects > free:
            raise ConfigError(
                f"distribution {self.distribution!r} may place {self.max_objects} objects (max_keys={self.max_keys}, "
                f"max_chests={self.max_chests}, hidden chests {'on' if self.hidden_chests else 'off'}, the start) "
                f"but a {self.layout} of min_size={n} has only {free} free tiles"
            )


def generate_keys_chests_levels(spec: KeysChestsSpec, num: int | None = None) -> KeysChestsLevels:
    """The first ``num`` (default: all) levels of the set; sets of different sizes are nested."""
    return generate_keys_chests_levels_by_id(spec, torch.arange(spec.num_levels if num is None else num))


def generate_keys_chests_levels_by_id(spec: KeysChestsSpec, ids: torch.Tensor) -> KeysChestsLevels:
    """Levels ``ids`` of the level stream of ``spec``, on the CPU."""
    spec.check_room()
    num = ids.shape[0]
    canvas = Canvas(spec.canvas)
    rand = LevelRandom(spec.seed, ids)
    heights = rand.integers(spec.min_size, spec.max_size + 1, SIZE_H)
    widths = rand.integers(spec.min_size, spec.max_size + 1, SIZE_W)
    if spec.layout == "maze":
        walkable = generate_mazes(heights, widths, rand).open_tiles(include_exit=False)
    else:
        walkable = _rooms(heights, widths, spec, rand)
    # Objects on distinct walkable tiles, in slot order: keys, chests, hidden chests, start.
    slots = rand.distinct(walkable, spec.max_objects, OBJECTS)
    num_keys = rand.integers(spec.min_keys, spec.max_keys + 1, COUNT_KEYS)
    num_chests = rand.integers(spec.min_chests, spec.max_chests + 1, COUNT_CHESTS)
    num_hidden = (
        rand.integers(spec.min_chests, spec.max_chests + 1, COUNT_HIDDEN)
        if spec.hidden_chests
        else torch.zeros(num, dtype=torch.long)
    )
    placed = place_on_canvas(walkable, 2 * heights + 1, 2 * widths + 1, canvas, spec.placement, rand)
    width = walkable.shape[2]
    pos = placed.to_padded(canvas, slots // width, slots % width)

    def group(first: int, count: int, present: torch.Tensor) -> torch.Tensor:
        part = pos[:, first : first + count]
        return torch.where(torch.arange(count)[None, :] < present[:, None], part, NO_OBJECT)

    k, c = spec.max_keys, spec.max_chests
    levels = KeysChestsLevels(
        tiles=placed.tiles,
        blocked=placed.blocked,
        start=pos[:, -1],
        keys=group(0, k, num_keys),
        chests=group(k, c, num_chests),
        hidden=group(k + c, spec.max_hidden, num_hidden),
        num_keys=num_keys,
        num_chests=num_chests,
        num_hidden=num_hidden,
        max_steps=time_limits(spec.max_steps, spec.max_steps_per_cell, heights * widths),
        size=torch.stack([heights, widths], dim=1),
    )
    _check_time_limits(levels, spec, canvas)
    return levels


def object_mask(positions: torch.Tensor, present: torch.Tensor, num_padded: int) -> torch.Tensor:
    """``(N, P)`` bool: the padded tiles of the present objects (``positions``, ``present``: ``(N, K)``)."""
    mask = torch.zeros((positions.shape[0], num_padded), dtype=torch.bool, device=positions.device)
    mask.scatter_(1, positions, present)
    mask[:, NO_OBJECT] = False  # where missing slots point
    return mask


def _check_time_limits(levels: KeysChestsLevels, spec: KeysChestsSpec, canvas: Canvas) -> None:
    """Raise if a level's time limit is below a lower bound on opening its first chest: walk to
    the nearest key, then from a key to the chest nearest any key."""
    keys = object_mask(levels.keys, levels.keys != NO_OBJECT, canvas.num_padded)
    to_key = bfs_distances(levels.blocked, keys, canvas.padded)  # distance to the nearest key
    has_key = levels.num_keys > 0
    first_key = to_key.gather(1, levels.start[:, None])[:, 0]
    chest_dist = to_key.gather(1, levels.chests).masked_fill(levels.chests == NO_OBJECT, 2**40)
    bound = first_key + chest_dist.min(dim=1).values
    short = has_key & (levels.max_steps < bound)
    if bool(short.any()):
        key = time_limit_setting(spec.max_steps, spec.max_steps_per_cell)
        raise ConfigError(
            f"{key} leaves {int(short.sum())} levels of {spec.distribution!r} unable to open a single chest in time "
            f"(the shortest such walk is up to {int(bound[short].max())} moves)"
        )


def _rooms(heights: torch.Tensor, widths: torch.Tensor, spec: KeysChestsSpec, rand: LevelRandom) -> torch.Tensor:
    """``(N, 2H+1, 2W+1)`` walkable tiles: a walled room with random wall blocks, cut down to the
    connected component of a random open tile; redrawn until that component can hold every object."""
    n = heights.shape[0]
    th, tw = 2 * int(heights.max()) + 1, 2 * int(widths.max()) + 1
    y = torch.arange(th)[None, :, None]
    x = torch.arange(tw)[None, None, :]
    interior = (y >= 1) & (y < 2 * heights[:, None, None]) & (x >= 1) & (x < 2 * widths[:, None, None])
    walkable = torch.zeros((n, th, tw), dtype=torch.bool)
    todo = torch.arange(n)
    for attempt in range(ROOM_ATTEMPTS):
        blocks = rand.grid_uniform(ROOM_BLOCKS, th, tw, attempt, rows=todo) < spec.wall_density
        open_ = (interior[todo] & ~blocks).flatten(1)
        source = rand.grid_uniform(ROOM_SOURCE, th, tw, attempt, rows=todo).flatten(1)
        source = torch.where(open_, source, -1.0).argmax(dim=1)
        # The room's wall ring blocks every border tile, so flat BFS shifts cannot wrap.
        component = bfs_distances(~open_, source, tw) >= 0
        ok = component.sum(dim=1) >= spec.max_objects
        walkable[todo[ok]] = component[ok].view(-1, th, tw)
        todo = todo[~ok]
        if todo.numel() == 0:
            return walkable
    raise ConfigError(
        f"wall_density={spec.wall_density} leaves some rooms of {spec.distribution!r} too cut up to hold "
        f"{spec.max_objects} objects in one connected region after {ROOM_ATTEMPTS} attempts; lower it"
    )


@functools.lru_cache(maxsize=16)
def keys_chests_level_set(spec: KeysChestsSpec, device: str) -> KeysChestsLevels:
    """The whole level set of ``spec`` on ``device``, generated once per process and shared."""
    return generate_keys_chests_levels(spec).to(device)
