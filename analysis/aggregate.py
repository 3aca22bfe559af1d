"""Evaluation reports of many agents -> one row per seed, and summaries over seeds with intervals.

What an experiment's table, figure and ``results.json`` hold (``experiments/run_experiment.py``). It reads
only the reports ``experiments/evaluate.py`` writes (no wandb, no checkpoints), so a figure can be redrawn
from committed numbers. Claims about agents get intervals over seeds, never over episodes: the fraction of
seeds whose behavioural objective is the base one has an exact (Clopper-Pearson) binomial interval, means
over seeds a percentile bootstrap (``analysis.metrics.interval``, the reports' own).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from analysis.metrics import VerdictConfig, interval

UNIDENTIFIED = "unidentified"
"""The behavioural objective of a seed whose episodes cannot tell the candidates apart (``None`` in a report)."""
METRICS = ("capability", "success", "objective_robustness", "goal_directedness", "base_return", "regret")
"""The per-seed scalars summarised over seeds (besides the weight gap and the env's own metrics)."""
_SEED = re.compile(r"^seed_(-?\d+)$")


def member_results(report: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Policy spec -> distribution -> its per-seed result, for a report of one policy or of several."""
    if "runs" in report:
        return report["runs"]
    return {str(report["policy"]): report["distributions"]}


def seed_of(spec: str) -> int | None:
    """The seed a population member's spec names (``.../seed_<s>`` or a kept checkpoint inside it)."""
    for part in reversed(Path(spec).parts):
        match = _SEED.match(part)
        if match:
            return int(match.group(1))
    return None


def seed_row(spec: str, result: dict[str, Any], base: str, proxy: str | None) -> dict[str, Any]:
    """One seed's numbers on one distribution: labels, scalars, the linear-feature weights and the env's metrics.

    ``weight_gap``: ``w_base - w_proxy`` of the estimator's linear-feature fit (positive: the agent's actions
    follow the base objective's values more than the proxy's)."""
    weights = {k: float(v) for k, v in result["weights"].items()}
    gap = weights[base] - weights[proxy] if proxy is not None and base in weights and proxy in weights else None
    return {
        "policy": spec,
        "seed": seed_of(spec),
        "verdict": result["verdict"],
        "behavioural_objective": result["behavioural_objective"] or UNIDENTIFIED,
        "map_objective": result["map_objective"],
        "mixed": bool(result["mixed"]),
        **{k: result[k] for k in METRICS},
        "weights": weights,
        "weight_gap": gap,
        "shares": dict(result["shares"]),
        "env_metrics": dict(result["env_metrics"]),
        "episodes": result["episodes"],
    }


def report_rows(report: dict[str, Any], base: str, proxy: str | None) -> dict[str, list[dict[str, Any]]]:
    """Distribution -> one :func:`seed_row` per policy of ``report`` (in the report's order)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for spec, results in member_results(report).items():
        for distribution, result in results.items():
            rows.setdefault(distribution, []).append(seed_row(spec, result, base, proxy))
    return rows


def binomial_interval(successes: int, trials: int, confidence_level: float) -> list[float] | None:
    """Exact (Clopper-Pearson) interval of a fraction of seeds; ``None`` without seeds."""
    if trials == 0:
        return None
    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence_level, method="exact")
    return [float(ci.low), float(ci.high)]


def _mean_and_interval(values: list[float | None], cfg: VerdictConfig) -> dict[str, Any]:
    known = np.array([v for v in values if v is not None], dtype=np.float64)
    return {
        "mean": float(known.mean()) if len(known) else None,
        "interval": interval(known, cfg) if len(known) else None,
        "seeds": len(known),
    }


def summarise(rows: list[dict[str, Any]], base: str, cfg: VerdictConfig | None = None) -> dict[str, Any]:
    """Over the seeds of ``rows`` (one distribution of one setup): verdict and behavioural-objective
    counts, the fraction of seeds pursuing ``base`` with its binomial interval, and each metric's mean
    over seeds with its bootstrap interval (none with fewer than ``cfg.min_interval_samples`` seeds)."""
    cfg = cfg or VerdictConfig()
    seeds = len(rows)
    pursuing = sum(r["behavioural_objective"] == base for r in rows)
    metric_values = {k: [r[k] for r in rows] for k in (*METRICS, "weight_gap")}
    env_names = list(dict.fromkeys(k for r in rows for k in r["env_metrics"]))
    env_values = {k: [r["env_metrics"].get(k) for r in rows] for k in env_names}
    return {
        "seeds": seeds,
        "verdicts": dict(Counter(r["verdict"] for r in rows).most_common()),
        "behavioural_objectives": dict(Counter(r["behavioural_objective"] for r in rows).most_common()),
        "base_seeds": int(pursuing),
        "base_fraction": pursuing / seeds if seeds else None,
        "base_fraction_interval": binomial_interval(int(pursuing), seeds, cfg.confidence_level),
        "metrics": {k: _mean_and_interval(v, cfg) for k, v in metric_values.items()},
        "env_metrics": {k: _mean_and_interval(v, cfg) for k, v in env_values.items()},
    }


def format_value(summary: dict[str, Any], digits: int = 2) -> str:
    """``0.81 [0.75, 0.87]`` for a :func:`summarise` metric entry (``–`` when unknown)."""
    if summary.get("mean") is None:
        return "–"
    text = f"{summary['mean']:.{digits}f}"
    if summary.get("interval") is not None:
        low, high = summary["interval"]
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def format_fraction(summary: dict[str, Any]) -> str:
    """``7/10 [0.35, 0.93]``: seeds pursuing the base objective, of all, with the binomial interval."""
    text = f"{summary['base_seeds']}/{summary['seeds']}"
    if summary["base_fraction_interval"] is not None:
        low, high = summary["base_fraction_interval"]
        text += f" [{low:.2f}, {high:.2f}]"
    return text


def format_counts(counts: dict[str, int]) -> str:
    """``arrow 7, end 3``."""
    return ", ".join(f"{k} {v}" for k, v in counts.items())
