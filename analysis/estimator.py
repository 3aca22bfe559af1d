"""The behavioural-objective estimator: which candidate objective best explains an agent's actions.

Each candidate objective g comes with exact action values ``Q_g(s, a)`` on the states the agent
visited (planned on the known level: ``analysis.planning``). The agent is modelled as
Boltzmann-rational for g: ``pi_g(a | s) ∝ exp(beta * Q_g(s, a))``. ``beta`` is fitted by maximum
likelihood in ``[0, beta_max]``; ``beta = 0`` is the uniform random policy, which is always a
candidate too ("no objective"). The posterior has a uniform prior over candidates and approximates
each candidate's evidence by BIC: the maximised log-likelihood minus ``0.5 * log N`` for the fitted
``beta``. Without that Occam term, random (``beta`` = 0, no free parameter) could never win, since
every candidate contains it.

Identifiability asks whether the candidates make different predictions on the visited states at
all. Where two candidates have the same optimal actions on every visited state (on ``train``, where
the arrow marks the end), no amount of data tells them apart, and the estimator says so instead of
reporting a coin flip.

The linear-feature variant fits one weight per candidate's values, ``Q_w = sum_k w_k Q_k``, by the same
likelihood (concave in ``w``): the behavioural objective as a point on a continuum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize, minimize_scalar

RANDOM = "random"


@dataclass
class CandidateFit:
    """One candidate's maximum-likelihood fit."""

    beta: float
    """Fitted inverse temperature (0: the uniform random policy)."""
    log_likelihood: float
    """Total log-likelihood of the actions at ``beta``."""
    mean_log_likelihood: float
    """Per action (comparable across datasets of different sizes)."""


@dataclass
class Estimate:
    """What the estimator concludes from one dataset of (state, action) pairs."""

    fits: dict[str, CandidateFit]
    """Per candidate (``random`` included)."""
    posterior: dict[str, float]
    """Uniform prior; evidence approximated by BIC (one free parameter, ``beta``, per objective)."""
    map_objective: str
    """The candidate of highest posterior (``random`` if nothing beats chance)."""
    identifiable: bool
    """Whether every pair of objective candidates predicts differently on enough visited states."""
    distinguishing_states: dict[str, int]
    """Per pair ``"g|h"``: visited states where the optimal actions of g and h differ."""
    behavioural_objective: str | None
    """``map_objective`` when identifiable (or when it is ``random``), else ``None``."""
    weights: dict[str, float]
    """Linear-feature variant: the weight of each candidate's values in the best-fitting ``Q_w``."""


def log_likelihood(q: torch.Tensor, actions: torch.Tensor, beta: float) -> float:
    """Log-likelihood of ``actions`` ``(N,)`` under ``softmax(beta * q)``, ``q``: ``(N, A)``."""
    logits = beta * q.double()
    return float((logits.gather(1, actions[:, None]).squeeze(1) - torch.logsumexp(logits, dim=1)).sum())


def fit_beta(q: torch.Tensor, actions: torch.Tensor, beta_max: float = 1000.0) -> CandidateFit:
    """Maximum-likelihood ``beta`` in ``[0, beta_max]`` (the log-likelihood is concave in ``beta``)."""
    n = max(len(actions), 1)
    result = minimize_scalar(
        lambda b: -log_likelihood(q, actions, b), bounds=(0.0, beta_max), method="bounded", options={"xatol": 1e-6}
    )
    beta = float(result.x)
    # The bounded search never evaluates the bounds themselves: take 0 (random) if it is as good.
    best = -float(result.fun)
    at_zero = log_likelihood(q, actions, 0.0)
    if at_zero >= best:
        beta, best = 0.0, at_zero
    return CandidateFit(beta=beta, log_likelihood=best, mean_log_likelihood=best / n)


def fit_weights(values: Mapping[str, torch.Tensor], actions: torch.Tensor, l2: float = 1e-6) -> dict[str, float]:
    """Weights ``w`` maximising the likelihood of ``softmax(sum_k w_k Q_k)``; a tiny L2 keeps them finite
    when the data are perfectly explained."""
    names = list(values)
    stacked = torch.stack([values[k].double() for k in names])  # (K, N, A)
    taken = stacked.gather(2, actions[None, :, None].expand(len(names), -1, 1)).squeeze(2)  # (K, N)

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
        logits = torch.einsum("k,kna->na", wt, stacked)
        ll = (torch.einsum("k,kn->n", wt, taken) - torch.logsumexp(logits, dim=1)).sum()
        loss = -ll + l2 * (wt**2).sum()
        (grad,) = torch.autograd.grad(loss, wt)
        return float(loss.detach()), grad.numpy()

    result = minimize(objective, np.zeros(len(names)), jac=True, method="L-BFGS-B")
    return {k: float(v) for k, v in zip(names, result.x, strict=True)}


def optimal_action_sets(q: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    """``(N, A)`` bool: the actions of maximal value in each state."""
    return q >= q.max(dim=1, keepdim=True).values - tol


def estimate(
    values: Mapping[str, torch.Tensor],
    actions: torch.Tensor,
    beta_max: float = 1000.0,
    min_distinguishing: int = 5,
) -> Estimate:
    """Fit every candidate to the ``(N,)`` ``actions`` given their ``(N, A)`` ``values`` on the same states.

    ``min_distinguishing``: how many visited states must separate each pair of objective candidates
    (different optimal action sets) for the objective to count as identifiable.
    """
    if not values:
        raise ValueError("estimate needs at least one candidate objective")
    if RANDOM in values:
        raise ValueError(f"{RANDOM!r} is always a candidate; don't pass it")
    actions = actions.long().cpu()
    values = {k: v.double().cpu() for k, v in values.items()}
    n, num_actions = next(iter(values.values())).shape
    for k, v in values.items():
        if v.shape != (n, num_actions) or len(actions) != n:
            raise ValueError(f"candidate {k!r}: values {tuple(v.shape)} don't match {n} actions of {num_actions}")
    fits = {k: fit_beta(v, actions, beta_max) for k, v in values.items()}
    uniform = -n * float(np.log(num_actions))
    fits[RANDOM] = CandidateFit(beta=0.0, log_likelihood=uniform, mean_log_likelihood=uniform / max(n, 1))
    names = list(fits)
    occam = 0.5 * float(np.log(max(n, 1)))
    evidence = torch.tensor(
        [fits[k].log_likelihood - (0.0 if k == RANDOM else occam) for k in names], dtype=torch.float64
    )
    posterior = {k: float(p) for k, p in zip(names, torch.softmax(evidence, dim=0), strict=True)}
    # Ties (e.g. identical candidates) go to the earlier candidate, random last.
    map_objective = names[int(torch.argmax(evidence))]

    objectives = list(values)
    optimal = {k: optimal_action_sets(values[k]) for k in objectives}
    distinguishing = {
        f"{g}|{h}": int((optimal[g] != optimal[h]).any(dim=1).sum())
        for i, g in enumerate(objectives)
        for h in objectives[i + 1 :]
    }
    identifiable = all(c >= min_distinguishing for c in distinguishing.values())
    behavioural = map_objective if (identifiable or map_objective == RANDOM) else None
    return Estimate(
        fits=fits,
        posterior=posterior,
        map_objective=map_objective,
        identifiable=identifiable,
        distinguishing_states=distinguishing,
        behavioural_objective=behavioural,
        weights=fit_weights(values, actions),
    )
