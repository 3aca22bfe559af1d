"""Populations: K agents trained in one process (``population=K``) are K single runs, member for member,
and nothing couples two members."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import agents.ppo as ppo_module
from agents.checkpoint import load_checkpoint
from agents.networks import NetworkConfig
from agents.ppo import PPO, PPOConfig
from envs import make_core
from tests.conftest import small_config, tiny_learner, tiny_maze_config

NET = NetworkConfig(kind="mlp", hidden=32, mlp_layers=2, egocentric=4)
CFG = PPOConfig(num_envs=16, num_steps=32, minibatches=4, epochs=2, network=NET)
ROOT = Path(__file__).resolve().parents[1]


def _ppo(seed: int, population: int, cfg: PPOConfig = CFG) -> PPO:
    core = make_core(small_config(), "train", num_envs=cfg.num_envs * population, seed=seed, device="cpu")
    return PPO(core, cfg, seed=seed, population=population)


def _first_gradients(ppo: PPO, monkeypatch) -> list[torch.Tensor]:
    """The gradients (after clipping) of the first optimiser step of one iteration."""
    seen: list[torch.Tensor] = []
    step = ppo.optimizer.step

    def recording_step(*args, **kwargs):
        if not seen:
            seen.extend(p.grad.clone() for p in ppo.members.parameters())
        return step(*args, **kwargs)

    monkeypatch.setattr(ppo.optimizer, "step", recording_step)
    ppo.train_iteration(10)
    monkeypatch.undo()
    return seen


def test_a_member_is_the_single_run_of_its_seed(monkeypatch):
    """Same seed: the same initial weights, first update's gradients and losses, and after three
    iterations the same statistics and weights, up to float rounding."""
    population = _ppo(5, 3)
    singles = [_ppo(5 + m, 1) for m in range(3)]
    for m, single in enumerate(singles):
        for name, value in single.members.state_dict(0).items():
            assert torch.equal(value, population.members.state_dict(m)[name]), name
    pop_grads = _first_gradients(population, monkeypatch)
    pop_stats = [population.train_iteration(10) for _ in range(2)]
    for m, single in enumerate(singles):
        grads = _first_gradients(single, monkeypatch)
        for g_pop, g_one in zip(pop_grads, grads, strict=True):
            assert torch.allclose(g_pop[m], g_one[0], rtol=1e-4, atol=1e-7)
        stats = [single.train_iteration(10)[0] for _ in range(2)]
        for mine, theirs in zip([s[m] for s in pop_stats], stats, strict=True):
            for key in ("policy_loss", "value_loss", "entropy", "success_rate", "episodes"):
                assert math.isclose(mine[key], theirs[key], rel_tol=1e-4, abs_tol=1e-6), (m, key)
        for name, value in single.members.state_dict(0).items():
            assert torch.allclose(value, population.members.state_dict(m)[name], atol=1e-6), (m, name)


def test_a_member_checkpoint_is_a_single_runs_and_resumes_alone():
    """Member k's state dict has a single run's fields and shapes; a single run loaded from it goes on as
    the member of a resumed population does."""
    population, single = _ppo(3, 2), _ppo(4, 1)
    population.train_iteration(10)
    state = population.state_dict(1)
    reference = single.state_dict(0)
    assert state.keys() == reference.keys()
    assert {k: v.shape for k, v in state["model"].items()} == {k: v.shape for k, v in reference["model"].items()}
    single.load_state_dict(state)
    again = _ppo(3, 2)
    again.load_state_dict([population.state_dict(0), state])  # both start fresh episodes where the streams stopped
    ahead = again.train_iteration(10)[1]
    alone = single.train_iteration(10)[0]
    assert math.isclose(ahead["value_loss"], alone["value_loss"], rel_tol=1e-4)


def test_members_saved_at_different_points_are_refused_by_name():
    population = _ppo(0, 2)
    early = population.state_dict(0)
    population.train_iteration(10)
    with pytest.raises(ValueError, match="different points"):
        _ppo(0, 2).load_state_dict([early, population.state_dict(1)])


def test_a_nan_in_one_members_loss_names_it_and_leaves_the_others_alone(monkeypatch):
    """Member 1's returns forced to NaN: the iteration raises naming member 1 and its seed, and members
    0 and 2 have exactly the weights they have in a run without the NaN."""
    clean = _ppo(7, 3)
    clean.train_iteration(10)
    poisoned = _ppo(7, 3)
    gae = ppo_module.compute_gae

    def nan_for_member_1(*args):
        advantages, returns = gae(*args)
        returns[:, 1] = float("nan")
        return advantages, returns

    monkeypatch.setattr(ppo_module, "compute_gae", nan_for_member_1)
    with pytest.raises(FloatingPointError, match=r"member 1 \(seed 8\)") as err:
        poisoned.train_iteration(10)
    assert "member 0" not in str(err.value) and "member 2" not in str(err.value)
    for m in (0, 2):
        for name, value in clean.members.state_dict(m).items():
            assert torch.equal(value, poisoned.members.state_dict(m)[name]), (m, name)
    assert not all(v.isfinite().all() for v in poisoned.members.state_dict(1).values())


def _train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    preset = [] if any(o.startswith("resume=") for o in overrides) else ["experiment=arrow_maze_tiny"]
    cmd = [sys.executable, "-m", "experiments.train", *preset, "logger=none", "progress=log"]
    cmd += ["eval_episodes=16", f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _last_eval(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "eval/train/success" in r][-1]


def test_a_population_run_writes_member_runs_that_resume_and_evaluate_alone(tmp_path):
    """population=2: seed_<s>/ dirs holding a single run's files; member 1 evaluates as the single run of
    its seed does; a population resumes, each member's metrics going on from its checkpoint; a member
    alone evaluates, and cannot be resumed as a single run."""
    whole, split, single = tmp_path / "whole", tmp_path / "split", tmp_path / "single"
    assert _train(whole, "population=2", "seed=3", "total_env_steps=8192").returncode == 0
    assert sorted(p.name for p in whole.glob("seed_*")) == ["seed_3", "seed_4"]
    assert _train(single, "seed=4", "total_env_steps=8192").returncode == 0
    member, alone = _last_eval(whole / "seed_4"), _last_eval(single)
    for key, value in alone.items():
        assert math.isclose(member[key], value, abs_tol=1e-9), key
    state = torch.load(whole / "seed_4" / "checkpoint.pt", weights_only=True)
    assert state["member"] == {"index": 1, "seed": 4}
    assert state.keys() - {"member"} == load_checkpoint(single).keys()

    assert _train(split, "population=2", "seed=3", "total_env_steps=4096").returncode == 0
    resumed = _train(tmp_path / "elsewhere", f"resume={split}", "total_env_steps=8192")
    assert resumed.returncode == 0, resumed.stderr
    for seed in (3, 4):  # a resumed run starts fresh episodes, so it continues, it does not replay
        state = load_checkpoint(split / f"seed_{seed}")
        assert (state["env_steps"], state["updates"]) == (8192, 4)
        rows = [json.loads(line) for line in (split / f"seed_{seed}" / "metrics.jsonl").read_text().splitlines()]
        assert [r["updates"] for r in rows if "policy_loss" in r] == [1, 2, 3, 4]

    refused = _train(tmp_path / "x", f"resume={whole / 'seed_4'}")
    assert refused.returncode == 2 and "one member of the population of 2" in refused.stderr
    refused = _train(tmp_path / "y", f"resume={whole}", "population=3")
    assert refused.returncode == 2 and "a population of 2 members, and this run has population=3" in refused.stderr

    report = tmp_path / "member.json"
    cmd = [sys.executable, "-m", "experiments.evaluate", f"policy={whole / 'seed_4'}", "eval.episodes=16"]
    cmd += ["logger=none", "figures.enabled=false", f"report={report}"]
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600).returncode == 0
    assert set(json.loads(report.read_text())["distributions"]) == {"train", "shift_arrow", "shift_size", "shift_both"}


def test_a_population_dir_evaluates_every_member_batched_as_each_alone(tmp_path):
    """policy=<population dir>: one report over the members (counts of behavioural objectives, intervals
    over seeds), each member's results the same as its evaluation alone."""
    pop = tmp_path / "pop"
    assert _train(pop, "population=2", "total_env_steps=4096").returncode == 0
    common = ["eval.episodes=16", "logger=none", "figures.enabled=false", "eval.distributions=[shift_arrow]"]
    both, one = tmp_path / "both.json", tmp_path / "one.json"
    for policy, out in ((pop, both), (pop / "seed_1", one)):
        cmd = [sys.executable, "-m", "experiments.evaluate", f"policy={policy}", f"report={out}", *common]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    report = json.loads(both.read_text())
    assert report["policy"] == [str(pop / "seed_0"), str(pop / "seed_1")]
    assert report["policy_label"] == "population pop (2 members)"
    assert sum(report["distributions"]["shift_arrow"]["objective_counts"].values()) == 2
    batched = report["runs"][str(pop / "seed_1")]["shift_arrow"]
    alone = json.loads(one.read_text())["distributions"]["shift_arrow"]
    assert batched["episodes"] == alone["episodes"]
    for key in ("capability", "goal_directedness", "shares"):
        assert batched[key] == alone[key], key


def test_a_population_with_the_sb3_backend_is_refused(tmp_path):
    proc = _train(tmp_path / "r", "population=2", "agent.backend=sb3")
    assert proc.returncode == 2 and "population=2 trains with agent.backend=misgen" in proc.stderr


def _success_curve(seed: int, population: int, iterations: int, windows: int) -> list[list[float]]:
    """Each member's training success rate, averaged over ``windows`` equal spans of ``iterations``."""
    learner = tiny_learner()
    core = make_core(tiny_maze_config(), "train", num_envs=learner.num_envs * population, seed=seed, device="cpu")
    ppo = PPO(core, learner, seed=seed, population=population)
    rates = [[] for _ in range(population)]
    for _ in range(iterations):
        for m, stats in enumerate(ppo.train_iteration()):
            rates[m].append(stats["success_rate"])
    span = iterations // windows
    return [[sum(r[w * span : (w + 1) * span]) / span for w in range(windows)] for r in rates]


@pytest.mark.slow
def test_a_population_learns_as_single_runs_of_other_seeds_do():
    """Statistically, where member-for-member equality cannot apply: four members (seeds 0-3) and four
    single runs of other seeds (10-13) learning 3x3-cell mazes for 60 iterations (123 k env steps each).
    In each fifth of training, the members' mean success lies within the single runs' range widened by
    their standard deviation (about 40 s). A population whose members act on each other's observations
    stays near 0.2 success from the second fifth on, and fails here; the singles reach about 0.8."""
    iterations, windows = 60, 5
    members = _success_curve(0, 4, iterations, windows)
    singles = [_success_curve(seed, 1, iterations, windows)[0] for seed in (10, 11, 12, 13)]
    for w in range(windows):
        theirs = torch.tensor([s[w] for s in singles])
        mine = sum(m[w] for m in members) / len(members)
        low, high = float(theirs.min() - theirs.std()), float(theirs.max() + theirs.std())
        assert low <= mine <= high, (w, mine, theirs.tolist())
    assert min(s[-1] for s in singles) > 0.6  # they learned: the comparison is of learning curves
