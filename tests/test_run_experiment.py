"""The experiments' pipeline: each experiment of configs/run_experiment/ runs end to end at a tiny scale
(train -> evaluate -> aggregate -> figure), a rerun skips what is done, a figure is redrawn from
results.json alone; the summaries over seeds and the spec's validation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.aggregate import UNIDENTIFIED, binomial_interval, seed_of, summarise
from envs.config import ConfigError
from experiments import run_experiment
from tests.conftest import ROOT

NET = ["agent.num_envs=16", "agent.num_steps=16", "agent.minibatches=2", "agent.network.hidden=32"]
TINY_TRAIN = [*NET, "env.num_levels=64", "total_env_steps=512", "eval_episodes=4", "eval_every=0"]
TINY_TRAIN += ["keep_checkpoint_every=2", "checkpoint_every=1000"]
TINY_EVAL = ["eval.episodes=4", "eval.resamples=10", "verdict.bootstrap_resamples=50"]
ARROW_LEVELS = [f"env.distributions.{d}.num_levels=64" for d in ("shift_arrow", "shift_size", "shift_both")]


def _experiment(out: Path, name: str, *extra: str) -> None:
    """``misgen experiment`` in this process (its steps fork from it: the imports are paid once)."""
    run_experiment.main([name, "--out", str(out), "--population", "2", "--jobs", "2", *extra])


def _cli(out: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "experiments.run_experiment", name, "--out", str(out), *extra]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def _tiny(train: list[str]) -> list[str]:
    return [*(f"--train={o}" for o in train), *(f"--evaluate={o}" for o in TINY_EVAL)]


def _results(out: Path, name: str) -> dict:
    return json.loads((out / name / "cpu" / "results.json").read_text())


def test_every_arrow_maze_experiment_runs_end_to_end_at_a_tiny_scale_and_resumes(tmp_path, caplog, monkeypatch):
    tiny = _tiny([*TINY_TRAIN, *ARROW_LEVELS])
    subsets = {  # a few arms / evaluations where an experiment has many (the pipeline is the same)
        "decorrelation": ["--arm", "p0", "--arm", "p0.5"],
        "size_sweep": ["--evaluation", "size_3", "--evaluation", "size_9"],
    }
    names = ["arrow_2x2", "decorrelation", "flipped", "size_sweep", "salience", "seed_distribution", "emergence"]
    assert set(names) | {"keys_chests", "demo"} == set(run_experiment.spec_names())  # those two: tests below
    for name in names:
        _experiment(tmp_path, name, *tiny, *subsets.get(name, []))
        results = _results(tmp_path, name)
        home = tmp_path / name / "cpu"
        assert (home / f"{name}_cpu.png").stat().st_size > 0 and "| arm |" in (home / "README.md").read_text()
        learned = [g for g in results["groups"] if not g["baseline"]]
        assert learned and all(g["summary"]["seeds"] == len(g["seeds"]) == 2 for g in learned)
        assert all(isinstance(r["capability"], float) for g in learned for r in g["seeds"])
    # Shared agents: the 2x2's population is every arrow_2x2-sourced arm's, trained once.
    assert not (tmp_path / "seed_distribution" / "cpu" / "runs").exists()
    emergence = _results(tmp_path, "emergence")
    assert sorted({g["x"] for g in emergence["groups"]}) == [0.0, 512.0]  # every kept checkpoint: untrained, final
    sizes = {(g["distribution"], g["x"]) for g in _results(tmp_path, "size_sweep")["groups"]}
    assert sizes == {(d, x) for d in ("on_end", "moved") for x in (3.0, 9.0)}
    flipped = _results(tmp_path, "flipped")
    assert (flipped["base_objective"], flipped["proxy_objective"]) == ("arrow", "end")
    decorrelation = _results(tmp_path, "decorrelation")
    assert decorrelation["arms"]["p0"]["trained_in"] == "arrow_2x2:arrow_on_end"
    assert "env.p_decorrelate=0.5" in decorrelation["arms"]["p0.5"]["train"]

    # A rerun trains and evaluates nothing again, and gives the same numbers.
    before = _results(tmp_path, "flipped")
    caplog.clear()
    with caplog.at_level("INFO", logger="misgen.experiment"):
        _experiment(tmp_path, "flipped", *tiny)
    assert "trained already" in caplog.text and "evaluating" not in caplog.text
    assert _results(tmp_path, "flipped")["groups"] == before["groups"]
    # A training that finished by resuming (its checkpoints there, its marker not) is said to be one.
    assert before["resumed"] == [] and "Resumed" not in (tmp_path / "flipped" / "cpu" / "README.md").read_text()
    (tmp_path / "flipped" / "cpu" / "runs" / "arrow_rewarded" / run_experiment.MARKER).unlink()
    _experiment(tmp_path, "flipped", *tiny)
    assert _results(tmp_path, "flipped")["resumed"] == ["flipped:arrow_rewarded"]
    assert "**Resumed.** flipped:arrow_rewarded" in (tmp_path / "flipped" / "cpu" / "README.md").read_text()

    # To wandb: a run per arm in the experiment's group, a key per distribution and metric at each x.
    logged: dict[str, list] = {}

    class Recorder:
        def __init__(self, cfg, run_cfg, *_, **__):
            self.arm, self.group = run_cfg["arm"], cfg.group
            logged[self.arm] = []

        def log(self, record, step):
            logged[self.arm].append((step, record))

        def log_table(self, name, columns, rows, step):
            logged[self.arm].append(("table", len(rows)))

        def log_images(self, images, step):
            pass

        def close(self, exit_code=0):
            assert self.group == "experiment-size_sweep-cpu"

    monkeypatch.setattr(run_experiment, "make_logger", Recorder)
    run_experiment.log_to_wandb(_results(tmp_path, "size_sweep"), [], tmp_path)
    (step3, at3), (step9, at9), table = logged["arrow_on_end"]
    assert (step3, step9, table) == (3, 9, ("table", 8)) and at9["x"] == 9.0
    assert {"moved/capability", "on_end/success", "moved/base_fraction", "moved/env/reached_end"} <= set(at3)

    # The committed part alone (results.json) redraws the figure and the README.
    home = tmp_path / "flipped" / "cpu"
    shutil.rmtree(home / "runs"), shutil.rmtree(home / "evals")
    (home / "flipped_cpu.png").unlink()
    proc = _cli(tmp_path, "flipped", "--redraw")  # the command line, in a process of its own
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (home / "flipped_cpu.png").is_file()


def test_a_wrong_experiment_arm_or_spec_is_refused_by_name(tmp_path, monkeypatch, capsys):
    proc = _cli(tmp_path, "arrow_2x3")
    assert proc.returncode == 2 and "no experiment 'arrow_2x3'" in proc.stderr and "arrow_2x2" in proc.stderr
    with pytest.raises(SystemExit) as exited:
        _experiment(tmp_path, "decorrelation", "--arm", "p0.7")
    assert exited.value.code == 2 and "no arm ['p0.7']" in capsys.readouterr().err
    assert not (tmp_path / "decorrelation").exists()
    (tmp_path / "bad.yaml").write_text("title: t\nquestion: q\nfigure: {kind: violin}\narms: {a: {}}\n")
    (tmp_path / "typo.yaml").write_text("title: t\nquestion: q\narms: {a: {trian: [seed=1]}}\n")
    monkeypatch.setattr(run_experiment, "SPECS", tmp_path)
    with pytest.raises(ConfigError, match=r"figure\.kind='violin'"):
        run_experiment.load_spec("bad")
    with pytest.raises(ConfigError, match="trian"):
        run_experiment.load_spec("typo")


def _row(objective: str | None, capability: float, gap: float | None) -> dict:
    return {
        "behavioural_objective": objective or UNIDENTIFIED,
        "verdict": "robust" if objective == "end" else "misgeneralised",
        **{k: capability for k in ("capability", "success", "objective_robustness")},
        **{k: 0.0 for k in ("goal_directedness", "base_return", "regret")},
        "weight_gap": gap,
        "env_metrics": {"reached_end": capability},
    }


def test_summaries_over_seeds_count_objectives_with_exact_binomial_intervals():
    rows = [_row("end", 0.9, 2.0)] * 3 + [_row("arrow", 0.7, -3.0)] * 6 + [_row(None, 0.5, None)]
    s = summarise(rows, "end")
    assert s["seeds"] == 10 and s["base_seeds"] == 3 and s["base_fraction"] == 0.3
    assert s["behavioural_objectives"] == {"arrow": 6, "end": 3, UNIDENTIFIED: 1}
    low, high = s["base_fraction_interval"]  # Clopper-Pearson 3/10: [0.0667, 0.6525]
    assert low == pytest.approx(0.0667, abs=1e-3) and high == pytest.approx(0.6525, abs=1e-3)
    gap = s["metrics"]["weight_gap"]  # the unidentified seed has no gap: 9 seeds
    assert gap["seeds"] == 9 and gap["mean"] == pytest.approx((3 * 2.0 - 6 * 3.0) / 9)
    assert gap["interval"][0] < gap["mean"] < gap["interval"][1]
    assert s["metrics"]["capability"]["mean"] == pytest.approx((3 * 0.9 + 6 * 0.7 + 0.5) / 10)
    assert summarise(rows[:3], "end")["metrics"]["capability"]["interval"] is None  # too few seeds
    assert binomial_interval(0, 10, 0.95) == [0.0, pytest.approx(0.3085, abs=1e-3)]
    assert seed_of("results/x/runs/a/seed_12/checkpoints/checkpoint_512.pt") == 12 and seed_of("oracle:end") is None


def test_the_keys_and_chests_experiment_runs_with_its_oracle_baselines(tmp_path):
    levels = [f"env.distributions.{d}.num_levels=64" for d in ("shift_ratio", "shift_size", "shift_both")]
    _experiment(tmp_path, "keys_chests", *_tiny([*TINY_TRAIN, *levels]), "--evaluate=env.num_levels=64")
    results = _results(tmp_path, "keys_chests")
    arms = {g["arm"]: g for g in results["groups"] if g["distribution"] == "shift_ratio"}
    assert set(arms) == {"learned", "opener", "hoarder"}
    assert arms["opener"]["baseline"] and arms["opener"]["summary"]["seeds"] == 1
    opener, hoarder = (arms[a]["summary"]["env_metrics"]["excess_keys"]["mean"] for a in ("opener", "hoarder"))
    assert hoarder > opener  # the hoarder picks up the keys no chest needs
    assert arms["learned"]["summary"]["seeds"] == 2


def test_the_demo_trains_evaluates_and_prints_the_verdict_table_with_figures_and_gifs(tmp_path, capsys):
    from experiments import demo

    tiny = _tiny([*TINY_TRAIN, *ARROW_LEVELS])
    demo.main(["--out", str(tmp_path), "--population", "1", *tiny])
    printed = capsys.readouterr().out
    assert "arrow on the exit" in printed and "p_decorrelate=0.5" in printed and "shift_both" in printed
    assert {p.name for p in (tmp_path / "gifs").iterdir()} == {
        f"{arm}_{d}.gif"
        for arm in ("arrow_on_end", "decorrelated")
        for d in ("train", "shift_arrow", "shift_size", "shift_both")
    }
    for arm in ("arrow_on_end", "decorrelated"):
        report = tmp_path / "evals" / arm / "all"
        assert (report / "report.json").is_file() and any((report / "report_figures").glob("*.png"))
    assert (tmp_path / "demo_cpu.png").is_file() and (tmp_path / "results.json").is_file()
