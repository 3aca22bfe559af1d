"""The ``Policy`` protocol: what evaluation code may ask of any policy source, and our own implementation.

Every policy source (our PPO checkpoints, SB3 models, scripted planners) answers two questions about
a batch of observations as the cores give them (``uint8`` tensors on the policy's device): the action
distribution, and actions drawn from it (or its mode). Evaluation only ever talks to this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch.distributions import Categorical

from agents.checkpoint import load_checkpoint
from agents.members import Members
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
    """A ``Policy`` over the networks of a population's members (``agents.members.Members``; one network
    is a population of one). With K members a batch holds K equal consecutive blocks of observations,
    block k for member k: one batched forward pass, and member k samples with its own generator, so block
    k gets exactly the actions member k alone would. Shared, not copied, with a training run."""

    def __init__(self, members: Members, device: torch.device | str, seeds: Sequence[int] = (0,)) -> None:
        if len(seeds) != members.size:
            raise ValueError(f"{len(seeds)} seeds for {members.size} members")
        self.members = members
        self.device = torch.device(device)
        self._gens = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]

    @property
    def population(self) -> int:
        """Number of members (blocks of a batch)."""
        return self.members.size

    def rng_state(self, member: int = 0) -> torch.Tensor:
        """State of a member's action sampler (checkpointed, so evaluations after a resume match an unbroken run)."""
        return self._gens[member].get_state()

    def set_rng_state(self, state: torch.Tensor, member: int = 0) -> None:
        self._gens[member].set_state(state)

    @torch.no_grad()
    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """``(K, E, A)`` action logits of each member on its block of ``obs``."""
        encoded = self.members.encode(obs)
        if encoded.shape[0] % self.population:
            raise ValueError(f"{encoded.shape[0]} observations do not split into {self.population} equal blocks")
        return self.members.forward_encoded(encoded.view(self.population, -1, *encoded.shape[1:]))[0]

    def distribution(self, obs: torch.Tensor) -> Categorical:
        logits = self.logits(obs)
        return Categorical(logits=logits.reshape(-1, logits.shape[-1]))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        logits = self.logits(obs)
        if deterministic:
            return logits.argmax(-1).reshape(-1)
        return sample_blocks(torch.softmax(logits, -1), self._gens).reshape(-1)


def sample_blocks(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """``(K, B)`` one action per row of ``(K, B, A)`` probabilities, block k drawn with ``generators[k]``
    (as ``torch.multinomial`` on that block alone)."""
    drawn = [torch.multinomial(p, 1, generator=g).squeeze(-1) for p, g in zip(probs, generators, strict=True)]
    return drawn[0][None] if len(drawn) == 1 else torch.stack(drawn)


def network_spec(net_cfg: NetworkConfig, obs_shape: tuple[int, ...], num_actions: int, pixels: bool) -> dict[str, Any]:
    """What a checkpoint records to rebuild its network without building an env."""
    return {
        "config": config_to_dict(net_cfg),
        "obs_shape": list(obs_shape),
        "num_actions": num_actions,
        "pixels": pixels,
    }


def load_network_policy(
    where: str | Path | Sequence[str | Path],
    env_name: str | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> NetworkPolicy:
    """A ``NetworkPolicy`` from one of our checkpoints (a run dir or the file), or from several of one
    architecture (a population's members, evaluated batched: each samples with its own generator seeded
    ``seed``, as it would alone); refuses another env's."""
    wheres = [where] if isinstance(where, str | Path) else list(where)
    nets, first = [], None
    for one in wheres:
        state = load_checkpoint(one, env_name=env_name)
        if "network" not in state:
            raise ValueError(f"{one}: the checkpoint does not record its network (written before format 2); retrain it")
        spec = state["network"]
        if first is None:
            first = spec
        elif spec != first:
            raise ValueError(f"{one}: its network {spec} differs from {wheres[0]}'s {first}; evaluate them apart")
        net_cfg = load_structured(NetworkConfig, spec["config"], None, "network").validate()
        net = ActorCritic(tuple(spec["obs_shape"]), spec["num_actions"], net_cfg, spec["pixels"])
        net.load_state_dict(state["model"])
        nets.append(net.to(device).eval())
    return NetworkPolicy(Members(nets), device, [seed] * len(nets))
