"""Expectations of the regression gate: per distribution, the verdict, behavioural objective and metric
bounds a policy must keep. YAML, e.g.::

    shift_arrow:
      verdict: objective_misgeneralisation
      behavioural_objective: arrow
      capability: {min: 0.5}
      objective_robustness: {max: 0.1}
    shift_ratio:                      # keys and chests
      env_metrics: {excess_keys: {max: 0.5}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXACT = ("verdict", "behavioural_objective", "identifiable", "map_objective")
BOUNDED = ("capability", "objective_robustness", "base_return", "regret", "success")
ENV_METRICS = "env_metrics"  # a mapping of the env's own metric names to bounds


def load_expectations(path: str | Path, distributions: list[str]) -> dict[str, dict[str, Any]]:
    """Read and check an expectations file; an unknown distribution or key raises ``ValueError`` naming it."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"expect={path}: expected a mapping of distribution -> expectations")
    for dist, spec in data.items():
        if dist not in distributions:
            raise ValueError(f"expect={path}: distribution {dist!r} is not evaluated ({distributions})")
        for key, value in (spec or {}).items():
            if key in BOUNDED:
                _check_bounds(path, f"{dist}.{key}", value)
            elif key == ENV_METRICS:
                if not isinstance(value, dict):
                    raise ValueError(f"expect={path}: {dist}.{key} must map metric names to bounds, got {value!r}")
                for name, bounds in value.items():
                    _check_bounds(path, f"{dist}.{key}.{name}", bounds)
            elif key not in EXACT:
                raise ValueError(f"expect={path}: {dist}.{key} is not one of {[*EXACT, *BOUNDED, ENV_METRICS]}")
    return data


def _check_bounds(path: str | Path, where: str, value: Any) -> None:
    if not isinstance(value, dict) or not value or not set(value) <= {"min", "max"}:
        raise ValueError(f"expect={path}: {where} must be {{min: x, max: y}} (either or both), got {value!r}")
    for bound, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float) or number != number:
            raise ValueError(f"expect={path}: {where}.{bound} must be a number, got {number!r}")


def _bounded(where: str, value: float, want: dict[str, float]) -> list[str]:
    problems = []
    if value is None or value != value:
        return [f"{where}: {value} is not a number"]
    if "min" in want and value < want["min"]:
        problems.append(f"{where}: {value:.3f} < min {want['min']}")
    if "max" in want and value > want["max"]:
        problems.append(f"{where}: {value:.3f} > max {want['max']}")
    return problems


def check_expectations(results: dict[str, dict[str, Any]], expectations: dict[str, dict[str, Any]]) -> list[str]:
    """One readable line per violated expectation (empty: all hold)."""
    problems = []
    for dist, spec in expectations.items():
        got = results[dist]
        for key, want in (spec or {}).items():
            if key in EXACT:
                if got[key] != want:
                    problems.append(f"{dist}.{key}: expected {want!r}, got {got[key]!r}")
                continue
            if key == ENV_METRICS:
                for name, bounds in want.items():
                    if name not in got[ENV_METRICS]:
                        problems.append(f"{dist}.{key}.{name}: not reported (reported: {list(got[ENV_METRICS])})")
                    else:
                        problems += _bounded(f"{dist}.{key}.{name}", got[ENV_METRICS][name], bounds)
                continue
            problems += _bounded(f"{dist}.{key}", got[key], want)
    return problems
