"""Goodness of fit: is the agent's behaviour explained by the estimator's objectives, or systematic
beyond them?

A good fit to a bad set of candidates looks like noise: an agent that walks straight to a tile no
candidate names fits every candidate at ``beta`` near 0, and the estimator calls it random. Three checks
tell systematic behaviour from noise without knowing its goal:

- **Some goal tile.** Is there one tile per episode toward which the agent's moves are shortest-path
  moves (staying put once there)? For every walkable tile of the level, the fraction of the episode's
  steps that are optimal for reaching it, and the same for uniform actions (chance); the best tile's
  ``(agreement - chance) / (1 - chance)`` is 1 for an agent that walks straight to a tile and stays, and
  low for a random walk or an agent lost in a loop (a loop is never a shortest path). This is what
  makes behaviour *goal-directed* toward a goal no candidate names (the verdict's ``unexplained``).
- **Predictability on revisits.** Each time an episode comes back to a state it was in before, does it
  make the same move (reach the same next tile) as last time? A stationary policy does so with
  probability ``P(y_prev | s)``, the probability of reaching the tile ``y_prev`` the previous visit
  reached (moves into different walls all stay put, so they count as one). The agent's *observed*
  repeat rate is compared with the rate the fitted model predicts and with chance (uniform actions).
  The share of the agent's above-chance predictability the model leaves unexplained,
  ``(observed - model) / (observed - chance)``, is near 0 for an agent the model explains (whatever its
  noise) and near 1 for a repeatable agent it doesn't; 0 where the agent repeats no more than chance
  (by two standard errors).
- **Agreement with each candidate's optimal actions, against chance.** How much more often than a
  uniform policy would (``|optimal| / |A|``) the agent takes a candidate's optimal action, per episode
  then averaged. Clearly below 0 means the agent systematically avoids what that candidate wants:
  structure, not noise, that no ``beta >= 0`` can express.

The verdict uses the first (``analysis.metrics``); the other two are reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from analysis.estimator import RANDOM, Estimate, action_log_probs, optimal_action_sets
from envs.grid import bfs_distances


@dataclass
class FitCheck:
    """How much of the agent's behaviour the estimate explains."""

    revisits: int
    """Steps in a state its episode was in before (each compared with the previous visit)."""
    repeat_observed: float | None
    """Fraction of those where the agent reached the same next tile as at the previous visit (None: no revisits)."""
    repeat_model: float | None
    """What the fitted model predicts for that fraction."""
    repeat_chance: float | None
    """What uniform actions would give."""
    unexplained: float
    """``(observed - model) / (observed - chance)`` clipped to [0, 1] (0 when the agent is no more
    predictable than chance)."""
    agreement_above_chance: dict[str, float]
    """Per candidate: mean over episodes of (fraction of steps on an optimal action) minus chance."""
    goal_tile: float
    """Mean over episodes of the best single goal tile's agreement, from chance (0) to always (1)."""

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def state_ids(states: Mapping[str, torch.Tensor], episode: torch.Tensor) -> torch.Tensor:
    """``(N,)`` one id per distinct (episode, state) among the steps."""
    columns = [episode.long().cpu()[:, None]]
    for v in states.values():
        columns.append(v.long().cpu().reshape(len(episode), -1))
    return torch.unique(torch.cat(columns, dim=1), dim=0, return_inverse=True)[1]


def goal_tile_agreement(
    core: Any, level: torch.Tensor, next_tiles: torch.Tensor, action: torch.Tensor, episode: torch.Tensor
) -> torch.Tensor:
    """``(E,)`` per episode, the best goal tile's agreement from chance (0) to always (1) (module docstring).
    ``next_tiles``: ``(N, A)`` where each action leads (``analysis.planning.next_tiles``).

    Distances are symmetric, so a BFS from each tile an action can lead to gives its distance to every
    goal tile at once."""
    n, num_actions = next_tiles.shape
    sources, which = torch.unique(
        torch.stack([level[:, None].expand(n, num_actions).reshape(-1), next_tiles.reshape(-1)], 1),
        dim=0,
        return_inverse=True,
    )
    blocked = core.levels.blocked
    dist = bfs_distances(blocked[sources[:, 0]], sources[:, 1], core.canvas.padded).cpu()  # (U, P)
    which = which.view(n, num_actions).cpu()
    episode, action = episode.cpu(), action.cpu()
    num_episodes = int(episode.max()) + 1
    out = torch.zeros(num_episodes, dtype=torch.float64)
    order = torch.argsort(episode, stable=True)
    counts = torch.bincount(episode, minlength=num_episodes).tolist()
    start = 0
    for e, count in enumerate(counts):
        steps = order[start : start + count]
        start += count
        d = dist[which[steps]].double()  # (T, A, P) distance of each action's tile to each goal tile
        d = torch.where(d < 0, float("inf"), d)
        best = d.min(dim=1).values  # (T, P)
        optimal = d == best[:, None, :]
        walkable = torch.isfinite(best).all(0)  # goal tiles reachable from every visited state
        taken = optimal[torch.arange(count), action[steps]].double().mean(0)  # (P,)
        chance = optimal.double().sum(1).mean(0) / num_actions
        score = torch.where(walkable & (chance < 1), (taken - chance) / (1 - chance).clamp(min=1e-12), -1.0)
        out[e] = float(score.max()) if bool(walkable.any()) else 0.0
    return out


def fit_check(
    est: Estimate,
    values: Mapping[str, torch.Tensor],
    actions: torch.Tensor,
    episode: torch.Tensor,
    ids: torch.Tensor,
    next_tiles: torch.Tensor,
    taken_next: torch.Tensor,
    goal_tile: torch.Tensor | None = None,
) -> FitCheck:
    """The checks (module docstring) of ``est``, fitted to ``actions`` given ``values``.

    ``ids``: ``(N,)`` :func:`state_ids`; ``next_tiles``: ``(N, A)`` the tile each action leads to;
    ``taken_next``: ``(N,)`` the tile the agent reached; ``goal_tile``: :func:`goal_tile_agreement`'s
    ``(E,)`` (not given: 0).
    """
    actions, episode = actions.long().cpu(), episode.long().cpu()
    next_tiles, taken_next, ids = next_tiles.long().cpu(), taken_next.long().cpu(), ids.cpu()
    n, num_actions = next(iter(values.values())).shape
    uniform = torch.full((n, num_actions), 1.0 / num_actions, dtype=torch.float64)
    resp = est.responsibility
    assert resp is not None
    # Each revisit against the previous visit of the same (episode, state): steps are in time order.
    order = torch.sort(ids, stable=True).indices
    later, earlier = order[1:], order[:-1]
    same = ids[later] == ids[earlier]
    later, earlier = later[same], earlier[same]
    revisits = len(later)
    # The probability that the later visit reaches the tile the earlier one did: conditioning on the
    # earlier move as it happened keeps the prediction exact although which steps become revisits
    # depends on it (a move into a wall makes the next step a revisit).
    repeats = (next_tiles[later] == taken_next[earlier][:, None]).double()  # (R, A)
    model = torch.zeros(revisits, dtype=torch.float64)
    for k, name in enumerate(est.components):
        if name == RANDOM:
            probs = uniform[later]
        else:
            first = est.groups[name][0]
            probs = torch.exp(action_log_probs(values[first].double().cpu()[later], *est.component_fit[name]))
        model += resp[episode[later], k] * (probs * repeats).sum(1)
    chance = (uniform[later] * repeats).sum(1)
    if revisits:
        hits = (taken_next[later] == taken_next[earlier]).double()
        observed, predicted, by_chance = float(hits.mean()), float(model.mean()), float(chance.mean())
        # Above chance by more than two standard errors of the chance rate, or it is noise.
        noise = 2.0 * float(torch.sqrt((chance * (1 - chance)).sum())) / revisits
    else:  # nothing to compare (None, not NaN, so that the report stays valid JSON)
        observed = predicted = by_chance = None
        noise = 0.0
    excess = observed - by_chance if revisits else 0.0
    unexplained = min(max((observed - predicted) / excess, 0.0), 1.0) if excess > max(noise, 1e-9) else 0.0

    lengths = torch.bincount(episode).double()
    agreement = {}
    for name, q in values.items():
        optimal = optimal_action_sets(q.double().cpu())
        on_optimal = optimal.gather(1, actions[:, None]).squeeze(1).double()
        per_step = on_optimal - optimal.double().sum(1) / num_actions
        per_episode = torch.zeros(len(lengths), dtype=torch.float64).index_add_(0, episode, per_step) / lengths
        agreement[name] = float(per_episode.mean())
    tile = 0.0 if goal_tile is None else float(goal_tile.mean())
    return FitCheck(revisits, observed, predicted, by_chance, unexplained, agreement, tile)
