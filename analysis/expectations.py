"""Expectations of the regression gate: per distribution, the verdict, behavioural objective and metric
bounds a policy must keep. YAML, e.g.::

    shift_arrow:
      verdict: objective_misgeneralisation
      behavioural_objective: arrow
      capability: {min: 0.5}
      objective_robustness: {max: 0.1}
      shares: {arrow: {min: 0.9}}
    shift_ratio:                      # keys and chests
      env_metrics: {excess_keys: {max: 0.5}}

:func:`load_expectations` checks the file against this schema before anything is evaluated, so that a
gate cannot pass on a file that expects nothing or not what it says: bad YAML, an empty file, a
distribution without expectations, a duplicate key, an unknown distribution, key, verdict, objective
or env metric, and bad or unreachable bounds all raise :class:`ExpectationsError`, whose message is
``<file>:<line>: <what is wrong>``. :func:`check_expectations` then lists what a report violates.

Exit status of the gate (``python -m experiments.evaluate ... expect=<file>``): 0 every expectation
holds; 1 the policy violates them (one line per violation on stderr); 2 the expectations file is
invalid (``expect=<file>:<line>: <what is wrong>`` on stderr, before any policy is evaluated).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from analysis.estimator import GROUP_SEPARATOR, RANDOM
from analysis.metrics import VERDICTS

EXACT = ("verdict", "behavioural_objective", "identifiable", "map_objective", "mixed", "unexplained")
BOUNDED = ("capability", "objective_robustness", "goal_directedness", "base_return", "regret", "success")
ENV_METRICS = "env_metrics"  # a mapping of the env's own metric names to bounds
SHARES = "shares"  # a mapping of objectives (or random) to bounds on their share of episodes
KEYS = (*EXACT, *BOUNDED, ENV_METRICS, SHARES)
METRIC_WORDS = ("the env's metric names", "a metric of the env")
SHARE_WORDS = ("objective names", "a candidate objective")
BOUND_KEYS = ("min", "max")
RANGES: dict[str, tuple[float, float]] = {
    "capability": (0.0, 1.0),  # SPL, or a discounted return over its optimum clamped to 1
    "objective_robustness": (0.0, 1.0),  # a share of episodes
    "goal_directedness": (0.0, math.inf),  # nats per episode above chance
    "success": (0.0, 1.0),  # a fraction of episodes
    "regret": (0.0, math.inf),  # the optimal minus the achieved base value
}
"""The values a report's bounded fields can take (``analysis.metrics``); base return has no known range."""


class ExpectationsError(ValueError):
    """An invalid expectations file; ``str()`` is ``<file>:<line>: <what is wrong>`` (line 1-based), or
    ``<file>: <what is wrong>`` for a file that cannot be read at all."""

    def __init__(self, path: str | Path, line: int | None, what: str) -> None:
        self.path, self.line, self.what = str(path), line, what
        super().__init__(f"{path}:{line}: {what}" if line is not None else f"{path}: {what}")


def load_expectations(
    path: str | Path,
    distributions: Sequence[str],
    *,
    objectives: Sequence[str] | None = None,
    env_metrics: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Read an expectations file, checked against the schema (module docstring).

    ``distributions``: the evaluated ones. ``objectives``: the env's candidate objective names (a
    report's ``behavioural_objective`` is one of them, ``random`` or null; its ``map_objective`` one of
    them, a group of them (``end=arrow``) or ``random``). ``env_metrics``: the names of the env's own
    metrics its reports carry. ``None`` skips that check, for a caller that does not know the env.
    Raises :class:`ExpectationsError`.
    """
    return _Schema(path, list(distributions), objectives, env_metrics).load()


class _Schema:
    """The check of one file, on PyYAML's node graph so that every problem has its line."""

    def __init__(
        self,
        path: str | Path,
        distributions: list[str],
        objectives: Sequence[str] | None,
        env_metrics: Sequence[str] | None,
    ) -> None:
        self.path, self.distributions = path, distributions
        self.objectives = None if objectives is None else list(objectives)
        self.env_metrics = None if env_metrics is None else list(env_metrics)
        self.loader = yaml.SafeLoader("")

    def error(self, node: yaml.Node | None, what: str) -> ExpectationsError:
        """The error at ``node``'s line (no node: line 1)."""
        return ExpectationsError(self.path, 1 if node is None else node.start_mark.line + 1, what)

    def compose(self) -> yaml.Node | None:
        """The file's one document as a node graph (None: no document); bad YAML raises with its line."""
        try:
            raw = Path(self.path).read_bytes()
        except OSError as err:
            raise ExpectationsError(self.path, None, f"cannot be read: {err.strerror or err}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ExpectationsError(self.path, raw[: err.start].count(b"\n") + 1, "not UTF-8 text") from None
        self.loader = yaml.SafeLoader(text)
        try:
            return self.loader.get_single_node()
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            what = f"{err.problem} ({err.context})" if err.context else str(err.problem)
            raise ExpectationsError(self.path, mark.line + 1 if mark else 1, f"not valid YAML: {what}") from None
        except yaml.YAMLError as err:
            raise ExpectationsError(self.path, 1, f"not valid YAML: {err}") from None

    def scalar(self, node: yaml.Node) -> Any:
        """A scalar node's value as PyYAML's safe loader types it; anything else: the node itself."""
        if not isinstance(node, yaml.ScalarNode):
            return node
        try:
            return self.loader.construct_object(node)
        except yaml.MarkedYAMLError as err:  # e.g. an unknown tag (!foo)
            raise self.error(node, f"not valid YAML: {err.problem}") from None

    def items(self, node: yaml.Node, where: str) -> Iterator[tuple[Any, yaml.Node, yaml.Node]]:
        """``(key, key node, value node)`` of a mapping node; a non-scalar or repeated key raises."""
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, f"{where}: a key must be a name, got {_kind(key_node)}")
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.error(key_node, f"{where}: merge keys (<<) are not supported; write the keys out")
            key = self.scalar(key_node)
            if key in seen:
                raise self.error(key_node, f"{where}: duplicate key {key!r} (first on line {seen[key]})")
            seen[key] = key_node.start_mark.line + 1
            yield key, key_node, value_node

    def load(self) -> dict[str, dict[str, Any]]:
        """The checked expectations, per distribution."""
        root = self.compose()
        if root is None:
            raise self.error(None, "empty (or only comments): it would expect nothing")
        if not isinstance(root, yaml.MappingNode) or not root.value:
            got = "an empty mapping" if isinstance(root, yaml.MappingNode) else _kind(root)
            raise self.error(root, f"expected a mapping of distribution -> expectations, got {got}")
        out: dict[str, dict[str, Any]] = {}
        for dist, key_node, spec in self.items(root, "the top level"):
            if dist not in self.distributions:
                raise self.error(key_node, f"distribution {dist!r} is not evaluated ({self.distributions})")
            out[dist] = self.spec(str(dist), key_node, spec)
        return out

    def spec(self, dist: str, key_node: yaml.Node, node: yaml.Node) -> dict[str, Any]:
        """One distribution's expectations."""
        if (isinstance(node, yaml.MappingNode) and not node.value) or self.scalar(node) is None:
            raise self.error(key_node, f"{dist} has no expectations: give some of {list(KEYS)}")
        if not isinstance(node, yaml.MappingNode):
            got = _shown(self.scalar(node))
            raise self.error(key_node, f"{dist}: expected a mapping of expectations ({list(KEYS)}), got {got}")
        out: dict[str, Any] = {}
        for key, k_node, value in self.items(node, dist):
            where = f"{dist}.{key}"
            if key in BOUNDED:
                out[key] = self.bounds(where, k_node, value, RANGES.get(key))
            elif key == ENV_METRICS:
                out[key] = self.named_bounds(where, k_node, value, self.env_metrics, METRIC_WORDS, None)
            elif key == SHARES:
                objectives = None if self.objectives is None else [*self.objectives, RANDOM]
                out[key] = self.named_bounds(where, k_node, value, objectives, SHARE_WORDS, (0.0, 1.0))
            elif key in EXACT:
                out[key] = self.exact(where, key, value)
            else:
                raise self.error(k_node, f"{where} is not one of {list(KEYS)}")
        return out

    def exact(self, where: str, key: str, node: yaml.Node) -> Any:
        """A value the report's must equal: a verdict, an objective name or null, a bool."""
        value = self.scalar(node)
        if key in ("identifiable", "mixed", "unexplained"):
            if not isinstance(value, bool):
                raise self.error(node, f"{where} must be true or false, got {_shown(value)}")
            return value
        if key == "verdict":
            allowed: list[Any] | None = list(VERDICTS)
        elif self.objectives is None:
            allowed = None
        elif key == "map_objective":  # or a group of candidates the data cannot tell apart: end=arrow
            allowed = [*self.objectives, RANDOM]
            if isinstance(value, str) and all(part in self.objectives for part in value.split(GROUP_SEPARATOR)):
                return value
        else:  # behavioural_objective: null when the candidates cannot be told apart
            allowed = [*self.objectives, RANDOM, None]
        if allowed is None:
            if not (isinstance(value, str) or (value is None and key == "behavioural_objective")):
                raise self.error(node, f"{where} must be an objective name, got {_shown(value)}")
        elif value not in allowed:
            shown = ", ".join("null" if a is None else repr(a) for a in allowed)
            raise self.error(node, f"{where} must be one of [{shown}], got {_shown(value)}")
        return value

    def named_bounds(
        self,
        where: str,
        key_node: yaml.Node,
        node: yaml.Node,
        names: Sequence[str] | None,
        what: tuple[str, str],
        reach: tuple[float, float] | None,
    ) -> dict[str, dict[str, float]]:
        """A mapping of ``names`` (``None``: any) to bounds; ``what``: how to call them, plural and one."""
        if not isinstance(node, yaml.MappingNode) or not node.value:
            got = "an empty mapping" if isinstance(node, yaml.MappingNode) else _kind(node)
            raise self.error(key_node, f"{where} must map {what[0]} to bounds, got {got}")
        out = {}
        for name, k_node, value in self.items(node, where):
            if names is not None and name not in names:
                raise self.error(k_node, f"{where}.{name} is not {what[1]} ({list(names)})")
            out[str(name)] = self.bounds(f"{where}.{name}", k_node, value, reach)
        return out

    def bounds(
        self, where: str, key_node: yaml.Node, node: yaml.Node, reach: tuple[float, float] | None
    ) -> dict[str, float]:
        """``{min: x, max: y}`` (either or both): finite numbers, min <= max, within ``reach`` if known."""
        if not isinstance(node, yaml.MappingNode) or not node.value:
            got = "{}" if isinstance(node, yaml.MappingNode) else _shown(self.scalar(node))
            raise self.error(key_node, f"{where} must be {{min: x, max: y}} (either or both), got {got}")
        out: dict[str, float] = {}
        for bound, k_node, value in self.items(node, where):
            if bound not in BOUND_KEYS:
                raise self.error(k_node, f"{where}.{bound} is not one of {list(BOUND_KEYS)}")
            number = self.scalar(value)
            if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
                raise self.error(value, f"{where}.{bound} must be a number (finite), got {_shown(number)}")
            out[bound] = number
            if reach is not None and (number > reach[1] if bound == "min" else number < reach[0]):
                raise self.error(value, f"{where}.{bound}={number} can never hold: it lies in [{reach[0]}, {reach[1]}]")
        if "min" in out and "max" in out and out["min"] > out["max"]:
            raise self.error(key_node, f"{where}: min {out['min']} > max {out['max']}")
        return out


def _kind(node: yaml.Node) -> str:
    return {yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list"}.get(type(node), "a single value")


def _shown(value: Any) -> str:
    if isinstance(value, yaml.Node):
        return _kind(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


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
            if key == SHARES:
                for name, bounds in want.items():
                    share = got[SHARES].get(name)
                    if share is None:  # merged with another candidate the data cannot tell it from
                        merged = next((k for k in got[SHARES] if name in k.split("=")), name)
                        problems.append(f"{dist}.{key}.{name}: not identifiable here (one component: {merged})")
                    else:
                        problems += _bounded(f"{dist}.{key}.{name}", share, bounds)
                continue
            problems += _bounded(f"{dist}.{key}", got[key], want)
    return problems
