"""Trajectories of a policy on known levels: the states it visited, the actions it took, and per episode
which candidate goals it reached and when (so every aggregate traces back to episodes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from agents.policy import Policy
from envs import make_core
from envs.arrow_maze import ArrowMazeCore
from envs.config import ArrowMazeConfig

Actor = Callable[[ArrowMazeCore, torch.Tensor], torch.Tensor]
"""Chooses actions from the core (privileged: scripted planners) and its observations."""


def policy_actor(policy: Policy) -> Actor:
    """An ``Actor`` that sees only the observations, as a learned policy does."""
    return lambda _core, obs: policy.act(obs)


@dataclass
class ArrowMazeTrajectories:
    """One episode on each of levels ``0..E-1`` of a distribution, flattened over steps."""

    core: ArrowMazeCore
    """The core the episodes ran on (its level bank plans the candidates' values)."""
    level: torch.Tensor
    """``(N,)`` level of each recorded step."""
    pos: torch.Tensor
    """``(N,)`` agent position before the step."""
    action: torch.Tensor
    """``(N,)`` action taken."""
    episode: torch.Tensor
    """``(N,)`` episode index of each step."""
    success: torch.Tensor
    """``(E,)`` bool: the base objective was reached."""
    length: torch.Tensor
    """``(E,)`` steps taken."""
    first_end_step: torch.Tensor
    """``(E,)`` step at which the end was first reached (-1: never)."""
    first_arrow_step: torch.Tensor
    """``(E,)`` step at which the arrow was first reached (-1: never)."""


@torch.no_grad()
def collect_arrow_maze(
    actor: Actor, cfg: ArrowMazeConfig, distribution: str, episodes: int, seed: int = 0, device: str | None = None
) -> ArrowMazeTrajectories:
    """Run one episode of ``actor`` on each of levels ``0..episodes-1`` of ``distribution``.

    Level sets are nested (level i depends only on the seed and i), so only the first ``episodes``
    levels are generated: the same levels as the full set's first ones, at a fraction of the cost.
    """
    available = cfg.distribution(distribution).num_levels
    if episodes > available:
        raise ValueError(f"{episodes} episodes but {distribution!r} has {available} levels")
    first = dataclasses.replace(cfg.distribution(distribution), num_levels=episodes)
    cfg = dataclasses.replace(cfg, distributions={**cfg.distributions, distribution: first})
    core = make_core(cfg, distribution, num_envs=episodes, seed=seed, device=device)
    ids = torch.arange(episodes, device=core.device)
    obs = core.reset(seed=seed, level_ids=ids)
    live = torch.ones(episodes, dtype=torch.bool, device=core.device)
    steps: list[tuple[torch.Tensor, ...]] = []
    done_info = {k: torch.full((episodes,), -1, device=core.device) for k in ("first_end_step", "first_arrow_step")}
    success = torch.zeros(episodes, dtype=torch.bool, device=core.device)
    length = torch.zeros(episodes, dtype=torch.long, device=core.device)
    while bool(live.any()):
        action = actor(core, obs)
        steps.append((core.level[live], core.pos[live], action[live], ids[live]))
        r = core.step(action)
        ended = r.done & live
        for k in done_info:
            done_info[k] = torch.where(ended, r.info[k], done_info[k])
        success |= r.info["success"] & ended
        length = torch.where(ended, r.info["episode_length"], length)
        live &= ~r.done
        obs = r.obs
    level, pos, action, episode = (torch.cat(parts) for parts in zip(*steps, strict=True))
    return ArrowMazeTrajectories(core, level, pos, action, episode, success, length, **done_info)
