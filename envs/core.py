"""What every batched core returns from a step: the contract the gymnasium views and trainers use."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepResult:
    """One batched step of ``B`` envs.

    ``info`` maps names to ``(B,)`` tensors that describe each env's episode as of this step; where
    ``done``, that is the episode that just ended (the env itself has already restarted).
    """

    obs: torch.Tensor
    reward: torch.Tensor  # (B,) float32
    terminated: torch.Tensor  # (B,) bool
    truncated: torch.Tensor  # (B,) bool
    info: dict[str, torch.Tensor]

    @property
    def done(self) -> torch.Tensor:
        return self.terminated | self.truncated
