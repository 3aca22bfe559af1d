"""Evaluation CLI: the behavioural objective, metrics and verdict of a policy on every distribution.

``python -m experiments.evaluate policy=<spec> [env=arrow_maze] [eval.episodes=N]
[eval.distributions=[...]] [report=path.json] [expect=<yaml>]`` (Hydra). Writes a JSON report (per
distribution: behavioural objective, posterior, identifiability, capability, objective robustness,
base return, regret, verdict, bootstrap intervals, per-episode records; plus the policy spec, config
and versions). With ``expect=``, it is a regression gate: exit status 1 and a readable diff when the
policy violates the expectations (``analysis/expectations.py``).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from analysis.estimator import estimate
from analysis.expectations import check_expectations, load_expectations
from analysis.metrics import VerdictConfig, arrow_maze_report
from analysis.planning import arrow_maze_q_values
from analysis.policy_specs import load_actor
from analysis.trajectories import collect_arrow_maze
from envs.atomic import atomic_path
from envs.config import GridEnvConfig, load_env_config, load_structured
from envs.devices import resolve_device

log = logging.getLogger(__name__)


def evaluate_distribution(
    spec: str, env_cfg: GridEnvConfig, distribution: str, cfg: DictConfig, verdict: VerdictConfig
) -> dict[str, Any]:
    """The report of one distribution."""
    device = resolve_device(env_cfg.device)
    actor = load_actor(spec, env_cfg, device, seed=cfg.seed)
    traj = collect_arrow_maze(actor, env_cfg, distribution, cfg.eval.episodes, seed=cfg.seed, device=device)
    values = {g: arrow_maze_q_values(traj.core, traj.level, traj.pos, g) for g in ("end", "arrow")}
    est = estimate(values, traj.action, beta_max=cfg.eval.beta_max, min_distinguishing=cfg.eval.min_distinguishing)
    return arrow_maze_report(traj, est, env_cfg.base_objective, verdict)


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    env_cfg = load_env_config(cfg.env.name, base=cfg.env)
    if env_cfg.name != "arrow_maze":
        raise ValueError(f"env={env_cfg.name!r}: evaluation supports arrow_maze so far (keys_chests is in progress)")
    verdict = load_structured(VerdictConfig, cfg.verdict, None, "verdict")
    names = list(cfg.eval.distributions or env_cfg.distributions)
    unknown = [d for d in names if d not in env_cfg.distributions]
    if unknown:
        raise ValueError(f"eval.distributions: {unknown} not among {list(env_cfg.distributions)}")
    expectations = load_expectations(cfg.expect, names) if cfg.expect else None
    load_actor(cfg.policy, env_cfg, resolve_device(env_cfg.device), seed=cfg.seed)  # a bad spec fails before any work
    report: dict[str, Any] = {
        "policy": cfg.policy,
        "env": env_cfg.name,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": {"torch": str(torch.__version__), "python": sys.version.split()[0]},
        "distributions": {},
    }
    for name in names:
        result = evaluate_distribution(cfg.policy, env_cfg, name, cfg, verdict)
        report["distributions"][name] = result
        log.info(
            "%-12s verdict %-28s behavioural %-6s capability %.2f robustness %.2f identifiable %s",
            name,
            result["verdict"],
            result["behavioural_objective"],
            result["capability"],
            result["objective_robustness"],
            result["identifiable"],
        )
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    out = Path(cfg.report) if cfg.report else run_dir / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    log.info("report: %s", out)
    if expectations is not None:
        problems = check_expectations(report["distributions"], expectations)
        if problems:
            print("The policy violates the expectations of " + str(cfg.expect) + ":", file=sys.stderr)
            for line in problems:
                print("  " + line, file=sys.stderr)
            sys.exit(1)
        log.info("every expectation of %s holds", cfg.expect)


if __name__ == "__main__":
    main()
