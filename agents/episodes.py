"""Playing one episode in every env of a batched core: the loop that evaluation during training, episode
videos, the demo's oracles and the estimator's trajectory collection all run.

The core resets a finished env in the same step, so "until every env is done" means until each env's
*first* episode has ended; ``live`` marks the envs still in it, and what a caller records of a step is
meant for those rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from envs.core import StepResult


@dataclass
class EpisodeStep:
    """One step of :func:`first_episodes`."""

    t: int
    """Step index within the episodes (0 for the first action)."""
    action: torch.Tensor
    """``(B,)`` the actions taken, in every env (rows outside ``live`` are past their first episode)."""
    result: StepResult
    """What the core returned (``result.obs`` is the observation after the step, reset where done)."""
    live: torch.Tensor
    """``(B,)`` bool: the envs that were still in their first episode when this step was taken."""
    settled: torch.Tensor
    """``(B,)`` bool: live envs that ``settled`` let go after this step, their episode not over (see
    :func:`first_episodes`); all false without it."""


def first_episodes(
    core,
    obs: torch.Tensor,
    act: Callable[[torch.Tensor], torch.Tensor],
    settled: Callable[[], torch.Tensor] | None = None,
) -> Iterator[EpisodeStep]:
    """Step ``core`` from ``obs`` with ``act(obs) -> actions`` until every env has ended its first episode,
    yielding each step. Every episode ends: the time limit truncates it. ``settled()``, called after each
    step, may mark envs whose episode can no longer change what the caller measures: they stop counting
    as live (the demo's oracles stop early so)."""
    live = torch.ones(core.num_envs, dtype=torch.bool, device=core.device)
    t = 0
    while bool(live.any()):
        action = act(obs)
        result = core.step(action)
        let_go = settled() & live & ~result.done if settled is not None else torch.zeros_like(live)
        yield EpisodeStep(t, action, result, live.clone(), let_go)
        live &= ~(result.done | let_go)
        obs = result.obs
        t += 1


def members_of(policy) -> int:
    """How many members a policy batches (``agents.policy.NetworkPolicy`` of a population); 1 for any other."""
    return int(getattr(policy, "population", 1))


@torch.no_grad()
def evaluate_members(policy, env_cfg, distribution: str, episodes: int, seed: int) -> list[dict[str, float]]:
    """Success rate and mean return of one episode of ``policy`` on each of levels 0..episodes-1 of
    ``distribution`` (the trainer's periodic evaluation; the estimator's is ``analysis.trajectories``), per
    member: a population's K members play their levels in one core of K blocks, batched."""
    from envs import make_core

    dev, k = policy.device, members_of(policy)
    core = make_core(env_cfg, distribution, num_envs=k * episodes, seed=seed, device=dev)
    levels = torch.arange(episodes, device=dev) % len(core.levels)
    obs = core.reset(seed=seed, level_ids=levels.repeat(k))
    success = torch.zeros(k * episodes, device=dev)
    returns = torch.zeros(k * episodes, device=dev)
    for step in first_episodes(core, obs, policy.act):
        r = step.result
        returns += r.reward * step.live
        success = torch.where(r.done & step.live, r.info["success"].float(), success)
    means = torch.stack([success.view(k, episodes).mean(1), returns.view(k, episodes).mean(1)]).tolist()
    return [{"success": means[0][m], "return": means[1][m]} for m in range(k)]


def evaluate_policy(policy, env_cfg, distribution: str, episodes: int, seed: int) -> dict[str, float]:
    """:func:`evaluate_members` of a policy of one member."""
    if members_of(policy) != 1:
        raise ValueError(f"evaluate_policy takes one policy; this one has {members_of(policy)} members")
    return evaluate_members(policy, env_cfg, distribution, episodes, seed)[0]


@torch.no_grad()
def record_frames(policy, env_cfg, distribution: str, seed: int, tile_size: int = 8) -> list[list]:
    """RGB frames (``(H, W, 3)`` uint8 arrays) of one episode on level 0 of ``distribution`` per member of
    ``policy``, each up to its final state: one list of frames per member. Uses the policy's own sampler,
    so filming leaves a training run's streams as they would be without it."""
    from envs import make_core

    k = members_of(policy)
    core = make_core(env_cfg, distribution, num_envs=k, seed=seed, device=policy.device)
    obs = core.reset(seed=seed, level_ids=0)
    frames = [[core.render_rgb(m, tile_size).cpu().numpy()] for m in range(k)]
    for step in first_episodes(core, obs, policy.act):
        for m in range(k):
            if bool(step.live[m]):
                frames[m].append(core.render_rgb(m, tile_size, final=bool(step.result.done[m])).cpu().numpy())
    return frames
