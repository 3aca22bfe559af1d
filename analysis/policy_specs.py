"""Policy specs of the evaluation CLI: one string names any policy source.

- ``<run dir or checkpoint.pt>``: one of our PPO checkpoints (``agents.policy.load_network_policy``);
- ``sb3:<model.zip or run dir>``: a stable-baselines3 model (``agents.sb3.load_sb3_policy``);
- ``oracle:<objective>[@eps=<p>]``: an exact planner for that candidate objective, taking a uniformly
  random action with probability ``p`` (sanity baselines);
- ``random``: uniformly random actions;
- ``py:<module>:<callable>``: ``callable(env_cfg, device)`` returning any ``agents.policy.Policy``.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import torch

from analysis.objectives import ArrowMazeObjectives, KeysChestsObjectives, objectives_of
from analysis.trajectories import Actor, policy_actor
from envs.config import GridEnvConfig

_ORACLE = re.compile(r"^oracle:(?P<objective>\w+)(@eps=(?P<eps>[0-9.eE+-]+))?$")


def _epsilon_random(actor: Actor, eps: float, seed: int) -> Actor:
    gen = torch.Generator().manual_seed(seed)

    def act(core, obs):
        chosen = actor(core, obs)
        if eps == 0.0:
            return chosen
        explore = torch.rand(core.num_envs, generator=gen) < eps
        random = torch.randint(0, core.num_actions, (core.num_envs,), generator=gen)
        return torch.where(explore.to(chosen.device), random.to(chosen.device), chosen)

    return act


def load_actor(
    spec: str,
    env_cfg: GridEnvConfig,
    device: torch.device | str = "cpu",
    seed: int = 0,
    objectives: ArrowMazeObjectives | KeysChestsObjectives | None = None,
    allow_pickle: bool = False,
) -> Actor:
    """The ``Actor`` a policy spec names; a bad spec raises ``ValueError`` (or ``FileNotFoundError``) naming it.

    ``objectives``: the candidate objectives an oracle plans with (their discount, and planning shared
    with the estimator); default ``objectives_of(env_cfg)``. ``allow_pickle``: load an ``sb3:`` zip
    that misgen did not save, which unpickles it (runs code from the file); trusted local files only.
    """
    if spec == "random":
        return _epsilon_random(
            lambda core, _obs: torch.zeros(core.num_envs, dtype=torch.long, device=core.device), 1.0, seed
        )
    if spec.startswith("oracle:"):
        match = _ORACLE.match(spec)
        objectives = objectives or objectives_of(env_cfg)
        known = objectives.names
        if match is None or match["objective"] not in known:
            raise ValueError(f"policy={spec!r}: expected oracle:<objective>[@eps=<p>] with objective in {list(known)}")
        eps = float(match["eps"] or 0.0)
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"policy={spec!r}: eps={eps} must be in [0, 1]")
        return _epsilon_random(objectives.oracle(match["objective"], seed), eps, seed)
    if spec.startswith("sb3:"):
        from agents.sb3 import load_sb3_policy

        policy = load_sb3_policy(spec[4:], env_name=env_cfg.name, device=device, seed=seed, allow_pickle=allow_pickle)
        return policy_actor(policy)
    if spec.startswith("py:"):
        try:
            _, module, name = spec.split(":")
            factory = getattr(importlib.import_module(module), name)
        except (ValueError, ImportError, AttributeError) as err:
            raise ValueError(f"policy={spec!r}: expected py:<module>:<callable> that can be imported ({err})") from err
        return policy_actor(factory(env_cfg, device))
    if not Path(spec).exists():
        raise FileNotFoundError(
            f"policy={spec!r} is neither a run dir or checkpoint nor one of sb3:, oracle:, random, py:"
        )
    from agents.checkpoint import load_checkpoint
    from agents.policy import load_network_policy

    state = load_checkpoint(spec, env_name=env_cfg.name)
    net = state.get("network", {}).get("config", {})
    trained = state["network"]["obs_shape"][-1] if "network" in state else None
    if net.get("kind") == "mlp" and net.get("egocentric") is None and env_cfg.obs_mode == "symbolic":
        if trained != env_cfg.canvas:
            raise ValueError(
                f"policy={spec!r}: its MLP takes the whole {trained}x{trained} canvas it was trained on, but this "
                f"env config's canvas is {env_cfg.canvas}x{env_cfg.canvas}; evaluate on env.canvas_size={trained}, "
                "or train an egocentric MLP (agent.network.egocentric) or the IMPALA network, which take any canvas"
            )
    return policy_actor(load_network_policy(spec, env_name=env_cfg.name, device=device, seed=seed))


def trained_env_config(spec: str) -> dict[str, Any] | None:
    """The env config (plain dict) the policy was trained with: from one of our checkpoints, or an SB3
    model our trainer saved; ``None`` for every other spec (no files are unpickled)."""
    if spec.startswith("sb3:"):
        from agents.sb3 import read_sb3_meta

        meta = read_sb3_meta(spec[4:])
        return meta.get("env_config") if meta else None
    if spec == "random" or spec.startswith(("oracle:", "py:")) or not Path(spec).exists():
        return None
    from agents.checkpoint import load_checkpoint

    return load_checkpoint(spec).get("env_config")
