"""Training entry point: metrics and atomic checkpoints, resume, identical actions after reload, bad overrides,
multirun sweeps, progress output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.checkpoint import kept_checkpoints, load_checkpoint, save_checkpoint
from agents.networks import NetworkConfig
from agents.policy import Policy, load_network_policy
from agents.ppo import PPO, PPOConfig
from envs.arrow_maze import ArrowMazeCore
from tests.conftest import ROOT, run_module, small_config

TINY = [
    "env.num_levels=64",
    "env.device=cpu",
    *(f"env.distributions.{d}.num_levels=64" for d in ("shift_arrow", "shift_size", "shift_both")),
    "agent.num_envs=16",
    "agent.num_steps=16",
    "agent.minibatches=2",
    "agent.network.kind=mlp",
    "agent.network.hidden=32",
    "eval_episodes=4",
    "eval_every=0",
    "checkpoint_every=2",
    "logger=none",
]
# Small mazes in every distribution: evaluation of an untrained policy (which runs to the time limit) stays quick.
SMALL_MAZES = [
    f"env.distributions.{d}.{k}=3"
    for d in ("train", "shift_arrow", "shift_size", "shift_both")
    for k in ("min_size", "max_size")
]


def _train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_module("experiments.train", run_dir, *TINY, *overrides)


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_writes_metrics_and_a_checkpoint_then_resume_continues(tmp_path):
    proc = _train(tmp_path, *SMALL_MAZES, "total_env_steps=512", "keep_checkpoint_every=1")
    assert proc.returncode == 0, proc.stderr
    lines = _lines(tmp_path)
    updates = [r for r in lines if "policy_loss" in r]
    assert [r["env_steps"] for r in updates] == [256, 512]
    final_eval = lines[-1]
    assert {f"eval/{d}/success" for d in ("train", "shift_arrow", "shift_size", "shift_both")} <= set(final_eval)
    state = load_checkpoint(tmp_path, env_name="arrow_maze")  # weights only: no code runs
    assert state["env_steps"] == 512 and state["run_config"]["seed"] == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".checkpoint")] == []
    kept = kept_checkpoints(tmp_path)  # the untrained network, then one per update (keep_checkpoint_every=1)
    assert list(kept) == [0, 256, 512]
    assert [load_checkpoint(p)["env_steps"] for p in kept.values()] == [0, 256, 512]

    proc = _train(tmp_path / "ignored", *SMALL_MAZES, f"resume={tmp_path}", "total_env_steps=1024")
    assert proc.returncode == 0, proc.stderr
    updates = [r for r in _lines(tmp_path) if "policy_loss" in r]
    assert [r["env_steps"] for r in updates] == [256, 512, 768, 1024]
    assert load_checkpoint(tmp_path)["updates"] == 4
    assert list(kept_checkpoints(tmp_path)) == [0, 256, 512, 768, 1024]  # the resume keeps on keeping

    proc = _train(tmp_path / "other", *SMALL_MAZES, f"resume={tmp_path}", "agent.network.hidden=64")
    assert proc.returncode == 2 and "agent.network.hidden (32 -> 64)" in proc.stderr
    assert load_checkpoint(tmp_path)["updates"] == 4  # untouched


def test_a_rerun_in_a_run_dir_with_a_checkpoint_continues_it_as_a_requeued_job_would(tmp_path):
    proc = _train(tmp_path, *SMALL_MAZES, "total_env_steps=512")
    assert proc.returncode == 0, proc.stderr
    # As if the job had logged one more update after its last checkpoint, then been preempted.
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"env_steps": 768, "updates": 3, "policy_loss": 0.0}) + "\n")
    proc = _train(tmp_path, *SMALL_MAZES, "total_env_steps=1024")
    assert proc.returncode == 0, proc.stderr
    assert "auto_resume" in proc.stdout + proc.stderr
    updates = [r for r in _lines(tmp_path) if "policy_loss" in r]
    assert [r["env_steps"] for r in updates] == [256, 512, 768, 1024]  # the orphan row is gone, none twice
    assert load_checkpoint(tmp_path)["updates"] == 4
    # Started once more, finished: nothing to train, and its final evaluation is not repeated.
    before = _lines(tmp_path)
    assert _train(tmp_path, *SMALL_MAZES, "total_env_steps=1024").returncode == 0
    assert _lines(tmp_path) == before


def test_checkpoint_reload_gives_identical_actions(tmp_path):
    net = NetworkConfig(kind="mlp", hidden=32, egocentric=4)
    cfg = PPOConfig(num_envs=8, num_steps=8, minibatches=2, network=net)
    core = ArrowMazeCore(small_config(), "train", num_envs=8, seed=0)
    ppo = PPO(core, cfg, seed=0)
    ppo.train_iteration()
    save_checkpoint(tmp_path, {"env_name": "arrow_maze", **ppo.state_dict()})
    policy = load_network_policy(tmp_path, env_name="arrow_maze")  # rebuilt from the checkpoint alone
    assert isinstance(policy, Policy)
    obs = core.reset(seed=5)
    assert torch.equal(policy.distribution(obs).probs, ppo.policy.distribution(obs).probs)
    assert torch.equal(policy.act(obs, deterministic=True), ppo.policy.act(obs, deterministic=True))
    with pytest.raises(ValueError, match="not 'keys_chests'"):
        load_network_policy(tmp_path, env_name="keys_chests")


def test_a_checkpoint_of_another_env_is_refused(tmp_path):
    save_checkpoint(tmp_path, {"env_name": "keys_chests"})
    with pytest.raises(ValueError, match="checkpoint of env 'keys_chests', not 'arrow_maze'"):
        load_checkpoint(tmp_path, env_name="arrow_maze")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


@pytest.mark.parametrize(
    ("override", "message"),
    [("agent.lr=-1", "agent.lr=-1"), ("+agent.lerning_rate=0.1", "lerning_rate"), ("env=unknown", "unknown")],
)
def test_bad_override_fails_at_start_naming_the_key(tmp_path, override, message):
    proc = _train(tmp_path, "total_env_steps=256", override)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_multirun_gives_each_seed_its_own_run_dir_with_metrics_and_a_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "experiments.train", "-m", f"hydra.sweep.dir={tmp_path}", *TINY, *SMALL_MAZES]
    proc = subprocess.run(
        [*cmd, "total_env_steps=256", "seed=0,1"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    for job, seed in ((0, 0), (1, 1)):
        assert [r["env_steps"] for r in _lines(tmp_path / str(job)) if "policy_loss" in r] == [256]
        assert load_checkpoint(tmp_path / str(job))["run_config"]["seed"] == seed


def test_progress_log_prints_a_plain_line_every_log_every_updates(tmp_path):
    proc = _train(tmp_path, *SMALL_MAZES, "total_env_steps=512", "progress=log", "log_every=1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "update 1  steps 256" in out and "update 2  steps 512" in out
    assert "\r" not in out
    proc = _train(tmp_path / "sparse", *SMALL_MAZES, "total_env_steps=1024", "progress=log", "log_every=2")
    out = proc.stdout + proc.stderr
    assert "update 2  steps 512" in out and "update 4  steps 1024" in out and "update 3 " not in out


def test_progress_bar_without_a_terminal_still_trains(tmp_path):
    proc = _train(tmp_path, *SMALL_MAZES, "total_env_steps=512", "progress=bar")
    assert proc.returncode == 0, proc.stderr
    assert "512/512" in proc.stderr  # the bar's last state
    assert "update 2  steps 512" not in proc.stdout + proc.stderr  # per-update lines give way to the bar
    assert [r["env_steps"] for r in _lines(tmp_path) if "policy_loss" in r] == [256, 512]


def test_the_sb3_backend_trains_through_the_same_entry_point(tmp_path):
    proc = _train(tmp_path, *SMALL_MAZES, "agent=sb3_ppo", "total_env_steps=512")
    assert proc.returncode == 0, proc.stderr
    lines = _lines(tmp_path)
    assert [r["env_steps"] for r in lines if "policy_loss" in r] == [256, 512]
    assert {f"eval/{d}/success" for d in ("train", "shift_arrow", "shift_size", "shift_both")} <= set(lines[-1])
    assert (tmp_path / "model.zip").is_file()
    # Resumed (its weights and step count), to 1024 steps in all, in its own run dir.
    proc = _train(tmp_path / "ignored", *SMALL_MAZES, "agent=sb3_ppo", f"resume={tmp_path}", "total_env_steps=1024")
    assert proc.returncode == 0, proc.stderr
    lines = _lines(tmp_path)
    assert [r["env_steps"] for r in lines if "policy_loss" in r] == [256, 512, 768, 1024]
    assert [r["updates"] for r in lines if "policy_loss" in r] == [1, 2, 3, 4]
    from agents.sb3 import read_sb3_meta

    assert read_sb3_meta(tmp_path)["env_steps"] == 1024
    proc = _train(tmp_path / "other", *SMALL_MAZES, "agent=sb3_ppo", f"resume={tmp_path}", "agent.lr=0.1")
    assert proc.returncode == 2 and "agent.lr (0.0005 -> 0.1); resume with the run's own settings" in proc.stderr


def test_a_resumed_ppo_continues_the_level_stream_and_the_samplers():
    cfg = PPOConfig(num_envs=32, num_steps=8, minibatches=2, network=NetworkConfig(kind="mlp", hidden=16))
    ppo = PPO(ArrowMazeCore(small_config(), "train", num_envs=32, seed=0), cfg, seed=0)
    opening = ppo.core.level.clone()
    ppo.train_iteration()
    state = ppo.state_dict()
    resumed = PPO(ArrowMazeCore(small_config(), "train", num_envs=32, seed=0), cfg, seed=0)
    assert torch.equal(resumed.core.level, opening)  # a fresh run opens on the same levels...
    resumed.load_state_dict(state)
    assert not torch.equal(resumed.core.level, opening)  # ...a resumed one draws where the stream stopped
    assert torch.equal(resumed.policy.rng_state(), ppo.policy.rng_state())
    assert resumed.env_steps == ppo.env_steps and resumed.train_iteration()[0]["env_steps"] == 512


def test_a_checkpoint_from_before_a_config_key_existed_resumes_with_the_key_at_its_default():
    from envs.config import ConfigError, config_to_dict, load_env_config
    from experiments.train import check_resumable, check_same_network

    env = config_to_dict(load_env_config("arrow_maze"))
    saved = {"seed": 0, "agent": {"network": {"hidden": 64}}}  # written before global_channels existed
    check_resumable(saved, env, {"seed": 0, "agent": {"network": {"hidden": 64, "global_channels": []}}}, env, "run")
    with pytest.raises(ConfigError, match=r"agent\.network\.global_channels \('<unset>' -> \[4\]\)"):
        check_resumable(
            saved, env, {"seed": 0, "agent": {"network": {"hidden": 64, "global_channels": [4]}}}, env, "run"
        )
    spec = {
        "config": config_to_dict(NetworkConfig(hidden=64)),
        "obs_shape": [3, 9, 9],
        "num_actions": 4,
        "pixels": False,
    }
    old = {**spec, "config": {k: v for k, v in spec["config"].items() if k != "global_channels"}}
    check_same_network({"network": old}, spec, "run")
    with pytest.raises(ConfigError, match="network"):
        check_same_network({"network": old}, {**spec, "config": {**spec["config"], "global_channels": [2]}}, "run")
