"""Training entry point: PPO on the batched core, with evaluation on every distribution.

``python -m experiments.train [env=keys_chests] [agent.lr=3e-4] [seed=1] [resume=<run dir>]`` (Hydra;
``-m seed=0,1,2`` sweeps, one run dir per job). Writes into the run dir: ``metrics.jsonl`` (one line
per update and per evaluation: the source of truth of the run), ``checkpoint.pt`` (atomic; weights
only) and, with ``logger.video_every_eval``, one GIF per distribution per evaluation in ``videos/``.
The run logger (``logger=wandb|none``, ``experiments/logger.py``) mirrors the metrics file. Ctrl-C
writes a checkpoint first; ``resume=`` continues a run in its own dir (and its wandb run), appending
to its metrics; a run started in a dir that already holds a checkpoint continues it (``auto_resume``:
a requeued SLURM job). Both backends (``agent.backend=misgen|sb3``) go through the same run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from agents.checkpoint import FILENAME as CHECKPOINT_FILE
from agents.checkpoint import SB3_MODEL_FILENAME as SB3_MODEL_FILE
from agents.checkpoint import load_checkpoint, save_checkpoint
from agents.policy import Policy
from agents.ppo import PPO, PPOConfig, load_ppo_config
from envs import make_core
from envs.atomic import atomic_path
from envs.config import GridEnvConfig, config_to_dict, load_env_config
from envs.devices import resolve_device
from envs.render import save_episode
from experiments.logger import RunLogger, load_logger_config, make_logger

log = logging.getLogger(__name__)

PROGRESS = ("auto", "bar", "log")
VIDEO_TILE_SIZE = 8  # pixels per tile in episode GIFs: a 25-tile canvas gives 200x200 frames


@torch.no_grad()
def evaluate(policy: Policy, env_cfg: GridEnvConfig, distribution: str, episodes: int, seed: int) -> dict[str, float]:
    """Success rate and mean return of one episode of the policy on each of levels 0..episodes-1."""
    dev = policy.device
    core = make_core(env_cfg, distribution, num_envs=episodes, seed=seed, device=dev)
    obs = core.reset(seed=seed, level_ids=torch.arange(episodes, device=dev) % len(core.levels))
    finished = torch.zeros(episodes, dtype=torch.bool, device=dev)
    success = torch.zeros(episodes, device=dev)
    returns = torch.zeros(episodes, device=dev)
    while not bool(finished.all()):
        action = policy.act(obs)
        r = core.step(action)
        returns += r.reward * ~finished
        ended = r.done & ~finished
        success = torch.where(ended, r.info["success"].float(), success)
        finished |= r.done
        obs = r.obs
    return {"success": success.mean().item(), "return": returns.mean().item()}


@torch.no_grad()
def record_episode(
    policy: Policy, env_cfg: GridEnvConfig, distribution: str, seed: int, tile_size: int = VIDEO_TILE_SIZE
) -> list[np.ndarray]:
    """RGB frames of one episode of ``policy`` on level 0 of ``distribution``, up to its final state.

    Uses the policy's own sampler, not PPO's, so filming an episode leaves training's random
    streams (and so its metrics) as they would be without it.
    """
    core = make_core(env_cfg, distribution, num_envs=1, seed=seed, device=policy.device)
    obs = core.reset(seed=seed, level_ids=0)
    frames = [core.render_rgb(0, tile_size).cpu().numpy()]
    while True:  # the time limit ends every episode
        r = core.step(policy.act(obs))
        done = bool(r.done[0])
        frames.append(core.render_rgb(0, tile_size, final=done).cpu().numpy())
        if done:
            return frames
        obs = r.obs


class Progress:
    """Training progress for people: a tqdm bar over env steps (with the latest training success
    and the last evaluation) when ``mode`` is ``bar``, or ``auto`` on a terminal; log lines otherwise."""

    def __init__(self, mode: str, total: int, initial: int) -> None:
        self._bar = None
        self._stack = contextlib.ExitStack()
        self._eval = ""
        if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(
                total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True, file=sys.stderr
            )
            self._stack.enter_context(self._bar)
            self._stack.enter_context(logging_redirect_tqdm())  # log lines print above the bar

    def update(self, stats: Mapping[str, float], updates: int) -> None:
        """After a training iteration."""
        if self._bar is None:
            log.info(
                "update %d  steps %d  success %.3f  %.0f steps/s",
                updates,
                stats["env_steps"],
                stats["success_rate"],
                stats["steps_per_s"],
            )
            return
        log.debug("update %d  steps %d", updates, stats["env_steps"])
        self._bar.update(int(stats["env_steps"]) - self._bar.n)
        self._bar.set_postfix_str(f"success {stats['success_rate']:.2f}{self._eval}", refresh=False)

    def evaluated(self, record: Mapping[str, Any]) -> None:
        """After an evaluation on every distribution."""
        success = {k.split("/")[1]: v for k, v in record.items() if k.startswith("eval/") and k.endswith("/success")}
        log.info("eval %s", " ".join(f"{k}={v:.3f}" for k, v in record.items() if k.endswith("success")))
        self._eval = "  eval " + " ".join(f"{name} {v:.2f}" for name, v in success.items())

    def close(self) -> None:
        self._stack.close()


def _state(ppo: PPO, env_cfg: GridEnvConfig, run_cfg: dict[str, Any], logger: RunLogger) -> dict[str, Any]:
    return {
        "env_name": env_cfg.name,
        "env_config": config_to_dict(env_cfg),
        "run_config": run_cfg,
        "versions": {"torch": str(torch.__version__), "python": sys.version.split()[0]},
        "wandb_run_id": logger.run_id,
        "wandb_group": logger.group,
        **ppo.state_dict(),
    }


def _write(metrics: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (non-finite numbers as null, so the file stays strict JSON)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with metrics.open("a") as f:
        f.write(json.dumps(clean) + "\n")


class Run:
    """What a training run reports to, whichever backend trains: ``metrics.jsonl``, the run logger,
    the progress display, and evaluations on every distribution (with videos when configured)."""

    def __init__(
        self, cfg: DictConfig, env_cfg: GridEnvConfig, run_dir: Path, logger: RunLogger, video: bool, env_steps: int
    ):
        self.cfg, self.env_cfg, self.run_dir, self.logger, self.video = cfg, env_cfg, run_dir, logger, video
        self.metrics = run_dir / "metrics.jsonl"
        self.progress = Progress(cfg.progress, cfg.total_env_steps, env_steps)

    def report(self, record: dict[str, Any], env_steps: int) -> None:
        _write(self.metrics, record)
        self.logger.log(record, step=env_steps)

    def evaluated_at(self, env_steps: int) -> bool:
        """Whether ``metrics.jsonl`` already holds an evaluation at ``env_steps``."""
        if not self.metrics.is_file():
            return False
        rows = (json.loads(line) for line in self.metrics.read_text().splitlines())
        return any(r.get("env_steps") == env_steps and any(k.startswith("eval/") for k in r) for r in rows)

    def iteration(self, stats: dict[str, float]) -> bool:
        """Report one training iteration; returns whether an evaluation is due."""
        self.report(stats, int(stats["env_steps"]))
        self.progress.update(stats, int(stats["updates"]))
        return bool(self.cfg.eval_every and stats["updates"] % self.cfg.eval_every == 0)

    def evaluate_all(self, policy: Policy, env_steps: int, updates: int) -> None:
        cfg, env_cfg = self.cfg, self.env_cfg
        record: dict[str, Any] = {"env_steps": env_steps, "updates": updates}
        for name in env_cfg.distributions:
            for k, v in evaluate(policy, env_cfg, name, cfg.eval_episodes, cfg.seed + 1).items():
                record[f"eval/{name}/{k}"] = v
        self.report(record, env_steps)
        self.progress.evaluated(record)
        if self.video:
            videos = {
                name: save_episode(
                    record_episode(policy, env_cfg, name, cfg.seed + 1),
                    self.run_dir / "videos" / f"{name}_{env_steps}.gif",
                )
                for name in env_cfg.distributions
            }
            self.logger.log_videos(videos, step=env_steps)


BACKENDS = ("misgen", "sb3")


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    env_cfg = load_env_config(cfg.env.name, base=cfg.env)
    agent_node = OmegaConf.to_container(cfg.agent, resolve=True)
    backend = agent_node.pop("backend", "misgen")
    if backend not in BACKENDS:
        raise ValueError(f"agent.backend={backend!r} must be one of {BACKENDS}")
    agent_cfg = load_ppo_config(agent_node)
    logger_cfg = load_logger_config(cfg.logger)
    for key in ("total_env_steps", "eval_episodes"):
        if cfg[key] < 1:
            raise ValueError(f"{key}={cfg[key]} must be >= 1")
    if cfg.progress not in PROGRESS:
        raise ValueError(f"progress={cfg.progress!r} must be one of {PROGRESS}")
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    saved_name = CHECKPOINT_FILE if backend == "misgen" else SB3_MODEL_FILE
    resume = cfg.resume
    if not resume and cfg.auto_resume and (run_dir / saved_name).is_file():
        resume = str(run_dir)  # this run dir was started before (a requeued SLURM job): continue it
        log.info("auto_resume: %s already holds %s; continuing it", run_dir, saved_name)
    resumed = None
    if resume:
        resumed = load_checkpoint(resume, env_name=env_cfg.name) if backend == "misgen" else _sb3_meta(resume, env_cfg)
        run_dir = Path(resume) if Path(resume).is_dir() else Path(resume).parent
        drop_metrics_after(run_dir / "metrics.jsonl", resumed["env_steps"])
    run_cfg = OmegaConf.to_container(cfg, resolve=True)
    ppo = None
    if backend == "misgen":  # built before the logger: a config the env can't take fails before any run exists
        ppo = PPO(make_core(env_cfg, "train", num_envs=agent_cfg.num_envs, seed=cfg.seed), agent_cfg, seed=cfg.seed)
        if resumed is not None:
            check_same_network(resumed, ppo.network_spec, resume)
    previous = resumed or {}  # a resumed run continues its wandb run, in its group
    logger = make_logger(
        logger_cfg, run_cfg, run_dir, run_id=previous.get("wandb_run_id"), group=previous.get("wandb_group")
    )
    exit_code = 1
    run = Run(cfg, env_cfg, run_dir, logger, logger_cfg.video_every_eval, previous.get("env_steps", 0))
    try:
        if backend == "sb3":
            _train_sb3(cfg, env_cfg, agent_cfg, run, resumed is not None)
        else:
            _train_misgen(cfg, env_cfg, ppo, run, run_cfg, resumed)
        exit_code = 0
    finally:
        run.progress.close()
        logger.close(exit_code)


def _sb3_meta(where: str, env_cfg: GridEnvConfig) -> dict[str, Any]:
    """Our metadata of the SB3 model a run is resumed from (its env checked; no code runs)."""
    from agents.sb3 import read_sb3_meta

    meta = read_sb3_meta(where)
    if meta is None or meta.get("env_name") != env_cfg.name:
        raise ValueError(f"resume={where}: not an SB3 model of env {env_cfg.name!r} saved by this trainer")
    return meta


def drop_metrics_after(metrics: Path, env_steps: int) -> None:
    """Rewrite ``metrics`` (atomically) without the rows logged after ``env_steps``: a run resumed from its
    last checkpoint logs those steps again, and the file keeps one row per step."""
    if not metrics.is_file():
        return
    lines = metrics.read_text().splitlines()
    kept = [line for line in lines if json.loads(line).get("env_steps", 0) <= env_steps]
    if len(kept) != len(lines):
        with atomic_path(metrics) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))
        log.info("resume: dropped %d metric rows logged after the checkpoint", len(lines) - len(kept))


def check_same_network(resumed: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    """Refuse to resume a checkpoint into a different network (its weights would not mean the same)."""
    saved = resumed.get("network")
    if saved != spec:
        raise ValueError(
            f"resume={where}: the checkpoint's network {saved} differs from this run's {spec}; "
            "resume with the run's own agent.network settings"
        )


def _train_misgen(
    cfg: DictConfig,
    env_cfg: GridEnvConfig,
    ppo: PPO,
    run: Run,
    run_cfg: dict[str, Any],
    resumed: dict[str, Any] | None,
) -> None:
    """Our PPO: periodic checkpoints (and one on Ctrl-C), evaluations every ``eval_every`` updates."""
    agent_cfg = ppo.cfg
    if resumed is not None:
        ppo.load_state_dict(resumed)
        log.info("resumed %s at %d env steps", run.run_dir, ppo.env_steps)
    total_updates = -(-cfg.total_env_steps // (agent_cfg.num_envs * agent_cfg.num_steps))

    def checkpoint() -> None:
        save_checkpoint(run.run_dir, _state(ppo, env_cfg, run_cfg, run.logger))

    try:
        evaluated = False
        while ppo.env_steps < cfg.total_env_steps:
            stats = ppo.train_iteration(total_updates)
            evaluated = run.iteration({"updates": ppo.updates, **stats})
            if evaluated:
                run.evaluate_all(ppo.policy, ppo.env_steps, ppo.updates)
            if cfg.checkpoint_every and ppo.updates % cfg.checkpoint_every == 0:
                checkpoint()
        if not evaluated and not run.evaluated_at(ppo.env_steps):  # a finished run, resumed: already done
            run.evaluate_all(ppo.policy, ppo.env_steps, ppo.updates)
        checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        log.warning("interrupted: checkpoint written to %s", run.run_dir)
        raise
    log.info("done: %d env steps; metrics and checkpoint in %s", ppo.env_steps, run.run_dir)


def _train_sb3(cfg: DictConfig, env_cfg: GridEnvConfig, agent_cfg: PPOConfig, run: Run, resume: bool) -> None:
    """stable-baselines3's PPO on the same core and network; its model is saved as ``model.zip`` (with
    the wandb run, so a resumed run continues it)."""
    from agents.sb3 import train_sb3

    last: dict[str, Any] = {}

    def callback(stats: dict[str, float], policy: Policy) -> None:
        last.update(stats=stats, policy=policy, evaluated=run.iteration(stats))
        if last["evaluated"]:
            run.evaluate_all(policy, int(stats["env_steps"]), int(stats["updates"]))

    path = train_sb3(
        env_cfg,
        agent_cfg,
        cfg.seed,
        cfg.total_env_steps,
        run.run_dir,
        str(resolve_device(env_cfg.device)),
        callback,
        checkpoint_every=cfg.checkpoint_every,
        resume=resume,
        extra_meta={"wandb_run_id": run.logger.run_id, "wandb_group": run.logger.group},
    )
    if last and not last["evaluated"]:
        run.evaluate_all(last["policy"], int(last["stats"]["env_steps"]), int(last["stats"]["updates"]))
    log.info("done: SB3 model in %s", path)


if __name__ == "__main__":
    main()
