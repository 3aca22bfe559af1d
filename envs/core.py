"""What every batched core returns from a step: the contract the gymnasium views and trainers use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from envs.devices import resolve_device
from envs.grid import NUM_ACTIONS, Canvas


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


class GridCore:
    """What every batched core shares: config, device, canvas geometry, level sampling, rendering.

    A subclass sets ``self.levels`` (a level bank with ``blocked``), implements ``reset``, ``step``,
    ``observe`` and ``final_obs``, and ``_render_ids(index, final)`` giving a ``(1, R*S)`` tile-id
    grid (``envs.render``) of one env for people to look at.
    """

    def __init__(self, cfg: Any, distribution: str, num_envs: int, device: torch.device | str | None) -> None:
        self.cfg = cfg.validate()
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} must be >= 1")
        self.distribution = distribution
        self.num_envs = num_envs
        self.device = resolve_device(device if device is not None else cfg.device)
        self.canvas = Canvas(cfg.canvas)
        self.num_actions = NUM_ACTIONS
        self.move_offsets = self.canvas.move_offsets(self.device)
        self._num_padded = self.canvas.num_padded
        # Padded flat index -> canvas flat index (one gather instead of a division per step). The
        # blocked border maps to canvas tiles no object is ever on.
        pad = torch.arange(self._num_padded, device=self.device)
        self._canvas_index = self.canvas.to_canvas_flat(pad).clamp(0, self.canvas.size**2 - 1)
        self._generator = torch.Generator(device=self.device)
        self._seeded = False

    def _batch_offsets(self, n: int) -> torch.Tensor:
        """``(n,)`` flat offset of each env's observation in a batch of ``n`` (cached for ``num_envs``)."""
        per_env = len(self.channels) * self.canvas.size**2  # type: ignore[attr-defined]
        cached = getattr(self, "_offsets_cache", None)
        if cached is None or cached.shape[0] < n:
            cached = torch.arange(max(n, self.num_envs), device=self.device) * per_env
            self._offsets_cache = cached
        return cached[:n]

    def rng_state(self) -> torch.Tensor:
        """State of the level draws (for checkpoints: a resumed run continues the stream, not replays it)."""
        return self._generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        """Continue the level draws from :meth:`rng_state`; the next ``reset()`` without a seed draws from it."""
        self._generator.set_state(state)
        self._seeded = True

    def _start_levels(self, seed: int | None, level_ids: Any) -> torch.Tensor:
        """Level of each env for a reset: ``level_ids`` (an int for all, or one per env), checked,
        or drawn uniformly from the bank. Seeds the level draws when ``seed`` is given."""
        if seed is not None:
            self._generator.manual_seed(seed)
        elif not self._seeded:
            self._generator.seed()
        self._seeded = True
        if level_ids is None:
            return self._sample_levels()
        level = torch.as_tensor(level_ids, dtype=torch.long).to(self.device, copy=True)
        level = level.expand(self.num_envs).clone() if level.dim() == 0 else level.reshape(self.num_envs)
        if bool(((level < 0) | (level >= len(self.levels))).any()):  # type: ignore[attr-defined]
            raise ValueError(
                f"level_ids must lie in [0, {len(self.levels)}) for distribution {self.distribution!r}"  # type: ignore[attr-defined]
            )
        return level

    def _sample_levels(self) -> torch.Tensor:
        n = len(self.levels)  # type: ignore[attr-defined]
        return torch.randint(0, n, (self.num_envs,), generator=self._generator, device=self.device)

    def _render_ids(self, index: int, final: bool) -> torch.Tensor:
        raise NotImplementedError

    def render_rgb(self, index: int = 0, tile_size: int = 16, final: bool = False) -> torch.Tensor:
        """A human-readable ``(H, W, 3)`` uint8 frame of env ``index``.

        ``final``: the last state of the episode that ended in the latest step, not the new one.
        """
        from envs.render import TileRenderer

        return TileRenderer(tile_size, show_end=True).frames(self._render_ids(index, final), self.canvas.size)[0]

    def render_ansi(self, index: int = 0, final: bool = False) -> str:
        """A text picture of env ``index`` (legend: ``envs.render.ansi``)."""
        from envs.render import ansi

        ids = self._render_ids(index, final)[0]
        return ansi(ids.view(-1, self.canvas.size).cpu())
