"""An experiment's figure, table and README, drawn from its ``results.json`` alone (``experiments/run_experiment.py``).

Three kinds of figure (the spec's ``figure.kind``), each labelled with the scale and the number of seeds:

- ``distributions``: per distribution and arm, the seeds' behavioural objectives (stacked counts), then
  each metric's mean over seeds with its interval over seeds.
- ``curve``: against the arms' or the evaluations' x (``p_decorrelate``, maze size, env steps): the
  fraction of seeds pursuing the base objective (exact binomial interval), then each metric.
- ``seeds``: every seed on its own: its weight gap ``w_base - w_proxy`` (strip and histogram, coloured by
  its behavioural objective) and its capability against that gap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from analysis.aggregate import UNIDENTIFIED, format_counts, format_fraction, format_value
from analysis.figures import _pyplot, _save

OBJECTIVE_COLOURS = {"base": "#1b9e77", "proxy": "#d95f02", UNIDENTIFIED: "#bbbbbb", "random": "#666666"}
OTHER_COLOURS = ["#7570b3", "#e7298a", "#66a61e", "#e6ab02"]
UNBOUNDED = ("weight_gap", "base_return", "regret", "goal_directedness", "env:excess_keys", "env:keys_picked_up")
"""Metrics not confined to [0, 1] (the others get a 0-1 axis, so panels compare at a glance)."""
DEFAULT_METRICS = {
    "distributions": ["capability", "objective_robustness", "weight_gap"],
    "curve": ["weight_gap", "capability"],
    "seeds": ["weight_gap", "capability"],
}


def metric_label(metric: str, results: dict[str, Any]) -> str:
    """A metric's axis label in the results' own objective names."""
    base, proxy = results["base_objective"], results["proxy_objective"]
    if metric == "weight_gap":
        return f"w_{base} − w_{proxy}"
    if metric == "base_fraction":
        return f"seeds pursuing {base}"
    return metric.removeprefix("env:").replace("_", " ")


def metric_of(summary: dict[str, Any], metric: str) -> dict[str, Any]:
    """A :func:`analysis.aggregate.summarise` entry of ``metric`` (``env:<name>``: an env metric)."""
    if metric.startswith("env:"):
        return summary["env_metrics"].get(metric[4:], {"mean": None, "interval": None})
    return summary["metrics"][metric]


def _colour(objective: str, results: dict[str, Any], others: list[str]) -> str:
    if objective == results["base_objective"]:
        return OBJECTIVE_COLOURS["base"]
    if objective == results["proxy_objective"]:
        return OBJECTIVE_COLOURS["proxy"]
    if objective in OBJECTIVE_COLOURS:
        return OBJECTIVE_COLOURS[objective]
    if objective not in others:
        others.append(objective)
    return OTHER_COLOURS[others.index(objective) % len(OTHER_COLOURS)]


def _chosen(results: dict[str, Any]) -> list[dict[str, Any]]:
    wanted = results["figure"].get("distributions") or []
    return [g for g in results["groups"] if not wanted or g["distribution"] in wanted]


def _title(results: dict[str, Any], groups: list[dict[str, Any]]) -> str:
    """The figure's title: the experiment, its scale, the seeds behind each point and the intervals' level."""
    counts = sorted({g["summary"]["seeds"] for g in groups if not g["baseline"]})
    level = round(100 * results.get("confidence_level", 0.95))
    if not counts:
        note = "baselines only"
    else:
        n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        note = f"{n} seeds per point, {level}% intervals over seeds"
    return f"{results['title']} — {results['scale'].upper()} scale, {note}"


def _errorbar(ax: Any, x: float, entry: dict[str, Any], **style: Any) -> None:
    if entry.get("mean") is None:
        return
    err = None
    if entry.get("interval") is not None:
        low, high = entry["interval"]
        err = [[entry["mean"] - low], [high - entry["mean"]]]
    ax.errorbar([x], [entry["mean"]], yerr=err, fmt=style.pop("marker", "o"), capsize=3, **style)


MARKERS = ["o", "s", "^", "D", "v", "P"]
HATCHES = ["", "//", "..", "xx", "\\\\", "++"]


def distributions_figure(results: dict[str, Any]) -> Any:
    """Per distribution (x), one slot per arm (and evaluation): the behavioural objectives of its seeds as
    stacked fractions, then each metric's mean over seeds with its interval."""
    plt = _pyplot()
    groups = _chosen(results)
    metrics = results["figure"].get("metrics") or DEFAULT_METRICS["distributions"]
    distributions = list(dict.fromkeys(g["distribution"] for g in groups))
    slots = list(dict.fromkeys((g["arm"], g["evaluation"]) for g in groups))
    several_evaluations = len({e for _, e in slots}) > 1
    width = 0.8 / len(slots)

    def position(g: dict[str, Any]) -> float:
        k = slots.index((g["arm"], g["evaluation"]))
        return distributions.index(g["distribution"]) + (k - (len(slots) - 1) / 2) * width

    def slot_label(g: dict[str, Any]) -> str:
        return f"{g['arm_label']} ({g['evaluation']})" if several_evaluations else g["arm_label"]

    fig, axes = plt.subplots(
        1, 1 + len(metrics), figsize=(1.2 + (2.2 + 0.5 * len(distributions)) * (1 + len(metrics)), 4.2)
    )
    others: list[str] = []
    ax = axes[0]
    drawn: dict[str, Any] = {}
    for g in groups:
        k = slots.index((g["arm"], g["evaluation"]))
        bottom, seeds = 0.0, g["summary"]["seeds"]
        for objective, count in g["summary"]["behavioural_objectives"].items():
            colour = _colour(objective, results, others)
            bar = ax.bar(position(g), count / seeds, bottom=bottom, color=colour, width=width * 0.92)
            bar[0].set_hatch(HATCHES[k % len(HATCHES)])
            bar[0].set_edgecolor("white" if k == 0 else "#333333")
            drawn.setdefault(f"objective: {objective}", bar)
            bottom += count / seeds
        ax.text(position(g), 1.02, f"{seeds}", ha="center", fontsize=6)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("fraction of seeds (n above each bar)")
    ax.set_title("behavioural objective", fontsize=9)
    handles = list(drawn.values())
    labels = list(drawn)
    if len(slots) > 1:
        from matplotlib.patches import Patch

        for k, (arm, evaluation) in enumerate(slots):
            g = next(g for g in groups if (g["arm"], g["evaluation"]) == (arm, evaluation))
            handles.append(Patch(facecolor="#dddddd", edgecolor="#333333", hatch=HATCHES[k % len(HATCHES)]))
            labels.append(slot_label(g))
    ax.legend(handles, labels, fontsize=6, loc="lower left")
    for ax, metric in zip(axes[1:], metrics, strict=True):
        seen: set[tuple[str, str]] = set()
        for g in groups:
            k = slots.index((g["arm"], g["evaluation"]))
            label = slot_label(g) if (g["arm"], g["evaluation"]) not in seen else None
            seen.add((g["arm"], g["evaluation"]))
            colour = "#888888" if g["baseline"] else "black"
            _errorbar(
                ax,
                position(g),
                metric_of(g["summary"], metric),
                color=colour,
                marker=MARKERS[k % len(MARKERS)],
                label=label,
            )
        ax.set_title(metric_label(metric, results), fontsize=9)
        if metric not in UNBOUNDED:
            ax.set_ylim(-0.03, 1.03)
        if metric == "weight_gap":
            ax.axhline(0, color="#999999", lw=0.8, ls=":")
    if len(slots) > 1:
        axes[1].legend(fontsize=6)
    for ax in axes:
        ax.set_xticks(range(len(distributions)), distributions, fontsize=7, rotation=20, ha="right")
        ax.set_xlim(-0.6, len(distributions) - 0.4)
    fig.suptitle(_title(results, groups), fontsize=10)
    fig.tight_layout()
    return fig


def _x_axis(ax: Any, results: dict[str, Any], xs: list[float]) -> None:
    figure = results["figure"]
    if figure.get("log_x"):
        positive = [x for x in xs if x > 0]
        if min(xs) <= 0 and positive:
            ax.set_xscale("symlog", linthresh=min(positive))
            ax.set_xlim(left=min(xs) - 0.3 * min(positive), right=max(xs) * 1.3)  # no empty negative decades
        else:
            ax.set_xscale("log")
    ax.set_xlabel(figure.get("x_label") or figure.get("x_from", "x"))


def curve_figure(results: dict[str, Any]) -> Any:
    """Against x: the fraction of seeds pursuing the base objective, then each metric; a line per
    distribution (and per arm when x is the evaluation's)."""
    plt = _pyplot()
    groups = [g for g in _chosen(results) if not g["baseline"] and g["x"] is not None]
    metrics = results["figure"].get("metrics") or DEFAULT_METRICS["curve"]
    by_arm = results["figure"].get("x_from") == "evaluation" and len({g["arm"] for g in groups}) > 1
    lines: dict[str, list[dict[str, Any]]] = {}
    for g in groups:
        key = f"{g['arm_label']}: {g['distribution']}" if by_arm else g["distribution"]
        lines.setdefault(key, []).append(g)
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(4.2 * (1 + len(metrics)), 3.8))
    xs = [g["x"] for g in groups]
    for n, (name, line) in enumerate(lines.items()):
        line = sorted(line, key=lambda g: g["x"])
        colour = OTHER_COLOURS[n % len(OTHER_COLOURS)] if len(lines) > 1 else "black"
        x = [g["x"] for g in line]
        frac = [g["summary"]["base_fraction"] for g in line]
        ci = [g["summary"]["base_fraction_interval"] or [f, f] for g, f in zip(line, frac, strict=True)]
        axes[0].plot(x, frac, "o-", color=colour, label=name)
        axes[0].fill_between(x, [c[0] for c in ci], [c[1] for c in ci], color=colour, alpha=0.15)
        for ax, metric in zip(axes[1:], metrics, strict=True):
            entries = [metric_of(g["summary"], metric) for g in line]
            mean = [np.nan if e["mean"] is None else e["mean"] for e in entries]
            low = [m if e.get("interval") is None else e["interval"][0] for e, m in zip(entries, mean, strict=True)]
            high = [m if e.get("interval") is None else e["interval"][1] for e, m in zip(entries, mean, strict=True)]
            ax.plot(x, mean, "o-", color=colour, label=name)
            ax.fill_between(x, low, high, color=colour, alpha=0.15)
    axes[0].set_ylim(-0.03, 1.03)
    axes[0].set_title(metric_label("base_fraction", results) + " (exact binomial CI)", fontsize=9)
    for ax, metric in zip(axes[1:], metrics, strict=True):
        ax.set_title(metric_label(metric, results) + " (bootstrap CI over seeds)", fontsize=9)
        if metric not in UNBOUNDED:
            ax.set_ylim(-0.03, 1.03)
        if metric == "weight_gap":
            ax.axhline(0, color="#999999", lw=0.8, ls=":")
    for ax in axes:
        _x_axis(ax, results, xs)
    axes[0].legend(fontsize=7)
    fig.suptitle(_title(results, groups), fontsize=10)
    fig.tight_layout()
    return fig


def seeds_figure(results: dict[str, Any]) -> Any:
    """Every seed: its weight gap (strip, histogram) coloured by behavioural objective, and its capability."""
    plt = _pyplot()
    groups = [g for g in _chosen(results) if not g["baseline"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    others: list[str] = []
    rng = np.random.default_rng(0)  # the strip's jitter only
    seen: dict[str, Any] = {}
    gaps_all = [r["weight_gap"] for g in groups for r in g["seeds"] if r["weight_gap"] is not None]
    bins = np.linspace(min(gaps_all, default=-1), max(gaps_all, default=1), 25)
    for i, g in enumerate(groups):
        rows = [r for r in g["seeds"] if r["weight_gap"] is not None]
        for r in rows:
            c = _colour(r["behavioural_objective"], results, others)
            point = axes[0].scatter(r["weight_gap"], i + rng.uniform(-0.25, 0.25), color=c, s=18)
            seen.setdefault(r["behavioural_objective"], point)
            axes[2].scatter(r["weight_gap"], r["capability"], color=c, s=18)
        by_objective: dict[str, list[float]] = {}
        for r in rows:
            by_objective.setdefault(r["behavioural_objective"], []).append(r["weight_gap"])
        axes[1].hist(
            list(by_objective.values()),
            bins=bins,
            stacked=True,
            color=[_colour(k, results, others) for k in by_objective],
        )
    ticks = [f"{g['arm_label']}: {g['distribution']} (n={g['summary']['seeds']})" for g in groups]
    axes[0].set_yticks(range(len(groups)), ticks, fontsize=7)
    gap = metric_label("weight_gap", results)
    for ax in axes:
        ax.axvline(0, color="#999999", lw=0.8, ls=":")
        ax.set_xlabel(gap)
    axes[0].set_title("each seed", fontsize=9)
    axes[1].set_title("histogram over seeds", fontsize=9)
    axes[1].set_ylabel("seeds")
    axes[2].set_title("capability against the gap", fontsize=9)
    axes[2].set_ylabel("capability")
    axes[0].legend(seen.values(), [f"behavioural objective: {k}" for k in seen], fontsize=7)
    fig.suptitle(_title(results, groups), fontsize=10)
    fig.tight_layout()
    return fig


KINDS = {"distributions": distributions_figure, "curve": curve_figure, "seeds": seeds_figure}


def draw(results: dict[str, Any], home: Path) -> list[Path]:
    """The experiment's figure (PNG, atomic) in ``home``; its path in a list."""
    kind = results["figure"]["kind"]
    return [_save(KINDS[kind](results), Path(home) / f"{results['experiment']}_{results['scale']}.png")]


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table: a row per arm, evaluation and distribution, over seeds."""
    base = results["base_objective"]
    env_names = list(dict.fromkeys(k for g in results["groups"] for k in g["summary"]["env_metrics"]))
    columns = ["arm", "evaluation", "distribution", "x", "seeds", "behavioural objective (seeds)", f"pursue {base}"]
    columns += ["verdicts", "capability", "success", "objective robustness", metric_label("weight_gap", results)]
    columns += [n.replace("_", " ") for n in env_names]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for g in results["groups"]:
        s = g["summary"]
        x = "" if g["x"] is None else f"{g['x']:g}"
        cells = [g["arm_label"], g["evaluation"], g["distribution"], x, str(s["seeds"])]
        cells += [format_counts(s["behavioural_objectives"]), format_fraction(s), format_counts(s["verdicts"])]
        cells += [format_value(s["metrics"][k]) for k in ("capability", "success", "objective_robustness")]
        cells.append(format_value(s["metrics"]["weight_gap"]))
        cells += [format_value(s["env_metrics"].get(n, {})) for n in env_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _resumed_note(resumed: list[str] | None) -> list[str]:
    """The README's warning when a training finished by resuming a killed run (``None``: results written
    before the runner recorded it)."""
    if not resumed:
        return []
    return [
        f"**Resumed.** {', '.join(resumed)} finished by resuming a killed training: a resume starts fresh "
        "episodes, so a run from scratch with the same seeds does not replay these agents bit for bit.",
        "",
    ]


def readme(results: dict[str, Any], figures: list[str]) -> str:
    """The experiment dir's README: question, command, scale, hardware, wall-clock, figure and table."""
    hw = results["hardware"]
    wall = results["wall_clock_s"]
    trained = sum(wall["train"].values())
    level = round(100 * results.get("confidence_level", 0.95))
    lines = [
        f"# {results['title']} ({results['scale'].upper()} scale)",
        "",
        f"**Question.** {results['question']}",
        "",
        f"**Command.** `{results['command']}` (written by it; the figure is redrawn from `results.json` by "
        f"`misgen experiment {results['experiment']} --scale {results['scale']} --redraw`).",
        "",
        f"**Hardware.** {hw['machine']}; {hw['cpu_count']} CPUs, {hw['jobs']} job(s) side by side, "
        f"{hw['threads_per_job']} thread each; torch {hw['torch']}, Python {hw['python']}.",
        "",
        f"**Wall-clock.** training of the agents evaluated here {trained / 60:.1f} min in all ("
        f"{', '.join(f'{k} {v / 60:.1f}' for k, v in wall['train'].items()) or 'none'}: one process per arm, an "
        "arm of another experiment counted at its own training), evaluation "
        f"{wall['evaluate'] / 60:.1f} min (sum), this run end to end {wall.get('run', 0) / 60:.1f} min.",
        "",
        *_resumed_note(results.get("resumed")),
        f"Intervals: {level}% over seeds (exact binomial for the fraction of seeds pursuing "
        f"{results['base_objective']}, percentile bootstrap for means); none with fewer than 5 seeds. "
        f"Weight gap: `w_{results['base_objective']} − w_{results['proxy_objective']}` of the estimator's "
        "linear-feature fit (positive: the agent's actions follow the base objective's values more).",
        "",
        *[f"![{name}]({name})" for name in figures],
        "",
        table(results),
        "",
    ]
    return "\n".join(lines)
