"""Planted policies: test fixtures for the behavioural-objective estimator, each with a known objective.

Use them as ``policy=py:tests.policies:<name>``; every factory is ``(env_cfg, device) -> Policy``.
Each decides from the observation tensor alone (the symbolic ``uint8`` channels, parsed here, and a BFS
of its own), never from the core, the level bank or ``analysis.*``, as a learned policy would: so the
estimator is tested against behaviour it cannot have been fitted to.

What they read of an observation (``envs/arrow_maze.py``, ``envs/keys_chests.py``): channel 0 is the
walls and channel 1 the agent in both envs; the arrow maze's channel 2 is the arrow (and 3 the end, with
``end_marker: tile``); keys and chests' channel 2 is the keys left and 3 the closed chests. The
walkable tiles are the non-wall tiles inside the bounding box of the walls (a smaller layout sits on the
canvas in a surround that shows empty but cannot be walked). Without an end channel the arrow maze's end
is the gap in the outer wall: the walkable tile on that bounding box. Actions are ``envs.grid``'s (up,
right, down, left); a move into a wall or off the layout stays put.

The plants (rules exact; ties between actions always go to the first in action order):

- ``nearer_goal``: a shortest path to whichever of end and arrow is nearer from where it stands (ties:
  the end), then it stays on its goal (:func:`step_toward`).
- ``level_mixture``: per level the arrow or the end, by :func:`level_mixture_seeks_arrow` (a parity
  of the wall layout), then as ``nearer_goal``.
- ``corner_seeker``: a shortest path to :func:`corner_tile` (smallest row + column, ties the smaller
  row), then stay. Either env.
- ``boltzmann_arrow``: samples ``softmax(BOLTZMANN_BETA * 0.99 ** d_arrow(s'))`` (:func:`boltzmann_arrow_probs`).
- ``key_biased_walk``: keys and chests; half a shortest-path step toward the nearest key left, half uniform.

Distance maps are memoised on the (walkable tiles, targets) they are a function of, so a step costs a
BFS only on a layout not seen before: that keeps 1000-env episodes of 500 steps cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.distributions import Categorical

from envs.arrow_maze import channel_names
from envs.grid import ACTION_DELTAS, NUM_ACTIONS
from envs.keys_chests import AGENT_CHANNEL, KEY_CHANNEL, WALL_CHANNEL

GAMMA = 0.99
"""Discount of ``boltzmann_arrow``'s action values (the estimator's, so its beta is comparable)."""
BOLTZMANN_BETA = 165.0
"""``boltzmann_arrow``'s inverse temperature: about a fifth of its actions on ``shift_arrow`` are not
greedy (measured: 0.197 of the steps of one episode on each of its first 256 levels)."""
KEY_STEP_PROBABILITY = 0.5
"""``key_biased_walk``: the chance of a shortest-path step toward the nearest key (else uniform)."""
UNREACHABLE = -1

Probs = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------- observation parsing
def _bounds(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index where ``(B, S)`` bool ``mask`` is set, per row."""
    size = mask.shape[1]
    first = mask.to(torch.uint8).argmax(1)
    last = size - 1 - mask.flip(1).to(torch.uint8).argmax(1)
    return first, last


def _box(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, S, S)`` bool: inside the bounding box of the walls, and on its edge."""
    wall = obs[:, WALL_CHANNEL].bool()
    idx = torch.arange(wall.shape[-1], device=obs.device)
    (r0, r1), (c0, c1) = _bounds(wall.any(2)), _bounds(wall.any(1))
    in_r = (idx >= r0[:, None]) & (idx <= r1[:, None])
    in_c = (idx >= c0[:, None]) & (idx <= c1[:, None])
    on_r = (idx == r0[:, None]) | (idx == r1[:, None])
    on_c = (idx == c0[:, None]) | (idx == c1[:, None])
    inside = in_r[:, :, None] & in_c[:, None, :]
    return inside, inside & (on_r[:, :, None] | on_c[:, None, :])


def walkable(obs: torch.Tensor) -> torch.Tensor:
    """``(B, S, S)`` bool: the tiles the agent can stand on (non-wall, inside the walls' bounding box)."""
    return _box(obs)[0] & ~obs[:, WALL_CHANNEL].bool()


def agent_tile(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B,)`` row and column of the agent."""
    flat = obs[:, AGENT_CHANNEL].flatten(1).argmax(1)
    return flat // obs.shape[-1], flat % obs.shape[-1]


def end_tiles(obs: torch.Tensor, end_channel: int | None = None) -> torch.Tensor:
    """``(B, S, S)`` bool: the arrow maze's end, from its channel, or else the walkable tile on the edge of
    the walls' bounding box (the gap in the outer wall)."""
    if end_channel is not None:
        return obs[:, end_channel].bool()
    _, edge = _box(obs)
    return edge & ~obs[:, WALL_CHANNEL].bool()


def corner_tile(open_: torch.Tensor) -> torch.Tensor:
    """``(B, S, S)`` bool, one tile per row: the walkable tile nearest the canvas's top-left corner, i.e.
    the walkable tile with the smallest ``row + col`` (canvas coordinates), ties broken by the smallest
    ``row``. (It always has a blocked neighbour, up or left, so a walker stays on it by a wall bump.)"""
    size = open_.shape[-1]
    r = torch.arange(size, device=open_.device)
    rank = (r[:, None] + r[None, :]) * size + r[:, None]  # row + col first, then row
    rank = torch.where(open_, rank, torch.iinfo(torch.long).max).flatten(1)
    return torch.nn.functional.one_hot(rank.argmin(1), size * size).bool().view(open_.shape)


# ------------------------------------------------------------------------- planning
def bfs(open_: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """``(B, S, S)`` int64 moves from every tile to the nearest of ``sources`` over ``open_`` tiles
    (``UNREACHABLE``: blocked or cut off). Batched frontier expansion, one iteration per layer."""
    dist = torch.full(open_.shape, UNREACHABLE, dtype=torch.long, device=open_.device)
    frontier = sources & open_
    seen = frontier.clone()
    d = 0
    while bool(frontier.any()):
        dist[frontier] = d
        grown = torch.zeros_like(frontier)
        grown[:, 1:] |= frontier[:, :-1]
        grown[:, :-1] |= frontier[:, 1:]
        grown[:, :, 1:] |= frontier[:, :, :-1]
        grown[:, :, :-1] |= frontier[:, :, 1:]
        frontier = grown & open_ & ~seen
        seen |= frontier
        d += 1
    return dist


class DistanceCache:
    """:func:`bfs` memoised on its inputs (a pure function of the observation, so nothing is
    remembered about an episode): one BFS per distinct (walkable tiles, targets), not per step."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self._maps: dict[bytes, torch.Tensor] = {}

    def __call__(self, open_: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``(B, S, S)`` int64, as ``bfs(open_, targets)``."""
        packed = np.packbits(torch.cat([open_, targets], 1).flatten(1).cpu().numpy(), axis=1)
        keys = [row.tobytes() for row in packed]
        missing: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self._maps and key not in missing:
                missing[key] = i
        if missing:
            rows = torch.tensor(list(missing.values()), device=open_.device)
            found = bfs(open_[rows], targets[rows]).to(torch.int16)
            if len(self._maps) + len(missing) > self.max_entries:
                self._maps.clear()
            self._maps.update(zip(missing, found, strict=True))
        return torch.stack([self._maps[key] for key in keys]).long()


distances = DistanceCache()
"""The memo every plant shares."""


def _at(grid: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``grid[b, rows[b, k], cols[b, k]]`` for ``(B, S, S)`` grid and ``(B, K)`` indices."""
    b = torch.arange(grid.shape[0], device=grid.device)[:, None]
    return grid[b, rows, cols]


def next_tiles(open_: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 4)`` row and column each action leads to (a move into a wall or off the layout stays)."""
    size = open_.shape[-1]
    dy = torch.tensor([d[0] for d in ACTION_DELTAS], device=row.device)
    dx = torch.tensor([d[1] for d in ACTION_DELTAS], device=row.device)
    r, c = row[:, None] + dy, col[:, None] + dx
    inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
    ok = inside & _at(open_, r.clamp(0, size - 1), c.clamp(0, size - 1))
    return torch.where(ok, r, row[:, None]), torch.where(ok, c, col[:, None])


def step_toward(
    open_: torch.Tensor, dist: torch.Tensor, row: torch.Tensor, col: torch.Tensor, avoid: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B,)`` the first action (in action order) that brings the agent one move closer on ``dist``.

    On the target (distance 0) it stays: the first action that bumps into a wall; with four open
    neighbours, the first action whose tile is not in ``avoid`` (it steps off and comes back).
    """
    nr, nc = next_tiles(open_, row, col)
    d = _at(dist, nr, nc)
    closer = torch.where(d < 0, torch.iinfo(torch.long).max, d).argmin(1)
    bumps = (nr == row[:, None]) & (nc == col[:, None])
    off = ~_at(avoid, nr, nc) if avoid is not None else torch.ones_like(bumps)
    stay = torch.where(bumps.any(1), bumps.to(torch.uint8).argmax(1), off.to(torch.uint8).argmax(1))
    here = dist[torch.arange(len(row), device=row.device), row, col]
    return torch.where(here == 0, stay, closer)


# ------------------------------------------------------------------------- policies
class PlantedPolicy:
    """A ``Policy`` (``agents.policy``) from ``probs(obs) -> (B, 4)``, sampled with its own seeded generator."""

    def __init__(self, probs: Probs, device: torch.device | str, seed: int = 0) -> None:
        self.probs = probs
        self.device = torch.device(device)
        self._gen = torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def distribution(self, obs: torch.Tensor) -> Categorical:
        return Categorical(probs=self.probs(obs.to(self.device)))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        probs = self.probs(obs.to(self.device))
        if deterministic:
            return probs.argmax(1)
        return torch.multinomial(probs, 1, generator=self._gen).squeeze(1)


def _one_hot(action: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(action, NUM_ACTIONS).double()


def _symbolic(env_cfg: Any, env: str) -> None:
    if env_cfg.name != env or env_cfg.obs_mode != "symbolic":
        raise ValueError(
            f"this planted policy reads {env}'s symbolic observations, not {env_cfg.name}/{env_cfg.obs_mode}"
        )


def _arrow_maze_channels(env_cfg: Any) -> tuple[int, int | None]:
    """The arrow's channel and the end's (``None`` without ``end_marker: tile``)."""
    _symbolic(env_cfg, "arrow_maze")
    names = channel_names(env_cfg)
    return names.index("arrow"), names.index("end") if "end" in names else None


def _goal_walker(
    seeks_arrow: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], env_cfg: Any
) -> Probs:
    """Arrow maze: a shortest path to the arrow where ``seeks_arrow(obs, d_end_here, d_arrow_here)``,
    else to the end; then stay. Stepping off an open arrow never steps onto the end (which would end it)."""
    arrow_channel, end_channel = _arrow_maze_channels(env_cfg)

    def probs(obs: torch.Tensor) -> torch.Tensor:
        open_ = walkable(obs)
        row, col = agent_tile(obs)
        end = end_tiles(obs, end_channel)
        d_end, d_arrow = distances(open_, end), distances(open_, obs[:, arrow_channel].bool())
        b = torch.arange(len(row), device=row.device)
        arrow = seeks_arrow(obs, d_end[b, row, col], d_arrow[b, row, col])
        dist = torch.where(arrow[:, None, None], d_arrow, d_end)
        return _one_hot(step_toward(open_, dist, row, col, avoid=end))

    return probs


def nearer_goal(env_cfg: Any, device: torch.device | str) -> PlantedPolicy:
    """Arrow maze, deterministic: a shortest path to whichever of end and arrow is nearer in moves from the
    current tile (ties: the end), then stay on it.

    Memoryless, yet one goal per episode: every move changes each distance by exactly one, so along a
    shortest path to the arrow ``d_arrow - d_end`` never grows and along one to the end it never shrinks.
    The env ends the episode on the end, not the arrow: arrow episodes dwell until the time limit.
    """
    return PlantedPolicy(_goal_walker(lambda _obs, d_end, d_arrow: d_arrow < d_end, env_cfg), device)


def level_mixture_seeks_arrow(obs: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: whether ``level_mixture`` plays this level for the arrow. The parity of
    ``sum over wall tiles (y, x) of (7y + 3x) mod 5`` (canvas coordinates): a function of the walls alone,
    so fixed per level (and per episode), about half the levels."""
    wall = obs[:, WALL_CHANNEL].long()
    r = torch.arange(wall.shape[-1], device=obs.device)
    weights = (r[:, None] * 7 + r[None, :] * 3) % 5
    return (wall * weights).sum((1, 2)) % 2 == 1


def level_mixture(env_cfg: Any, device: torch.device | str) -> PlantedPolicy:
    """Arrow maze, deterministic: per level a shortest path to the arrow or to the end, chosen by
    :func:`level_mixture_seeks_arrow`, then stay (as ``nearer_goal``)."""
    return PlantedPolicy(_goal_walker(lambda obs, _d_end, _d_arrow: level_mixture_seeks_arrow(obs), env_cfg), device)


def corner_seeker(env_cfg: Any, device: torch.device | str) -> PlantedPolicy:
    """Either env, deterministic: a shortest path to :func:`corner_tile` (the walkable tile with the
    smallest row + column, ties: the smallest row), then stay on it by a wall bump. Toward neither end nor
    arrow (unless the corner tile is the end); in keys and chests it picks up what lies on its way."""
    if env_cfg.name == "arrow_maze":
        _arrow_maze_channels(env_cfg)
    else:
        _symbolic(env_cfg, "keys_chests")

    def probs(obs: torch.Tensor) -> torch.Tensor:
        open_ = walkable(obs)
        row, col = agent_tile(obs)
        return _one_hot(step_toward(open_, distances(open_, corner_tile(open_)), row, col))

    return PlantedPolicy(probs, device)


def arrow_action_values(obs: torch.Tensor, arrow_channel: int = 2) -> torch.Tensor:
    """``(B, 4)`` float64 ``GAMMA ** d_arrow(s')``: ``s'`` the tile each action leads to (the same tile for
    a wall bump), ``d_arrow`` its distance in moves to the arrow."""
    open_ = walkable(obs)
    row, col = agent_tile(obs)
    d_arrow = distances(open_, obs[:, arrow_channel].bool())
    nr, nc = next_tiles(open_, row, col)
    return GAMMA ** _at(d_arrow, nr, nc).double()


def boltzmann_arrow_probs(obs: torch.Tensor, arrow_channel: int = 2) -> torch.Tensor:
    """``(B, 4)`` float64 ``softmax(BOLTZMANN_BETA * Q)`` with Q :func:`arrow_action_values`."""
    return torch.softmax(BOLTZMANN_BETA * arrow_action_values(obs, arrow_channel), dim=1)


def boltzmann_arrow(env_cfg: Any, device: torch.device | str) -> PlantedPolicy:
    """Arrow maze, stochastic: a noisy arrow seeker, actions from :func:`boltzmann_arrow_probs`."""
    arrow_channel, _ = _arrow_maze_channels(env_cfg)
    return PlantedPolicy(lambda obs: boltzmann_arrow_probs(obs, arrow_channel), device)


def key_biased_walk_probs(obs: torch.Tensor) -> torch.Tensor:
    """``(B, 4)`` float64: with ``KEY_STEP_PROBABILITY`` the shortest-path step toward the nearest key left
    (:func:`step_toward`), else uniform; uniform once no key is left (chests are never sought)."""
    open_ = walkable(obs)
    row, col = agent_tile(obs)
    keys = obs[:, KEY_CHANNEL].bool()
    uniform = torch.full((len(row), NUM_ACTIONS), 1.0 / NUM_ACTIONS, dtype=torch.float64, device=obs.device)
    step = _one_hot(step_toward(open_, distances(open_, keys), row, col))
    biased = KEY_STEP_PROBABILITY * step + (1 - KEY_STEP_PROBABILITY) * uniform
    return torch.where(keys.flatten(1).any(1)[:, None], biased, uniform)


def key_biased_walk(env_cfg: Any, device: torch.device | str) -> PlantedPolicy:
    """Keys and chests, stochastic: a random walk pulled toward keys (:func:`key_biased_walk_probs`)."""
    _symbolic(env_cfg, "keys_chests")
    return PlantedPolicy(key_biased_walk_probs, device)
