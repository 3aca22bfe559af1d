"""Grid geometry shared by every gridworld: actions, the padded flat index, batched BFS.

Positions inside the batched cores are *padded flat indices*: a canvas of ``size x size`` tiles
is surrounded by a one-tile border that is always blocked, and a tile ``(y, x)`` of the canvas is
the index ``(y + 1) * (size + 2) + (x + 1)`` of the flattened padded grid. A move is then one
addition, and it can never wrap around a row or leave the array, because every border tile is
blocked. Observations are built on the canvas itself, without the border.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Actions, in the order of the action space.
UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
ACTION_NAMES = ("up", "right", "down", "left")
NUM_ACTIONS = 4
# (dy, dx) of each action.
ACTION_DELTAS = ((-1, 0), (0, 1), (1, 0), (0, -1))

UNREACHABLE = -1


@dataclass(frozen=True)
class Canvas:
    """A square canvas of ``size`` tiles a side, and its padded flat index."""

    size: int

    @property
    def padded(self) -> int:
        """Side of the padded grid (canvas plus a one-tile blocked border)."""
        return self.size + 2

    @property
    def num_padded(self) -> int:
        return self.padded * self.padded

    def move_offsets(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Padded-flat offset of each action, shape ``(NUM_ACTIONS,)``."""
        return torch.tensor([dy * self.padded + dx for dy, dx in ACTION_DELTAS], device=device)

    def to_padded(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Canvas ``(y, x)`` to padded flat index."""
        return (y + 1) * self.padded + (x + 1)

    def to_yx(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded flat index to canvas ``(y, x)``."""
        return pos // self.padded - 1, pos % self.padded - 1

    def to_canvas_flat(self, pos: torch.Tensor) -> torch.Tensor:
        """Padded flat index to the flat index ``y * size + x`` of the canvas."""
        y, x = self.to_yx(pos)
        return y * self.size + x

    def pad(self, grid: torch.Tensor, value: bool) -> torch.Tensor:
        """``(..., size, size)`` canvas grid to ``(..., padded * padded)`` with a border of ``value``."""
        padded = torch.nn.functional.pad(grid, (1, 1, 1, 1), value=value)
        return padded.flatten(-2)


def bfs_distances(blocked: torch.Tensor, source: torch.Tensor, width: int) -> torch.Tensor:
    """Shortest-path distance in moves from ``source`` to every tile, for a batch of grids.

    ``blocked``: ``(N, P)`` bool, a flattened grid of row width ``width`` whose border tiles are all
    blocked (so flat shifts never wrap onto an open tile). ``source``: ``(N,)`` flat indices, or an
    ``(N, P)`` bool mask of sources (the distance to the nearest one). Returns ``(N, P)`` int64
    distances, ``UNREACHABLE`` (-1) for blocked or unreachable tiles. Exact BFS as a frontier
    expansion on tensors: one iteration per distance layer.
    """
    n, num = blocked.shape
    open_ = ~blocked
    dist = torch.full((n, num), UNREACHABLE, dtype=torch.long, device=blocked.device)
    if source.dtype == torch.bool:
        frontier = source & open_
    else:
        frontier = torch.zeros((n, num), dtype=torch.bool, device=blocked.device)
        frontier[torch.arange(n, device=blocked.device), source] = True
        frontier &= open_
    seen = frontier.clone()
    d = 0
    while bool(frontier.any()):
        dist[frontier] = d
        grown = torch.zeros_like(frontier)
        for shift in (1, -1, width, -width):
            grown |= torch.roll(frontier, shifts=shift, dims=1)
        frontier = grown & open_ & ~seen
        seen |= frontier
        d += 1
    return dist
