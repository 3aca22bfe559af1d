"""What every batched core shares: the state containers, the step skeleton, and the contract the
gymnasium views and trainers use.

``GridCore.step`` is the one step of every env: move on the padded grid (walls block), apply the env's
rules (:meth:`GridCore._rules`: rewards, pickups, termination, info), then the time limit, and the
same-step reset of finished envs from the level bank. An env's module holds only its rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import torch

from envs.devices import resolve_device
from envs.grid import NUM_ACTIONS, Canvas
from envs.layout import TensorBatch


@dataclass(frozen=True)
class GridState(TensorBatch):
    """The states of a batch of envs: what the next step depends on (episode records aside). Each env
    extends it with its own fields. Reads like the dict it replaces: ``state["pos"]``, ``keys()``,
    ``values()``, ``items()`` (in field order). Frozen: ``core.state()`` is the live state, and a new
    one is made (``map``, ``where``, ``subset``, ``dataclasses.replace``) rather than changed."""

    level: torch.Tensor
    """``(B,)`` int64 level id in the core's bank."""
    pos: torch.Tensor
    """``(B,)`` int64 agent position (padded flat index, ``envs.grid``)."""

    DTYPES: ClassVar[dict[str, torch.dtype]] = {"level": torch.long, "pos": torch.long}
    """Dtype of each field (:meth:`cast`); a subclass adds its own."""

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.names():
            raise KeyError(f"{name!r} is not a state field; fields: {list(self.names())}")
        return getattr(self, name)

    def keys(self) -> tuple[str, ...]:
        return self.names()

    def values(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, name) for name in self.names())

    def items(self) -> tuple[tuple[str, torch.Tensor], ...]:
        return tuple((name, getattr(self, name)) for name in self.names())

    def cast(self, device: torch.device | str) -> GridState:
        """On ``device``, each field in its dtype (:attr:`DTYPES`): a state built by hand, made the core's."""
        return type(self)(**{n: getattr(self, n).to(device, self.DTYPES[n]) for n in self.names()})


S = TypeVar("S", bound=GridState)


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


@dataclass
class Transition(Generic[S]):
    """What an env's rules make of one step (:meth:`GridCore._rules`), before the time limit and the reset."""

    state: S
    """The states the step led to."""
    records: Any
    """The episode records after the step (a ``TensorBatch``: first visits, counters)."""
    reward: torch.Tensor
    """``(B,)`` float32, before the step penalty."""
    terminated: torch.Tensor
    """``(B,)`` bool: the episode ends by the rules."""
    success: torch.Tensor
    """``(B,)`` bool: ``info["success"]``, the base objective achieved."""
    info: dict[str, torch.Tensor]
    """The env's own ``info`` entries (``success``, ``episode_length`` and ``level`` are added)."""
    penalty: torch.Tensor | None = None
    """Subtracted from the reward after the step penalty (keys and chests: ``key_penalty`` per key)."""


class GridCore(Generic[S]):
    """What every batched core shares: config, device, canvas geometry, level sampling, the step
    skeleton, state access and rendering.

    A subclass sets ``self.levels`` (a level bank with ``blocked``, ``start`` and ``max_steps``) and
    ``channels`` and ``observation_shape``, then calls ``reset``; it implements the hooks

    - ``_start(level) -> S``: the state a fresh episode on each of ``level`` starts in;
    - ``_new_records() -> TensorBatch``: the episode records of ``num_envs`` fresh episodes;
    - ``_rules(state, pos, t) -> Transition``: the env's rules for agents moved to ``pos`` at step ``t``;
    - ``observe(state)``, and ``tile_ids(*state fields)`` (``(B, R*S)`` tile ids, ``envs.render``) for
      :meth:`render_rgb` and :meth:`render_ansi`.

    The live state, the state the latest step led to (before any reset) and the episode records are
    ``state()``, ``final_state()`` and ``records``; ``level`` and ``pos`` read the live state.
    """

    STATE: ClassVar[tuple[str, ...]] = GridState.names()
    """The fields of a state (a subclass names its own)."""

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
        self._generators = [torch.Generator(device=self.device)]  # one level stream per block of envs
        self._seeded = False
        self._fresh_records: Any = None

    @property
    def levels(self) -> Any:
        """The level bank the envs draw from (``blocked``, ``start``, ``max_steps`` and the env's own)."""
        return self._levels

    @levels.setter
    def levels(self, bank: Any) -> None:
        self._levels = bank
        self._blocked_flat = bank.blocked.reshape(-1)

    # ------------------------------------------------------------------ hooks
    def _start(self, level: torch.Tensor) -> S:
        """The state a fresh episode on each of ``level`` starts in. Called with the levels the envs
        are on from now on (by reset, set_state and every step), so a core may cache per-level data here."""
        raise NotImplementedError

    def _new_records(self) -> Any:
        """The episode records (a ``TensorBatch``) of ``num_envs`` fresh episodes."""
        raise NotImplementedError

    def _rules(self, state: S, pos: torch.Tensor, t: torch.Tensor) -> Transition[S]:
        """The env's rules for one step: the envs were in ``state`` (with :attr:`records`) and moved to
        ``pos`` (walls already applied); ``t`` is the step count after this step."""
        raise NotImplementedError

    def observe(self, state: S) -> torch.Tensor:
        """Observation of a batch of states."""
        raise NotImplementedError

    def _time_limit(self, level: torch.Tensor) -> torch.Tensor:
        """``(B,)`` time limit of the envs on ``level`` (the levels they are on now)."""
        return self.levels.max_steps.take(level)

    # ------------------------------------------------------------------ state
    @property
    def level(self) -> torch.Tensor:
        """``(B,)`` level id of each env now."""
        return self._now.level

    @property
    def pos(self) -> torch.Tensor:
        """``(B,)`` agent position of each env now (padded flat)."""
        return self._now.pos

    def state(self) -> S:
        """The states the envs are in now (the live tensors, not copies)."""
        return self._now

    def final_state(self) -> S:
        """The states the latest step led to, before any reset."""
        return self._final

    def reset(self, seed: int | Sequence[int] | None = None, level_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Start a new episode in every env: levels drawn uniformly, or the given ``level_ids``.

        ``seed`` seeds the level draws. A sequence of K seeds splits the envs into K equal consecutive
        blocks (a population's members), block k drawing from its own stream seeded ``seed[k]``: block k
        then sees exactly the levels a core of ``num_envs / K`` envs reset with ``seed[k]`` would.
        """
        return self._begin(self._start(self._start_levels(seed, level_ids)))

    def set_state(self, state: S) -> torch.Tensor:
        """Put the ``num_envs`` envs in the given states with a fresh episode clock and records, for
        planning and probes that step from chosen states; returns their observation. The state must be
        one the env can be in (e.g. keys and chests: inventory = keys taken minus chests opened; unchecked)."""
        state = state.cast(self.device)  # type: ignore[assignment]
        if state.level.shape != (self.num_envs,):
            raise ValueError(f"set_state: {tuple(state.level.shape)} levels for {self.num_envs} envs")
        if bool(((state.level < 0) | (state.level >= len(self.levels))).any()):
            raise ValueError(f"set_state: level ids must lie in [0, {len(self.levels)})")
        self._start(state.level)  # the envs are on these levels now (a core may cache per-level data)
        return self._begin(state)

    def _begin(self, state: S) -> torch.Tensor:
        """The envs start an episode in ``state``: clock at 0, fresh records; returns the observation."""
        if self._fresh_records is None:
            self._fresh_records = self._new_records()
        self._now = self._final = state
        self.records = self._fresh_records.map(torch.clone)
        self.t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        return self.observe(state)

    # ------------------------------------------------------------------- step
    def move(self, level: torch.Tensor, pos: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Where each action leads (the movement rule, also used by planning): a move into a wall or
        out of the level stays put."""
        moved = pos + self.move_offsets.take(action)
        return torch.where(self._blocked_flat.take(level * self._num_padded + moved), pos, moved)

    def step(self, action: torch.Tensor) -> StepResult:
        """Apply one action per env (int64 in ``[0, 4)``, unchecked: no host sync in the hot path):
        move, the env's rules, the time limit; finished envs restart on a fresh level in the same step.
        ``info`` describes the episodes of this step: where ``done``, the ones that just ended."""
        now, t = self._now, self.t + 1
        level = now.level
        out = self._rules(now, self.move(level, now.pos, action), t)
        truncated = (t >= self._time_limit(level)) & ~out.terminated
        done = out.terminated | truncated
        reward = out.reward
        if self.cfg.step_penalty:
            reward = reward - self.cfg.step_penalty
        if out.penalty is not None:
            reward = reward - out.penalty

        # Auto-reset finished envs from the level bank, in the same step.
        self._final = out.state
        fresh = self._start(torch.where(done, self._sample_levels(), level))
        self._now = fresh.where(done, out.state, keep=("level",))  # its level is already the new one
        self.records = self._fresh_records.where(done, out.records)
        self.t = torch.where(done, 0, t)
        return StepResult(
            obs=self.observe(self._now),
            reward=reward,
            terminated=out.terminated,
            truncated=truncated,
            info={"success": out.success, "episode_length": t, "level": level, **out.info},
        )

    def final_obs(self) -> torch.Tensor:
        """Last observation of the episodes of the latest step (before any reset)."""
        return self.observe(self._final)

    def _batch_offsets(self, n: int) -> torch.Tensor:
        """``(n,)`` flat offset of each env's observation in a batch of ``n`` (cached for ``num_envs``)."""
        per_env = len(self.channels) * self.canvas.size**2  # type: ignore[attr-defined]
        cached = getattr(self, "_offsets_cache", None)
        if cached is None or cached.shape[0] < n:
            cached = torch.arange(max(n, self.num_envs), device=self.device) * per_env
            self._offsets_cache = cached
        return cached[:n]

    def rng_state(self, stream: int = 0) -> torch.Tensor:
        """State of a level stream (for checkpoints: a resumed run continues the stream, not replays it)."""
        return self._generators[stream].get_state()

    def set_rng_state(self, state: torch.Tensor, stream: int = 0) -> None:
        """Continue a level stream from :meth:`rng_state`; the next ``reset()`` without a seed draws from it."""
        self._generators[stream].set_state(state)
        self._seeded = True

    def _start_levels(self, seed: int | Sequence[int] | None, level_ids: Any) -> torch.Tensor:
        """Level of each env for a reset: ``level_ids`` (an int for all, or one per env), checked,
        or drawn uniformly from the bank. Seeds the level streams when ``seed`` is given."""
        if seed is not None:
            seeds = [int(s) for s in seed] if isinstance(seed, Sequence) else [int(seed)]
            if not seeds or self.num_envs % len(seeds):
                raise ValueError(f"{len(seeds)} level streams do not split {self.num_envs} envs into equal blocks")
            self._generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        elif not self._seeded:
            for gen in self._generators:
                gen.seed()
        self._seeded = True
        if level_ids is None:
            return self._sample_levels()
        level = torch.as_tensor(level_ids, dtype=torch.long).to(self.device, copy=True)
        level = level.expand(self.num_envs).clone() if level.dim() == 0 else level.reshape(self.num_envs)
        if bool(((level < 0) | (level >= len(self.levels))).any()):
            raise ValueError(f"level_ids must lie in [0, {len(self.levels)}) for distribution {self.distribution!r}")
        return level

    def _sample_levels(self) -> torch.Tensor:
        n, block = len(self.levels), self.num_envs // len(self._generators)
        draws = [torch.randint(0, n, (block,), generator=g, device=self.device) for g in self._generators]
        return draws[0] if len(draws) == 1 else torch.cat(draws)

    def _shown(self, index: int, final: bool) -> S:
        """The state of env ``index`` now, or (``final``) the one its latest step led to."""
        return (self._final if final else self._now).subset(slice(index, index + 1))

    def _render_ids(self, index: int, final: bool) -> torch.Tensor:
        """``(1, R*S)`` tile ids of env ``index`` (default: ``self.tile_ids(*state fields)``)."""
        return self.tile_ids(*self._shown(index, final).values())  # type: ignore[attr-defined]

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
