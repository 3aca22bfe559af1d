"""The ``Policy`` protocol: what evaluation code may ask of any policy source, and our own implementation.

Every policy source (our PPO checkpoints, SB3 models, scripted planners) answers two questions about
a batch of observations as the cores give them (``uint8`` tensors on the policy's device): the action
distribution, and actions drawn from it (or its mode). Evaluation only ever talks to this protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch.distributions import Categorical

from agents.checkpoint import load_checkpoint
from agents.networks import ActorCritic, NetworkConfig
from envs.config import config_to_dict, load_structured


@runtime_checkable
class Policy(Protocol):
    """A batched policy over the envs' observations."""

    device: torch.device

    def distribution(self, obs: torch.Tensor) -> Categorical:
        """The action distribution for each observation in the batch."""
        ...

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """One action per observation: sampled, or the most likely with ``deterministic``."""
        ...


class NetworkPolicy:
    """A ``Policy`` over an actor-critic network (our PPO's; shared, not copied, during training)."""

    def __init__(self, net: ActorCritic, device: torch.device | str, seed: int = 0) -> None:
        self.net = net
        self.device = torch.device(device)
        self._gen = torch.Generator(device=self.device).manual_seed(seed)

    def rng_state(self) -> torch.Tensor:
        """State of the action sampler (checkpointed, so evaluations after a resume match an unbroken run)."""
        return self._gen.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self._gen.set_state(state)

    @torch.no_grad()
    def distribution(self, obs: torch.Tensor) -> Categorical:
        return Categorical(logits=self.net(obs)[0])

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        logits = self.net(obs)[0]
        if deterministic:
            return logits.argmax(-1)
        return torch.multinomial(torch.softmax(logits, -1), 1, generator=self._gen).squeeze(-1)


def network_spec(net_cfg: NetworkConfig, obs_shape: tuple[int, ...], num_actions: int, pixels: bool) -> dict[str, Any]:
    """What a checkpoint records to rebuild its network without building an env."""
    return {
        "config": config_to_dict(net_cfg),
        "obs_shape": list(obs_shape),
        "num_actions": num_actions,
        "pixels": pixels,
    }


def load_network_policy(
    where: str | Path, env_name: str | None = None, device: torch.device | str = "cpu", seed: int = 0
) -> NetworkPolicy:
    """A ``NetworkPolicy`` from one of our checkpoints (a run dir or the file); refuses another env's."""
    state = load_checkpoint(where, env_name=env_name)
    if "network" not in state:
        raise ValueError(f"{where}: the checkpoint does not record its network (written before format 2); retrain it")
    spec = state["network"]
    net_cfg = load_structured(NetworkConfig, spec["config"], None, "network").validate()
    net = ActorCritic(tuple(spec["obs_shape"]), spec["num_actions"], net_cfg, spec["pixels"])
    net.load_state_dict(state["model"])
    return NetworkPolicy(net.to(device).eval(), device, seed)
