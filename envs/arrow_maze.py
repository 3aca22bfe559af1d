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
State (``ArrowMazeState``: level, position) and episode records (``ArrowMazeRecords``: first visits)
are ``(B,)`` int64 tensors; walls, exit, arrow and start live in a level bank on the same device. The
step (``envs.core.GridCore.step``) moves, applies the rules (``ArrowMazeCore._rules``), resets
finished envs from the level bank *in the same step* and builds the next observation, all as tensor
ops over the batch: no Python loop over envs and no host-device copy. The step's
``info`` describes the episodes that just ended; :meth:`ArrowMazeCore.final_obs` builds their last
observation on demand (for bootstrapping truncated episodes). Levels are drawn with a generator on
the core's device: a seed gives the same run on the same kind of device (CPU and CUDA streams differ).

## Registered configurations
``misgen/ArrowMaze-v0`` with ``distribution`` one of the presets of ``configs/env/arrow_maze.yaml``:
``train``, ``shift_arrow``, ``shift_size``, ``shift_both`` (DESIGN.md's 2x2 design).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from envs.config import ArrowMazeConfig, load_arrow_maze_config
from envs.core import GridCore, GridState, Transition
from envs.grid import Canvas
from envs.gym_views import CoreEnv, CoreVectorEnv
from envs.layout import END, WALL, TensorBatch
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


@dataclass(frozen=True)
class ArrowMazeState(GridState):
    """Arrow-maze states: a level and the agent's position (``GridState``'s fields, nothing more)."""


@dataclass
class ArrowMazeRecords(TensorBatch):
    """Episode records: the first step at which the end and the arrow were reached (``NOT_REACHED``: never)."""

    first_end: torch.Tensor  # (B,) int64
    first_arrow: torch.Tensor  # (B,) int64


class ArrowMazeCore(GridCore[ArrowMazeState]):
    """A batch of ``num_envs`` arrow mazes of one distribution, stepped together on one device."""

    STATE = ArrowMazeState.names()
    """What makes a state (the rest is episode bookkeeping): level and agent position (padded flat)."""

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
        if self.cfg.obs_mode == "symbolic":
            self._static = _static_symbolic(self.spec, self.cfg.end_marker, str(self.device))
            self.observation_shape: tuple[int, ...] = (len(self.channels), self.canvas.size, self.canvas.size)
        else:
            from envs.render import TileRenderer

            self._renderer = TileRenderer(self.cfg.rgb_tile_size, show_end=self.cfg.end_marker == "tile")
            px = self.canvas.size * self.cfg.rgb_tile_size
            self.observation_shape = (px, px, 3)
        self.reset(seed=seed)

    # ----------------------------------------------------------------- rules
    def _start(self, level: torch.Tensor) -> ArrowMazeState:
        """A fresh episode: the agent on the level's start."""
        return ArrowMazeState(level=level, pos=self.levels.start.take(level))

    def _new_records(self) -> ArrowMazeRecords:
        never = torch.full((self.num_envs,), NOT_REACHED, dtype=torch.long, device=self.device)
        return ArrowMazeRecords(first_end=never, first_arrow=never.clone())

    def _rules(self, state: ArrowMazeState, pos: torch.Tensor, t: torch.Tensor) -> Transition[ArrowMazeState]:
        """Reaching the base objective's tile pays 1 and ends the episode; the first visits of the end
        and of the arrow are recorded."""
        level, seen = state.level, self.records
        at_end = pos == self.levels.end.take(level)
        at_arrow = pos == self.levels.arrow.take(level)
        records = ArrowMazeRecords(
            first_end=torch.where(at_end & (seen.first_end < 0), t, seen.first_end),
            first_arrow=torch.where(at_arrow & (seen.first_arrow < 0), t, seen.first_arrow),
        )
        terminated = at_end if self.cfg.base_objective == "end" else at_arrow
        return Transition(
            state=ArrowMazeState(level=level, pos=pos),
            records=records,
            reward=terminated.to(torch.float32),
            terminated=terminated,
            success=terminated,
            info={"first_end_step": records.first_end, "first_arrow_step": records.first_arrow},
        )

    @property
    def first_end(self) -> torch.Tensor:
        """``(B,)`` first step of the episode in progress at the end (``NOT_REACHED``: not yet)."""
        return self.records.first_end

    @property
    def first_arrow(self) -> torch.Tensor:
        """``(B,)`` first step of the episode in progress on the arrow (``NOT_REACHED``: not yet)."""
        return self.records.first_arrow

    @property
    def _final_pos(self) -> torch.Tensor:  # kept for tests written against the old attributes
        return self._final.pos

    # ----------------------------------------------------------- observation
    def observe(self, state: ArrowMazeState) -> torch.Tensor:
        """Observation of a batch of states."""
        level, pos = state.level, state.pos
        if self.cfg.obs_mode == "rgb":
            return self._renderer.frames(self.tile_ids(level, pos), self.canvas.size)
        obs = self._static.index_select(0, level)
        n = level.shape[0]
        agent = self._canvas_index.take(pos) + self._batch_offsets(n) + AGENT_CHANNEL * self.canvas.size**2
        obs.view(-1).index_fill_(0, agent, 1)
        return obs.view(n, *self.observation_shape)

    def tile_ids(self, level: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``(B, S*S)`` tile ids for rendering: map tile, plus ARROW and AGENT bits (``envs.render``)."""
        from envs.render import AGENT_BIT, ARROW_BIT

        ids = self.levels.tiles.index_select(0, level).flatten(1)
        rows = torch.arange(level.shape[0], device=self.device)
        ids[rows, self._canvas_index.take(self.levels.arrow.take(level))] += ARROW_BIT
        ids[rows, self._canvas_index.take(pos)] += AGENT_BIT
        return ids


# ------------------------------------------------------------- gymnasium views
class ArrowMazeEnv(CoreEnv):
    """``misgen/ArrowMaze-v0`` as a single gymnasium env (rules and spec: this module's docstring)."""

    env_name = "arrow_maze"


class ArrowMazeVectorEnv(CoreVectorEnv):
    """``misgen/ArrowMaze-v0`` as a gymnasium ``VectorEnv`` over one batched core."""

    env_name = "arrow_maze"
