"""Figures of an evaluation report (PNG, matplotlib's Agg backend, no display needed), each readable
without the source:

- the verdict matrix: capability against objective robustness per distribution, over the regions the
  verdict rule (``analysis.metrics.verdict_of``) decides; a distribution whose objective is not
  identifiable sits in a band of its own, since its robustness is undefined;
- the posterior over candidate objectives per distribution (hatched where not identifiable, the base
  objective outlined);
- trajectory overlays: the path the agent took on a few levels of a distribution, over each level as it
  starts, with a legend of what is drawn and per-level outcomes in words.

matplotlib (and torch) are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from analysis.trajectories import Trajectories

VERDICT_COLOURS = {"robust": "tab:green", "objective_misgeneralisation": "tab:red", "capability_failure": "tab:gray"}
VERDICT_WORDS = {
    "robust": "robust",
    "objective_misgeneralisation": "objective misgeneralisation",
    "capability_failure": "capability failure",
}
ROBUSTNESS_SPLIT = 0.5
"""Above this posterior the base objective is the most probable candidate, so the verdict rule says robust
(capability allowing); at or below it another candidate may be the most probable."""
RANDOM = "random"  # the estimator's chance candidate (``analysis.estimator.RANDOM``; not imported: torch)
HATCH = "//"
_XMAX = 1.02


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported here, not at module import: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically (never half-written) and close it."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def base_objective(results: Mapping[str, Mapping[str, Any]], base: str | None = None) -> str | None:
    """The base objective of a report: ``base`` if given; else the one candidate whose posterior is the
    objective robustness in every distribution, narrowed (on ties) to the one whose ``reached_<name>``
    env metric is the success rate; ``None`` when the report leaves it ambiguous."""
    if base is not None:
        return base
    candidates = [g for g in next(iter(results.values()))["posterior"] if g != RANDOM]
    left = [
        g
        for g in candidates
        if all(abs(r["posterior"][g] - r["objective_robustness"]) < 1e-9 for r in results.values())
    ]
    if len(left) > 1:
        reached = [
            g
            for g in left
            if all(
                abs(r.get("env_metrics", {}).get(f"reached_{g}", np.nan) - r["success"]) < 1e-9
                for r in results.values()
            )
        ]
        left = reached or left
    return left[0] if len(left) == 1 else None


def _interval_text(r: Mapping[str, Any], key: str) -> str:
    """``0.93 [0.91, 0.95]``: a value with its interval where the report has one."""
    value = r[key]
    lo_hi = r.get("intervals", {}).get(key)
    if lo_hi is None or any(v != v for v in lo_hi):  # NaN: no interval
        return f"{value:.2f}"
    return f"{value:.2f} [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]"


def _error(r: Mapping[str, Any], key: str) -> list[list[float]] | None:
    """Asymmetric error bar ``[[below], [above]]`` from the report's interval of ``key``, if any."""
    lo_hi = r.get("intervals", {}).get(key)
    if lo_hi is None or any(v != v for v in lo_hi):
        return None
    value = r[key]
    return [[max(value - lo_hi[0], 0.0)], [max(lo_hi[1] - value, 0.0)]]


def _verdict_note(r: Mapping[str, Any]) -> str:
    """The verdict in words, with its count over seeds when the seeds disagree."""
    words = VERDICT_WORDS[r["verdict"]]
    per_seed = r.get("verdict_per_seed")
    if per_seed and len(set(per_seed)) > 1:
        words += f" (in {per_seed.count(r['verdict'])} of {len(per_seed)} seeds)"
    return words


# ---------------------------------------------------------------------------------------- verdict matrix


@dataclass(frozen=True)
class Region:
    """A region of the verdict matrix and the verdicts the rule can give to a point in it."""

    verdicts: tuple[str, ...]
    identifiable: bool
    """False: the band of distributions whose objective is not identifiable (robustness undefined)."""
    x: tuple[float, float]
    """Capability ``[low, high)`` (``high`` infinite for the rightmost regions)."""
    y: tuple[float, float]
    """Robustness: ``[0, split]`` below the split, ``(split, 1]`` above it; ``(0, 1)`` in the band."""
    label: str


def verdict_regions(threshold: float) -> list[Region]:
    """The regions ``analysis.metrics.verdict_of`` decides, for a capability threshold: capability
    failure left of it; right of it, robust where the base objective is the most probable (robustness
    above ``ROBUSTNESS_SPLIT``), objective misgeneralisation at or below (unless chance, ``random``, is
    the most probable: then robust); and in the not-identifiable band, robust right of the threshold."""
    inf, s = float("inf"), ROBUSTNESS_SPLIT
    return [
        Region(
            ("capability_failure",),
            True,
            (0.0, threshold),
            (0.0, 1.0),
            f"capability failure\n(capability < {threshold:g})",
        ),
        Region(
            ("robust",),
            True,
            (threshold, inf),
            (s, 1.0),
            f"robust\nthe base objective is the most probable\n(robustness > {s:g})",
        ),
        Region(
            ("objective_misgeneralisation", "robust"),
            True,
            (threshold, inf),
            (0.0, s),
            f"objective misgeneralisation\nanother candidate is the most probable\n"
            f"(robustness ≤ {s:g}; robust when\nchance is the most probable)",
        ),
        Region(("capability_failure",), False, (0.0, threshold), (0.0, 1.0), "capability failure"),
        Region(("robust",), False, (threshold, inf), (0.0, 1.0), "robust: the candidates act alike here"),
    ]


def region_of(capability: float, robustness: float | None, threshold: float) -> Region:
    """The region of ``verdict_regions(threshold)`` a point falls in (``robustness`` ``None``: the band)."""
    regions = verdict_regions(threshold)
    if robustness is None:
        return regions[3] if capability < threshold else regions[4]
    if capability < threshold:
        return regions[0]
    return regions[1] if robustness > ROBUSTNESS_SPLIT else regions[2]


def matrix_position(r: Mapping[str, Any]) -> tuple[float, float | None]:
    """Where a distribution goes in the verdict matrix: ``(capability, objective robustness)``, with
    robustness ``None`` (the not-identifiable band) when the objective is not identifiable: there the
    posterior only splits its mass among candidates that act alike, so the robustness means nothing."""
    return float(r["capability"]), (float(r["objective_robustness"]) if r["identifiable"] else None)


def _place_labels(ax: Axes, points: Sequence[tuple[float, float, str]], fontsize: float) -> None:
    """Annotate each ``(x, y, text)`` beside its point, trying offsets until the label's box overlaps no
    other label, point nor text already on ``ax`` (approximate boxes, in display points)."""
    fig = ax.figure
    scale = 72.0 / fig.dpi
    marks = [ax.transData.transform((x, y)) * scale for x, y, _ in points]
    placed: list[tuple[float, float, float, float]] = [(mx - 5, my - 5, mx + 5, my + 5) for mx, my in marks]
    renderer = fig.canvas.get_renderer()
    for text in ax.texts:
        box = text.get_window_extent(renderer)
        placed.append((box.x0 * scale, box.y0 * scale, box.x1 * scale, box.y1 * scale))
    for (x, y, text), (mx, my) in zip(points, marks, strict=True):
        w, h = 0.62 * fontsize * len(text) + 2, fontsize + 2
        left_first = x > 0.6
        options = [(-9, -h / 2), (9, -h / 2), (-6, 4), (-6, -4 - h), (6, 4), (6, -4 - h), (-6, 16), (6, -16 - h)]
        if not left_first:
            options = [(-dx, dy) for dx, dy in options]
        chosen = options[0]
        for dx, dy in options:
            x0 = mx + dx - w if dx < 0 else mx + dx
            box = (x0, my + dy, x0 + w, my + dy + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                chosen = (dx, dy)
                break
        dx, dy = chosen
        x0 = mx + dx - w if dx < 0 else mx + dx
        placed.append((x0, my + dy, x0 + w, my + dy + h))
        ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=(dx, dy + h / 2 - 1),
            ha="right" if dx < 0 else "left",
            va="center",
            fontsize=fontsize,
            fontweight="bold",
            zorder=6,
        )


def verdict_matrix_figure(
    results: Mapping[str, Mapping[str, Any]], threshold: float, title: str = "", base: str | None = None
) -> Figure:
    """The verdict matrix as a figure (see ``verdict_matrix``)."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    names = list(results)
    base = base_objective(results, base)
    fig = plt.figure(figsize=(7.2, 7.4 + 0.42 * len(names)))
    grid = fig.add_gridspec(4, 1, height_ratios=[5, 1.1, 0.45, 0.9 + 0.42 * len(names)], hspace=0.08)
    ax = fig.add_subplot(grid[0])
    band = fig.add_subplot(grid[1], sharex=ax)
    fig.add_subplot(grid[2]).axis("off")  # room for the band's axis labels
    key = fig.add_subplot(grid[3])
    key.axis("off")
    tints = {"robust": "#e3f3e3", "objective_misgeneralisation": "#f8e0e0", "capability_failure": "0.9"}
    for region in verdict_regions(threshold):
        target = ax if region.identifiable else band
        x0, x1 = region.x[0], min(region.x[1], _XMAX)
        y0, y1 = region.y
        if x1 <= x0:
            continue
        target.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=tints[region.verdicts[0]], lw=0, zorder=0))
        colour = "0.35" if region.verdicts[0] == "capability_failure" else VERDICT_COLOURS[region.verdicts[0]]
        if region.identifiable:
            tx, ty, ha, va = (x0 + x1) / 2, (y0 + y1) / 2, "center", "center"
        else:
            tx, ty, ha, va = (x0 + 0.015, 0.9, "left", "top")
        target.text(tx, ty, region.label, ha=ha, va=va, fontsize=8, color=colour, zorder=1)
    for target in (ax, band):
        target.axvline(threshold, color="0.3", lw=1.2, zorder=2)
    ax.annotate(
        f"capability threshold {threshold:g}",
        (threshold, 1.0),
        textcoords="offset points",
        xytext=(-3, 0),
        rotation=90,
        ha="right",
        va="top",
        fontsize=7,
        color="0.3",
    )
    ax.hlines(ROBUSTNESS_SPLIT, threshold, _XMAX, colors="0.3", linestyles="--", lw=1.0, zorder=2)

    handles: list[Any] = []
    labels: list[str] = []
    points: dict[Any, dict[tuple[float, float], list[str]]] = {ax: {}, band: {}}
    band_rows: list[list[float]] = [[], []]  # capabilities drawn in each row of the band
    band_y = 0.3
    for i, name in enumerate(names, start=1):
        r = results[name]
        x, y = matrix_position(r)
        colour = VERDICT_COLOURS[r["verdict"]]
        target = ax if y is not None else band
        if y is None:  # a row of the band where no other point is close
            row = next((k for k, xs in enumerate(band_rows) if all(abs(x - o) > 0.05 for o in xs)), 0)
            band_rows[row].append(x)
            band_y = 0.3 + 0.3 * row
        style = {"mfc": colour} if y is not None else {"mfc": "white", "mew": 1.8}
        target.errorbar(
            x,
            y if y is not None else band_y,
            xerr=_error(r, "capability"),
            yerr=_error(r, "objective_robustness") if y is not None else None,
            fmt="o",
            ms=8,
            color=colour,
            mec=colour,
            capsize=3,
            zorder=4,
            **style,
        )
        where = (round(x, 3), round(y if y is not None else band_y, 3))
        points[target].setdefault(where, []).append(str(i))
        behavioural = r.get("behavioural_objective")
        robustness = (
            f"robustness {_interval_text(r, 'objective_robustness')}"
            if y is not None
            else "robustness undefined (objective not identifiable)"
        )
        handles.append(Line2D([], [], marker="o", ls="none", ms=8, color=colour, mec=colour, **style))
        labels.append(
            f"{i}  {name}: {_verdict_note(r)}; behavioural objective: {behavioural or 'none identified'}\n"
            f"    capability {_interval_text(r, 'capability')}, {robustness}"
        )
    for target, where in points.items():
        _place_labels(target, [(x, y, ",".join(ns)) for (x, y), ns in where.items()], fontsize=9)
    ax.set(xlim=(0, _XMAX), ylim=(-0.03, 1.03))
    ax.set_ylabel(f"objective robustness\n(posterior of the base objective{f', {base}' if base else ''})")
    ax.tick_params(labelbottom=False)
    band.set(ylim=(0, 1), yticks=[])
    band.set_ylabel("not identifiable:\nrobustness\nundefined", rotation=0, ha="right", va="center", fontsize=8)
    band.set_xlabel("capability (of the behavioural objective; with none identified, of the best candidate)")
    ax.set_title((title or "verdict matrix") + "\nverdict per distribution: capability against objective robustness")
    note = (
        "colour: the verdict; filled: objective identifiable; open: not identifiable (the band below the matrix)\n"
        "bars: bootstrap intervals (over episodes; over seeds for several runs); numbers: the distributions below"
    )
    key.legend(
        handles,
        labels,
        loc="upper left",
        fontsize=7.5,
        frameon=False,
        borderaxespad=0,
        handletextpad=0.6,
        title=note,
        title_fontsize=7.5,
        alignment="left",
    )
    return fig


def verdict_matrix(
    results: Mapping[str, Mapping[str, Any]], threshold: float, path: Path, title: str = "", base: str | None = None
) -> Path:
    """Capability (x, with its interval) against objective robustness (y), one numbered point per
    distribution over the verdict rule's regions; not-identifiable distributions in a band of their own."""
    return _save(verdict_matrix_figure(results, threshold, title, base), path)


# ---------------------------------------------------------------------------------------- posterior bars


def posterior_bars_figure(results: Mapping[str, Mapping[str, Any]], title: str = "", base: str | None = None) -> Figure:
    """The posterior bars as a figure (see ``posterior_bars``)."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    names = list(results)
    candidates = list(next(iter(results.values()))["posterior"])
    base = base_objective(results, base)
    width = 0.8 / len(candidates)
    fig, ax = plt.subplots(figsize=(2.4 + 1.6 * len(names), 4.2))
    x = np.arange(len(names))
    handles: list[Any] = []
    any_interval = False
    for i, g in enumerate(candidates):
        heights = [results[d]["posterior"][g] for d in names]
        outline = {"edgecolor": "black", "linewidth": 1.6} if g == base else {}
        at = x + (i - (len(candidates) - 1) / 2) * width
        bars = ax.bar(at, heights, width, color=f"C{i}", **outline)
        for bar, d in zip(bars, names, strict=True):
            if not results[d]["identifiable"] and g != RANDOM:
                bar.set_hatch(HATCH)
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
        if g == base:
            for xi, d in zip(at, names, strict=True):
                err = _error(results[d], "objective_robustness")
                if err is not None and (err[0][0] > 0 or err[1][0] > 0):
                    any_interval = True
                    ax.errorbar(xi, results[d]["posterior"][g], yerr=err, fmt="none", color="black", capsize=3)
        if g == base:
            label = f"{g}: the base objective (outlined); its posterior is the objective robustness"
        elif g == RANDOM:
            label = f"{g}: no objective, acting by chance"
        else:
            label = g
        handles.append(Patch(facecolor=f"C{i}", label=label, **outline))
    handles.append(
        Patch(
            facecolor="white",
            edgecolor="black",
            hatch=HATCH,
            label="hatched: not identifiable (too few visited states where the candidates act differently,\n"
            "so the posterior cannot tell them apart)",
        )
    )
    if any_interval:
        handles.append(Line2D([], [], color="black", marker="|", ms=8, label="interval of the robustness over seeds"))
    if base is None:
        handles.append(Patch(facecolor="none", edgecolor="none", label="base objective: not named by the report"))
    ticks = [
        f"{d}\n{_verdict_note(results[d])}\nbehavioural: {results[d].get('behavioural_objective') or 'none identified'}"
        for d in names
    ]
    ax.set_xticks(x, ticks, fontsize=7.5)
    ax.set(ylim=(0, 1.1))
    ax.set_ylabel("posterior probability")
    ax.set_xlabel("distribution (verdict; behavioural objective identified)")
    ax.set_title(title or "posterior over candidate objectives")
    ax.legend(handles=handles, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.27), ncol=1, frameon=False)
    return fig


def posterior_bars(
    results: Mapping[str, Mapping[str, Any]], path: Path, title: str = "", base: str | None = None
) -> Path:
    """Grouped bars: the posterior of every candidate (``random`` included) per distribution; hatched
    where the objective is not identifiable, the base objective outlined."""
    return _save(posterior_bars_figure(results, title, base), path)


# ---------------------------------------------------------------------------------- trajectory overlays


def _reached(what: str, step: int) -> str:
    """``arrow reached at step 4``, or ``arrow never reached`` for the env's -1."""
    return f"{what} reached at step {step}" if step >= 0 else f"{what} never reached"


def _count(n: int, what: str) -> str:
    """``1 key``, ``3 keys``."""
    return f"{n} {what}{'' if n == 1 else 's'}"


def describe_outcome(outcome: Mapping[str, int], base: str | None = None) -> str:
    """One episode's outcome in words (``outcome``: the episode's ``info`` at its end, as ints), e.g.
    ``level 3: end reached at step 12, arrow never reached``, then the episode's length."""
    level = outcome.get("level")
    head = f"level {level}: " if level is not None else ""
    length = outcome.get("episode_length")
    if "first_arrow_step" in outcome:
        lines = [f"{head}{_reached('end', outcome['first_end_step'])},", _reached("arrow", outcome["first_arrow_step"])]
        # The arrow maze ends on reaching its base objective (success) or at the time limit.
        why = f" ({base or 'base objective'} reached)" if outcome.get("success") else " (time limit)"
    else:
        keys, excess = outcome["keys_picked_up"], outcome["excess_keys"]
        firsts = [
            f"first {what} at step {outcome[k]}"
            for what, k in (("key", "first_key_step"), ("chest", "first_chest_step"))
            if outcome.get(k, -1) >= 0
        ]
        lines = [
            f"{head}opened {outcome['chests_opened']} of {outcome['openable']} openable chests",
            f"picked up {_count(keys, 'key')}" + (f", {excess} beyond use" if excess else ""),
        ]
        lines += [", ".join(firsts)] if firsts else []
        hidden = outcome.get("hidden_chests_visited")
        lines += [f"visited {_count(hidden, 'hidden chest')}"] if hidden else []
        why = ""  # it may run to the time limit with every openable chest open (more chests than keys)
    if length is not None:
        lines.append(f"episode over after {length} steps{why}")
    return "\n".join(lines)


def trajectory_overlays_figure(traj: Trajectories, episodes: int = 4, title: str = "", tile: int = 12) -> Figure:
    """The trajectory overlays as a figure (see ``trajectory_overlays``)."""
    import torch

    plt = _pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from envs import render

    core = traj.core
    size = core.canvas.size
    cfg = getattr(core, "cfg", None)
    episodes = min(episodes, traj.episodes)
    renderer = render.TileRenderer(tile, show_end=True)
    lengths = [int((traj.episode == e).sum()) for e in range(episodes)]
    norm = Normalize(0, max(max(lengths), 1))
    cmap = plt.get_cmap("plasma")
    outcomes = [{k: int(v[e].item()) for k, v in traj.outcome.items()} for e in range(episodes)]
    lines = max(describe_outcome(o).count("\n") + 1 for o in outcomes)
    size_in = (3.5 * episodes, 3.3 + 0.14 * lines + 1.1)
    fig, axes = plt.subplots(1, episodes, figsize=size_in, squeeze=False, layout="constrained")
    seen: set[str] = set()
    arrow_maze = "first_arrow_step" in traj.outcome
    base = getattr(cfg, "base_objective", "end") if arrow_maze else "open_chests"
    for e, ax in enumerate(axes[0]):
        mine = torch.nonzero(traj.episode == e)[:, 0]
        start = {k: v[mine[:1]] for k, v in traj.states.items()}
        extra = {"show_hidden": True} if getattr(cfg, "hidden_chests", False) else {}
        ids = core.tile_ids(*start.values(), **extra)[:, : size * size]
        grid = ids[0].view(size, size).cpu().numpy()
        overlay = (grid >> render.OVERLAY_SHIFT) & 7
        seen |= {
            n
            for n, k in (("arrow", render.ARROW), ("key", render.KEY), ("chest", render.CHEST))
            if (overlay == k).any()
        }
        seen |= {"hidden"} if (overlay == render.HIDDEN_CHEST).any() else set()
        seen |= {"end"} if ((grid & 3) == 2).any() else set()
        image = renderer.frames(ids, size)[0].cpu().numpy()
        path_pos = torch.cat([traj.states["pos"][mine], traj.next_states["pos"][mine[-1:]]]).cpu()
        y, x = (v.numpy() for v in core.canvas.to_yx(path_pos))
        # Crop the empty canvas around a smaller level: what is not floor, and the path.
        rows, cols = np.nonzero(grid != 0)
        r0, r1 = min(rows.min(), y.min()), max(rows.max(), y.max())
        c0, c1 = min(cols.min(), x.min()), max(cols.max(), x.max())
        ax.imshow(image[r0 * tile : (r1 + 1) * tile, c0 * tile : (c1 + 1) * tile])
        # Square panels (centred crops) keep every title at the same height.
        h, w, side = (r1 + 1 - r0) * tile, (c1 + 1 - c0) * tile, (max(r1 - r0, c1 - c0) + 1) * tile
        ax.set(xlim=((w - side) / 2 - 0.5, (w + side) / 2 - 0.5), ylim=((h + side) / 2 - 0.5, (h - side) / 2 - 0.5))
        # Small per-step jitter keeps back-and-forth moves visible.
        jitter = (np.arange(len(x)) % 5 - 2) * tile * 0.06
        px, py = (x - c0 + 0.5) * tile + jitter, (y - r0 + 0.5) * tile + jitter
        steps = np.arange(len(px))
        segments = np.stack([np.c_[px[:-1], py[:-1]], np.c_[px[1:], py[1:]]], axis=1)
        ax.add_collection(LineCollection(segments, cmap=cmap, norm=norm, array=steps[:-1] + 0.5, lw=1.6, zorder=2))
        ax.scatter(px, py, c=steps, cmap=cmap, norm=norm, s=6, zorder=3)
        ax.plot(px[0], py[0], "o", mfc="none", mec="cyan", ms=12, mew=2, zorder=4)
        ax.plot(px[-1], py[-1], "s", mfc="none", mec="magenta", ms=12, mew=2, zorder=4)
        ax.set_title(describe_outcome(outcomes[e], base), fontsize=7.5)
        ax.axis("off")
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        ax=axes[0].tolist(),
        fraction=0.015,
        pad=0.01,
        label="time step of the path (0: start)",
    )
    rgb = {k: tuple(c / 255 for c in getattr(render, k)) for k in dir(render) if k.endswith("_RGB")}
    mark = " (the base objective)"
    handles = [
        Line2D([], [], marker="o", ls="none", mfc="none", mec="cyan", mew=2, ms=10, label="start (agent: red dot)"),
        Line2D([], [], marker="s", ls="none", mfc="none", mec="magenta", mew=2, ms=10, label="where the episode ended"),
        Line2D(
            [],
            [],
            color=cmap(0.55),
            lw=2,
            marker=".",
            label="path, coloured by time step (colour bar),\ndots nudged apart so repeated moves show",
        ),
        Patch(facecolor=rgb["WALL_RGB"], label="wall"),
    ]
    if "end" in seen:
        label = "end: the exit, a gap in the outer wall" + (mark if base == "end" else "")
        handles.append(Patch(facecolor=rgb["END_RGB"], edgecolor="0.4", label=label))
    if "arrow" in seen:
        handles.append(
            Line2D(
                [],
                [],
                marker="^",
                ls="none",
                color=rgb["ARROW_RGB"],
                ms=9,
                label="arrow" + (mark if base == "arrow" else ""),
            )
        )
    if "key" in seen:
        handles.append(Patch(facecolor=rgb["KEY_RGB"], label="key (picked up by stepping on it)"))
    if "chest" in seen:
        handles.append(
            Patch(
                facecolor=rgb["CHEST_RGB"],
                edgecolor=rgb["CHEST_BAND_RGB"],
                lw=2,
                label="chest: a key opens it"
                + ("; opening chests is the base objective" if base == "open_chests" else ""),
            )
        )
    if "hidden" in seen:
        handles.append(Patch(facecolor="none", edgecolor=rgb["HIDDEN_RGB"], lw=2, label="hidden chest (not observed)"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 4),
        fontsize=8,
        frameon=False,
    )
    what = f"the agent's path on the first {episodes} level{'s' if episodes != 1 else ''}, each drawn as it starts"
    fig.suptitle(f"{title}\n{what}" if title else what, fontsize=10)
    fig.get_layout_engine().set(h_pad=0.12)  # constrained layout's default leaves the titles touching
    return fig


def trajectory_overlays(traj: Trajectories, path: Path, episodes: int = 4, title: str = "", tile: int = 12) -> Path:
    """The first ``episodes`` episodes of ``traj``: each level at its start (cropped to the level), the
    agent's path on it coloured by time step, a legend of what is drawn and each outcome in words."""
    return _save(trajectory_overlays_figure(traj, episodes, title, tile), path)
