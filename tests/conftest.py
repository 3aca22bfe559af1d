"""Shared fixtures: small, CPU-only configs so the suite stays fast and needs no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings

from agents.networks import NetworkConfig
from agents.ppo import PPOConfig
from envs.config import ArrowMazeConfig, KeysChestsConfig, load_arrow_maze_config, load_keys_chests_config

os.environ.setdefault("WANDB_MODE", "disabled")
# One thread per pytest-xdist worker: two workers with two threads each on two cores oversubscribe
# the CPU, and torch's thread pools then slow down many-fold.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # and in the CLI subprocesses the tests start

settings.register_profile(
    "misgen", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile("misgen")

ROOT = Path(__file__).resolve().parents[1]


def run_module(module: str, run_dir: Path, *overrides: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """``python -m <module> hydra.run.dir=<run_dir> <overrides>`` from the repo root, output captured."""
    cmd = [sys.executable, "-m", module, f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, **kwargs)


SMALL_LEVEL_SETS = {
    "num_levels": 256,
    "distributions": {name: {"num_levels": 256} for name in ("shift_arrow", "shift_size", "shift_both")},
}


def small_config(**overrides: Any) -> ArrowMazeConfig:
    """The arrow-maze presets on the CPU with 256 levels per distribution, plus ``overrides``."""
    merged: dict[str, Any] = {"device": "cpu", **SMALL_LEVEL_SETS}
    for key, value in overrides.items():
        if key == "distributions":
            merged["distributions"] = {**merged["distributions"], **value}
        else:
            merged[key] = value
    return load_arrow_maze_config(merged)


def tiny_maze_config() -> ArrowMazeConfig:
    """``small_config`` with 3x3-cell mazes in every distribution: what :func:`tiny_learner` learns."""
    sizes = {"min_size": 3, "max_size": 3}
    return small_config(distributions={d: sizes for d in ("train", "shift_arrow", "shift_size", "shift_both")})


def tiny_learner() -> PPOConfig:
    """An egocentric MLP PPO that learns :func:`tiny_maze_config`'s mazes on the CPU in seconds (a fresh
    config each call: the tests may change it)."""
    net = NetworkConfig(kind="mlp", hidden=64, mlp_layers=2, egocentric=6)
    return PPOConfig(
        num_envs=64, num_steps=32, minibatches=4, epochs=4, gamma=0.99, lr=1e-3, anneal_lr=False, network=net
    )


def kc_config(**overrides: Any) -> KeysChestsConfig:
    """The keys-and-chests presets on the CPU with 256 levels per distribution, plus ``overrides``."""
    base: dict[str, Any] = {
        "device": "cpu",
        "num_levels": 256,
        "distributions": {name: {"num_levels": 256} for name in ("shift_ratio", "shift_size", "shift_both")},
    }
    base["distributions"].update(overrides.pop("distributions", {}))
    return load_keys_chests_config({**base, **overrides})


@pytest.fixture
def cfg() -> ArrowMazeConfig:
    return small_config()
