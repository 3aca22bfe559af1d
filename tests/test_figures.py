"""The evaluation figures read alone: region boundaries, honest placement, legends and titles in words."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import figures
from analysis.metrics import verdict_of
from tests.conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"


def result(capability: float, posterior: dict[str, float], identifiable: bool, verdict: str, **extra) -> dict:
    """A per-distribution report with what the figures read (base objective: ``end``)."""
    return {
        "capability": capability,
        "objective_robustness": posterior["end"],
        "posterior": posterior,
        "identifiable": identifiable,
        "verdict": verdict,
        "behavioural_objective": max(posterior, key=posterior.get) if identifiable else None,
        "success": 1.0,
        "env_metrics": {},
        "intervals": {"capability": [capability - 0.05, min(capability + 0.05, 1.0)]},
        **extra,
    }


REPORT = {
    "train": result(0.77, {"end": 0.5, "arrow": 0.5, "random": 0.0}, False, "robust"),
    "shift_arrow": result(0.9, {"end": 0.0, "arrow": 1.0, "random": 0.0}, True, "objective_misgeneralisation"),
    "shift_both": result(0.9, {"end": 0.0, "arrow": 1.0, "random": 0.0}, True, "objective_misgeneralisation"),
    "shift_size": result(0.92, {"end": 0.02, "arrow": 0.98, "random": 0.0}, True, "objective_misgeneralisation"),
    "weak": result(0.2, {"end": 0.9, "arrow": 0.1, "random": 0.0}, True, "capability_failure"),
}


def texts(fig) -> str:
    """Every text of a figure (titles, labels, legends, annotations), joined."""
    from matplotlib.text import Text

    return "\n".join(t.get_text() for t in fig.findobj(Text))


@pytest.mark.parametrize("names", [("end", "arrow", "random"), ("arrow", "end", "random")])
def test_the_verdict_regions_are_exactly_those_the_verdict_rule_decides(names):
    rng = np.random.default_rng(0)
    threshold = 0.6
    seen = set()
    for _ in range(3000):
        posterior = dict(zip(names, rng.dirichlet(np.full(3, 0.3)), strict=True))
        if rng.random() < 0.1:  # exact ties and values on the boundaries
            posterior = dict(zip(names, (0.5, 0.5, 0.0), strict=True))
        capability = float(rng.choice([rng.random(), threshold]))
        identifiable = bool(rng.random() < 0.7)
        map_objective = max(names, key=lambda g: posterior[g])  # first of the most probable, as argmax
        verdict = verdict_of(capability, identifiable, map_objective, "end", threshold)
        region = figures.region_of(capability, posterior["end"] if identifiable else None, threshold)
        assert verdict in region.verdicts, (capability, posterior, identifiable, region)
        assert region in figures.verdict_regions(threshold)
        seen.add((region.label, verdict))
    assert {v for _, v in seen} == {"robust", "objective_misgeneralisation", "capability_failure"}


def test_the_verdict_matrix_draws_the_threshold_and_the_split_and_names_every_region():
    threshold = 0.35
    fig = figures.verdict_matrix_figure(REPORT, threshold, "verdict matrix, arrow_maze: oracle:arrow")
    matrix, band = fig.axes[0], fig.axes[1]
    for ax in (matrix, band):
        verticals = [line for line in ax.get_lines() if np.allclose(line.get_xdata(), threshold)]
        assert verticals, "no capability threshold line"
    splits = [
        seg
        for coll in matrix.collections
        for seg in getattr(coll, "get_segments", list)()
        if np.allclose(seg[:, 1], figures.ROBUSTNESS_SPLIT) and np.isclose(seg[0, 0], threshold)
    ]
    assert splits, "no robustness split right of the threshold"
    words = texts(fig)
    for phrase in ("capability failure", "robust", "objective misgeneralisation", "capability threshold 0.35"):
        assert phrase in words
    assert "not identifiable" in words and "robustness undefined" in words
    assert "verdict matrix, arrow_maze: oracle:arrow" in fig.axes[0].get_title()


def points_of(ax) -> list[tuple[float, float]]:
    """The (x, y) of every marker drawn on ``ax`` (errorbar points are lines with markers)."""
    out = []
    for line in ax.get_lines():
        if line.get_marker() not in (None, "None", "", " "):
            out += list(zip(np.atleast_1d(line.get_xdata()), np.atleast_1d(line.get_ydata()), strict=True))
    return out


def test_an_unidentifiable_distribution_sits_in_its_own_band_not_at_half_robustness():
    assert figures.matrix_position(REPORT["train"]) == (0.77, None)
    fig = figures.verdict_matrix_figure(REPORT, 0.5)
    matrix, band = fig.axes[0], fig.axes[1]
    assert not [p for p in points_of(matrix) if np.isclose(p[0], 0.77)]
    assert [p for p in points_of(band) if np.isclose(p[0], 0.77)]
    assert all(not np.isclose(y, 0.5) for _, y in points_of(matrix))


def test_point_labels_do_not_collide():
    fig = figures.verdict_matrix_figure(REPORT, 0.5)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes[:2]:
        boxes = [a.get_window_extent(renderer) for a in ax.texts if a.get_text()[:1].isdigit()]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b), (a, b)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "2,3" in labels  # two distributions in one place share one label


def test_the_verdict_matrix_shows_the_robustness_interval_when_the_report_has_one():
    over_seeds = {"a": result(0.9, {"end": 0.5, "arrow": 0.5, "random": 0.0}, True, "robust")}
    over_seeds["a"]["intervals"]["objective_robustness"] = [0.0, 1.0]
    fig = figures.verdict_matrix_figure(over_seeds, 0.5)
    segments = [seg for coll in fig.axes[0].collections for seg in getattr(coll, "get_segments", list)()]
    assert any(np.allclose(seg[:, 0], 0.9) and np.allclose(sorted(seg[:, 1]), [0.0, 1.0]) for seg in segments)
    assert "robustness 0.50 [0.00, 1.00]" in texts(fig)


def test_the_posterior_bars_explain_the_hatching_mark_the_base_and_keep_the_title():
    fig = figures.posterior_bars_figure(REPORT, "posterior over objectives, arrow_maze: oracle:arrow")
    ax = fig.axes[0]
    assert ax.get_title() == "posterior over objectives, arrow_maze: oracle:arrow"
    assert ax.get_ylabel() and ax.get_xlabel()
    legend = "\n".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "hatched: not identifiable" in legend
    assert "end: the base objective" in legend
    hatched = [bar for bar in ax.patches if bar.get_hatch()]
    assert len(hatched) == 2  # train's end and arrow bars; random never, identifiable ones never


def test_the_base_objective_is_given_or_read_from_the_report():
    assert figures.base_objective(REPORT) == "end"
    tied = {"d": result(0.9, {"end": 0.5, "arrow": 0.5, "random": 0.0}, False, "robust")}
    assert figures.base_objective(tied) is None
    assert figures.base_objective(tied, "arrow") == "arrow"
    tied["d"]["env_metrics"] = {"reached_end": 1.0, "reached_arrow": 0.5}
    assert figures.base_objective(tied) == "end"


def test_outcomes_are_described_in_words():
    arrow = figures.describe_outcome(
        {"level": 3, "first_end_step": 12, "first_arrow_step": -1, "episode_length": 12, "success": 1}, "end"
    )
    assert arrow.startswith("level 3: end reached at step 12")
    assert "arrow never reached" in arrow and "-1" not in arrow and "(end reached)" in arrow
    timed_out = figures.describe_outcome(
        {"level": 0, "first_end_step": -1, "first_arrow_step": 4, "episode_length": 80, "success": 0}, "end"
    )
    assert "end never reached" in timed_out and "arrow reached at step 4" in timed_out and "time limit" in timed_out
    chests = figures.describe_outcome(
        {
            "level": 1,
            "chests_opened": 1,
            "openable": 2,
            "keys_picked_up": 5,
            "excess_keys": 3,
            "first_key_step": 2,
            "first_chest_step": -1,
            "episode_length": 30,
            "success": 0,
        }
    )
    assert "opened 1 of 2 openable chests" in chests and "picked up 5 keys, 3 beyond use" in chests
    assert "first key at step 2" in chests and "first chest" not in chests and "-1" not in chests


def trajectories(kind: str):
    from analysis.policy_specs import load_actor
    from analysis.trajectories import collect_episodes
    from tests.conftest import kc_config, small_config

    cfg, spec, dist = {
        "arrow_maze": (small_config(), "oracle:arrow", "shift_arrow"),
        "keys_chests": (kc_config(), "oracle:collect_keys", "shift_ratio"),
    }[kind]
    return collect_episodes(load_actor(spec, cfg, seed=0), cfg, dist, 2, seed=0)


@pytest.mark.parametrize(
    ("kind", "objects"),
    [("arrow_maze", ("end: the exit", "arrow")), ("keys_chests", ("key", "chest: a key opens it"))],
)
def test_trajectory_overlays_have_a_legend_a_time_scale_and_outcomes_in_words(kind, objects, tmp_path):
    traj = trajectories(kind)
    fig = figures.trajectory_overlays_figure(traj, episodes=2, title="shift: env: policy")
    legend = "\n".join(t.get_text() for t in fig.legends[0].get_texts())
    for phrase in ("start", "where the episode ended", "time step", "wall", *objects):
        assert phrase in legend, phrase
    assert any("time step" in ax.get_ylabel() for ax in fig.axes)  # the colour bar
    assert "the agent's path on the first 2 levels" in fig.get_suptitle()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 2 and all(t.startswith(f"level {i}: ") for i, t in enumerate(titles))
    assert not any("@" in t or "-1" in t for t in titles)
    out = figures.trajectory_overlays(traj, tmp_path / "sub" / "trajectories.png", 2)
    assert out.read_bytes()[:8] == PNG


def test_figures_are_written_whole_with_no_temporary_files_left(tmp_path):
    paths = [
        figures.verdict_matrix(REPORT, 0.5, tmp_path / "verdict_matrix.png"),
        figures.posterior_bars(REPORT, tmp_path / "posterior.png"),
    ]
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posterior.png", "verdict_matrix.png"]


def test_importing_the_module_loads_no_matplotlib_nor_torch():
    code = "import sys, analysis.figures; print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_figures_module_keeps_the_agg_backend(tmp_path: Path):
    figures.posterior_bars(REPORT, tmp_path / "p.png")
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"
