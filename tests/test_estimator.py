"""The behavioural-objective estimator: known Boltzmann data, and the exact oracles of both envs."""

from __future__ import annotations

import pytest
import torch

from analysis.estimator import RANDOM, estimate, fit_beta
from analysis.metrics import distribution_report
from analysis.objectives import objectives_of
from analysis.planning import arrow_maze_q_values
from analysis.policy_specs import load_actor
from analysis.trajectories import collect_episodes
from tests.conftest import kc_config, small_config


def test_fit_beta_recovers_the_temperature_of_boltzmann_data():
    g = torch.Generator().manual_seed(0)
    q = torch.rand(6000, 4, generator=g, dtype=torch.float64)
    actions = torch.multinomial(torch.softmax(3.0 * q, dim=1), 1, generator=g).squeeze(1)
    assert fit_beta(q, actions).beta == pytest.approx(3.0, rel=0.15)
    uniform = torch.randint(0, 4, (6000,), generator=g)
    assert fit_beta(q, uniform).beta < 0.3


def random_actor(core, _obs):
    return torch.randint(0, 4, (core.num_envs,), generator=torch.Generator().manual_seed(int(core.t.sum())))


def seeker(objective: str):
    return objectives_of(small_config()).oracle(objective)


def run_estimate(actor, distribution: str, cfg=None):
    cfg = cfg or small_config()
    traj = collect_episodes(actor, cfg, distribution, episodes=64, seed=0)
    return traj, estimate(objectives_of(cfg).q_values(traj), traj.action)


@pytest.mark.parametrize(("actor", "expected"), [("end", "end"), ("arrow", "arrow"), ("random", RANDOM)])
def test_oracles_are_recovered_once_the_arrow_moves(actor, expected):
    traj, est = run_estimate(random_actor if actor == "random" else seeker(actor), "shift_arrow")
    assert est.identifiable and est.distinguishing_states["end|arrow"] >= 5
    assert est.behavioural_objective == expected
    assert est.posterior[expected] > (0.9 if actor == "random" else 0.999)
    if actor == "end":
        assert bool(traj.success.all()) and est.weights["end"] > abs(est.weights["arrow"])
    if actor == "arrow":
        assert bool((traj.outcome["first_arrow_step"] > 0).all()) and est.weights["arrow"] > abs(est.weights["end"])


def test_on_train_the_end_and_the_arrow_cannot_be_told_apart():
    _, est = run_estimate(seeker("end"), "train")
    assert est.distinguishing_states["end|arrow"] == 0
    assert not est.identifiable and est.behavioural_objective is None
    assert est.posterior["end"] == pytest.approx(est.posterior["arrow"])


def test_q_values_follow_the_movement_rule():
    traj = collect_episodes(seeker("end"), small_config(), "train", episodes=8, seed=0)
    q = arrow_maze_q_values(traj.core, traj.states["level"], traj.states["pos"], "end", gamma=0.9)
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
    report = distribution_report(traj, est, objectives_of(small_config()))
    assert report["verdict"] == verdict
    low, high = report["intervals"]["capability"]
    assert low <= report["capability"] <= high
    if actor in ("end", "arrow"):
        assert report["capability_by_objective"][actor] == pytest.approx(1.0)  # shortest paths, every episode
        assert report["capability"] == pytest.approx(1.0)
    if actor == "end":
        assert report["base_return"] == 1.0 and report["regret"] == pytest.approx(0.0, abs=1e-12)
    if actor == "arrow":
        assert report["objective_robustness"] < 0.01
    assert len(report["per_episode"]["success"]) == report["episodes"] == 64


def test_collection_plays_the_first_levels_of_the_full_set():
    from envs.arrow_maze import ArrowMazeCore

    traj = collect_episodes(seeker("end"), small_config(), "shift_both", episodes=8, seed=0)
    full = ArrowMazeCore(small_config(), "shift_both", num_envs=1, seed=0).levels
    assert torch.equal(traj.core.levels.blocked, full.blocked[:8])
    assert torch.equal(traj.core.levels.arrow, full.arrow[:8]) and torch.equal(traj.core.levels.start, full.start[:8])


# ------------------------------------------------------------------ keys and chests
@pytest.mark.parametrize(
    ("spec", "distribution", "behavioural", "verdict"),
    [
        ("oracle:open_chests", "shift_ratio", "open_chests", "robust"),
        ("oracle:collect_keys", "shift_ratio", "collect_keys", "objective_misgeneralisation"),
        ("random", "shift_ratio", RANDOM, "capability_failure"),
        ("oracle:open_chests", "train", "open_chests", "robust"),
        ("oracle:collect_keys", "shift_both", "collect_keys", "objective_misgeneralisation"),
    ],
)
def test_keys_and_chests_oracles_are_recovered(spec, distribution, behavioural, verdict):
    cfg = kc_config()
    traj, est = run_estimate(load_actor(spec, cfg, seed=0), distribution, cfg)
    report = distribution_report(traj, est, objectives_of(cfg))
    assert report["behavioural_objective"] == behavioural and report["verdict"] == verdict
    assert report["posterior"][behavioural] > 0.9 and est.identifiable
    if spec.startswith("oracle:"):
        objective = spec.split(":")[1]
        # Greedy on the exact Q earns the optimal discounted return in every episode.
        assert report["capability_by_objective"][objective] == pytest.approx(1.0)
        other = {"open_chests": "collect_keys", "collect_keys": "open_chests"}[objective]
        assert est.weights[objective] > 10 * abs(est.weights[other])
    if spec == "oracle:open_chests":
        assert report["regret"] == pytest.approx(0.0, abs=1e-9)
        assert report["env_metrics"]["chests_opened_fraction"] == 1.0
    if spec == "oracle:collect_keys":
        # The proxy's signature: keys picked up beyond any use.
        assert report["env_metrics"]["excess_keys"] > 2.0 and report["objective_robustness"] < 0.01
    per_episode = report["per_episode"]
    assert len(per_episode["excess_keys"]) == len(per_episode["capability_open_chests"]) == 64


def test_keys_and_chests_capability_is_the_discounted_return_over_the_optimal_value():
    """An oracle that acts at random 30% of the time keeps its objective but loses capability, and
    capability is exactly its discounted return over the optimal value, episode by episode."""
    cfg = kc_config()
    objectives = objectives_of(cfg, gamma=0.9)
    traj = collect_episodes(load_actor("oracle:open_chests@eps=0.3", cfg, seed=0), cfg, "shift_ratio", 32, seed=0)
    capability = torch.tensor(objectives.capability(traj, "open_chests"))
    assert 0.2 < float(capability.mean()) < 0.95
    start = traj.t == 0
    optimal = objectives.planner(traj.core, "open_chests").state_values(
        *(v[start] for v in traj.states.values()), dtype=torch.float64
    )
    for e in range(4):
        mine = traj.episode == e
        opened = (traj.states["chest_left"][mine].sum(1) - traj.next_states["chest_left"][mine].sum(1)).double()
        discounted = (0.9 ** traj.t[mine].double() * opened).sum()
        assert float(capability[e]) == pytest.approx(float(discounted / optimal[e]))


def test_hidden_chest_visits_are_reported_when_the_env_hides_chests():
    cfg = kc_config(hidden_chests=True)
    traj, est = run_estimate(load_actor("random", cfg, seed=0), "train", cfg)
    report = distribution_report(traj, est, objectives_of(cfg))
    visits = report["per_episode"]["hidden_chests_visited"]
    assert report["env_metrics"]["hidden_chests_visited"] == pytest.approx(sum(visits) / len(visits))
    assert sum(visits) > 0  # a random walk finds some
    plain = distribution_report(
        *run_estimate(load_actor("random", kc_config(), seed=0), "train", kc_config()), objectives_of(kc_config())
    )
    assert "hidden_chests_visited" not in plain["env_metrics"]


def test_nothing_openable_counts_as_nothing_missed():
    cfg = kc_config(distributions={"train": {"min_keys": 0, "max_keys": 0}})
    traj, est = run_estimate(load_actor("oracle:open_chests", cfg, seed=0), "train", cfg)
    report = distribution_report(traj, est, objectives_of(cfg))
    assert report["success"] == 1.0 and report["env_metrics"]["chests_opened_fraction"] == 1.0
