"""Keys and chests: every rule of the environment, as one batched torch core.

## Description
A room with scattered wall blocks (``layout: room``) or a perfect maze (``layout: maze``) holds
keys and chests. Stepping onto a key picks it up into the inventory (unbounded). Stepping onto a
closed chest while holding a key opens it and consumes the key. Without a key the chest stays
closed (the agent may stand on it). In training keys are scarce and chests plentiful, so
collecting keys is always right; under ``shift_ratio`` keys are plentiful, and an agent that
learned "collect keys" rather than "open chests" hoards keys it can never use.

## Actions
``Discrete(4)``: 0 up, 1 right, 2 down, 3 left. A move into a wall is a no-op.

## Observation
``symbolic`` (default): ``uint8`` one-hot channels ``(5, S, S)``: wall, agent, key, chest (closed),
inventory. The inventory channel lights the first ``min(keys held, S)`` tiles of its top row, so
the agent can see whether it already holds enough keys. ``rgb``: pixels ``((S+1)*t, S*t, 3)``, the
canvas plus a bottom row showing the keys held.

## Rewards
+1 per chest opened, minus ``step_penalty`` every step and ``key_penalty`` per key picked up.

## Termination and truncation
Terminated when every chest is open. Truncated at the level's time limit (``max_steps``, or
``ceil(max_steps_per_cell * cells)``).

## Hidden chests
With ``hidden_chests: true`` each level also holds chests drawn like the visible ones that are
absent from the observation and the reward: a probe of whether the policy seeks chests. Visits are
recorded in ``info`` only.

## Info (per ended episode; ``B``-vectors)
``success`` (every openable chest opened), ``chests_opened``, ``openable`` (``min(keys, chests)``),
``keys_picked_up``, ``excess_keys`` (keys picked up beyond ``openable``: beyond any use; the same
as counting each pickup made when the keys held and the chests opened already cover ``openable``),
``first_key_step``, ``first_chest_step`` (-1 if never), ``hidden_chests_visited``,
``episode_length``, ``level``. ("Keys picked up after the last openable chest was opened" is always
0 under these rules: by then either no key is left or every chest is open and the episode over.)

## Batched core
State (``KeysChestsState``) and episode records (``KeysChestsRecords``) are a few ``(B,)`` and
``(B, slots)`` tensors; walls and object positions live in a level bank on the device. The step
(``envs.core.GridCore.step``) moves, applies the rules (``KeysChestsCore._rules``), resets finished
envs from the bank in the same step and builds the next observation, with no Python loop over envs
and no host-device copy. ``set_state`` puts the envs in chosen states (exact planning steps from them).

## Registered configurations
``misgen/KeysChests-v0`` with ``distribution`` one of the presets of ``configs/env/keys_chests.yaml``:
``train``, ``shift_ratio``, ``shift_size``, ``shift_both``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch

from envs.config import KeysChestsConfig, load_keys_chests_config
from envs.core import GridCore, GridState, Transition
from envs.grid import Canvas
from envs.gym_views import CoreEnv, CoreVectorEnv
from envs.keys_chests_levels import NO_OBJECT, KeysChestsLevels, KeysChestsSpec, keys_chests_level_set
from envs.layout import WALL, TensorBatch

CHANNELS = ("wall", "agent", "key", "chest", "inventory")
WALL_CHANNEL, AGENT_CHANNEL, KEY_CHANNEL, CHEST_CHANNEL, INVENTORY_CHANNEL = range(5)
NOT_YET = -1


@functools.lru_cache(maxsize=16)
def _static_symbolic(spec: KeysChestsSpec, device: str) -> torch.Tensor:
    """``(N, 5, S*S)`` uint8 per level: walls and every key and chest in place, no agent."""
    levels = keys_chests_level_set(spec, device)
    canvas = Canvas(spec.canvas)
    obs = torch.zeros((len(levels), len(CHANNELS), spec.canvas**2), dtype=torch.uint8, device=device)
    obs[:, WALL_CHANNEL] = (levels.tiles == WALL).flatten(1)
    rows = torch.arange(len(levels), device=device)[:, None]
    for channel, positions in ((KEY_CHANNEL, levels.keys), (CHEST_CHANNEL, levels.chests)):
        # Missing slots write 0 to canvas tile 0, which no object is ever on.
        present = (positions != NO_OBJECT).to(torch.uint8)
        obs[rows, channel, canvas.to_canvas_flat(positions).clamp(0)] = present
    return obs


@dataclass(frozen=True)
class KeysChestsState(GridState):
    """Keys-and-chests states: level, agent position, which keys and closed chests are left, keys held."""

    key_left: torch.Tensor
    """``(B, max_keys)`` bool: key slot still on the map (missing slots: False)."""
    chest_left: torch.Tensor
    """``(B, max_chests)`` bool: chest slot still closed (missing slots: False)."""
    inventory: torch.Tensor
    """``(B,)`` int64 keys held: keys taken minus chests opened."""

    DTYPES: ClassVar[dict[str, torch.dtype]] = {
        **GridState.DTYPES,
        "key_left": torch.bool,
        "chest_left": torch.bool,
        "inventory": torch.long,
    }


@dataclass
class KeysChestsRecords(TensorBatch):
    """Episode records: counters and first events (``NOT_YET``: none), hidden chests visited."""

    keys_picked: torch.Tensor  # (B,) int64
    chests_opened: torch.Tensor  # (B,) int64
    first_key: torch.Tensor  # (B,) int64
    first_chest: torch.Tensor  # (B,) int64
    hidden_seen: torch.Tensor  # (B, H) bool


class KeysChestsCore(GridCore[KeysChestsState]):
    """A batch of ``num_envs`` keys-and-chests envs of one distribution, stepped together on one device."""

    STATE = KeysChestsState.names()
    """What makes a state (the rest is episode bookkeeping): level, agent position (padded flat), keys
    and chests left ``(B, slots)`` bool, keys held."""

    def __init__(
        self,
        cfg: KeysChestsConfig | None = None,
        distribution: str = "train",
        num_envs: int = 1,
        seed: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(cfg if cfg is not None else load_keys_chests_config(), distribution, num_envs, device)
        self.spec = KeysChestsSpec.of(self.cfg, distribution)
        self.levels: KeysChestsLevels = keys_chests_level_set(self.spec, str(self.device))
        self.channels = CHANNELS
        size = self.canvas.size
        self._records = self._pack_records(self.levels)
        self._bar = torch.arange(size, device=self.device)
        if self.cfg.obs_mode == "symbolic":
            self._static = _static_symbolic(self.spec, str(self.device))
            self.observation_shape: tuple[int, ...] = (len(CHANNELS), size, size)
        else:
            from envs.render import TileRenderer

            self._renderer = TileRenderer(self.cfg.rgb_tile_size, show_end=False)
            t = self.cfg.rgb_tile_size
            self.observation_shape = ((size + 1) * t, size * t, 3)
        self.reset(seed=seed)

    def _pack_records(self, lv: KeysChestsLevels) -> torch.Tensor:
        """One int64 row per level holding all a step reads of it, so a step gathers once:
        key, chest and hidden-chest positions, then start, openable and time limit."""
        k, c, h = lv.keys.shape[1], lv.chests.shape[1], lv.hidden.shape[1]
        self._keys, self._chests, self._hidden = slice(0, k), slice(k, k + c), slice(k + c, k + c + h)
        self._START, self._OPENABLE, self._MAX_STEPS = k + c + h, k + c + h + 1, k + c + h + 2
        extra = torch.stack([lv.start, lv.openable, lv.max_steps], dim=1)
        return torch.cat([lv.keys, lv.chests, lv.hidden, extra], dim=1).contiguous()

    # ----------------------------------------------------------------- rules
    def _start(self, level: torch.Tensor) -> KeysChestsState:
        """A fresh episode: the agent on the start, every key and chest in place, no key held. (The envs
        are on ``level`` from now on: their level records ``rec`` are gathered here, once per step.)"""
        self.rec = rec = self._records.index_select(0, level)
        return KeysChestsState(
            level=level,
            pos=rec[:, self._START],
            key_left=rec[:, self._keys] != NO_OBJECT,
            chest_left=rec[:, self._chests] != NO_OBJECT,
            inventory=torch.zeros(self.num_envs, dtype=torch.long, device=self.device),
        )

    def _new_records(self) -> KeysChestsRecords:
        zeros = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        hidden = self._hidden.stop - self._hidden.start
        return KeysChestsRecords(
            keys_picked=zeros,
            chests_opened=zeros.clone(),
            first_key=torch.full_like(zeros, NOT_YET),
            first_chest=torch.full_like(zeros, NOT_YET),
            hidden_seen=torch.zeros((self.num_envs, hidden), dtype=torch.bool, device=self.device),
        )

    def _rules(self, state: KeysChestsState, pos: torch.Tensor, t: torch.Tensor) -> Transition[KeysChestsState]:
        """Pick up the key under the agent, then open the closed chest under it if a key is held (+1,
        spending the key); the episode ends when every chest is open."""
        rec, seen = self.rec, self.records
        here = pos[:, None]

        # Keys: pick up the one under the agent (missing slots never match a position).
        on_key = (rec[:, self._keys] == here) & state.key_left
        picked = on_key.any(dim=1)
        key_left = state.key_left & ~on_key
        inventory = state.inventory + picked

        # Chests: open the closed one under the agent if a key is held.
        opens = (rec[:, self._chests] == here) & state.chest_left & (inventory > 0)[:, None]
        opened = opens.any(dim=1)
        chest_left = state.chest_left & ~opens
        inventory = inventory - opened.long()

        records = KeysChestsRecords(
            keys_picked=seen.keys_picked + picked,
            chests_opened=seen.chests_opened + opened,
            first_key=torch.where(picked & (seen.first_key < 0), t, seen.first_key),
            first_chest=torch.where(opened & (seen.first_chest < 0), t, seen.first_chest),
            hidden_seen=seen.hidden_seen | (rec[:, self._hidden] == here),
        )
        success, info = self._outcome(records, rec[:, self._OPENABLE])
        return Transition(
            state=KeysChestsState(
                level=state.level, pos=pos, key_left=key_left, chest_left=chest_left, inventory=inventory
            ),
            records=records,
            reward=opened.to(torch.float32),
            penalty=self.cfg.key_penalty * picked if self.cfg.key_penalty else None,
            terminated=~chest_left.any(dim=1),
            success=success,
            info=info,
        )

    def _time_limit(self, level: torch.Tensor) -> torch.Tensor:
        return self.rec[:, self._MAX_STEPS]  # the records of ``level``, gathered by ``_start``

    def _outcome(self, records: KeysChestsRecords, openable: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``success`` (every openable chest opened) and the env's ``info`` entries of the episodes."""
        return records.chests_opened >= openable, {
            "keys_picked_up": records.keys_picked,
            "chests_opened": records.chests_opened,
            "openable": openable,
            "excess_keys": (records.keys_picked - openable).clamp(min=0),
            "first_key_step": records.first_key,
            "first_chest_step": records.first_chest,
            "hidden_chests_visited": records.hidden_seen.sum(dim=1),
        }

    def live_info(self) -> dict[str, torch.Tensor]:
        """The ``info`` of the episodes in progress, as if they ended now."""
        success, info = self._outcome(self.records, self.rec[:, self._OPENABLE])
        return {"success": success, "episode_length": self.t, "level": self.level, **info}

    # ------------------------------------------------------------ state access
    @property
    def key_left(self) -> torch.Tensor:
        """``(B, max_keys)`` bool: keys left now."""
        return self._now.key_left

    @property
    def chest_left(self) -> torch.Tensor:
        """``(B, max_chests)`` bool: closed chests left now."""
        return self._now.chest_left

    @property
    def inventory(self) -> torch.Tensor:
        """``(B,)`` keys held now."""
        return self._now.inventory

    @property
    def keys_picked(self) -> torch.Tensor:
        """``(B,)`` keys picked up in the episode in progress."""
        return self.records.keys_picked

    @property
    def chests_opened(self) -> torch.Tensor:
        """``(B,)`` chests opened in the episode in progress."""
        return self.records.chests_opened

    # ----------------------------------------------------------- observation
    def observe(self, state: KeysChestsState) -> torch.Tensor:
        """Observation of a batch of states."""
        if self.cfg.obs_mode == "rgb":
            return self._renderer.frames(self.tile_ids(*state.values()), self.canvas.size)
        # The live state's level records are at hand; any other state's are gathered.
        rec = self.rec if state is self._now else self._records.index_select(0, state.level)
        n, area = state.level.shape[0], self.canvas.size**2
        obs = self._static.index_select(0, state.level)
        flat = obs.view(-1)
        base = self._batch_offsets(n)[:, None]
        # Taken keys and opened chests leave the map (missing slots write 0 to a tile no object is on).
        keys = base + KEY_CHANNEL * area + self._canvas_index.take(rec[:, self._keys])
        chests = base + CHEST_CHANNEL * area + self._canvas_index.take(rec[:, self._chests])
        flat.index_put_((keys.reshape(-1),), state.key_left.to(torch.uint8).reshape(-1))
        flat.index_put_((chests.reshape(-1),), state.chest_left.to(torch.uint8).reshape(-1))
        flat.index_fill_(0, base[:, 0] + AGENT_CHANNEL * area + self._canvas_index.take(state.pos), 1)
        obs = obs.view(n, len(CHANNELS), self.canvas.size, self.canvas.size)
        obs[:, INVENTORY_CHANNEL, 0, :] = (self._bar < state.inventory[:, None]).to(torch.uint8)
        return obs

    def tile_ids(
        self,
        level: torch.Tensor,
        pos: torch.Tensor,
        key_left: torch.Tensor,
        chest_left: torch.Tensor,
        inventory: torch.Tensor,
        show_hidden: bool = False,
    ) -> torch.Tensor:
        """``(B, (S+1)*S)`` tile ids (``envs.render``): the map with its objects, then a row of held keys."""
        from envs.render import AGENT_BIT, CHEST_BIT, HIDDEN_CHEST_BIT, KEY_BIT

        n, size = level.shape[0], self.canvas.size
        rec = self._records.index_select(0, level)
        ids = torch.zeros((n, (size + 1) * size), dtype=torch.long, device=self.device)
        ids[:, : size * size] = self.levels.tiles.index_select(0, level).flatten(1)
        rows = torch.arange(n, device=self.device)[:, None]
        objects = [(rec[:, self._keys], key_left, KEY_BIT), (rec[:, self._chests], chest_left, CHEST_BIT)]
        if show_hidden:
            hidden = rec[:, self._hidden]
            objects.append((hidden, hidden != NO_OBJECT, HIDDEN_CHEST_BIT))
        for positions, present, bit in objects:
            ids[rows, self._canvas_index.take(positions)] += present.long() * bit
        ids[rows[:, 0], self._canvas_index.take(pos)] += AGENT_BIT
        ids[:, size * size :] += (self._bar < inventory[:, None]).long() * KEY_BIT
        return ids

    def _render_ids(self, index: int, final: bool) -> torch.Tensor:
        return self.tile_ids(*self._shown(index, final).values(), show_hidden=True)

    def render_ansi(self, index: int = 0, final: bool = False) -> str:
        """A text picture of env ``index`` (``k`` key, ``C`` chest, ``h`` hidden chest) and the keys held."""
        from envs.render import ansi

        ids = self._render_ids(index, final)[0, : self.canvas.size**2]
        held = int(self._shown(index, final).inventory[0])
        return ansi(ids.view(self.canvas.size, self.canvas.size).cpu()) + f"keys held: {held}\n"


# ------------------------------------------------------------- gymnasium views
class KeysChestsEnv(CoreEnv):
    """``misgen/KeysChests-v0`` as a single gymnasium env (rules and spec: this module's docstring)."""

    env_name = "keys_chests"


class KeysChestsVectorEnv(CoreVectorEnv):
    """``misgen/KeysChests-v0`` as a gymnasium ``VectorEnv`` over one batched core."""

    env_name = "keys_chests"
