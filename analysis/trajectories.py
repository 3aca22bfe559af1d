"""Trajectories of a policy on known levels: the states it visited, the actions it took, and per episode
how it ended (which candidate goals it reached and when), so every aggregate traces back to episodes.
One collector for every env: a state is whatever the core's ``STATE`` names."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from agents.episodes import first_episodes
from agents.policy import Policy
from envs import make_core
from envs.config import GridEnvConfig

Actor = Callable[[object, torch.Tensor], torch.Tensor]
"""Chooses actions from the core (privileged: scripted planners may read its state) and its observations."""


def policy_actor(policy: Policy, deterministic: bool = False) -> Actor:
    """An ``Actor`` that sees only the observations, as a learned policy does: it samples its actions, or
    takes the most likely one with ``deterministic``."""
    return lambda _core, obs: policy.act(obs, deterministic=deterministic)


@dataclass
class Trajectories:
    """One episode on each of levels ``0..E-1`` of a distribution, flattened over its ``N`` steps."""

    core: object
    """The core the episodes ran on (its level bank plans the candidates' values); a ``GridCore``."""
    states: dict[str, torch.Tensor]
    """Per component of the core's ``STATE``: ``(N, ...)`` the state before each step."""
    next_states: dict[str, torch.Tensor]
    """The same after each step (before any reset)."""
    action: torch.Tensor
    """``(N,)`` action taken."""
    reward: torch.Tensor
    """``(N,)`` the env's reward."""
    episode: torch.Tensor
    """``(N,)`` episode index of each step."""
    t: torch.Tensor
    """``(N,)`` step index within the episode (0 at the start)."""
    outcome: dict[str, torch.Tensor]
    """``(E,)`` per episode: the env's ``info`` at its end (``success``, ``episode_length``, and the env's
    own records, e.g. ``first_arrow_step`` or ``excess_keys``)."""

    @property
    def episodes(self) -> int:
        return int(self.outcome["success"].shape[0])

    @property
    def success(self) -> torch.Tensor:
        """``(E,)`` bool: the base objective was achieved."""
        return self.outcome["success"]

    @property
    def length(self) -> torch.Tensor:
        """``(E,)`` steps taken."""
        return self.outcome["episode_length"]

    def episode_return(self) -> torch.Tensor:
        """``(E,)`` float64 undiscounted env return of each episode."""
        out = torch.zeros(self.episodes, dtype=torch.float64, device=self.reward.device)
        return out.index_add_(0, self.episode, self.reward.double())


def collect_episodes(
    actor: Actor, cfg: GridEnvConfig, distribution: str, episodes: int, seed: int = 0, device: str | None = None
) -> Trajectories:
    """Run one episode of ``actor`` on each of levels ``0..episodes-1`` of ``distribution``
    (:func:`collect_member_episodes` of a policy of one member)."""
    return collect_member_episodes(actor, cfg, distribution, episodes, 1, seed, device)[0]


@torch.no_grad()
def collect_member_episodes(
    actor: Actor,
    cfg: GridEnvConfig,
    distribution: str,
    episodes: int,
    members: int,
    seed: int = 0,
    device: str | None = None,
) -> list[Trajectories]:
    """One episode on each of levels ``0..episodes-1`` of ``distribution`` for each of ``members`` members
    of a batched actor (a population's ``NetworkPolicy``: block k of the core's envs is member k's), in
    one core; returns each member's trajectories, as :func:`collect_episodes` of that member alone gives.

    Level sets are nested (level i depends only on the seed and i), so only the first ``episodes``
    levels are generated: the same levels as the full set's first ones, at a fraction of the cost.
    """
    available = cfg.distribution(distribution).num_levels
    if episodes > available:
        raise ValueError(f"{episodes} episodes but {distribution!r} has {available} levels")
    first = dataclasses.replace(cfg.distribution(distribution), num_levels=episodes)
    cfg = dataclasses.replace(cfg, distributions={**cfg.distributions, distribution: first})
    core = make_core(cfg, distribution, num_envs=members * episodes, seed=seed, device=device)
    ids = torch.arange(members * episodes, device=core.device)
    obs = core.reset(seed=seed, level_ids=ids % episodes)
    steps: list[dict[str, torch.Tensor]] = []
    outcome: dict[str, torch.Tensor] = {}
    state = {k: v.clone() for k, v in core.state().items()}  # before each step: the step before's final state
    for step in first_episodes(core, obs, lambda o: actor(core, o)):
        live, r = step.live, step.result
        after = {k: v.clone() for k, v in core.final_state().items()}
        steps.append(
            {
                **{f"s.{k}": v[live] for k, v in state.items()},
                **{f"n.{k}": v[live] for k, v in after.items()},
                "action": step.action[live],
                "reward": r.reward[live],
                "episode": ids[live],
                "t": torch.full((int(live.sum()),), step.t, device=core.device),
            }
        )
        ended = r.done & live
        for k, v in r.info.items():
            outcome[k] = torch.where(ended, v, outcome.get(k, torch.zeros_like(v)))
        state = after
    flat = {k: torch.cat([s[k] for s in steps]) for k in steps[0]}
    out = []
    for m in range(members):
        rows = (flat["episode"] // episodes) == m
        mine = {k: v[rows] for k, v in flat.items()} if members > 1 else flat
        out.append(
            Trajectories(
                core=core,
                states={k[2:]: v for k, v in mine.items() if k.startswith("s.")},
                next_states={k[2:]: v for k, v in mine.items() if k.startswith("n.")},
                action=mine["action"],
                reward=mine["reward"],
                episode=mine["episode"] - m * episodes,
                t=mine["t"],
                outcome={k: v[m * episodes : (m + 1) * episodes] for k, v in outcome.items()},
            )
        )
    return out
