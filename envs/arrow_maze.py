"""The arrow maze: every rule of the environment, as one batched torch core.

## Description
A perfect maze (every open tile reachable, no loops) drawn on a square canvas. Its **end** is the
exit, a gap in the maze's outer wall; by default nothing but that structure marks it, as in a drawn
maze (``end_marker: tile`` also gives it a channel). A **green arrow** marks one tile: on the end in
training, elsewhere under the shifts. Which of the two the agent heads for out of distribution is
the experiment. The region of the canvas outside a smaller maze shows as empty but is impassable.

## Actions
``Discrete(4)``: 0 up, 1 right, 2 down, 3 left. A move into a wall or out of the maze is a no-op.

## Observation
``symbolic`` (default): ``uint8`` one-hot channels ``(C, S, S)``: wall, agent, arrow, and end when
``end_marker: tile``. ``rgb``: ``uint8`` pixels ``(S*t, S*t, 3)`` from a tile atlas (``envs.render``).
``S`` is the canvas side, fixed per config so one network runs on every distribution.

## Rewards
1 on reaching the base objective's tile (``base_objective``: ``end`` or ``arrow``), minus
``step_penalty`` on every step.

## Termination and truncation
Terminated on reaching the base objective's tile. Reaching the other tile does not end the episode;
the first step at which each was reached is reported. Truncated at the level's time limit
(``max_steps``, or ``ceil(max_steps_per_cell * cells)``).

## Batched core
State is a handful of ``(B,)`` int64 tensors (level, position, step count, first visits); walls,
exit, arrow and start live in a level bank on the same device. ``step`` moves, applies the rules,
resets finished envs from the level bank *in the same step* and builds the next observation, all
as tensor ops over the batch: no Python loop over envs and no host-device copy. The step's
``info`` describes the episodes that just ended; :meth:`ArrowMazeCore.final_obs` builds their last
observation on demand (for bootstrapping truncated episodes). Levels are drawn with a generator on
the core's device: a seed gives the same run on the same kind of device (CPU and CUDA streams differ).

## Registered configurations
``misgen/ArrowMaze-v0`` with ``distribution`` one of the presets of ``configs/env/arrow_maze.yaml``:
``train``, ``shift_arrow``, ``shift_size``, ``shift_both`` (DESIGN.md's 2x2 design).
"""

from __future__ import annotations

import functools

import torch

from envs.config import ArrowMazeConfig, load_arrow_maze_config
from envs.core import GridCore, StepResult
from envs.grid import Canvas
from envs.gym_views import CoreEnv, CoreVectorEnv
from envs.layout import END, WALL
from envs.maze_levels import LevelSpec, MazeLevels, level_set

NOT_REACHED = -1


def channel_names(cfg: ArrowMazeConfig) -> tuple[str, ...]:
    """Names of the symbolic observation channels, in order."""
    return ("wall", "agent", "arrow", "end") if cfg.end_marker == "tile" else ("wall", "agent", "arrow")


AGENT_CHANNEL = 1


@functools.lru_cache(maxsize=16)
def _static_symbolic(spec: LevelSpec, end_marker: str, device: str) -> torch.Tensor:
    """``(N, C, S*S)`` uint8: every channel but the agent's, per level (shared between envs)."""
    levels = level_set(spec, device)
    canvas = Canvas(spec.canvas)
    num_channels = 4 if end_marker == "tile" else 3
    obs = torch.zeros((len(levels), num_channels, spec.canvas**2), dtype=torch.uint8, device=device)
    obs[:, 0] = (levels.tiles == WALL).flatten(1)
    rows = torch.arange(len(levels), device=device)
    obs[rows, 2, canvas.to_canvas_flat(levels.arrow)] = 1
    if end_marker == "tile":
        obs[:, 3] = (levels.tiles == END).flatten(1)
    return obs


class ArrowMazeCore(GridCore):
    """A batch of ``num_envs`` arrow mazes of one distribution, stepped together on one device."""

    def __init__(
        self,
        cfg: ArrowMazeConfig | None = None,
        distribution: str = "train",
        num_envs: int = 1,
        seed: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(cfg if cfg is not None else load_arrow_maze_config(), distribution, num_envs, device)
        self.spec = LevelSpec.of(self.cfg, distribution)
        self.levels: MazeLevels = level_set(self.spec, str(self.device))
        self.channels = channel_names(self.cfg)
        self._blocked_flat = self.levels.blocked.reshape(-1)
        if self.cfg.obs_mode == "symbolic":
            self._static = _static_symbolic(self.spec, self.cfg.end_marker, str(self.device))
            self.observation_shape: tuple[int, ...] = (len(self.channels), self.canvas.size, self.canvas.size)
        else:
            from envs.render import TileRenderer

            self._renderer = TileRenderer(self.cfg.rgb_tile_size, show_end=self.cfg.end_marker == "tile")
            px = self.canvas.size * self.cfg.rgb_tile_size
            self.observation_shape = (px, px, 3)
        self.reset(seed=seed)

    # ----------------------------------------------------------------- reset
    def reset(self, seed: int | None = None, level_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Start a new episode in every env: levels drawn uniformly, or the given ``level_ids``."""
        level = self._start_levels(seed, level_ids)
        self.level = level
        self.pos = self.levels.start.take(level)
        self.t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.first_end = torch.full_like(self.t, NOT_REACHED)
        self.first_arrow = torch.full_like(self.t, NOT_REACHED)
        self._final_level, self._final_pos = self.level, self.pos
        return self.observe(self.level, self.pos)

    # ----------------------------------------------------------------- state
    STATE = ("level", "pos")
    """What makes a state (the rest is episode bookkeeping): level and agent position (padded flat)."""

    def state(self) -> dict[str, torch.Tensor]:
        """The states the envs are in now (:attr:`STATE`; views, not copies)."""
        return {"level": self.level, "pos": self.pos}

    def final_state(self) -> dict[str, torch.Tensor]:
        """The states the latest step led to, before any reset (:attr:`STATE`)."""
        return {"level": self._final_level, "pos": self._final_pos}

    # ------------------------------------------------------------------ step
    def step(self, action: torch.Tensor) -> StepResult:
        """Apply one action per env (int64 in ``[0, 4)``, unchecked: no host sync in the hot path);
        finished envs restart on a fresh level in the same step. ``info`` describes the episodes of
        this step: where ``done``, the ones that just ended."""
        level = self.level
        pos = self.move(level, self.pos, action)
        t = self.t + 1
        at_end = pos == self.levels.end.take(level)
        at_arrow = pos == self.levels.arrow.take(level)
        first_end = torch.where(at_end & (self.first_end < 0), t, self.first_end)
        first_arrow = torch.where(at_arrow & (self.first_arrow < 0), t, self.first_arrow)
        terminated = at_end if self.cfg.base_objective == "end" else at_arrow
        truncated = (t >= self.levels.max_steps.take(level)) & ~terminated
        done = terminated | truncated
        reward = terminated.to(torch.float32)
        if self.cfg.step_penalty:
            reward = reward - self.cfg.step_penalty

        # Auto-reset finished envs from the level bank, in the same step.
        self._final_level, self._final_pos = level, pos
        new_level = torch.where(done, self._sample_levels(), level)
        self.level = new_level
        self.pos = torch.where(done, self.levels.start.take(new_level), pos)
        self.t = torch.where(done, 0, t)
        self.first_end = torch.where(done, NOT_REACHED, first_end)
        self.first_arrow = torch.where(done, NOT_REACHED, first_arrow)
        return StepResult(
            obs=self.observe(new_level, self.pos),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            info={
                "success": terminated,
                "episode_length": t,
                "level": level,
                "first_end_step": first_end,
                "first_arrow_step": first_arrow,
            },
        )

    def move(self, level: torch.Tensor, pos: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Where each action leads (the movement rule, also used by planning): a move into a wall
        or out of the maze stays put."""
        moved = pos + self.move_offsets.take(action)
        return torch.where(self._blocked_flat.take(level * self._num_padded + moved), pos, moved)

    # ----------------------------------------------------------- observation
    def observe(self, level: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Observation of a batch of ``(level, agent position)`` pairs."""
        if self.cfg.obs_mode == "rgb":
            return self._renderer.frames(self.tile_ids(level, pos), self.canvas.size)
        obs = self._static.index_select(0, level)
        n = level.shape[0]
        agent = self._canvas_index.take(pos) + self._batch_offsets(n) + AGENT_CHANNEL * self.canvas.size**2
        obs.view(-1).index_fill_(0, agent, 1)
        return obs.view(n, *self.observation_shape)

    def final_obs(self) -> torch.Tensor:
        """Last observation of the episodes of the latest step (before any reset)."""
        return self.observe(self._final_level, self._final_pos)

    def tile_ids(self, level: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``(B, S*S)`` tile ids for rendering: map tile, plus ARROW and AGENT bits (``envs.render``)."""
        from envs.render import AGENT_BIT, ARROW_BIT

        ids = self.levels.tiles.index_select(0, level).flatten(1)
        rows = torch.arange(level.shape[0], device=self.device)
        ids[rows, self._canvas_index.take(self.levels.arrow.take(level))] += ARROW_BIT
        ids[rows, self._canvas_index.take(pos)] += AGENT_BIT
        return ids

    def _render_ids(self, index: int, final: bool) -> torch.Tensor:
        level, pos = (self._final_level, self._final_pos) if final else (self.level, self.pos)
        return self.tile_ids(level[index : index + 1], pos[index : index + 1])


# ------------------------------------------------------------- gymnasium views
class ArrowMazeEnv(CoreEnv):
    """``misgen/ArrowMaze-v0`` as a single gymnasium env (rules and spec: this module's docstring)."""

    core_cls = ArrowMazeCore
    load_config = staticmethod(load_arrow_maze_config)


class ArrowMazeVectorEnv(CoreVectorEnv):
    """``misgen/ArrowMaze-v0`` as a gymnasium ``VectorEnv`` over one batched core."""

    core_cls = ArrowMazeCore
    load_config = staticmethod(load_arrow_maze_config)
