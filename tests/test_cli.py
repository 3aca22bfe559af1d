"""Daily use: the ``misgen`` command, policy specs as typed, a bare train on a CPU, resume from a run dir alone,
evaluations that live with their runs, the summary beside the report, greedy evaluation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from analysis.policy_specs import load_actor
from envs import make_core
from experiments.evaluate import typed_policy_args
from tests.conftest import ROOT, run_module, small_config
from tests.test_train import SMALL_MAZES, TINY

EVAL = ["logger=none", "env.device=cpu", "eval.episodes=4", "figures.enabled=false", "env.num_levels=64"]


def _misgen() -> list[str]:
    """The installed console script (what a user types), else the module behind it."""
    script = shutil.which("misgen", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "experiments.cli"]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def test_the_console_script_is_installed():
    assert shutil.which("misgen", path=str(Path(sys.executable).parent)), "pip install -e . installs `misgen`"


def test_misgen_help_lists_every_command_with_one_line_each():
    proc = _run(*_misgen(), "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "evaluate", "bench", "demo", "experiment", "levels"):
        assert any(line.strip().startswith(command + " ") for line in proc.stdout.splitlines()), proc.stdout


def test_an_unknown_command_fails_listing_the_commands():
    proc = _run(*_misgen(), "trian")
    assert proc.returncode == 2 and "unknown command 'trian'" in proc.stderr and "evaluate" in proc.stderr


def test_misgen_train_help_shows_the_config_groups_and_presets():
    proc = _run(*_misgen(), "train", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "experiment: arrow_maze, arrow_maze_smoke" in proc.stdout  # the groups, from Hydra
    assert "arrow_maze_smoke   CPU" in proc.stdout and "agent: ppo, sb3_ppo" in proc.stdout


def test_misgen_evaluate_takes_the_same_overrides_as_the_module(tmp_path):
    proc = _run(*_misgen(), "evaluate", f"hydra.run.dir={tmp_path}", "policy=oracle:end", *EVAL)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "report.json").read_text())["policy"] == "oracle:end"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the GPU default is the right default")
def test_a_bare_train_on_a_cpu_says_at_once_that_the_default_is_gpu_sized(tmp_path):
    proc = _run(*_misgen(), "train", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert "GPU-sized default" in proc.stderr and "experiment=arrow_maze_smoke" in proc.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- policy specs
@pytest.mark.parametrize("spec", ["oracle:end@0.25", "oracle:end@eps:0.25", "oracle:end@eps=0.25"])
def test_every_spelling_of_an_epsilon_oracle_is_the_same_policy(spec):
    cfg = small_config()
    core = make_core(cfg, "shift_arrow", num_envs=64, seed=0)
    obs = core.reset(seed=0)
    reference = load_actor("oracle:end@0.25", cfg, seed=3)(core, obs)
    assert torch.equal(load_actor(spec, cfg, seed=3)(core, obs), reference)
    assert not torch.equal(load_actor("oracle:end", cfg, seed=3)(core, obs), reference)  # eps took effect


def test_the_older_unquoted_spec_is_rewritten_into_one_hydra_parses():
    quoted = 'policy=[random,"oracle:end@eps=0.1"]'  # Hydra parses it as typed: left as it is
    argv = ["misgen evaluate", "policy=oracle:arrow@eps=0.2", "+policy=[oracle:end@eps=0.1,random]", quoted, "seed=1"]
    assert typed_policy_args(argv) == [
        "misgen evaluate",
        "policy=oracle:arrow@0.2",
        "+policy=[oracle:end@0.1,random]",
        quoted,
        "seed=1",
    ]


@pytest.mark.parametrize(
    "spec", ["policy=oracle:arrow@0.2", "policy=oracle:arrow@eps=0.2", "policy=[oracle:end@0.1,oracle:arrow@0.1]"]
)
def test_policy_specs_work_as_typed(tmp_path, spec):
    proc = _run(*_misgen(), "evaluate", f"hydra.run.dir={tmp_path}", spec, *EVAL)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report.json").is_file()


def test_a_spec_hydra_cannot_parse_fails_showing_the_right_form(tmp_path):
    proc = _run(*_misgen(), "evaluate", f"hydra.run.dir={tmp_path}", "policy=runs/a=b", *EVAL)
    assert proc.returncode == 2
    assert "Hydra cannot parse this policy spec" in proc.stderr and "oracle:arrow@0.2" in proc.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# -------------------------------------------------------------------------- runs
def _train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_module("experiments.train", run_dir, *TINY, *SMALL_MAZES, *overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained")
    proc = _train(run_dir, "total_env_steps=256")
    assert proc.returncode == 0, proc.stderr
    return run_dir


def test_resume_from_the_run_dir_alone_uses_the_runs_own_config_and_keeps_one_dir(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    elsewhere = tmp_path / "hydra_dir"
    cmd = [sys.executable, "-m", "experiments.train", f"hydra.run.dir={elsewhere}", f"resume={run_dir}"]
    proc = _run(*cmd, "total_env_steps=512")  # none of the run's own overrides (TINY, SMALL_MAZES) repeated
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows if "policy_loss" in r] == [256, 512]
    assert not elsewhere.exists()  # nothing left in a new dated dir
    assert "resumed" in (run_dir / "train.log").read_text()
    assert (run_dir / ".hydra" / "config.yaml").is_file() and list((run_dir / ".hydra").glob("resumed-*/config.yaml"))


def test_an_evaluation_of_a_run_lives_in_the_runs_dir_with_a_summary(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    proc = _run(sys.executable, "-m", "experiments.evaluate", f"policy={run_dir}", *EVAL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [report_path] = (run_dir / "eval").glob("*/report.json")
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.json"))
    report = json.loads(report_path.read_text())
    assert "env" not in report["config"] and report["env_config"]["name"] == "arrow_maze"  # one env config
    summary = report_path.with_name("report_summary.md").read_text()
    assert "| distribution | verdict | behavioural_objective |" in summary
    for name in ("train", "shift_arrow", "shift_size", "shift_both"):
        assert f"| {name} |" in summary
    header = report_path.with_name("report_summary.csv").read_text().splitlines()[0]
    assert header.startswith("distribution,verdict,behavioural_objective,identifiable,shares,capability")


def test_greedy_evaluation_takes_the_most_likely_action_whatever_the_seed(trained, tmp_path):
    actions = []
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        overrides = [
            f"policy={trained}",
            *EVAL,
            "eval.deterministic=true",
            f"seed={seed}",
            "eval.distributions=[train]",
        ]
        proc = run_module("experiments.evaluate", out, *overrides)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((out / "report.json").read_text())
        actions.append(report["distributions"]["train"]["per_episode"])
    assert actions[0] == actions[1]


def test_the_cli_runs_where_the_python_path_has_only_the_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([*_misgen(), "--help"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_local_submitit_sweep_runs_its_jobs_with_findable_output(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [*_misgen(), "train", "-m", "hydra/launcher=local", f"hydra.sweep.dir={sweep}", "threads=1", "seed=0,1"]
    proc = _run(*cmd, *TINY, *SMALL_MAZES, "total_env_steps=256")
    assert proc.returncode == 0, proc.stderr
    for job, seed in ((0, 0), (1, 1)):
        rows = [json.loads(line) for line in (sweep / str(job) / "metrics.jsonl").read_text().splitlines()]
        assert [r["env_steps"] for r in rows if "policy_loss" in r] == [256]
        assert yaml.safe_load((sweep / str(job) / ".hydra" / "config.yaml").read_text())["seed"] == seed
    logs = list((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # each job's own stdout, where the docs say
