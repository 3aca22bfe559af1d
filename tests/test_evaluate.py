"""The evaluation CLI: reports, the regression gate's exit status and diff, bad specs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_module

SMALL = [
    "env.device=cpu",
    "eval.episodes=16",
    "eval.distributions=[train,shift_arrow]",
    "verdict.bootstrap_resamples=200",
]


def _evaluate(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_module("experiments.evaluate", tmp_path, *SMALL, *overrides)


def test_the_gate_passes_a_policy_that_keeps_its_expectations_and_fails_one_that_does_not(tmp_path):
    expect = tmp_path / "expect.yaml"
    expect.write_text(
        "train:\n  identifiable: false\n  verdict: robust\n"
        "shift_arrow:\n  verdict: robust\n  behavioural_objective: end\n  capability: {min: 0.9}\n"
    )
    proc = _evaluate(tmp_path / "end", "policy=oracle:end", f"expect={expect}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "end" / "report.json").read_text())
    assert report["policy"] == "oracle:end" and set(report["distributions"]) == {"train", "shift_arrow"}
    arrow = report["distributions"]["shift_arrow"]
    assert arrow["behavioural_objective"] == "end" and arrow["posterior"]["end"] > 0.99
    assert len(arrow["per_episode"]["success"]) == 16

    proc = _evaluate(tmp_path / "arrow", "policy=oracle:arrow", f"expect={expect}")
    assert proc.returncode == 1
    assert "shift_arrow.verdict: expected 'robust', got 'objective_misgeneralisation'" in proc.stderr
    assert "shift_arrow.behavioural_objective: expected 'end', got 'arrow'" in proc.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("oracle:exit", "objective in ['end', 'arrow']"),
        ('"oracle:end@eps=2"', "must be in [0, 1]"),  # quoted: Hydra reads a bare "=" as a new override
        ("no/such/run", "neither a run dir"),
        ("py:no_such_module:make", "py:<module>:<callable>"),
    ],
)
def test_a_bad_policy_spec_fails_at_once_naming_it(tmp_path, spec, message):
    proc = _evaluate(tmp_path, f"policy={spec}")
    assert proc.returncode != 0 and message in proc.stderr
    assert not (tmp_path / "report.json").exists()
