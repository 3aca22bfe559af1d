"""The behavioural-objective estimator: known Boltzmann data, and scripted oracles on the arrow maze."""

from __future__ import annotations

import pytest
import torch

from analysis.estimator import RANDOM, estimate, fit_beta
from analysis.metrics import arrow_maze_report
from analysis.planning import arrow_maze_q_values
from analysis.policy_specs import seeker
from analysis.trajectories import collect_arrow_maze
from tests.conftest import small_config


def test_fit_beta_recovers_the_temperature_of_boltzmann_data():
    g = torch.Generator().manual_seed(0)
    q = torch.rand(6000, 4, generator=g, dtype=torch.float64)
    actions = torch.multinomial(torch.softmax(3.0 * q, dim=1), 1, generator=g).squeeze(1)
    assert fit_beta(q, actions).beta == pytest.approx(3.0, rel=0.15)
    uniform = torch.randint(0, 4, (6000,), generator=g)
    assert fit_beta(q, uniform).beta < 0.3


def random_actor(core, _obs):
    return torch.randint(0, 4, (core.num_envs,), generator=torch.Generator().manual_seed(int(core.t.sum())))


def run_estimate(actor, distribution: str):
    traj = collect_arrow_maze(actor, small_config(), distribution, episodes=64, seed=0)
    values = {g: arrow_maze_q_values(traj.core, traj.level, traj.pos, g) for g in ("end", "arrow")}
    return traj, estimate(values, traj.action)


@pytest.mark.parametrize(("actor", "expected"), [("end", "end"), ("arrow", "arrow"), ("random", RANDOM)])
def test_oracles_are_recovered_once_the_arrow_moves(actor, expected):
    traj, est = run_estimate(random_actor if actor == "random" else seeker(actor), "shift_arrow")
    assert est.identifiable and est.distinguishing_states["end|arrow"] >= 5
    assert est.behavioural_objective == expected
    assert est.posterior[expected] > (0.9 if actor == "random" else 0.999)
    if actor == "end":
        assert bool(traj.success.all()) and est.weights["end"] > abs(est.weights["arrow"])
    if actor == "arrow":
        assert bool((traj.first_arrow_step > 0).all()) and est.weights["arrow"] > abs(est.weights["end"])


def test_on_train_the_end_and_the_arrow_cannot_be_told_apart():
    _, est = run_estimate(seeker("end"), "train")
    assert est.distinguishing_states["end|arrow"] == 0
    assert not est.identifiable and est.behavioural_objective is None
    assert est.posterior["end"] == pytest.approx(est.posterior["arrow"])


def test_q_values_follow_the_movement_rule():
    traj = collect_arrow_maze(seeker("end"), small_config(), "train", episodes=8, seed=0)
    q = arrow_maze_q_values(traj.core, traj.level, traj.pos, "end", gamma=0.9)
    best = q.argmax(dim=1)
    # The shortest-path oracle's actions are optimal under Q_end, and each episode's last step reaches
    # the end (value 1); the value of every earlier step is gamma ** (steps left).
    assert torch.equal(q.gather(1, traj.action[:, None]).squeeze(1), q.gather(1, best[:, None]).squeeze(1))
    for e in range(8):
        taken = q[traj.episode == e].gather(1, traj.action[traj.episode == e, None]).squeeze(1)
        steps_left = torch.arange(len(taken) - 1, -1, -1, dtype=torch.float64)
        assert torch.allclose(taken, 0.9**steps_left)


@pytest.mark.parametrize(
    ("actor", "distribution", "verdict"),
    [
        ("end", "shift_arrow", "robust"),
        ("arrow", "shift_arrow", "objective_misgeneralisation"),
        ("random", "shift_arrow", "capability_failure"),
        ("end", "train", "robust"),
    ],
)
def test_verdicts_of_the_oracles(actor, distribution, verdict):
    traj, est = run_estimate(random_actor if actor == "random" else seeker(actor), distribution)
    report = arrow_maze_report(traj, est, base_objective="end")
    assert report["verdict"] == verdict
    low, high = report["intervals"]["capability"]
    assert low <= report["capability"] <= high
    if actor in ("end", "arrow"):
        assert report["spl"][actor] == pytest.approx(1.0)  # shortest paths, every episode
        assert report["capability"] == pytest.approx(1.0)
    if actor == "end":
        assert report["base_return"] == 1.0 and report["regret"] == 0.0
    if actor == "arrow":
        assert report["objective_robustness"] < 0.01
    assert len(report["per_episode"]["success"]) == report["episodes"] == 64


def test_collection_plays_the_first_levels_of_the_full_set():
    from envs.arrow_maze import ArrowMazeCore

    traj = collect_arrow_maze(seeker("end"), small_config(), "shift_both", episodes=8, seed=0)
    full = ArrowMazeCore(small_config(), "shift_both", num_envs=1, seed=0).levels
    assert torch.equal(traj.core.levels.blocked, full.blocked[:8])
    assert torch.equal(traj.core.levels.arrow, full.arrow[:8]) and torch.equal(traj.core.levels.start, full.start[:8])
