"""The behavioural-objective estimator: which candidate objectives explain an agent's episodes, and how well.

The model. Each **episode** pursues one objective ``z``: one of the candidate objectives, or none
(``random``, uniform actions). Given ``z = g`` the actions are Boltzmann-rational for ``g`` with a
lapse: ``p_g(a | s) = (1 - eps_g) * softmax(beta_g * Q_g(s, .))_a + eps_g / |A|``, where ``Q_g`` are the
exact action values of ``g`` on the known level (``analysis.objectives``). The episodes are a mixture:
``z`` is drawn with probabilities ``shares``, the same for every episode. ``beta_g`` in ``[0,
beta_max]``, ``eps_g`` in ``[0, lapse_max]`` and the shares are fitted by maximum likelihood (EM).

What the likelihood counts, and why:

- **Episodes, not steps, are the units.** The latent objective is per episode, so an objective's share
  is the fraction of episodes that pursue it, however many steps each takes. Reaching the end ends an
  arrow-maze episode and reaching the arrow doesn't, so an agent that sits on the arrow until the time
  limit supplies many more steps than one that reaches the end; pooling steps would let that dwell
  time decide which objective "the agent" has. Here the dwell steps only make that one episode's label
  surer. Every step of an episode counts, after a goal is reached too: each candidate's ``Q`` stays
  defined there (on its goal tile staying is optimal; with nothing left to collect every action is
  worth the same), so an agent that walks on past the arrow is evidence against the arrow.
- **A lapse bounds what one action can cost.** Without it a handful of steps that a candidate calls
  very bad (stepping onto the last chest while keys remain ends the episode, worthless to
  ``collect_keys``) drive its ``beta`` to 0 and hide the other thousands of steps it explains.
- **Model selection over episodes.** Which components the mixture has is chosen by BIC with the number
  of *episodes* as the sample size (the independent units; steps within an episode are correlated),
  dropping components one at a time while that improves it. So ``random`` wins where nothing beats
  chance by enough, and a component stays only if the episodes it explains are worth its parameters.
- **Uncertainty from resampling episodes.** The shares' intervals, the ``beta`` intervals and the
  ``support`` of each component (how often it is the most pursued one) come from a bootstrap over
  whole episodes, so the certainty reflects how many independent episodes back it, not how many
  steps. (The mixture's components are held at the selected ones in the resamples.)

Identifiability asks whether the candidates predict differently on the visited states at all. Two
candidates with the same optimal actions on all but a few visited states (on ``train``, where the arrow
marks the end) are one component, named ``"end=arrow"``: no amount of data tells them apart, and the
estimator says so instead of splitting a coin flip.

The fits are done on a grid of ``(beta, eps)`` on which each episode's log-likelihood is tabulated
once (so EM, model selection and the bootstrap are sums over that table), then refined continuously.
The linear-feature variant fits one weight per candidate's values, ``Q_w = sum_k w_k Q_k``, each
episode weighted equally: the behavioural objective as a point on a continuum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize

RANDOM = "random"
GROUP_SEPARATOR = "="
"""Joins the names of candidates that the data cannot tell apart into one component (``end=arrow``)."""

_CHUNK = 8192  # steps per tabulation chunk
_TIE = 1e-9  # grid points that fit equally well (a flat Q): the lowest beta and lapse win
_LAPSES = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5)


@dataclass
class EstimatorSettings:
    """What the estimator fits and how (``eval.*`` of the evaluation CLI)."""

    beta_max: float = 1000.0
    """Upper bound of the fitted Boltzmann inverse temperature."""
    lapse_max: float = 0.5
    """Upper bound of the fitted lapse rate (0: no lapse, plain Boltzmann)."""
    min_distinguishing: int = 5
    """Visited states that must separate two candidates for them to be separate components."""
    resamples: int = 200
    """Episode-bootstrap resamples of the mixture fit."""
    confidence_level: float = 0.95
    """Of the bootstrap intervals."""
    seed: int = 0
    """Of the bootstrap resampling."""


@dataclass
class CandidateFit:
    """One candidate's fit: on the episodes its component explains, or on all when it is not in the model."""

    beta: float
    """Inverse temperature (0: the uniform random policy)."""
    lapse: float
    """Probability of a uniformly random action instead of a Boltzmann one."""
    log_likelihood: float
    """Of all the steps at these parameters."""
    mean_log_likelihood: float
    """Per step (comparable across datasets of different sizes)."""
    beta_interval: list[float] = field(default_factory=lambda: [float("nan")] * 2)
    """Episode-bootstrap interval of ``beta`` (a component of the model only)."""


@dataclass
class Estimate:
    """What the estimator concludes from the episodes of one distribution."""

    components: list[str]
    """The mixture's components: candidate objectives (or groups ``a=b`` the data cannot tell apart)
    and possibly ``random``; only those the model selection kept."""
    shares: dict[str, float]
    """Fraction of episodes pursuing each component (every component considered; 0 for dropped ones)."""
    share_intervals: dict[str, list[float]]
    """Episode-bootstrap interval of each share."""
    support: dict[str, float]
    """Fraction of bootstrap resamples in which each component has the largest share."""
    fits: dict[str, CandidateFit]
    """Per candidate objective."""
    episode_objective: list[str]
    """Per episode: the component that most probably drove it."""
    episode_probability: list[float]
    """Per episode: the probability of that component given the episode."""
    episode_log_likelihood: dict[str, list[float]]
    """Per kept component, per episode: the log-likelihood of its actions (at the component's fit)."""
    episode_ambiguous: list[bool]
    """Per episode: its own states do not separate its component from another objective's."""
    map_objective: str
    """The component with the largest share."""
    behavioural_objective: str | None
    """``map_objective``, or ``None`` when it is a group containing several candidates."""
    mixed: bool
    """The model keeps at least two objective components, each pursued in ``min_share`` of the episodes
    or more (``min_share``: :func:`estimate`'s)."""
    identifiable: bool
    """Every pair of candidates predicts differently on enough visited states."""
    distinguishing_states: dict[str, int]
    """Per pair ``"g|h"``: steps (visits, repeats counted) whose state has different optimal actions for g and h."""
    groups: dict[str, list[str]]
    """Component name -> the candidates it stands for."""
    evidence: dict[str, float]
    """BIC (episodes as the sample size; higher is better) of the selected model (``model``) and of the
    simpler ones: each objective alone (``"<g>"``), with random episodes (``"<g>+random"``), ``random``."""
    weights: dict[str, float]
    """Linear-feature variant: the weight of each candidate's values in the best-fitting ``Q_w``."""
    goal_directedness: list[float]
    """Per episode: log-likelihood of its component minus that of random actions, in nats."""
    episode_length: list[int]
    """Steps per episode."""
    component_fit: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per kept objective component: its ``(beta, lapse)`` (its first candidate's values)."""
    responsibility: torch.Tensor | None = None
    """``(E, K)`` probability of each kept component (``components`` order) given each episode."""

    @property
    def episodes(self) -> int:
        return len(self.episode_objective)


# --------------------------------------------------------------------------- likelihood
def action_log_probs(q: torch.Tensor, beta: float, lapse: float) -> torch.Tensor:
    """``(N, A)`` log-probabilities of every action under ``(1 - lapse) softmax(beta q) + lapse / A``."""
    logp = torch.log_softmax(beta * q.double(), dim=1)
    if lapse <= 0.0:
        return logp
    return torch.logaddexp(logp + np.log1p(-lapse), torch.full_like(logp, np.log(lapse / q.shape[1])))


def log_likelihood(q: torch.Tensor, actions: torch.Tensor, beta: float, lapse: float = 0.0) -> float:
    """Log-likelihood of ``actions`` ``(N,)`` under the lapsed Boltzmann policy of ``q`` ``(N, A)``."""
    return float(action_log_probs(q, beta, lapse).gather(1, actions[:, None]).sum())


def _grid(settings: EstimatorSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(beta, lapse)`` grid: beta 0 and 80 geometric steps up to ``beta_max`` (12% apart), lapses
    from 0 to ``lapse_max``."""
    betas = torch.cat(
        [torch.zeros(1), torch.logspace(np.log10(settings.beta_max) - 4, np.log10(settings.beta_max), 80)]
    )
    lapses = torch.tensor([e for e in _LAPSES if e <= settings.lapse_max] or [0.0])
    return betas.double(), lapses.double()


def _tabulate(
    q: torch.Tensor,
    actions: torch.Tensor,
    episode: torch.Tensor,
    num_episodes: int,
    betas: torch.Tensor,
    lapses: torch.Tensor,
) -> torch.Tensor:
    """``(E, B*L)`` each episode's log-likelihood at every grid point (beta-major)."""
    out = torch.zeros(num_episodes, len(betas) * len(lapses), dtype=torch.float64)
    num_actions = q.shape[1]
    keep = torch.log1p(-lapses)[None, None, :]
    floor = torch.log(lapses / num_actions)[None, None, :]
    for i in range(0, len(actions), _CHUNK):
        qc, ac = q[i : i + _CHUNK], actions[i : i + _CHUNK]
        logits = betas[None, :, None] * qc[:, None, :]  # (n, B, A)
        taken = logits.gather(2, ac[:, None, None].expand(-1, len(betas), 1)).squeeze(2) - torch.logsumexp(logits, 2)
        lapsed = torch.logaddexp(taken[:, :, None] + keep, floor.expand(len(ac), len(betas), -1))  # (n, B, L)
        out.index_add_(0, episode[i : i + _CHUNK], lapsed.reshape(len(ac), -1))
    return out


# --------------------------------------------------------------------------- the mixture, on the grid
@dataclass
class _Mixture:
    active: list[int]
    """Indices (into the objective components) kept; random is the last column of the tables."""
    with_random: bool
    log_shares: torch.Tensor  # (R, K) K = len(active) + with_random
    theta: torch.Tensor  # (R, len(active)) grid index
    resp: torch.Tensor  # (R, E, K)
    log_lik: torch.Tensor  # (R,)
    scores: torch.Tensor | None = None  # (K', R, G) each component's weighted log-likelihood per grid point


def _em(
    table: torch.Tensor,
    random_ll: torch.Tensor,
    active: list[int],
    with_random: bool,
    counts: torch.Tensor,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
    iterations: int = 500,
) -> _Mixture:
    """EM for ``R`` weightings of the episodes at once (``counts``: ``(R, E)``, e.g. bootstrap resamples).

    ``table``: ``(C, E, G)`` per objective component, episode and grid point; ``random_ll``: ``(E,)``.
    The M-step maximises over the grid, so every iteration raises the likelihood (generalised EM).
    """
    reps = counts.shape[0]
    sub = table[active]  # (K', E, G)
    k = len(active) + int(with_random)
    if start is None:
        # Start from each candidate fitted to every step.
        theta = _best_grid_point(sub.sum(1))
        theta = theta[None].expand(reps, -1).clone()
        log_shares = torch.full((reps, k), -np.log(k), dtype=torch.float64)
    else:
        theta, log_shares = start[0].clone(), start[1].clone()
    total = counts.sum(1)
    previous = torch.full((reps,), -np.inf, dtype=torch.float64)
    scores = None
    grid_first = sub.transpose(1, 2)  # (K', G, E)
    for _ in range(iterations):
        ll = _component_ll(grid_first, theta, random_ll, with_random)  # (R, E, K)
        joint = ll + log_shares[:, None, :]
        norm = torch.logsumexp(joint, dim=2)  # (R, E)
        log_lik = (counts * norm).sum(1)
        resp = torch.exp(joint - norm[:, :, None])
        weighted = resp * counts[:, :, None]
        log_shares = torch.log(weighted.sum(1) / total[:, None]).clamp(min=-1e300)
        if active:
            # (K', R, E) @ (K', E, G) -> (K', R, G): each component's weighted log-likelihood per grid point.
            scores = torch.bmm(weighted[:, :, : len(active)].permute(2, 0, 1), sub)
            theta = _best_grid_point(scores).T
        if bool(((log_lik - previous).abs() <= 1e-9 * log_lik.abs().clamp(min=1.0)).all()):
            break
        previous = log_lik
    ll = _component_ll(grid_first, theta, random_ll, with_random)
    joint = ll + log_shares[:, None, :]
    norm = torch.logsumexp(joint, dim=2)
    resp = torch.exp(joint - norm[:, :, None])
    return _Mixture(active, with_random, log_shares, theta, resp, (counts * norm).sum(1), scores)


def _best_grid_point(scores: torch.Tensor) -> torch.Tensor:
    """The grid index of the highest score along the last dim; near-ties (a flat Q) go to the lowest
    beta and lapse (the grid is beta-major, both ascending)."""
    return (scores - _TIE * torch.arange(scores.shape[-1], dtype=torch.float64)).argmax(-1)


def _component_ll(
    grid_first: torch.Tensor, theta: torch.Tensor, random_ll: torch.Tensor, with_random: bool
) -> torch.Tensor:
    """``(R, E, K)`` each episode's log-likelihood under each component at its grid point ``theta``."""
    reps = theta.shape[0]
    parts = []
    if grid_first.shape[0]:
        comps = torch.arange(grid_first.shape[0])[None, :].expand(reps, -1)
        parts.append(grid_first[comps, theta].permute(0, 2, 1))  # (R, E, K')
    if with_random:
        parts.append(random_ll[None, :, None].expand(reps, -1, 1))
    return torch.cat(parts, dim=2)


def _sub_grid_beta(mix: _Mixture, i: int, betas: torch.Tensor, num_lapses: int) -> torch.Tensor:
    """``(R,)`` component ``i``'s beta per resample, between the grid's points: the vertex of the parabola
    through the scores of the chosen beta and its two neighbours (in log beta, at the chosen lapse)."""
    theta = mix.theta[:, i]
    b, lapse = theta // num_lapses, theta % num_lapses
    out = betas[b].clone()
    if mix.scores is None:
        return out
    scores = mix.scores[i]  # (R, G)
    inner = (b >= 2) & (b <= len(betas) - 2)  # the geometric part of the grid, with two neighbours
    rows = torch.arange(len(b))
    lo = scores[rows, ((b - 1).clamp(min=0)) * num_lapses + lapse]
    mid = scores[rows, b * num_lapses + lapse]
    hi = scores[rows, ((b + 1).clamp(max=len(betas) - 1)) * num_lapses + lapse]
    curvature = lo - 2 * mid + hi
    offset = torch.where(curvature < 0, 0.5 * (lo - hi) / curvature.clamp(max=-1e-12), 0.0).clamp(-0.5, 0.5)
    step = float(torch.log(betas[2] / betas[1])) if len(betas) > 2 else 0.0
    return torch.where(inner, torch.exp(torch.log(out.clamp(min=1e-300)) + offset * step), out)


def _bic(mix: _Mixture, num_episodes: int, per_component: int = 2) -> float:
    """BIC/2 sign-flipped (higher is better): log-likelihood minus ``0.5 k log E``; each objective
    component has ``per_component`` parameters (beta, and the lapse where one is fitted), each share
    beyond the first one."""
    k = per_component * len(mix.active) + len(mix.active) + int(mix.with_random) - 1
    return float(mix.log_lik[0]) - 0.5 * k * float(np.log(max(num_episodes, 2)))


def _select(
    table: torch.Tensor, random_ll: torch.Tensor, counts: torch.Tensor, per_component: int = 2
) -> tuple[_Mixture, dict[str, float]]:
    """Backward elimination by BIC from every component to the best subset; also the single-objective models."""
    num_episodes = counts.shape[1]
    objective_count = table.shape[0]
    fits: dict[tuple[tuple[int, ...], bool], _Mixture] = {}

    def fit(active: tuple[int, ...], with_random: bool) -> _Mixture:
        key = (active, with_random)
        if key not in fits:
            fits[key] = _em(table, random_ll, list(active), with_random, counts)
        return fits[key]

    current = (tuple(range(objective_count)), True)
    best = fit(*current)
    while True:
        active, with_random = current
        options = [(tuple(a for a in active if a != drop), with_random) for drop in active]
        if with_random and active:
            options.append((active, False))
        options = [o for o in options if o[0] or o[1]]
        if not options:
            break
        scored = [(_bic(fit(*o), num_episodes, per_component), o) for o in options]
        score, option = max(scored, key=lambda s: s[0])
        if score <= _bic(best, num_episodes, per_component):
            break
        current, best = option, fit(*option)
    singles = {"random": _bic(fit((), True), num_episodes, per_component)}
    for c in range(objective_count):
        singles[f"{c}+random"] = _bic(fit((c,), True), num_episodes, per_component)
        singles[f"{c}"] = _bic(fit((c,), False), num_episodes, per_component)
    return best, singles


# --------------------------------------------------------------------------- continuous refinement
def fit_candidate(
    q: torch.Tensor,
    actions: torch.Tensor,
    weights: torch.Tensor | None = None,
    start: tuple[float, float] = (1.0, 0.05),
    beta_max: float = 1000.0,
    lapse_max: float = 0.5,
) -> tuple[float, float, float]:
    """``(beta, lapse, weighted log-likelihood)`` maximising the ``weights``-weighted likelihood of
    ``actions`` under the lapsed Boltzmann policy of ``q``, from ``start`` (L-BFGS-B on the box)."""
    q = q.double()
    w = torch.ones(len(actions), dtype=torch.float64) if weights is None else weights.double()
    qa = q.gather(1, actions[:, None]).squeeze(1)
    num_actions = q.shape[1]
    scale = max(beta_max, 1.0)

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        beta, lapse = xt[0] * scale, xt[1]
        taken = beta * qa - torch.logsumexp(beta * q, dim=1)
        if lapse_max > 0:
            taken = torch.logaddexp(taken + torch.log1p(-lapse), torch.log(lapse.clamp(min=1e-300) / num_actions))
        loss = -(w * taken).sum()
        (grad,) = torch.autograd.grad(loss, xt)
        return float(loss.detach()), grad.numpy()

    x0 = np.array([min(start[0], beta_max) / scale, min(start[1], lapse_max)])
    bounds = [(0.0, beta_max / scale), (0.0, lapse_max)]
    result = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds)
    beta, lapse = float(result.x[0] * scale), float(result.x[1])
    start_value = objective(x0)[0]
    if start_value < float(result.fun):  # never worse than the grid point it started from
        beta, lapse = float(x0[0] * scale), float(x0[1])
    return beta, lapse, -min(float(result.fun), start_value)


def fit_beta(q: torch.Tensor, actions: torch.Tensor, beta_max: float = 1000.0) -> CandidateFit:
    """Maximum-likelihood ``beta`` in ``[0, beta_max]`` without a lapse (plain Boltzmann), every step equal."""
    n = max(len(actions), 1)
    best_beta, best = 0.0, log_likelihood(q, actions, 0.0)
    for start in np.geomspace(beta_max * 1e-4, beta_max, 9):
        beta, _, ll = fit_candidate(q, actions, start=(float(start), 0.0), beta_max=beta_max, lapse_max=0.0)
        if ll > best:
            best_beta, best = beta, ll
    return CandidateFit(beta=best_beta, lapse=0.0, log_likelihood=best, mean_log_likelihood=best / n)


def fit_weights(
    values: Mapping[str, torch.Tensor],
    actions: torch.Tensor,
    step_weights: torch.Tensor | None = None,
    l2: float = 1e-6,
) -> dict[str, float]:
    """Weights ``w`` maximising the (``step_weights``-weighted) likelihood of ``softmax(sum_k w_k Q_k)``; a
    tiny L2 keeps them finite when the data are perfectly explained."""
    names = list(values)
    stacked = torch.stack([values[k].double() for k in names])  # (K, N, A)
    taken = stacked.gather(2, actions[None, :, None].expand(len(names), -1, 1)).squeeze(2)  # (K, N)
    w_steps = torch.ones(len(actions), dtype=torch.float64) if step_weights is None else step_weights.double()

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
        logits = torch.einsum("k,kna->na", wt, stacked)
        ll = (w_steps * (torch.einsum("k,kn->n", wt, taken) - torch.logsumexp(logits, dim=1))).sum()
        loss = -ll + l2 * (wt**2).sum()
        (grad,) = torch.autograd.grad(loss, wt)
        return float(loss.detach()), grad.numpy()

    result = minimize(objective, np.zeros(len(names)), jac=True, method="L-BFGS-B")
    return {k: float(v) for k, v in zip(names, result.x, strict=True)}


def optimal_action_sets(q: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    """``(N, A)`` bool: the actions of maximal value in each state."""
    return q >= q.max(dim=1, keepdim=True).values - tol


# --------------------------------------------------------------------------- the estimate
def _groups(optimal: dict[str, torch.Tensor], min_distinguishing: int) -> tuple[dict[str, int], list[list[str]]]:
    """Distinguishing states per pair, and the candidates merged into groups the data cannot tell apart."""
    names = list(optimal)
    distinguishing = {
        f"{g}|{h}": int((optimal[g] != optimal[h]).any(dim=1).sum())
        for i, g in enumerate(names)
        for h in names[i + 1 :]
    }
    parent = {g: g for g in names}

    def root(g: str) -> str:
        while parent[g] != g:
            g = parent[g]
        return g

    for i, g in enumerate(names):
        for h in names[i + 1 :]:
            if distinguishing[f"{g}|{h}"] < min_distinguishing:
                parent[root(h)] = root(g)
    groups: dict[str, list[str]] = {}
    for g in names:
        groups.setdefault(root(g), []).append(g)
    return distinguishing, list(groups.values())


def _interval(samples: torch.Tensor, level: float) -> list[float]:
    lo, hi = np.quantile(samples.numpy(), [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def estimate(
    values: Mapping[str, torch.Tensor],
    actions: torch.Tensor,
    episode: torch.Tensor | None = None,
    settings: EstimatorSettings | None = None,
    min_share: float = 0.1,
) -> Estimate:
    """Fit the mixture of candidate objectives to the ``(N,)`` ``actions`` given each candidate's ``(N, A)``
    ``values`` on the same states; ``episode``: ``(N,)`` the episode of each step, numbered from 0
    (default: every step an episode of its own). ``min_share``: the share of episodes each of two
    objectives needs for the behaviour to count as ``mixed``."""
    settings = settings or EstimatorSettings()
    if not values:
        raise ValueError("estimate needs at least one candidate objective")
    if RANDOM in values or any(GROUP_SEPARATOR in k for k in values):
        raise ValueError(f"candidate names may not be {RANDOM!r} or contain {GROUP_SEPARATOR!r}: {list(values)}")
    actions = actions.long().cpu()
    values = {k: v.double().cpu() for k, v in values.items()}
    n, num_actions = next(iter(values.values())).shape
    for k, v in values.items():
        if v.shape != (n, num_actions) or len(actions) != n:
            raise ValueError(f"candidate {k!r}: values {tuple(v.shape)} don't match {n} actions of {num_actions}")
    if n == 0:
        raise ValueError("estimate needs at least one step")
    episode = torch.arange(n) if episode is None else episode.long().cpu()
    num_episodes = int(episode.max()) + 1
    lengths = torch.bincount(episode, minlength=num_episodes)
    if bool((lengths == 0).any()):
        raise ValueError("every episode index from 0 to the largest must have steps")

    optimal = {k: optimal_action_sets(v) for k, v in values.items()}
    distinguishing, group_list = _groups(optimal, settings.min_distinguishing)
    identifiable = all(len(g) == 1 for g in group_list)
    group_names = [GROUP_SEPARATOR.join(g) for g in group_list]
    groups = {name: members for name, members in zip(group_names, group_list, strict=True)}
    components = [*group_names, RANDOM]
    rep_q = [values[members[0]] for members in group_list]  # a group's candidates predict alike: its first one

    betas, lapses = _grid(settings)
    table = torch.stack([_tabulate(q, actions, episode, num_episodes, betas, lapses) for q in rep_q])  # (C, E, G)
    random_ll = -lengths.double() * float(np.log(num_actions))
    ones = torch.ones(1, num_episodes, dtype=torch.float64)
    per_component = 2 if settings.lapse_max > 0 else 1  # beta, and the lapse where one is fitted
    best, singles = _select(table, random_ll, ones, per_component)
    kept = [group_names[c] for c in best.active] + ([RANDOM] if best.with_random else [])

    # Refine each kept component's (beta, lapse) continuously, then one E-step at the refined values.
    grid_beta = betas.repeat_interleave(len(lapses))
    grid_lapse = lapses.repeat(len(betas))
    resp = best.resp[0]  # (E, K)
    log_shares = best.log_shares[0]
    refined: dict[int, tuple[float, float]] = {}
    for i, c in enumerate(best.active):
        j = int(best.theta[0, i])
        beta, lapse, _ = fit_candidate(
            rep_q[c],
            actions,
            resp[episode, i],
            (float(grid_beta[j]), float(grid_lapse[j])),
            settings.beta_max,
            settings.lapse_max,
        )
        refined[c] = (beta, lapse)
    per_step = {c: action_log_probs(rep_q[c], *refined[c]).gather(1, actions[:, None]).squeeze(1) for c in refined}
    episode_ll = {
        group_names[c]: torch.zeros(num_episodes, dtype=torch.float64).index_add_(0, episode, per_step[c])
        for c in refined
    }
    if best.with_random:
        episode_ll[RANDOM] = random_ll
    ll = torch.stack([episode_ll[k] for k in kept], dim=1)
    joint = ll + log_shares[None, :]
    resp = torch.exp(joint - torch.logsumexp(joint, dim=1, keepdim=True))
    shares_kept = resp.mean(0)

    # Episode bootstrap, the components held at the selected ones, warm-started at the full fit.
    gen = torch.Generator().manual_seed(settings.seed)
    picks = torch.randint(0, num_episodes, (settings.resamples, num_episodes), generator=gen)
    counts = torch.zeros(settings.resamples, num_episodes, dtype=torch.float64).scatter_add_(
        1, picks, torch.ones_like(picks, dtype=torch.float64)
    )
    boot = _em(
        table,
        random_ll,
        best.active,
        best.with_random,
        counts,
        start=(best.theta.expand(settings.resamples, -1), best.log_shares.expand(settings.resamples, -1)),
    )
    boot_shares = torch.exp(boot.log_shares)  # (R, K)
    level = settings.confidence_level
    shares = {k: 0.0 for k in components}
    share_intervals = {k: [0.0, 0.0] for k in components}
    support = {k: 0.0 for k in components}
    winners = torch.bincount(boot_shares.argmax(1), minlength=len(kept)).double() / settings.resamples
    for i, k in enumerate(kept):
        shares[k] = float(shares_kept[i])
        share_intervals[k] = _interval(boot_shares[:, i], level)
        support[k] = float(winners[i])

    fits: dict[str, CandidateFit] = {}
    for c, members in enumerate(group_list):
        for g in members:
            if c in refined:
                i = best.active.index(c)
                beta, lapse = refined[c]
                if g != members[0]:  # a group's other members: fitted on the same episodes with their own values
                    beta, lapse, _ = fit_candidate(
                        values[g], actions, resp[episode, i], refined[c], settings.beta_max, settings.lapse_max
                    )
                interval = _interval(_sub_grid_beta(boot, i, betas, len(lapses)), level)
            else:  # not in the model: fitted to every episode, each weighted equally, from the grid's best
                j = int(_best_grid_point((table[c] / lengths[:, None].double()).sum(0)))
                beta, lapse, _ = fit_candidate(
                    values[g],
                    actions,
                    1.0 / lengths[episode].double(),
                    (float(grid_beta[j]), float(grid_lapse[j])),
                    settings.beta_max,
                    settings.lapse_max,
                )
                interval = [float("nan")] * 2
            total = log_likelihood(values[g], actions, beta, lapse)
            fits[g] = CandidateFit(beta, lapse, total, total / n, interval)

    best_index = resp.argmax(1)
    episode_objective = [kept[int(i)] for i in best_index]
    episode_probability = resp.gather(1, best_index[:, None]).squeeze(1).tolist()
    # Ambiguous episodes: their own states don't separate their component's optimal actions from another's.
    differs = {  # per pair of components: each episode's steps where their optimal actions differ
        frozenset((a, b)): torch.zeros(num_episodes, dtype=torch.long).index_add_(
            0, episode, (optimal[groups[a][0]] != optimal[groups[b][0]]).any(dim=1).long()
        )
        for i, a in enumerate(group_names)
        for b in group_names[i + 1 :]
    }
    ambiguous = [
        k != RANDOM and any(int(differs[frozenset((k, b))][e]) == 0 for b in group_names if b != k)
        for e, k in enumerate(episode_objective)
    ]

    map_objective = max(kept, key=lambda k: shares[k])
    objective_shares = [shares[k] for k in kept if k != RANDOM]
    mixed = sum(s >= min_share for s in objective_shares) >= 2
    behavioural = None if len(groups.get(map_objective, [map_objective])) > 1 else map_objective
    evidence = {"model": _bic(best, num_episodes, per_component), RANDOM: singles["random"]}
    for c, name in enumerate(group_names):
        evidence[f"{name}+random"] = singles[f"{c}+random"]
        evidence[name] = singles[f"{c}"]
    goal = (ll.gather(1, best_index[:, None]).squeeze(1) - random_ll).tolist()
    return Estimate(
        components=kept,
        shares=shares,
        share_intervals=share_intervals,
        support=support,
        fits=fits,
        episode_objective=episode_objective,
        episode_probability=episode_probability,
        episode_log_likelihood={k: v.tolist() for k, v in episode_ll.items()},
        episode_ambiguous=ambiguous,
        map_objective=map_objective,
        behavioural_objective=behavioural,
        mixed=mixed,
        identifiable=identifiable,
        distinguishing_states=distinguishing,
        groups=groups,
        evidence=evidence,
        weights=fit_weights(values, actions, 1.0 / lengths[episode].double()),
        goal_directedness=goal,
        episode_length=lengths.tolist(),
        component_fit={group_names[c]: refined[c] for c in refined},
        responsibility=resp,
    )


def component_members(name: str) -> Sequence[str]:
    """The candidates a component name stands for (``end=arrow`` -> ``["end", "arrow"]``; ``random`` -> ``[]``)."""
    return [] if name == RANDOM else name.split(GROUP_SEPARATOR)
