"""Exact planning on known levels: distance maps and shortest-path actions, batched on tensors.

The arrow maze's candidate objectives (``arrow_maze_q_values``, used by ``analysis/objectives.py`` for
the estimator and the oracles) and the demo's scripted keys-and-chests agents. Keys and chests' exact
values live in ``analysis/keys_chests_planning.py``.
"""

from __future__ import annotations

import torch

from envs.arrow_maze import ArrowMazeCore
from envs.core import GridCore
from envs.grid import bfs_distances
from envs.keys_chests import KeysChestsCore
from envs.keys_chests_levels import object_mask


def distance_maps(core: ArrowMazeCore, targets: torch.Tensor, level_ids: torch.Tensor | None = None) -> torch.Tensor:
    """``(K, P)`` move distances on levels ``level_ids`` (default: the whole bank) to ``targets``.

    ``targets``: one padded flat index per level of the bank (e.g. ``core.levels.end``).
    """
    if level_ids is None:
        return bfs_distances(core.levels.blocked, targets, core.canvas.padded)
    return bfs_distances(core.levels.blocked[level_ids], targets[level_ids], core.canvas.padded)


def next_tiles(core: GridCore, level: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``(N, A)`` the tile each action leads to from each state ``(level, pos)`` (the core's movement rule)."""
    n, num_actions = len(level), core.num_actions
    actions = torch.arange(num_actions, device=level.device)
    return core.move(level.repeat_interleave(num_actions), pos.repeat_interleave(num_actions), actions.repeat(n)).view(
        n, num_actions
    )


def arrow_maze_q_values(
    core: ArrowMazeCore, level: torch.Tensor, pos: torch.Tensor, objective: str, gamma: float = 0.99
) -> torch.Tensor:
    """``(N, 4)`` exact action values of the objective "reach the ``end``" or "reach the ``arrow``"
    (reward 1 on arrival, discount ``gamma``) in the states ``(level, pos)``: ``gamma ** d(s')``,
    where ``s'`` is where the action leads and ``d`` its distance to the target (so at the target,
    staying put is best)."""
    if objective not in ("end", "arrow"):
        raise ValueError(f"arrow maze objective {objective!r} is not one of ['end', 'arrow']")
    targets = core.levels.end if objective == "end" else core.levels.arrow
    levels, which = torch.unique(level, return_inverse=True)
    dist = distance_maps(core, targets, levels)  # (U, P)
    d = dist[which[:, None], next_tiles(core, level, pos)]
    return torch.pow(torch.tensor(gamma, dtype=torch.float64, device=level.device), d.double())


def shortest_path_action(core: GridCore, env_dist: torch.Tensor) -> torch.Tensor:
    """Per env, an action that moves one step closer on ``env_dist``, the ``(B, P)`` distance map of
    each env's current level.

    Ties go to the first action in ``envs.grid`` order. At the target the agent stays by moving
    into a wall; only on a tile with four open neighbours must it step off (and back).
    """
    neighbours = core.pos[:, None] + core.move_offsets[None, :]  # (B, 4)
    d = env_dist.gather(1, neighbours)
    blocked = d < 0
    toward = torch.where(blocked, torch.iinfo(torch.long).max, d).argmin(dim=1)
    at_target = env_dist.gather(1, core.pos[:, None])[:, 0] == 0
    stay = at_target & blocked.any(dim=1)
    return torch.where(stay, blocked.to(torch.uint8).argmax(dim=1), toward)


def object_tiles(core: KeysChestsCore, positions: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``(B, P)`` bool: the padded tiles of the present objects of each env (``positions``, ``present``: ``(B, K)``)."""
    return object_mask(positions, present, core.canvas.num_padded)


def keys_chests_planner_action(core: KeysChestsCore) -> torch.Tensor:
    """A scripted planner for keys and chests: with a key in hand, walk to the nearest closed chest;
    otherwise to the nearest key. Every key it takes opens a chest, so it opens every openable chest.
    (It is greedy, not the shortest tour.)"""
    lv, level = core.levels, core.level
    keys = lv.keys.index_select(0, level)
    chests = lv.chests.index_select(0, level)
    key_left, chest_left = core.key_left, core.chest_left
    to_chest = (core.inventory > 0) & chest_left.any(dim=1)
    targets = torch.where(to_chest[:, None], object_tiles(core, chests, chest_left), object_tiles(core, keys, key_left))
    dist = bfs_distances(lv.blocked.index_select(0, level), targets, core.canvas.padded)
    return shortest_path_action(core, dist)


def keys_chests_hoarder_action(core: KeysChestsCore) -> torch.Tensor:
    """A scripted agent of the proxy objective "collect keys": take every key first, stepping round
    closed chests where it can, and only then open chests with the keys in hand."""
    lv, level = core.levels, core.level
    blocked = lv.blocked.index_select(0, level)
    keys = object_tiles(core, lv.keys.index_select(0, level), core.key_left)
    chests = object_tiles(core, lv.chests.index_select(0, level), core.chest_left)
    hoarding = core.key_left.any(dim=1)
    targets = torch.where(hoarding[:, None], keys, chests)
    around = bfs_distances(blocked | (chests & hoarding[:, None]), targets, core.canvas.padded)
    through = bfs_distances(blocked, targets, core.canvas.padded)
    # Where chests wall a key off, walk through them.
    stuck = around.gather(1, core.pos[:, None])[:, 0] < 0
    return shortest_path_action(core, torch.where(stuck[:, None], through, around))
