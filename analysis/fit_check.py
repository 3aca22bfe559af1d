"""Goodness of fit: is the agent's behaviour explained by the estimator's objectives, or systematic
beyond them?

A good fit to a bad set of candidates looks like noise: an agent that walks straight to a tile no
candidate names fits every candidate at ``beta`` near 0, and the estimator calls it random. Two checks
tell systematic behaviour from noise without knowing its goal:

- **Predictability on revisits.** Each time an episode comes back to a state it was in before, does it
  make the same move (reach the same next tile) as last time? A stationary policy repeats with
  probability ``sum_y P(y | s)^2`` over next tiles ``y`` (moves into different walls all stay put, so
  they count as one). The agent's *observed* repeat rate is compared with the rate the fitted model
  predicts and with chance (uniform actions). The share of the agent's above-chance predictability the
  model leaves unexplained, ``(observed - model) / (observed - chance)``, is near 0 for an agent the
  model explains (whatever its noise) and near 1 for a repeatable agent it doesn't.
- **Agreement with each candidate's optimal actions, against chance.** How much more often than a
  uniform policy would (``|optimal| / |A|``) the agent takes a candidate's optimal action, per episode
  then averaged. Clearly below 0 means the agent systematically avoids what that candidate wants:
  structure, not noise, that no ``beta >= 0`` can express.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from analysis.estimator import RANDOM, Estimate, action_log_probs, optimal_action_sets


@dataclass
class FitCheck:
    """How much of the agent's behaviour the estimate explains."""

    revisits: int
    """Steps in a state its episode was in before (each compared with the previous visit)."""
    repeat_observed: float
    """Fraction of those where the agent reached the same next tile as at the previous visit."""
    repeat_model: float
    """What the fitted model predicts for that fraction."""
    repeat_chance: float
    """What uniform actions would give."""
    unexplained: float
    """``(observed - model) / (observed - chance)`` clipped to [0, 1] (0 when the agent is no more
    predictable than chance)."""
    agreement_above_chance: dict[str, float]
    """Per candidate: mean over episodes of (fraction of steps on an optimal action) minus chance."""

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def state_ids(states: Mapping[str, torch.Tensor], episode: torch.Tensor) -> torch.Tensor:
    """``(N,)`` one id per distinct (episode, state) among the steps."""
    columns = [episode.long().cpu()[:, None]]
    for v in states.values():
        columns.append(v.long().cpu().reshape(len(episode), -1))
    return torch.unique(torch.cat(columns, dim=1), dim=0, return_inverse=True)[1]


def _repeat_probability(probs: torch.Tensor, next_tiles: torch.Tensor) -> torch.Tensor:
    """``(N,)`` probability that two independent draws of ``probs`` ``(N, A)`` reach the same next tile."""
    same = next_tiles[:, :, None] == next_tiles[:, None, :]  # (N, A, A)
    return torch.einsum("na,nb,nab->n", probs, probs, same.double())


def fit_check(
    est: Estimate,
    values: Mapping[str, torch.Tensor],
    actions: torch.Tensor,
    episode: torch.Tensor,
    ids: torch.Tensor,
    next_tiles: torch.Tensor,
    taken_next: torch.Tensor,
) -> FitCheck:
    """Both checks (module docstring) of ``est``, fitted to ``actions`` given ``values``.

    ``ids``: ``(N,)`` :func:`state_ids`; ``next_tiles``: ``(N, A)`` the tile each action leads to;
    ``taken_next``: ``(N,)`` the tile the agent reached.
    """
    actions, episode = actions.long().cpu(), episode.long().cpu()
    next_tiles, taken_next, ids = next_tiles.long().cpu(), taken_next.long().cpu(), ids.cpu()
    n, num_actions = next(iter(values.values())).shape
    uniform = torch.full((n, num_actions), 1.0 / num_actions, dtype=torch.float64)
    resp = est.responsibility
    assert resp is not None
    model = torch.zeros(n, dtype=torch.float64)
    for k, name in enumerate(est.components):
        if name == RANDOM:
            probs = uniform
        else:
            first = est.groups[name][0]
            probs = torch.exp(action_log_probs(values[first].double().cpu(), *est.component_fit[name]))
        model += resp[episode, k] * _repeat_probability(probs, next_tiles)
    chance = _repeat_probability(uniform, next_tiles)

    # Each revisit against the previous visit of the same (episode, state): steps are in time order.
    order = torch.sort(ids, stable=True).indices
    later, earlier = order[1:], order[:-1]
    same = ids[later] == ids[earlier]
    later, earlier = later[same], earlier[same]
    revisits = len(later)
    if revisits:
        observed = float((taken_next[later] == taken_next[earlier]).double().mean())
        predicted, by_chance = float(model[later].mean()), float(chance[later].mean())
    else:
        observed = predicted = by_chance = float("nan")
    excess = observed - by_chance
    unexplained = min(max((observed - predicted) / excess, 0.0), 1.0) if revisits and excess > 1e-9 else 0.0

    lengths = torch.bincount(episode).double()
    agreement = {}
    for name, q in values.items():
        optimal = optimal_action_sets(q.double().cpu())
        on_optimal = optimal.gather(1, actions[:, None]).squeeze(1).double()
        per_step = on_optimal - optimal.double().sum(1) / num_actions
        per_episode = torch.zeros(len(lengths), dtype=torch.float64).index_add_(0, episode, per_step) / lengths
        agreement[name] = float(per_episode.mean())
    return FitCheck(revisits, observed, predicted, by_chance, unexplained, agreement)
