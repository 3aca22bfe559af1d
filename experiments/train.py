"""Training entry point: PPO on the batched core, with evaluation on every distribution.

``python -m experiments.train [env=keys_chests] [agent.lr=3e-4] [seed=1] [resume=<run dir>]`` (Hydra).
Writes into the run dir: ``metrics.jsonl`` (one line per update and per evaluation: the source of
truth of the run) and ``checkpoint.pt`` (atomic; weights only). Ctrl-C writes a checkpoint first;
``resume=`` continues a run in its own dir, appending to its metrics.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from agents.checkpoint import load_checkpoint, save_checkpoint
from agents.ppo import PPO, load_ppo_config
from envs import make_core
from envs.config import GridEnvConfig, config_to_dict, load_env_config

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(ppo: PPO, env_cfg: GridEnvConfig, distribution: str, episodes: int, seed: int) -> dict[str, float]:
    """Success rate and mean return of one episode of the policy on each of levels 0..episodes-1."""
    core = make_core(env_cfg, distribution, num_envs=episodes, seed=seed, device=ppo.device)
    obs = core.reset(seed=seed, level_ids=torch.arange(episodes, device=ppo.device) % len(core.levels))
    finished = torch.zeros(episodes, dtype=torch.bool, device=ppo.device)
    success = torch.zeros(episodes, device=ppo.device)
    returns = torch.zeros(episodes, device=ppo.device)
    while not bool(finished.all()):
        action = ppo.act(obs)[0]
        r = core.step(action)
        returns += r.reward * ~finished
        ended = r.done & ~finished
        success = torch.where(ended, r.info["success"].float(), success)
        finished |= r.done
        obs = r.obs
    return {"success": success.mean().item(), "return": returns.mean().item()}


def _state(ppo: PPO, env_cfg: GridEnvConfig, run_cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "env_name": env_cfg.name,
        "env_config": config_to_dict(env_cfg),
        "run_config": run_cfg,
        "versions": {"torch": str(torch.__version__), "python": sys.version.split()[0]},
        **ppo.state_dict(),
    }


def _write(metrics: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (non-finite numbers as null, so the file stays strict JSON)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with metrics.open("a") as f:
        f.write(json.dumps(clean) + "\n")


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    env_cfg = load_env_config(cfg.env.name, base=cfg.env)
    agent_cfg = load_ppo_config(cfg.agent)
    for key in ("total_env_steps", "eval_episodes"):
        if cfg[key] < 1:
            raise ValueError(f"{key}={cfg[key]} must be >= 1")
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    resumed = None
    if cfg.resume:
        resumed = load_checkpoint(cfg.resume, env_name=env_cfg.name)
        run_dir = Path(cfg.resume) if Path(cfg.resume).is_dir() else Path(cfg.resume).parent
    run_cfg = OmegaConf.to_container(cfg, resolve=True)
    core = make_core(env_cfg, "train", num_envs=agent_cfg.num_envs, seed=cfg.seed)
    ppo = PPO(core, agent_cfg, seed=cfg.seed)
    if resumed is not None:
        ppo.load_state_dict(resumed)
        log.info("resumed %s at %d env steps", run_dir, ppo.env_steps)
    metrics = run_dir / "metrics.jsonl"
    per_update = agent_cfg.num_envs * agent_cfg.num_steps
    total_updates = -(-cfg.total_env_steps // per_update)

    def eval_all() -> None:
        record: dict[str, Any] = {"env_steps": ppo.env_steps, "updates": ppo.updates}
        for name in env_cfg.distributions:
            for k, v in evaluate(ppo, env_cfg, name, cfg.eval_episodes, cfg.seed + 1).items():
                record[f"eval/{name}/{k}"] = v
        _write(metrics, record)
        log.info("eval %s", " ".join(f"{k}={v:.3f}" for k, v in record.items() if k.endswith("success")))

    try:
        while ppo.env_steps < cfg.total_env_steps:
            stats = ppo.train_iteration(total_updates)
            _write(metrics, {"updates": ppo.updates, **stats})
            log.info(
                "update %d  steps %d  success %.3f  %.0f steps/s",
                ppo.updates,
                ppo.env_steps,
                stats["success_rate"],
                stats["steps_per_s"],
            )
            if cfg.eval_every and ppo.updates % cfg.eval_every == 0:
                eval_all()
            if cfg.checkpoint_every and ppo.updates % cfg.checkpoint_every == 0:
                save_checkpoint(run_dir, _state(ppo, env_cfg, run_cfg))
    except KeyboardInterrupt:
        save_checkpoint(run_dir, _state(ppo, env_cfg, run_cfg))
        log.warning("interrupted: checkpoint written to %s", run_dir)
        raise
    if not (cfg.eval_every and ppo.updates % cfg.eval_every == 0):
        eval_all()
    save_checkpoint(run_dir, _state(ppo, env_cfg, run_cfg))
    log.info("done: %d env steps; metrics and checkpoint in %s", ppo.env_steps, run_dir)


if __name__ == "__main__":
    main()
