"""Benchmark: raw env steps/s of the batched core and of gymnasium's ``SyncVectorEnv``, one run.

``python -m experiments.bench [env=keys_chests]`` (Hydra; e.g. ``batch_sizes=[1024] env.device=cuda``). Random
actions are drawn on the device inside the timed loop; every observation is consumed by a 64-bit
checksum over all its bytes; the device is synchronised before each clock read. Each figure is the
median of ``repeats`` timings of at least ``min_seconds``. Results go to stdout (a Markdown table
for BENCHMARKS.md) and to ``bench.json`` in the run dir.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from envs import gym_id, make_core
from envs.config import GridEnvConfig, load_env_config
from envs.devices import resolve_device


def checksum(obs: torch.Tensor) -> torch.Tensor:
    """A 64-bit sum over every byte of ``obs``: consumes the whole observation, cheaply."""
    flat = obs.reshape(-1)
    whole = flat.numel() // 8 * 8
    total = flat[:whole].view(torch.int64).sum()
    if whole < flat.numel():
        total = total + flat[whole:].sum()
    return total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[int], Any], min_seconds: float, device: torch.device) -> float:
    """Seconds per call of ``run(n)`` / n, growing n until one timing lasts ``min_seconds``."""
    n = 4
    while True:
        sync(device)
        start = time.perf_counter()
        run(n)
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / n
        n = max(n * 2, int(n * min_seconds / max(elapsed, 1e-6) * 1.1))


def bench_core(cfg: GridEnvConfig, distribution: str, num_envs: int, min_seconds: float, repeats: int) -> float:
    """Env steps/s of the batched core at ``num_envs``."""
    core = make_core(cfg, distribution, num_envs=num_envs, seed=0)
    gen = torch.Generator(device=core.device).manual_seed(0)
    acc = torch.zeros((), dtype=torch.int64, device=core.device)

    def run(n: int) -> None:
        nonlocal acc
        for _ in range(n):
            action = torch.randint(0, 4, (num_envs,), generator=gen, device=core.device)
            acc = acc + checksum(core.step(action).obs)
        acc.item()  # read the result back: everything timed was really computed

    run(8)  # warm-up
    per_step = [timed(run, min_seconds, core.device) for _ in range(repeats)]
    return num_envs / statistics.median(per_step)


def bench_sync(cfg: GridEnvConfig, distribution: str, num_envs: int, min_seconds: float, repeats: int) -> float:
    """Env steps/s of gymnasium's ``SyncVectorEnv`` over the env's single gymnasium view."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the ids)

    venv = gym.make_vec(
        gym_id(cfg.name), num_envs=num_envs, vectorization_mode="sync", distribution=distribution, config=cfg
    )
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    acc = 0

    def run(n: int) -> None:
        nonlocal acc
        for _ in range(n):
            obs = venv.step(rng.integers(0, 4, num_envs))[0]
            acc += int(obs.reshape(-1).view(np.uint8).sum(dtype=np.int64))

    run(2)
    per_step = [timed(run, min_seconds, torch.device("cpu")) for _ in range(repeats)]
    venv.close()
    return num_envs / statistics.median(per_step)


def canvas_config(cfg: GridEnvConfig, distribution: str, canvas: str) -> GridEnvConfig:
    """``full``: the config as given; ``fit``: only ``distribution``, on a canvas fitting its mazes."""
    if canvas == "full":
        return cfg
    if canvas != "fit":
        raise ValueError(f"canvases: {canvas!r} is not one of ['full', 'fit']")
    only = {distribution: cfg.distribution(distribution)}
    return dataclasses.replace(cfg, distributions=only, canvas_size=None).validate()


def machine() -> dict[str, Any]:
    info = {
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


@hydra.main(config_path="../configs", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    base = load_env_config(cfg.env.name, base=cfg.env)
    results: dict[str, Any] = {"machine": machine(), "env": base.name, "distribution": cfg.distribution, "runs": []}
    rows = []
    for canvas in cfg.canvases:
        env_cfg = canvas_config(base, cfg.distribution, canvas)
        device = resolve_device(env_cfg.device)
        sync_rates = {
            b: bench_sync(env_cfg, cfg.distribution, b, cfg.sync_min_seconds, cfg.repeats) for b in cfg.sync_batch_sizes
        }
        for b in cfg.batch_sizes:
            rate = bench_core(env_cfg, cfg.distribution, b, cfg.min_seconds, cfg.repeats)
            sync_rate = sync_rates.get(b)
            run = {
                "canvas": f"{canvas} ({env_cfg.canvas}x{env_cfg.canvas})",
                "device": str(device),
                "num_envs": b,
                "core_steps_per_s": rate,
                "sync_vector_env_steps_per_s": sync_rate,
                "ratio": rate / sync_rate if sync_rate else None,
            }
            results["runs"].append(run)
            rows.append(run)
            print(
                f"{run['canvas']:>14} {run['device']:>5} B={b:<6} core {rate / 1e6:8.2f} M steps/s"
                + (
                    f"   SyncVectorEnv {sync_rate / 1e3:7.1f} k steps/s   ratio {rate / sync_rate:6.0f}x"
                    if sync_rate
                    else ""
                )
            )
    print("\n| canvas | device | envs | batched core (steps/s) | SyncVectorEnv (steps/s) | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        sync_cell = f"{r['sync_vector_env_steps_per_s']:,.0f}" if r["sync_vector_env_steps_per_s"] else "—"
        ratio_cell = f"{r['ratio']:,.0f}×" if r["ratio"] else "—"
        print(
            f"| {r['canvas']} | {r['device']} | {r['num_envs']:,} | {r['core_steps_per_s']:,.0f} "
            f"| {sync_cell} | {ratio_cell} |"
        )
    out = Path(cfg.output) if cfg.output else Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results["config"] = OmegaConf.to_container(cfg, resolve=True)
    tmp = out / ".bench.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out / "bench.json")
    print(f"\nmachine: {json.dumps(results['machine'])}\nresults: {out / 'bench.json'}")


if __name__ == "__main__":
    main()
