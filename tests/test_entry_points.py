"""The Hydra entry points run end to end on tiny settings and write their outputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import run_module


def _run(module: str, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_module(module, tmp_path, *overrides)


def test_bench_measures_both_sides_and_writes_json(tmp_path):
    proc = _run(
        "experiments.bench",
        tmp_path,
        "env=keys_chests",
        "batch_sizes=[16]",
        "sync_batch_sizes=[16]",
        "canvases=[fit]",
        "repeats=1",
        "min_seconds=0.05",
        "sync_min_seconds=0.05",
        "env.num_levels=64",
        "env.device=cpu",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "bench.json").read_text())
    (run,) = result["runs"]
    assert run["num_envs"] == 16 and run["core_steps_per_s"] > 0 and run["ratio"] > 0
    assert "| fit (9x9) | cpu | 16 |" in proc.stdout


def test_training_bench_times_every_backend_and_the_time_to_target(tmp_path):
    small = [f"env.distributions.{d}.{k}=3" for d in ("shift_size", "shift_both") for k in ("min_size", "max_size")]
    agent = ["num_envs=8", "num_steps=8", "minibatches=2", "network.hidden=16"]
    proc = _run(
        "experiments.bench",
        tmp_path,
        "mode=train",
        "env.num_levels=64",
        "env.device=cpu",
        *small,
        *(f"++train.agent.{a}" for a in agent),
        *(f"++train.target_agent.{a}" for a in agent),
        "train.steps=256",
        "train.dummy_steps=256",
        "train.max_steps=256",
        "train.target=0.0",  # reached at the first evaluation: exercises the evaluation path
    )
    assert proc.returncode == 0, proc.stderr
    training = json.loads((tmp_path / "bench.json").read_text())["training"]
    assert [r["backend"] for r in training["throughput"]] == ["misgen", "sb3", "sb3_dummy"]
    assert all(r["steps_per_s"] > 0 for r in training["throughput"])
    assert [r["backend"] for r in training["time_to_target"]] == ["misgen", "sb3"]
    assert all(r["env_steps_to_target"] == 4 * 64 for r in training["time_to_target"])
    assert "| sb3_dummy |" in proc.stdout


def test_levels_writes_pictures_gifs_and_summary(tmp_path):
    proc = _run("experiments.levels", tmp_path, "summary_levels=8", "levels_shown=2", "+env_overrides.num_levels=64")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"arrow_maze", "keys_chests"}
    assert summary["arrow_maze"]["train"]["end_seeker_success"] == 1.0
    assert summary["keys_chests"]["shift_ratio"]["hoarder_excess_keys"] > 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"arrow_maze_levels_train.png", "keys_chests_levels_shift_ratio.png"} <= names
    assert {"arrow_maze_shift_both_end_seeker.gif", "keys_chests_shift_ratio_hoarder.gif"} <= names


def test_a_misspelt_env_key_fails_at_start_naming_it(tmp_path):
    proc = _run("experiments.bench", tmp_path, "+env.p_decorelate=0.1", "batch_sizes=[8]", "sync_batch_sizes=[]")
    assert proc.returncode != 0
    assert "p_decorelate" in proc.stderr
