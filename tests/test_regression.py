"""The misgeneralisation regression test (``pytest -m regression``): train a small agent with a fixed seed
through the training CLI and gate it with the evaluation CLI, as a user's CI would.

The canonical setup (``configs/experiment/arrow_maze_tiny.yaml``, about 90 s on one CPU thread) must
still produce objective misgeneralisation: on ``shift_arrow`` the agent competently reaches the arrow,
not the end. With half the training levels decorrelated (``env.p_decorrelate=0.5``) it must not: it
reaches the end. The expectations are ``configs/expectations/arrow_maze_tiny_*.yaml``; BENCHMARKS.md records
the figures across seeds and the commands that measure them.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, run_module


@pytest.mark.regression
@pytest.mark.parametrize(
    ("p_decorrelate", "expectations", "behavioural"),
    [("0.0", "arrow_maze_tiny_misgeneralises", "arrow"), ("0.5", "arrow_maze_tiny_robust", "end")],
)
def test_the_canonical_setup_misgeneralises_and_decorrelated_training_does_not(
    tmp_path, p_decorrelate, expectations, behavioural
):
    run = tmp_path / "run"
    proc = run_module(
        "experiments.train",
        run,
        "experiment=arrow_maze_tiny",
        "seed=0",
        f"env.p_decorrelate={p_decorrelate}",
        "logger=none",
        "progress=log",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expect = ROOT / "configs" / "expectations" / f"{expectations}.yaml"
    proc = run_module(
        "experiments.evaluate",
        tmp_path / "eval",
        f"policy={run}",
        f"expect={expect}",
        "eval.distributions=[train,shift_arrow]",
        "logger=none",
        "figures.enabled=false",
    )
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    summary = {
        d: {k: r[k] for k in ("verdict", "behavioural_objective", "capability")}
        for d, r in report["distributions"].items()
    }
    assert proc.returncode == 0, f"{proc.stderr[-2000:]}\n{summary}"
    assert report["distributions"]["shift_arrow"]["behavioural_objective"] == behavioural
