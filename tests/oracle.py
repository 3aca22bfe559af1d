"""A scripted shortest-path agent for tests: exact BFS on the known level, batched."""

from __future__ import annotations

import torch

from envs.arrow_maze import ArrowMazeCore
from envs.grid import bfs_distances


def distance_maps(core: ArrowMazeCore, targets: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` move distances to ``targets`` (padded flat, one per level) on every level."""
    return bfs_distances(core.levels.blocked, targets, core.canvas.padded)


def shortest_path_action(core: ArrowMazeCore, dist: torch.Tensor) -> torch.Tensor:
    """Per env, an action that moves one step closer on ``dist`` (the distance map of its level)."""
    level_dist = dist[core.level]  # (B, P)
    nbr = core.pos[:, None] + core.move_offsets[None, :]  # (B, 4)
    d = level_dist.gather(1, nbr)
    d = torch.where(d < 0, torch.iinfo(torch.long).max, d)
    return d.argmin(dim=1)
