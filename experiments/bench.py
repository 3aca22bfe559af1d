"""Benchmarks, one run each: raw env steps/s (``mode=env``) and end-to-end training (``mode=train``).

``python -m experiments.bench [env=keys_chests]`` (Hydra; e.g. ``batch_sizes=[1024] env.device=cuda``): the
batched core vs gymnasium's ``SyncVectorEnv``. Random actions are drawn on the device inside the
timed loop; every observation is consumed by a 64-bit checksum over all its bytes; the device is
synchronised before each clock read. Each figure is the median of ``repeats`` timings of at least
``min_seconds``.

``python -m experiments.bench mode=train``: our PPO vs stable-baselines3's PPO on the same core,
network and batch shape: env steps/s end to end (rollout + update, after a warm-up iteration), and
wall-clock seconds until the training success rate first reaches ``train.target`` on the
``train.target_*`` setting. Results go to stdout (Markdown tables for BENCHMARKS.md) and to
``bench.json`` in the run dir.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from agents.episodes import evaluate_policy
from agents.policy import Policy
from agents.ppo import PPO, PPOConfig, load_ppo_config
from envs import gym_id, make_core
from envs.atomic import atomic_path
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


class _Stop(Exception):
    """Ends a training benchmark from inside its per-iteration callback."""


def bench_training(
    env_cfg: GridEnvConfig,
    agent_cfg: PPOConfig,
    backend: str,
    total_steps: int,
    target: float | None = None,
    max_seconds: float = float("inf"),
    eval_every: int = 4,
    eval_episodes: int = 256,
) -> dict[str, Any]:
    """One training run of ``backend`` on ``env_cfg``'s train distribution.

    ``misgen``: our PPO; ``sb3``: SB3's PPO on our batched core (``agents.sb3.CoreVecEnv``);
    ``sb3_dummy``: SB3's PPO the usual way, a ``DummyVecEnv`` of single gymnasium envs (throughput only).
    Returns env steps/s between the end of the first iteration (warm-up) and the end of the run
    and, with ``target``, the wall-clock seconds (from before building the core and the model,
    evaluations excluded) and env steps until the policy's success
    rate on ``eval_episodes`` train levels (evaluated every ``eval_every`` iterations, off the clock)
    first reached it (``None`` if not within ``total_steps`` / ``max_seconds``). Each iteration
    ends with its statistics read back to the host, so the clock sees finished work.
    """
    marks: list[tuple[float, int]] = []
    reached: dict[str, float] = {}
    clock = {"start": time.perf_counter(), "paused": 0.0}

    def on_iteration(stats: dict[str, float], policy: Policy) -> None:
        now = time.perf_counter()
        elapsed = now - clock["paused"] - clock["start"]  # training time so far, evaluations excluded
        marks.append((now - clock["paused"], int(stats["env_steps"])))
        if target is not None and len(marks) % eval_every == 0:
            success = evaluate_policy(policy, env_cfg, "train", eval_episodes, seed=1)["success"]
            clock["paused"] += time.perf_counter() - now
            if success >= target:
                reached.update(seconds=elapsed, env_steps=stats["env_steps"])
                raise _Stop
        if elapsed > max_seconds:
            raise _Stop

    try:
        if backend == "misgen":
            # The clock started before the core and the model were built, as for SB3 (train_sb3 builds both).
            ppo = PPO(make_core(env_cfg, "train", num_envs=agent_cfg.num_envs, seed=0), agent_cfg, seed=0)
            ppo.train(total_steps, lambda stats: on_iteration(stats[0], ppo.policy))
        elif backend == "sb3":
            from agents.sb3 import train_sb3

            with tempfile.TemporaryDirectory() as tmp:
                device = str(resolve_device(env_cfg.device))
                train_sb3(env_cfg, agent_cfg, 0, total_steps, Path(tmp), device, on_iteration)
        elif backend == "sb3_dummy":
            _train_sb3_dummy(env_cfg, agent_cfg, total_steps, on_iteration)
        else:
            raise ValueError(f"train.backends: {backend!r} is not one of ['misgen', 'sb3', 'sb3_dummy']")
    except _Stop:
        pass
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    return {
        "backend": backend,
        "steps_per_s": (s1 - s0) / (t1 - t0) if t1 > t0 else None,
        "env_steps": s1,
        "seconds_to_target": reached.get("seconds"),
        "env_steps_to_target": reached.get("env_steps"),
    }


def _train_sb3_dummy(
    env_cfg: GridEnvConfig, agent_cfg: PPOConfig, total_steps: int, on_iteration: Callable[..., None]
) -> None:
    """SB3's PPO on a ``DummyVecEnv`` of our single gymnasium envs (the usual SB3 set-up), same network."""
    import gymnasium as gym
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    import envs  # noqa: F401  (registers the ids)
    from agents.sb3 import sb3_ppo_kwargs

    def make() -> gym.Env:
        return gym.make(gym_id(env_cfg.name), distribution="train", config=single)

    single = dataclasses.replace(env_cfg, device="cpu")  # single envs live on the host, as SB3 usually runs them

    venv = DummyVecEnv([make] * agent_cfg.num_envs)
    model = SB3PPO(env=venv, seed=0, device=str(resolve_device(env_cfg.device)), **sb3_ppo_kwargs(agent_cfg))

    class Marks(BaseCallback):
        def _on_rollout_start(self) -> None:
            if self.num_timesteps:
                on_iteration({"env_steps": self.num_timesteps}, None)

        def _on_step(self) -> bool:
            return True

    model.learn(total_steps, callback=Marks())


def run_training_benchmarks(cfg: DictConfig, base: GridEnvConfig) -> dict[str, Any]:
    """``mode=train``: the throughput rows, then the time-to-target rows, for each backend."""
    tcfg = cfg.train
    agent = load_ppo_config(tcfg.agent)
    target_env = load_env_config(base.name, OmegaConf.to_container(tcfg.target_env), base=cfg.env)
    target_agent = load_ppo_config(tcfg.target_agent)
    unknown = sorted(set(tcfg.backends) - {"misgen", "sb3", "sb3_dummy"})
    if unknown:
        raise ValueError(f"train.backends: {unknown} not among ['misgen', 'sb3', 'sb3_dummy']")
    out: dict[str, Any] = {"throughput": [], "time_to_target": []}
    for backend in tcfg.backends:
        r = bench_training(base, agent, backend, tcfg.dummy_steps if backend == "sb3_dummy" else tcfg.steps)
        out["throughput"].append(r)
        rate = f"{r['steps_per_s']:,.0f}" if r["steps_per_s"] else "too few iterations to time"
        print(f"throughput {backend:>6}: {rate} env steps/s over {r['env_steps']:,} steps")
    timed = tcfg.backends if tcfg.time_to_target else []
    for backend in [b for b in timed if b != "sb3_dummy"]:  # too slow to train to a target
        r = bench_training(target_env, target_agent, backend, tcfg.max_steps, tcfg.target, tcfg.max_seconds)
        out["time_to_target"].append(r)
        print(
            f"to {tcfg.target:.0%} {backend:>6}: "
            + (
                f"{r['seconds_to_target']:.1f} s, {r['env_steps_to_target']:,.0f} steps"
                if r["seconds_to_target"]
                else f"not reached in {r['env_steps']:,} steps"
            )
        )
    net = agent.network
    print(
        f"\n{base.name}, {agent.num_envs} envs x {agent.num_steps} steps, network {net.kind} "
        f"{net.mlp_layers}x{net.hidden}, egocentric={net.egocentric}, device {resolve_device(base.device)}"
    )
    print("| backend | env steps/s end to end | seconds to target | env steps to target |")
    print("|---|---:|---:|---:|")
    targets = {r["backend"]: r for r in out["time_to_target"]}
    for thr in out["throughput"]:
        tgt = targets.get(thr["backend"])
        if tgt is None:
            seconds = steps = "—"
        elif tgt["seconds_to_target"] is None:
            seconds, steps = "not reached", f"> {tgt['env_steps']:,}"
        else:
            seconds, steps = f"{tgt['seconds_to_target']:.1f}", f"{tgt['env_steps_to_target']:,.0f}"
        rate = f"{thr['steps_per_s']:,.0f}" if thr["steps_per_s"] else "—"
        print(f"| {thr['backend']} | {rate} | {seconds} | {steps} |")
    return out


def bench_estimator(cfg: DictConfig, base: GridEnvConfig) -> list[dict[str, Any]]:
    """Seconds the behavioural-objective estimator takes on ``episodes`` episodes of ``size``-cell mazes,
    per policy: the candidates' exact values (planning), the mixture fit with its episode bootstrap, and
    the fit check, each timed on its own (the rollout is off the clock)."""
    from analysis.estimator import EstimatorSettings, estimate
    from analysis.metrics import analyse
    from analysis.objectives import objectives_of
    from analysis.policy_specs import load_actor
    from analysis.trajectories import collect_episodes

    spec = cfg.estimator
    sizes = {"min_size": spec.size, "max_size": spec.size, "num_levels": spec.episodes}
    env_cfg = load_env_config(base.name, base=OmegaConf.merge(cfg.env, {"distributions": {spec.distribution: sizes}}))
    device = resolve_device(env_cfg.device)
    objectives = objectives_of(env_cfg)
    rows = []
    for policy in spec.policies:
        actor = load_actor(policy, env_cfg, device, seed=0, objectives=objectives)
        traj = collect_episodes(actor, env_cfg, spec.distribution, spec.episodes, seed=0, device=device)
        sync(device)
        start = time.perf_counter()
        values = objectives.q_values(traj)
        sync(device)
        planned = time.perf_counter()
        est = estimate(values, traj.action, traj.episode, EstimatorSettings())
        fitted = time.perf_counter()
        report, _ = analyse(traj, objectives, EstimatorSettings())  # all of it, as the CLI runs it
        whole = time.perf_counter()
        row = {
            "policy": policy,
            "episodes": spec.episodes,
            "steps": len(traj.action),
            "planning_s": planned - start,
            "estimate_s": fitted - planned,
            "analysis_s": whole - fitted,
            "components": est.components,
            "verdict": report["verdict"],
        }
        rows.append(row)
        print(
            f"{policy:>18} {row['steps']:>7} steps: planning {row['planning_s']:5.2f} s, "
            f"estimate {row['estimate_s']:5.2f} s, whole analysis {row['analysis_s']:5.2f} s ({report['verdict']})"
        )
    return rows


def _train_loop(env_cfg: GridEnvConfig, agent_cfg: PPOConfig, population: int, iterations: int, seed: int) -> float:
    """Wall-clock seconds of a training run of ``population`` agents: building the core and the networks,
    then ``iterations`` iterations (each ends with its statistics on the host, so the clock sees finished
    work)."""
    device = resolve_device(env_cfg.device)
    sync(device)
    start = time.perf_counter()
    core = make_core(env_cfg, "train", num_envs=agent_cfg.num_envs * population, seed=seed)
    ppo = PPO(core, agent_cfg, seed=seed, population=population)
    for _ in range(iterations):
        ppo.train_iteration()
    sync(device)
    return time.perf_counter() - start


def _shape_configs(cfg: DictConfig, base: GridEnvConfig, shape: DictConfig) -> tuple[GridEnvConfig, PPOConfig]:
    """The env and agent configs of one of ``population.shapes``."""
    return load_env_config(base.name, OmegaConf.to_container(shape.env), base=cfg.env), load_ppo_config(shape.agent)


def bench_population(cfg: DictConfig, base: GridEnvConfig) -> list[dict[str, Any]]:
    """``mode=population``: K agents in one process against K single runs one after another, same config
    and steps per agent, for each shape in ``population.shapes``. Single runs are timed for real up to
    ``population.sequential_max`` agents; beyond, K times the mean of those (the runs are identical work),
    and the row says so."""
    pcfg = cfg.population
    rows = []
    for name, shape in pcfg.shapes.items():
        env_cfg, agent_cfg = _shape_configs(cfg, base, shape)
        per_iteration = agent_cfg.num_envs * agent_cfg.num_steps
        _train_loop(env_cfg, agent_cfg, 1, 1, 0)  # warm-up: allocator, kernels, level banks
        singles: list[float] = []
        for k in shape.sizes:
            seconds = _train_loop(env_cfg, agent_cfg, k, shape.iterations, 0)
            measured = min(k, pcfg.sequential_max)
            while len(singles) < measured:
                singles.append(_train_loop(env_cfg, agent_cfg, 1, shape.iterations, len(singles)))
            sequential = sum(singles[:k]) if k <= len(singles) else k * statistics.mean(singles)
            row = {
                "shape": name,
                "population": k,
                "steps_per_agent": shape.iterations * per_iteration,
                "seconds": seconds,
                "sequential_seconds": sequential,
                "sequential_measured": k <= len(singles),
                "speedup": sequential / seconds,
                "aggregate_steps_per_s": k * shape.iterations * per_iteration / seconds,
            }
            rows.append(row)
            print(
                f"{name:>10} K={k:<3} {seconds:7.1f} s vs {sequential:7.1f} s sequential"
                f"{'' if row['sequential_measured'] else ' (K x the mean single run)'}: {row['speedup']:4.1f}x, "
                f"{row['aggregate_steps_per_s']:,.0f} env steps/s aggregate"
            )
    print("\n| shape | K | population (s) | K single runs (s) | speedup | aggregate env steps/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        mark = "" if r["sequential_measured"] else " (K × mean single)"
        print(
            f"| {r['shape']} | {r['population']} | {r['seconds']:.1f} | {r['sequential_seconds']:.1f}{mark} "
            f"| {r['speedup']:.1f}× | {r['aggregate_steps_per_s']:,.0f} |"
        )
    return rows


def bench_profile(cfg: DictConfig, base: GridEnvConfig) -> list[dict[str, Any]]:
    """``mode=profile``: the torch profiler over ``profile.iterations`` iterations of each population shape
    (at ``profile.population`` agents), the time of each phase PPO marks (``agents.ppo.PHASES``) and the
    Python and framework overhead left outside them."""
    from torch.profiler import ProfilerActivity, profile

    from agents.ppo import PHASES

    rows = []
    for name, shape in cfg.population.shapes.items():
        env_cfg, agent_cfg = _shape_configs(cfg, base, shape)
        for k in cfg.profile.populations:
            core = make_core(env_cfg, "train", num_envs=agent_cfg.num_envs * k, seed=0)
            ppo = PPO(core, agent_cfg, seed=0, population=k)
            ppo.train_iteration()
            start = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(cfg.profile.iterations):
                    ppo.train_iteration()
            wall = (time.perf_counter() - start) / cfg.profile.iterations
            events = {e.key: e.cpu_time_total / 1e6 / cfg.profile.iterations for e in prof.key_averages()}
            phases = {p: events.get(p, 0.0) for p in PHASES}
            row = {"shape": name, "population": k, "iteration_s": wall, "phases_s": phases}
            rows.append(row)
            parts = ", ".join(f"{p} {v * 1e3:.0f} ms" for p, v in phases.items())
            print(f"{name:>10} K={k:<3} iteration {wall * 1e3:.0f} ms (under the profiler): {parts}")
    print("\n| shape | K | iteration (ms) | " + " | ".join(PHASES) + " |")
    print("|---|---:|---:|" + "---:|" * len(PHASES))
    for r in rows:
        cells = " | ".join(f"{r['phases_s'][p] * 1e3:.0f}" for p in PHASES)
        print(f"| {r['shape']} | {r['population']} | {r['iteration_s'] * 1e3:.0f} | {cells} |")
    return rows


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
    modes = ("env", "train", "estimator", "population", "profile")
    if cfg.mode not in modes:
        raise ValueError(f"mode={cfg.mode!r} is not one of {list(modes)}")
    if cfg.mode == "population":
        results["population"] = bench_population(cfg, base)
    if cfg.mode == "profile":
        results["profile"] = bench_profile(cfg, base)
    rows = []
    if cfg.mode == "train":
        results["training"] = run_training_benchmarks(cfg, base)
    if cfg.mode == "estimator":
        results["estimator"] = bench_estimator(cfg, base)
    for canvas in cfg.canvases if cfg.mode == "env" else []:
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
    if rows:
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
    with atomic_path(out / "bench.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    print(f"\nmachine: {json.dumps(results['machine'])}\nresults: {out / 'bench.json'}")


if __name__ == "__main__":
    main()
