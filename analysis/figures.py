"""Figures of an evaluation report (PNG, matplotlib, no display needed):

- the verdict matrix: capability against objective robustness per distribution, coloured by verdict
  (capability below the threshold: capability failure; above it, objective misgeneralisation when another
  objective is identified, which puts it near the bottom, else robust);
- the posterior over candidate objectives per distribution (hatched where not identifiable);
- trajectory overlays: the path the agent took on a few levels of a distribution, over the level.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from analysis.trajectories import Trajectories
from envs.atomic import atomic_path
from envs.render import TileRenderer

VERDICT_COLOURS = {"robust": "tab:green", "objective_misgeneralisation": "tab:red", "capability_failure": "tab:gray"}


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def verdict_matrix(results: Mapping[str, Mapping[str, Any]], threshold: float, path: Path, title: str = "") -> Path:
    """Capability (x, with its interval) against objective robustness (y), one point per distribution."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.axvspan(0, threshold, color="0.92", zorder=0)
    ax.axvline(threshold, color="0.5", lw=0.8)
    ax.text(threshold / 2, 0.5, "capability\nfailure", ha="center", va="center", color="0.45")
    ax.text((1 + threshold) / 2, 0.97, "robust", ha="center", va="top", color=VERDICT_COLOURS["robust"])
    ax.text(
        (1 + threshold) / 2,
        0.03,
        "objective\nmisgeneralisation",
        ha="center",
        va="bottom",
        color=VERDICT_COLOURS["objective_misgeneralisation"],
    )
    labels: dict[tuple[float, float], list[str]] = {}  # points in the same place share one label
    for name, r in results.items():
        low, high = r["intervals"]["capability"]
        x, y = r["capability"], r["objective_robustness"]
        colour = VERDICT_COLOURS[r["verdict"]]
        ax.errorbar(x, y, xerr=[[x - low], [high - x]], fmt="o", color=colour, capsize=3)
        labels.setdefault((round(x, 2), round(y, 2)), []).append(name)
    for (x, y), named in labels.items():
        ax.annotate(", ".join(named), (x, y), textcoords="offset points", xytext=(-6, 8), ha="right", fontsize=9)
    ax.set(xlim=(0, 1.02), ylim=(-0.02, 1.02), xlabel="capability (of the behavioural objective)")
    ax.set_ylabel("objective robustness (posterior of the base objective)")
    ax.set_title(title or "verdict matrix")
    return _save(fig, path)


def posterior_bars(results: Mapping[str, Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """Grouped bars: the posterior of every candidate (``random`` included) per distribution."""
    names = list(results)
    candidates = list(next(iter(results.values()))["posterior"])
    width = 0.8 / len(candidates)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(names), 3.8))
    x = np.arange(len(names))
    for i, g in enumerate(candidates):
        heights = [results[d]["posterior"][g] for d in names]
        bars = ax.bar(x + (i - (len(candidates) - 1) / 2) * width, heights, width, label=g)
        for bar, d in zip(bars, names, strict=True):
            if not results[d]["identifiable"] and g != "random":
                bar.set_hatch("//")
    ax.set_xticks(x, [f"{d}\n{results[d]['verdict'].replace('_', ' ')}" for d in names], fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="posterior")
    ax.set_title(title or "behavioural objective (hatched: not identifiable)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _outcome_text(traj: Trajectories, e: int) -> str:
    o = {k: v[e].item() for k, v in traj.outcome.items()}
    if "first_arrow_step" in o:
        return f"end @{o['first_end_step']}  arrow @{o['first_arrow_step']}"
    return f"chests {o['chests_opened']}/{o['openable']}  keys {o['keys_picked_up']} (+{o['excess_keys']})"


def trajectory_overlays(traj: Trajectories, path: Path, episodes: int = 4, title: str = "", tile: int = 12) -> Path:
    """The first ``episodes`` episodes of ``traj``: each level at its start, with the agent's path on it
    (start: cyan circle, end of the episode: magenta square; dots run from dark, early, to light, late)."""
    core = traj.core
    size = core.canvas.size
    episodes = min(episodes, traj.episodes)
    renderer = TileRenderer(tile, show_end=True)
    fig, axes = plt.subplots(1, episodes, figsize=(3.2 * episodes, 3.5), squeeze=False)
    for e, ax in enumerate(axes[0]):
        mine = torch.nonzero(traj.episode == e)[:, 0]
        start = {k: v[mine[:1]] for k, v in traj.states.items()}
        ids = core.tile_ids(*start.values())[:, : size * size]
        ax.imshow(renderer.frames(ids, size)[0].cpu().numpy())
        path_pos = torch.cat([traj.states["pos"][mine], traj.next_states["pos"][mine[-1:]]]).cpu()
        y, x = core.canvas.to_yx(path_pos)
        # Small per-step jitter keeps back-and-forth moves visible.
        jitter = (np.arange(len(x)) % 5 - 2) * tile * 0.06
        px, py = (x.numpy() + 0.5) * tile + jitter, (y.numpy() + 0.5) * tile + jitter
        ax.scatter(px, py, c=np.arange(len(px)), cmap="plasma", s=4, alpha=0.8, zorder=3)
        ax.plot(px, py, color="white", lw=0.6, alpha=0.6, zorder=2)
        ax.plot(px[0], py[0], "o", mfc="none", mec="cyan", ms=11, mew=1.5, zorder=4)
        ax.plot(px[-1], py[-1], "s", mfc="none", mec="magenta", ms=11, mew=1.5, zorder=4)
        ax.set_title(f"level {e}: {_outcome_text(traj, e)}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
