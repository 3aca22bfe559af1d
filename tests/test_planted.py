"""The estimator against planted policies (``tests/policies.py``, written from the observation only):
behaviour less tidy than an ε-greedy oracle, each exposing one way a step-pooled estimator misreads it.
Each test asserts the corrected reading against the plant's own ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.estimator import RANDOM, EstimatorSettings
from analysis.metrics import VerdictConfig, aggregate_seeds, analyse
from analysis.objectives import objectives_of
from analysis.policy_specs import load_actor
from analysis.trajectories import collect_episodes
from tests import policies
from tests.conftest import kc_config, small_config

SETTINGS = EstimatorSettings(resamples=100)


def planted(name: str, distribution: str, episodes: int = 128, cfg=None, candidates=()):
    cfg = cfg or small_config()
    objectives = objectives_of(cfg, candidates=list(candidates))
    traj = collect_episodes(load_actor(f"py:tests.policies:{name}", cfg, seed=0), cfg, distribution, episodes, seed=0)
    report, est = analyse(traj, objectives, SETTINGS)
    return traj, report, est


def test_a_conditional_policy_is_a_mixture_and_dwell_time_does_not_decide_it():
    """Defects 1 and 2: the nearer of end and arrow, by a shortest path, in every episode. The arrow
    episodes dwell until the time limit and supply most of the steps; the shares still count episodes,
    and capability is measured against each episode's own goal."""
    traj, report, _ = planted("nearer_goal", "shift_both", episodes=64)
    first_end = traj.outcome["first_end_step"].cpu().numpy()
    first_arrow = traj.outcome["first_arrow_step"].cpu().numpy()
    to_arrow = (first_arrow > 0) & ((first_end <= 0) | (first_arrow < first_end))  # the plant's goal, as it went
    arrow_steps = np.isin(traj.episode.cpu().numpy(), np.flatnonzero(to_arrow)).mean()
    assert 0.2 < to_arrow.mean() < 0.8 and arrow_steps > to_arrow.mean() + 0.25  # dwell: many more steps
    assert report["verdict"] == "mixed" and report["mixed"]
    assert report["shares"]["arrow"] == pytest.approx(to_arrow.mean(), abs=0.1)
    assert report["shares"]["end"] == pytest.approx(1 - to_arrow.mean(), abs=0.1)
    labels = np.array(report["per_episode"]["objective"])
    assert (labels[to_arrow] == "arrow").mean() > 0.9 and (labels[~to_arrow] == "end").mean() > 0.9
    assert report["capability"] >= 0.9
    assert report["capability_by_pursued"]["arrow"] >= 0.9 and report["capability_by_pursued"]["end"] >= 0.9
    low, high = report["intervals"]["share:arrow"]
    assert low <= report["shares"]["arrow"] <= high


def test_a_fifty_fifty_mixture_is_recovered():
    """Defect 3: half the levels are played for the arrow, half for the end (fixed per level)."""
    traj, report, _ = planted("level_mixture", "shift_arrow")
    start = traj.core.reset(seed=0, level_ids=torch.arange(traj.episodes))
    seeks_arrow = policies.level_mixture_seeks_arrow(start).cpu().numpy()
    assert 0.3 < seeks_arrow.mean() < 0.7
    assert report["verdict"] == "mixed"
    assert report["shares"]["arrow"] == pytest.approx(seeks_arrow.mean(), abs=0.1)
    assert report["shares"]["end"] == pytest.approx(1 - seeks_arrow.mean(), abs=0.1)
    assert report["objective_robustness"] == pytest.approx(report["shares"]["end"])


def test_a_goal_no_candidate_names_is_unexplained_until_it_is_a_candidate():
    """Defect 4 and user-defined candidates: a deterministic walk to the tile nearest the top-left corner."""
    _, report, _ = planted("corner_seeker", "shift_arrow")
    assert report["verdict"] == "unexplained" and report["unexplained"]
    fit = report["fit"]
    assert fit["goal_tile"] == 1.0  # shortest-path moves toward one tile, every step
    assert fit["repeat_observed"] == 1.0 and fit["unexplained"] > 0.5  # and repeatable beyond the model
    _, with_corner, _ = planted("corner_seeker", "shift_arrow", candidates=["corner:tl"])
    assert with_corner["behavioural_objective"] == "corner:tl"
    assert with_corner["verdict"] == "objective_misgeneralisation" and not with_corner["unexplained"]
    assert with_corner["capability"] >= 0.9 and with_corner["shares"]["corner:tl"] > 0.9


def test_a_boltzmann_arrow_seeker_has_its_temperature_recovered():
    """About a fifth of its actions are not greedy; the estimator still names the arrow, and its beta."""
    traj, report, _ = planted("boltzmann_arrow", "shift_arrow", episodes=256)
    q = objectives_of(small_config()).q_values(traj)["arrow"]
    greedy = q.gather(1, traj.action[:, None]).squeeze(1) >= q.amax(1) - 1e-12
    assert 0.12 < 1 - float(greedy.double().mean()) < 0.3
    assert report["behavioural_objective"] == "arrow" and report["verdict"] == "objective_misgeneralisation"
    assert report["beta"]["arrow"] == pytest.approx(policies.BOLTZMANN_BETA, rel=0.1)
    assert report["support"]["arrow"] > 0.95


def test_a_key_biased_random_walk_is_not_read_as_opening_chests():
    """Defect 5: a handful of steps onto the last chest used to decide the posterior."""
    _, report, _ = planted("key_biased_walk", "shift_ratio", cfg=kc_config())
    confident_chests = report["behavioural_objective"] == "open_chests" and report["support"]["open_chests"] > 0.9
    assert not confident_chests, (report["shares"], report["support"], report["beta"], report["lapse"])


def _fake(objective: str, verdict: str) -> dict:
    """A per-seed report with just what :func:`aggregate_seeds` reads."""
    return {
        "episodes": 8,
        "verdict": verdict,
        "behavioural_objective": objective,
        "map_objective": objective,
        "identifiable": True,
        "mixed": False,
        "unexplained": False,
        "shares": {"end": 1.0 if objective == "end" else 0.0, "arrow": 1.0 if objective == "arrow" else 0.0},
        "weights": {"end": 1.0, "arrow": 0.0},
        "capability": 1.0,
        "objective_robustness": 1.0 if objective == "end" else 0.0,
        "goal_directedness": 10.0,
        "base_return": 1.0,
        "regret": 0.0,
        "success": 1.0,
        "env_metrics": {},
    }


def test_seeds_that_pursue_different_objectives_make_a_mixed_population():
    seeds = [_fake("end", "robust")] * 3 + [_fake("arrow", "objective_misgeneralisation")] * 2
    out = aggregate_seeds(seeds, VerdictConfig(bootstrap_resamples=200))
    assert out["mixed_over_seeds"] and out["verdict"] == "mixed" and out["unexplained"] is False
    assert out["seed_shares"] == {"end": 0.6, "arrow": 0.4} and out["objective_counts"] == {"end": 3, "arrow": 2}
    assert out["intervals"]["objective_robustness"] is not None and not out["too_few_seeds"]
    two = aggregate_seeds(seeds[:1] + seeds[-1:], VerdictConfig())
    assert two["too_few_seeds"] and two["intervals"]["objective_robustness"] is None
    same = aggregate_seeds([_fake("end", "robust")] * 5, VerdictConfig())
    assert not same["mixed_over_seeds"] and same["verdict"] == "robust"
    assert RANDOM not in same["seed_shares"]


def test_a_random_walk_is_not_goal_directed_toward_any_tile():
    cfg = small_config()
    traj = collect_episodes(load_actor("random", cfg, seed=0), cfg, "shift_arrow", 64, seed=0)
    report, _ = analyse(traj, objectives_of(cfg), SETTINGS)
    assert report["fit"]["goal_tile"] < 0.3 and report["verdict"] == "capability_failure"


def test_an_agent_the_model_explains_leaves_nothing_of_its_predictability_unexplained():
    """A random walk repeats its move on revisits a little more often than sum p² says (a move into a
    wall makes the next step a revisit); predicting the previous visit's tile keeps that exact."""
    for cfg, distribution in ((small_config(), "shift_arrow"), (kc_config(), "shift_ratio")):
        traj = collect_episodes(load_actor("random", cfg, seed=0), cfg, distribution, 64, seed=0)
        fit = analyse(traj, objectives_of(cfg), SETTINGS)[0]["fit"]
        assert fit["revisits"] > 1000 and fit["unexplained"] < 0.3, fit
        assert fit["repeat_observed"] == pytest.approx(fit["repeat_model"], abs=0.02)


def test_an_extra_candidates_oracle_is_a_policy_and_reserved_names_are_refused():
    from analysis.candidates import make_candidates
    from envs.config import ConfigError

    cfg = small_config()
    objectives = objectives_of(cfg, candidates=["corner:tl"])
    traj = collect_episodes(load_actor("oracle:corner:tl@0.0", cfg, seed=0, objectives=objectives), cfg, "train", 16)
    assert objectives.capability(traj, "corner:tl").min() == 1.0
    with pytest.raises(ConfigError, match="reserved"):
        make_candidates(["py:tests.test_planted:RandomNamed"], cfg)


class RandomNamed:
    """A candidate hook that takes the estimator's own name for chance."""

    name = "random"

    def __init__(self, env_cfg, gamma) -> None:
        pass

    def q_values(self, traj):
        return torch.zeros(len(traj.action), 4, dtype=torch.float64)

    def capability(self, traj):
        return np.zeros(traj.episodes)
