"""Policy specs of the evaluation CLI: one string names any policy source.

- ``<run dir or checkpoint.pt>``: one of our PPO checkpoints (``agents.policy.load_network_policy``);
- ``sb3:<model.zip or run dir>``: a stable-baselines3 model (``agents.sb3.load_sb3_policy``);
- ``oracle:<objective>[@<p>]``: an exact planner for that candidate objective, taking a uniformly
  random action with probability ``p`` (sanity baselines), e.g. ``oracle:arrow@0.2``. The spellings
  ``@eps:<p>`` and the older ``@eps=<p>`` are accepted too (the latter only quoted for Hydra, or through
  the ``misgen`` command, which rewrites it);
- ``random``: uniformly random actions;
- ``py:<module>:<callable>``: ``callable(env_cfg, device)`` returning any ``agents.policy.Policy``.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from analysis.objectives import ArrowMazeObjectives, KeysChestsObjectives, objectives_of
from analysis.trajectories import Actor, policy_actor
from envs.config import GridEnvConfig

_ORACLE = re.compile(r"^oracle:(?P<objective>[^@]+?)(@(eps[=:])?(?P<eps>[0-9.eE+-]+))?$")
ORACLE_FORM = "oracle:<objective>[@<eps>], e.g. oracle:arrow@0.2"


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
    deterministic: bool = False,
) -> Actor:
    """The ``Actor`` a policy spec names; a bad spec raises ``ValueError`` (or ``FileNotFoundError``) naming it.

    ``objectives``: the candidate objectives an oracle plans with (their discount, and planning shared
    with the estimator); default ``objectives_of(env_cfg)``. ``deterministic``: a learned policy (run dir,
    ``sb3:``, ``py:``) takes its most likely action instead of sampling; oracles and ``random`` are as
    named. ``allow_pickle``: load an ``sb3:`` zip that misgen did not save, which unpickles it (runs code
    from the file); trusted local files only.
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
            raise ValueError(f"policy={spec!r}: expected {ORACLE_FORM}, with objective in {list(known)}")
        eps = float(match["eps"] or 0.0)
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"policy={spec!r}: eps={eps} must be in [0, 1]")
        return _epsilon_random(objectives.oracle(match["objective"], seed), eps, seed)
    if spec.startswith("sb3:"):
        from agents.sb3 import load_sb3_policy

        policy = load_sb3_policy(spec[4:], env_name=env_cfg.name, device=device, seed=seed, allow_pickle=allow_pickle)
        return policy_actor(policy, deterministic)
    if spec.startswith("py:"):
        try:
            _, module, name = spec.split(":")
            factory = getattr(importlib.import_module(module), name)
        except (ValueError, ImportError, AttributeError) as err:
            raise ValueError(f"policy={spec!r}: expected py:<module>:<callable> that can be imported ({err})") from err
        return policy_actor(factory(env_cfg, device), deterministic)
    if not Path(spec).exists():
        raise FileNotFoundError(
            f"policy={spec!r} is neither a run dir or checkpoint nor one of sb3:, oracle:, random, py:"
        )
    from agents.policy import load_network_policy

    check_canvas(spec, env_cfg)
    return policy_actor(load_network_policy(spec, env_name=env_cfg.name, device=device, seed=seed), deterministic)


def check_canvas(spec: str, env_cfg: GridEnvConfig) -> None:
    """Refuse (``ValueError``) a checkpoint whose MLP takes a whole canvas of another size than ``env_cfg``'s."""
    from agents.checkpoint import load_checkpoint

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


def network_batch(specs: list[str]) -> bool:
    """Whether ``specs`` (two or more) are all our checkpoints of one architecture: a population's members
    (or any runs of one setup), which evaluate batched, one forward pass for all."""
    if len(specs) < 2 or any(s == "random" or s.startswith(("oracle:", "py:", "sb3:")) for s in specs):
        return False
    from agents.checkpoint import load_checkpoint

    try:
        networks = [load_checkpoint(s).get("network") for s in specs]
    except (OSError, ValueError):
        return False
    return networks[0] is not None and all(n == networks[0] for n in networks)


def load_members_actor(
    specs: list[str],
    env_cfg: GridEnvConfig,
    device: torch.device | str = "cpu",
    seed: int = 0,
    deterministic: bool = False,
) -> Actor:
    """One batched ``Actor`` over the checkpoints ``specs`` (:func:`network_batch`): block k of a batch of
    observations is member k's, and each member samples as :func:`load_actor` of it alone would."""
    from agents.policy import load_network_policy

    for spec in specs:
        check_canvas(spec, env_cfg)
    return policy_actor(load_network_policy(specs, env_name=env_cfg.name, device=device, seed=seed), deterministic)


@dataclass(frozen=True)
class TrainedRun:
    """What a trained policy's files say of the run that made it."""

    run_dir: Path
    """The run's dir (where its checkpoint or model lies): its evaluations go in ``<run_dir>/eval/``."""
    env_config: dict[str, Any]
    """The env config (plain dict) it was trained with."""
    wandb_group: str | None
    """The run's wandb group: its evaluations join it, so a dashboard shows training and evaluation together."""


def trained_run(spec: str) -> TrainedRun | None:
    """The run behind ``spec``: one of our checkpoints, or an SB3 model our trainer saved; ``None`` for
    every other spec (no files are unpickled)."""
    if spec.startswith("sb3:"):
        from agents.sb3 import find_sb3_model, read_sb3_meta

        meta = read_sb3_meta(spec[4:])
        if not meta or "env_config" not in meta:
            return None
        return TrainedRun(find_sb3_model(spec[4:]).parent, meta["env_config"], meta.get("wandb_group"))
    if spec == "random" or spec.startswith(("oracle:", "py:")) or not Path(spec).exists():
        return None
    from agents.checkpoint import find_checkpoint, load_checkpoint

    state = load_checkpoint(spec)
    if "env_config" not in state:
        return None
    return TrainedRun(find_checkpoint(spec).parent, state["env_config"], state.get("wandb_group"))


def trained_env_config(spec: str) -> dict[str, Any] | None:
    """The env config (plain dict) the policy was trained with (see :func:`trained_run`)."""
    run = trained_run(spec)
    return None if run is None else run.env_config
