"""The core on CUDA behaves exactly as on the CPU (skipped where no GPU is present, as in CI)."""

from __future__ import annotations

import pytest
import torch

from envs.arrow_maze import ArrowMazeCore
from tests.conftest import small_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("obs_mode", ["symbolic", "rgb"])
def test_cuda_core_matches_cpu_core_step_for_step(obs_mode):
    cfg = small_config(obs_mode=obs_mode, max_steps=50)
    levels = torch.arange(64) * 3
    cpu = ArrowMazeCore(cfg, "shift_both", num_envs=64, device="cpu")
    gpu = ArrowMazeCore(cfg, "shift_both", num_envs=64, device="cuda")
    assert torch.equal(cpu.reset(level_ids=levels), gpu.reset(level_ids=levels).cpu())
    g = torch.Generator().manual_seed(0)
    for _ in range(49):  # below the time limit: no env resets, so no level is drawn at random
        action = torch.randint(0, 4, (64,), generator=g)
        a, b = cpu.step(action), gpu.step(action.cuda())
        live = ~a.done
        assert torch.equal(a.done, b.done.cpu())
        assert torch.equal(a.obs[live], b.obs.cpu()[live])
        assert torch.equal(a.reward, b.reward.cpu())
        assert torch.equal(a.info["first_arrow_step"], b.info["first_arrow_step"].cpu())


@pytest.mark.parametrize(
    ("env", "spec", "distribution"),
    [("arrow_maze", "oracle:arrow", "shift_arrow"), ("keys_chests", "oracle:collect_keys", "shift_ratio")],
)
def test_evaluation_on_cuda_equals_the_cpu(env, spec, distribution):
    """Planning, oracles, collection, estimate and report give the same numbers on both devices."""
    from analysis.estimator import EstimatorSettings
    from analysis.metrics import analyse
    from analysis.objectives import objectives_of
    from analysis.policy_specs import load_actor
    from analysis.trajectories import collect_episodes
    from tests.conftest import kc_config

    reports = []
    for device in ("cpu", "cuda"):
        cfg = small_config(device=device) if env == "arrow_maze" else kc_config(device=device)
        objectives = objectives_of(cfg)
        traj = collect_episodes(load_actor(spec, cfg, device, seed=0), cfg, distribution, 32, seed=0, device=device)
        values = objectives.q_values(traj)
        assert all(v.device.type == device for v in values.values())
        reports.append(analyse(traj, objectives, EstimatorSettings())[0])
    cpu, gpu = reports
    assert cpu["verdict"] == gpu["verdict"]
    for key, values in cpu["per_episode"].items():  # capabilities: float64 pow may differ in the last bit
        assert values == pytest.approx(gpu["per_episode"][key], rel=1e-9), key
    assert cpu["capability"] == pytest.approx(gpu["capability"]) and cpu["shares"] == pytest.approx(gpu["shares"])


def test_a_population_member_on_cuda_is_the_single_run_of_its_seed():
    """population=2 on CUDA: the accelerator's rollout path (bootstrap values without a host sync), member 1
    against the single run of its seed after two iterations, up to float rounding."""
    from agents.networks import NetworkConfig
    from agents.ppo import PPO, PPOConfig

    cfg = PPOConfig(num_envs=16, num_steps=32, minibatches=4, epochs=2, network=NetworkConfig(kind="mlp", hidden=32))
    population = PPO(
        ArrowMazeCore(small_config(), "train", num_envs=32, seed=0, device="cuda"), cfg, seed=0, population=2
    )
    single = PPO(ArrowMazeCore(small_config(), "train", num_envs=16, seed=1, device="cuda"), cfg, seed=1)
    for _ in range(2):
        pop_stats, (one_stats,) = population.train_iteration(10), single.train_iteration(10)
    assert abs(pop_stats[1]["value_loss"] - one_stats["value_loss"]) <= 1e-3 * abs(one_stats["value_loss"]) + 1e-6
    for name, value in single.members.state_dict(0).items():
        assert torch.allclose(value, population.members.state_dict(1)[name], atol=1e-5), name
