"""Layout helpers shared by the level generators: placing a local grid on the canvas, random choices.

Generators build each level on a small local tile grid (a maze or a room), then place it on the
fixed ``S x S`` canvas at an offset. A canvas tile outside the level is neither wall nor floor
to the agent: it shows as empty and is impassable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Self

import torch

from envs.grid import Canvas
from envs.level_random import OFFSET_X, OFFSET_Y, LevelRandom

# Tile kinds of the static map.
FLOOR, WALL, END = 0, 1, 2


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class TensorBatch:
    """Mixin for dataclasses whose fields are all tensors with a leading batch dimension (level banks,
    env states): batch-wise moves, subsets, concatenation, maps and row selection."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in order."""
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        return names

    def __len__(self) -> int:
        return self.__dict__[self.names()[0]].shape[0]

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Self:
        """``fn`` applied to every field (e.g. ``lambda x: x.repeat_interleave(4, dim=0)``)."""
        mine = self.__dict__
        return type(self)(**{name: fn(mine[name]) for name in self.names()})

    def where(self, mask: torch.Tensor, other: Self, keep: tuple[str, ...] = ()) -> Self:
        """Row ``i`` from ``self`` where ``mask[i]``, else from ``other`` (``mask``: ``(B,)`` bool). The
        fields named in ``keep`` are taken from ``self`` whole (already selected: saves a kernel)."""
        mine, theirs, out = self.__dict__, other.__dict__, {}
        for name in self.names():
            x = mine[name]
            if name in keep:
                out[name] = x
            elif x.dim() == 1:
                out[name] = torch.where(mask, x, theirs[name])
            else:
                out[name] = torch.where(mask.view(-1, *(1,) * (x.dim() - 1)), x, theirs[name])
        return type(self)(**out)

    def to(self, device: torch.device | str) -> Self:
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})  # type: ignore[arg-type]

    def subset(self, index: torch.Tensor | slice) -> Self:
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})  # type: ignore[arg-type]

    @classmethod
    def cat(cls, parts: list[Self]) -> Self:
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})  # type: ignore[arg-type]


def time_limit_setting(max_steps: int | None, max_steps_per_cell: float) -> str:
    """The config field that set the time limits, as ``key=value`` for error messages."""
    return f"max_steps={max_steps}" if max_steps is not None else f"max_steps_per_cell={max_steps_per_cell}"


def time_limits(max_steps: int | None, max_steps_per_cell: float, cells: torch.Tensor) -> torch.Tensor:
    """Per-level time limit: ``max_steps``, or ``ceil(max_steps_per_cell * cells)`` when it is None."""
    if max_steps is not None:
        return torch.full(cells.shape, max_steps, dtype=torch.long)
    # The epsilon keeps float rounding (1.1 * 100 = 110.00000000000001) from adding a step.
    return torch.ceil(max_steps_per_cell * cells.double() - 1e-9).long()


@dataclass
class Placed:
    """Local grids placed on the canvas."""

    tiles: torch.Tensor  # (N, S, S) uint8 FLOOR / WALL
    blocked: torch.Tensor  # (N, (S+2)^2) bool, padded flat: not walkable
    oy: torch.Tensor  # (N,) canvas row of local (0, 0)
    ox: torch.Tensor  # (N,) canvas column of local (0, 0)

    def to_padded(self, canvas: Canvas, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Local tile ``(r, c)`` of each level (``(N,)`` or ``(N, K)``) to its padded flat index."""
        if r.dim() == 2:
            return canvas.to_padded(self.oy[:, None] + r, self.ox[:, None] + c)
        return canvas.to_padded(self.oy + r, self.ox + c)


def place_on_canvas(
    walkable: torch.Tensor,
    extent_h: torch.Tensor,
    extent_w: torch.Tensor,
    canvas: Canvas,
    placement: str,
    rand: LevelRandom,
) -> Placed:
    """Place local grids on the canvas.

    ``walkable``: ``(N, H, W)`` bool local grids; level ``i`` occupies its top-left
    ``extent_h[i] x extent_w[i]`` tiles, all of which not walkable are its walls. ``placement``:
    ``random`` (uniform offset) or ``center``.
    """
    n = walkable.shape[0]
    room_y, room_x = canvas.size - extent_h, canvas.size - extent_w
    if bool((room_y < 0).any()) or bool((room_x < 0).any()):
        raise ValueError(f"a level of {int(extent_h.max())}x{int(extent_w.max())} tiles exceeds the canvas")
    if placement == "center":
        oy, ox = room_y // 2, room_x // 2
    else:
        oy = rand.integers(0, room_y + 1, OFFSET_Y)
        ox = rand.integers(0, room_x + 1, OFFSET_X)
    ys = torch.arange(canvas.size)[None, :, None] - oy[:, None, None]
    xs = torch.arange(canvas.size)[None, None, :] - ox[:, None, None]
    inside = (ys >= 0) & (ys < extent_h[:, None, None]) & (xs >= 0) & (xs < extent_w[:, None, None])
    gy = ys.clamp(0, walkable.shape[1] - 1)
    gx = xs.clamp(0, walkable.shape[2] - 1)
    rows = torch.arange(n)[:, None, None]
    on_canvas = inside & walkable[rows, gy, gx]
    tiles = torch.where(inside & ~on_canvas, WALL, FLOOR).to(torch.uint8)
    return Placed(tiles=tiles, blocked=canvas.pad(~on_canvas, value=True), oy=oy, ox=ox)
