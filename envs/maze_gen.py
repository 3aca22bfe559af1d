"""Batched generation of perfect mazes: uniform spanning trees of a grid of cells.

A maze of ``h x w`` *cells* is drawn as a grid of ``(2h + 1) x (2w + 1)`` *tiles*: cell ``(r, c)``
is the open tile ``(2r + 1, 2c + 1)``, a passage between two neighbouring cells opens the tile
between them, every other tile is wall. The spanning tree makes the maze perfect: every cell is
reachable and there are no loops. The *exit* is one opening in the outer wall, next to a boundary
cell, chosen uniformly among the ``2h + 2w`` wall segments of the boundary.

Generation runs the Aldous-Broder random walk for a whole batch of mazes at once (each maze its
own size). Its first-entrance edges form a uniformly random spanning tree; a step that would
leave the maze holds instead, which leaves the jump chain (and so the tree) unchanged. Draws come
from ``envs.level_random``, so each maze depends only on its own level id.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.level_random import EXIT, WALK, WALK_START, LevelRandom, draw

# (dr, dc) of the four walk directions.
_DR = torch.tensor([-1, 0, 1, 0])
_DC = torch.tensor([0, 1, 0, -1])


@dataclass
class Mazes:
    """A batch of mazes on a common cell grid of ``max_h x max_w`` (smaller mazes use its corner)."""

    heights: torch.Tensor  # (N,) cells
    widths: torch.Tensor  # (N,) cells
    open_down: torch.Tensor  # (N, max_h, max_w) bool: passage from (r, c) to (r + 1, c)
    open_right: torch.Tensor  # (N, max_h, max_w) bool: passage from (r, c) to (r, c + 1)
    exit_cell: torch.Tensor  # (N, 2) the boundary cell the exit opens from
    exit_tile: torch.Tensor  # (N, 2) tile (row, col) of the exit in the maze's tile grid

    @property
    def max_h(self) -> int:
        return self.open_down.shape[1]

    @property
    def max_w(self) -> int:
        return self.open_down.shape[2]

    def cell_mask(self) -> torch.Tensor:
        """``(N, max_h, max_w)`` True on the cells that belong to each maze."""
        r = torch.arange(self.max_h)[None, :, None]
        c = torch.arange(self.max_w)[None, None, :]
        return (r < self.heights[:, None, None]) & (c < self.widths[:, None, None])

    def open_tiles(self, include_exit: bool = True) -> torch.Tensor:
        """``(N, 2 max_h + 1, 2 max_w + 1)`` bool: open tiles of each maze (and its exit)."""
        n = self.heights.shape[0]
        tiles = torch.zeros((n, 2 * self.max_h + 1, 2 * self.max_w + 1), dtype=torch.bool)
        tiles[:, 1::2, 1::2] = self.cell_mask()
        # Passages are never carved across a maze's own boundary, so these stay inside each maze.
        tiles[:, 2::2, 1::2] = self.open_down
        tiles[:, 1::2, 2::2] = self.open_right
        if include_exit:
            tiles[torch.arange(n), self.exit_tile[:, 0], self.exit_tile[:, 1]] = True
        return tiles

    def cell_distances(self) -> torch.Tensor:
        """``(N, max_h, max_w)`` tree distance in cells from the exit cell (-1 outside the maze)."""
        n = self.heights.shape[0]
        inf = torch.iinfo(torch.long).max // 4
        dist = torch.full((n, self.max_h, self.max_w), inf, dtype=torch.long)
        dist[torch.arange(n), self.exit_cell[:, 0], self.exit_cell[:, 1]] = 0
        down, right = self.open_down, self.open_right
        while True:
            new = dist.clone()
            # From the cell below / right / above / left, through an open passage.
            new[:, :-1, :] = torch.minimum(new[:, :-1, :], torch.where(down[:, :-1, :], dist[:, 1:, :] + 1, inf))
            new[:, 1:, :] = torch.minimum(new[:, 1:, :], torch.where(down[:, :-1, :], dist[:, :-1, :] + 1, inf))
            new[:, :, :-1] = torch.minimum(new[:, :, :-1], torch.where(right[:, :, :-1], dist[:, :, 1:] + 1, inf))
            new[:, :, 1:] = torch.minimum(new[:, :, 1:], torch.where(right[:, :, :-1], dist[:, :, :-1] + 1, inf))
            if torch.equal(new, dist):
                break
            dist = new
        return torch.where(self.cell_mask(), dist, -1)


def generate_mazes(heights: torch.Tensor, widths: torch.Tensor, rand: LevelRandom) -> Mazes:
    """Uniformly random perfect mazes of the given sizes (in cells), with a random exit. CPU tensors."""
    if heights.shape != widths.shape or heights.dim() != 1:
        raise ValueError("heights and widths must be 1-d tensors of the same length")
    if bool((heights < 1).any()) or bool((widths < 1).any()):
        raise ValueError("maze sizes must be at least 1 cell a side")
    n = heights.shape[0]
    max_h, max_w = int(heights.max()), int(widths.max())
    open_down = torch.zeros((n, max_h, max_w), dtype=torch.bool)
    open_right = torch.zeros((n, max_h, max_w), dtype=torch.bool)
    visited = torch.zeros((n, max_h * max_w), dtype=torch.bool)

    start = rand.integers(0, heights * widths, WALK_START)
    r, c = start // widths, start % widths
    ids = torch.arange(n)
    visited[ids, r * max_w + c] = True
    remaining = heights * widths - 1
    active = ids[remaining > 0]
    walk = rand.stream(WALK)
    r, c, h, w, remaining, walk = (t[active] for t in (r, c, heights, widths, remaining, walk))
    step = 0
    while active.numel() > 0:
        d = (draw(walk, step) * 4).long()
        nr, nc = r + _DR[d], c + _DC[d]
        inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
        nr, nc = torch.where(inside, nr, r), torch.where(inside, nc, c)
        cell = nr * max_w + nc
        new = inside & ~visited[active, cell]
        # Carve the passage between the two cells; it is stored at the upper/left one.
        er, ec = torch.minimum(r, nr), torch.minimum(c, nc)
        vertical = new & (nr != r)
        horizontal = new & (nc != c)
        open_down[active[vertical], er[vertical], ec[vertical]] = True
        open_right[active[horizontal], er[horizontal], ec[horizontal]] = True
        visited[active[new], cell[new]] = True
        remaining = remaining - new.long()
        r, c = nr, nc
        step += 1
        if step % 8 == 0:
            keep = remaining > 0
            active, r, c, h, w, remaining, walk = (t[keep] for t in (active, r, c, h, w, remaining, walk))

    # Exit: a uniformly random segment of the boundary wall; 2w on top/bottom, 2h on left/right.
    k = rand.integers(0, 2 * heights + 2 * widths, EXIT)
    top, bottom, left = k < widths, (k >= widths) & (k < 2 * widths), (k >= 2 * widths) & (k < 2 * widths + heights)
    right = k >= 2 * widths + heights
    cr = torch.where(
        top, 0, torch.where(bottom, heights - 1, torch.where(left, k - 2 * widths, k - 2 * widths - heights))
    )
    cc = torch.where(top, k, torch.where(bottom, k - widths, torch.where(left, 0, widths - 1)))
    tr = torch.where(top, 0, torch.where(bottom, 2 * heights, 2 * cr + 1))
    tc = torch.where(left, 0, torch.where(right, 2 * widths, 2 * cc + 1))
    return Mazes(
        heights=heights.clone(),
        widths=widths.clone(),
        open_down=open_down,
        open_right=open_right,
        exit_cell=torch.stack([cr, cc], dim=1),
        exit_tile=torch.stack([tr, tc], dim=1),
    )
