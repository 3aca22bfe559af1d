"""A population's networks as one batched computation: K actor-critics, parameters stacked on a leading
member dimension, run by ``torch.func.vmap`` over ``functional_call``.

Why stacking and vmap rather than ensemble layers written with ``bmm``: the network is defined once
(``agents/networks.py``) and every torso batches as it is (under vmap a linear layer becomes a batched
matmul, a convolution a grouped one), so a population trains the very network a single run trains. Adam
is elementwise, so one optimiser over the stacked tensors is K independent optimisers; the gradient-norm
clip, the finite check and the state dicts are per member here. Nothing mixes two members: member k's
outputs depend only on row k of every stacked tensor, and its loss only reaches that row's gradient.

A single run is a population of one, on the same code: with K = 1 the forward pass calls the network
on the stacked tensors' only row directly (no vmap), so it is bit for bit the plain network's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from agents.networks import ActorCritic


class _Encoded(nn.Module):
    """``forward`` = the actor-critic's ``forward_encoded`` (what ``functional_call`` can call)."""

    def __init__(self, net: ActorCritic) -> None:
        super().__init__()
        self.net = net

    def forward(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_encoded(encoded)


class Members:
    """K actor-critics of one architecture as stacked parameters (``params[name]``: ``(K, *shape)``).

    ``nets`` are the members as built (member k's initial weights); they are copied, not kept."""

    def __init__(self, nets: Sequence[ActorCritic]) -> None:
        if not nets:
            raise ValueError("a population needs at least one member")
        params, buffers = stack_module_state(list(nets))
        self.size = len(nets)
        self.params: dict[str, torch.Tensor] = params
        self.buffers: dict[str, torch.Tensor] = buffers
        # The template supplies the architecture, the encoder and the (identical) non-persistent buffers;
        # its own weights are never used: every call passes the stacked ones.
        self.template = copy.deepcopy(nets[0])
        for p in self.template.parameters():
            p.requires_grad_(False)
        self._call = _Encoded(self.template)
        self._keys = [f"net.{name}" for name in params]
        self._batched = vmap(self._member_forward, in_dims=(0, 0))

    # ------------------------------------------------------------------ forward
    def parameters(self) -> list[torch.Tensor]:
        """The stacked parameters (what the optimiser updates), in the network's own order."""
        return list(self.params.values())

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations as the torso takes them (``ActorCritic.encode``; it has no weights)."""
        return self.template.encode(obs)

    def _member_forward(self, params: tuple[torch.Tensor, ...], encoded: torch.Tensor) -> Any:
        return functional_call(self._call, dict(zip(self._keys, params, strict=True)), (encoded,), strict=False)

    def forward_encoded(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(K, B, ...)`` encoded observations, row k for member k -> logits ``(K, B, A)``, values ``(K, B)``."""
        if encoded.shape[0] != self.size:
            raise ValueError(f"{encoded.shape[0]} rows of observations for {self.size} members")
        params = tuple(self.params.values())
        if self.size == 1:
            logits, value = self._member_forward(tuple(p[0] for p in params), encoded[0])
            return logits[None], value[None]
        return self._batched(params, encoded)

    # ---------------------------------------------------------------- per member
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Clip each member's gradient to a total 2-norm of ``max_norm`` (as ``nn.utils.clip_grad_norm_``
        does for one network); returns the ``(K,)`` norms before clipping."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        k = self.size
        norms = torch.stack([g.reshape(k, -1).norm(dim=1) for g in grads], dim=1).norm(dim=1)
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(k, *([1] * (g.dim() - 1))))
        return norms

    def finite_weights(self) -> torch.Tensor:
        """``(K,)`` bool: every weight of the member is finite."""
        k = self.size
        return torch.stack([p.detach().reshape(k, -1).isfinite().all(1) for p in self.params.values()]).all(0)

    def non_finite_names(self, member: int) -> list[str]:
        """The parameter names of ``member`` holding a non-finite value."""
        return [n for n, p in self.params.items() if not bool(p[member].isfinite().all())]

    def state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s weights as a plain ``ActorCritic.state_dict()`` (copies)."""
        stacked = {**self.params, **self.buffers}
        return {name: stacked[name][member].detach().clone() for name in self.template.state_dict()}

    @torch.no_grad()
    def load_state_dict(self, member: int, state: dict[str, torch.Tensor]) -> None:
        """Set member ``member``'s weights from a plain ``ActorCritic.state_dict()`` (checked by the template)."""
        self.template.load_state_dict(state)  # names and shapes checked here (the template's weights are unused)
        for name, value in state.items():
            target = self.params.get(name, self.buffers.get(name))
            target[member].copy_(value)

    def network(self, member: int) -> ActorCritic:
        """A standalone copy of member ``member``'s network (for a policy, a video, a test)."""
        net = copy.deepcopy(self.template)
        net.load_state_dict(self.state_dict(member))
        for p in net.parameters():
            p.requires_grad_(True)
        return net

    def optimizer_state(self, optimizer: torch.optim.Optimizer, member: int) -> dict[str, Any]:
        """Member ``member``'s part of an optimiser over :meth:`parameters`, as the state dict the same
        optimiser over that member's network alone would have (a single run's checkpoint format)."""
        full = optimizer.state_dict()
        state = {
            index: {
                key: value[member].clone() if torch.is_tensor(value) and value.dim() > 0 else copy.deepcopy(value)
                for key, value in entry.items()
            }
            for index, entry in full["state"].items()
        }
        return {"state": state, "param_groups": copy.deepcopy(full["param_groups"])}

    def load_optimizer_states(self, optimizer: torch.optim.Optimizer, states: Sequence[dict[str, Any]]) -> None:
        """Set an optimiser over :meth:`parameters` from one single-network state dict per member."""
        if len(states) != self.size:
            raise ValueError(f"{len(states)} optimiser states for {self.size} members")
        first = states[0]
        merged: dict[int, dict[str, Any]] = {}
        for index, entry in first["state"].items():
            merged[index] = {}
            for key, value in entry.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    merged[index][key] = torch.stack([s["state"][index][key] for s in states])
                else:
                    merged[index][key] = value
        optimizer.load_state_dict({"state": merged, "param_groups": first["param_groups"]})
