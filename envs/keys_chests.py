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
State is a few ``(B,)`` and ``(B, slots)`` tensors; walls and object positions live in a level
bank on the device. ``step`` applies the rules, resets finished envs from the bank in the same
step and builds the next observation, with no Python loop over envs and no host-device copy.

## Registered configurations
``misgen/KeysChests-v0`` with ``distribution`` one of the presets of ``configs/env/keys_chests.yaml``:
``train``, ``shift_ratio``, ``shift_size``, ``shift_both``.
"""

from __future__ import annotations

import functools

import torch

from envs.config import KeysChestsConfig, load_keys_chests_config
from envs.core import GridCore, StepResult
from envs.grid import Canvas
from envs.gym_views import CoreEnv, CoreVectorEnv
from envs.keys_chests_levels import NO_OBJECT, KeysChestsLevels, KeysChestsSpec, keys_chests_level_set
from envs.layout import WALL

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


class KeysChestsCore(GridCore):
    """A batch of ``num_envs`` keys-and-chests envs of one distribution, stepped together on one device."""

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
        self._blocked_flat = self.levels.blocked.reshape(-1)
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

    # ----------------------------------------------------------------- reset
    def reset(self, seed: int | None = None, level_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Start a new episode in every env: levels drawn uniformly, or the given ``level_ids``."""
        level = self._start_levels(seed, level_ids)
        rec = self._records.index_select(0, level)
        no_keys = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        return self.set_state(
            level, rec[:, self._START], rec[:, self._keys] != NO_OBJECT, rec[:, self._chests] != NO_OBJECT, no_keys
        )

    # ----------------------------------------------------------------- state
    STATE = ("level", "pos", "key_left", "chest_left", "inventory")
    """What makes a state (the rest is episode bookkeeping): level, agent position (padded flat), keys
    and chests left ``(B, slots)`` bool, keys held."""

    def state(self) -> dict[str, torch.Tensor]:
        """The states the envs are in now (:attr:`STATE`; views, not copies)."""
        now = (self.level, self.pos, self.key_left, self.chest_left, self.inventory)
        return dict(zip(self.STATE, now, strict=True))

    def final_state(self) -> dict[str, torch.Tensor]:
        """The states the latest step led to, before any reset (:attr:`STATE`)."""
        return dict(zip(self.STATE, self._final, strict=True))

    def set_state(
        self,
        level: torch.Tensor,
        pos: torch.Tensor,
        key_left: torch.Tensor,
        chest_left: torch.Tensor,
        inventory: torch.Tensor,
    ) -> torch.Tensor:
        """Put the ``num_envs`` envs in the given states with a fresh episode clock and counters, for
        planning and probes that step from chosen states; returns their observation. The inventory
        must be what the core would hold: keys taken minus chests opened (unchecked)."""
        b, dev = self.num_envs, self.device
        level = level.to(dev, torch.long)
        if level.shape != (b,):
            raise ValueError(f"set_state: {tuple(level.shape)} levels for {b} envs")
        if bool(((level < 0) | (level >= len(self.levels))).any()):
            raise ValueError(f"set_state: level ids must lie in [0, {len(self.levels)})")
        self.level = level
        self.rec = self._records.index_select(0, level)
        self.pos = pos.to(dev, torch.long)
        self.key_left, self.chest_left = key_left.to(dev, torch.bool), chest_left.to(dev, torch.bool)
        self.inventory = inventory.to(dev, torch.long)
        zeros = torch.zeros(b, dtype=torch.long, device=dev)
        self.t, self.keys_picked, self.chests_opened = zeros, zeros.clone(), zeros.clone()
        self.first_key, self.first_chest = torch.full_like(zeros, NOT_YET), torch.full_like(zeros, NOT_YET)
        self.hidden_seen = torch.zeros((b, self._hidden.stop - self._hidden.start), dtype=torch.bool, device=dev)
        self._final = (self.level, self.pos, self.key_left, self.chest_left, self.inventory)
        return self.observe(*self._final)

    # ------------------------------------------------------------------ step
    def step(self, action: torch.Tensor) -> StepResult:
        """Apply one action per env (int64 in ``[0, 4)``, unchecked: no host sync in the hot path);
        finished envs restart on a fresh level in the same step."""
        level, rec = self.level, self.rec
        moved = self.pos + self.move_offsets.take(action)
        pos = torch.where(self._blocked_flat.take(level * self._num_padded + moved), self.pos, moved)
        t = self.t + 1
        here = pos[:, None]

        # Keys: pick up the one under the agent (missing slots never match a position).
        on_key = (rec[:, self._keys] == here) & self.key_left
        picked = on_key.any(dim=1)
        key_left = self.key_left & ~on_key
        inventory = self.inventory + picked
        openable = rec[:, self._OPENABLE]

        # Chests: open the closed one under the agent if a key is held.
        opens = (rec[:, self._chests] == here) & self.chest_left & (inventory > 0)[:, None]
        opened = opens.any(dim=1)
        chest_left = self.chest_left & ~opens
        inventory = inventory - opened.long()
        chests_opened = self.chests_opened + opened
        hidden_seen = self.hidden_seen | (rec[:, self._hidden] == here)

        first_key = torch.where(picked & (self.first_key < 0), t, self.first_key)
        first_chest = torch.where(opened & (self.first_chest < 0), t, self.first_chest)
        keys_picked = self.keys_picked + picked
        terminated = ~chest_left.any(dim=1)
        truncated = (t >= rec[:, self._MAX_STEPS]) & ~terminated
        done = terminated | truncated
        reward = opened.to(torch.float32)
        if self.cfg.step_penalty:
            reward = reward - self.cfg.step_penalty
        if self.cfg.key_penalty:
            reward = reward - self.cfg.key_penalty * picked

        # Auto-reset finished envs from the level bank, in the same step.
        self._final = (level, pos, key_left, chest_left, inventory)
        new_level = torch.where(done, self._sample_levels(), level)
        fresh = done[:, None]
        self.level = new_level
        self.rec = self._records.index_select(0, new_level)
        self.pos = torch.where(done, self.rec[:, self._START], pos)
        self.t = torch.where(done, 0, t)
        self.inventory = torch.where(done, 0, inventory)
        self.keys_picked = torch.where(done, 0, keys_picked)
        self.chests_opened = torch.where(done, 0, chests_opened)
        self.first_key = torch.where(done, NOT_YET, first_key)
        self.first_chest = torch.where(done, NOT_YET, first_chest)
        self.key_left = torch.where(fresh, self.rec[:, self._keys] != NO_OBJECT, key_left)
        self.chest_left = torch.where(fresh, self.rec[:, self._chests] != NO_OBJECT, chest_left)
        self.hidden_seen = hidden_seen & ~fresh
        return StepResult(
            obs=self.observe(new_level, self.pos, self.key_left, self.chest_left, self.inventory, self.rec),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            info=self._info(t, level, keys_picked, chests_opened, openable, first_key, first_chest, hidden_seen),
        )

    def _info(
        self,
        t: torch.Tensor,
        level: torch.Tensor,
        keys_picked: torch.Tensor,
        chests_opened: torch.Tensor,
        openable: torch.Tensor,
        first_key: torch.Tensor,
        first_chest: torch.Tensor,
        hidden_seen: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        return {
            "success": chests_opened >= openable,
            "episode_length": t,
            "level": level,
            "keys_picked_up": keys_picked,
            "chests_opened": chests_opened,
            "openable": openable,
            "excess_keys": (keys_picked - openable).clamp(min=0),
            "first_key_step": first_key,
            "first_chest_step": first_chest,
            "hidden_chests_visited": hidden_seen.sum(dim=1),
        }

    def live_info(self) -> dict[str, torch.Tensor]:
        """The ``info`` of the episodes in progress, as if they ended now."""
        return self._info(
            self.t,
            self.level,
            self.keys_picked,
            self.chests_opened,
            self.rec[:, self._OPENABLE],
            self.first_key,
            self.first_chest,
            self.hidden_seen,
        )

    # ----------------------------------------------------------- observation
    def observe(
        self,
        level: torch.Tensor,
        pos: torch.Tensor,
        key_left: torch.Tensor,
        chest_left: torch.Tensor,
        inventory: torch.Tensor,
        rec: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Observation of a batch of states (``rec``: the levels' records, when already gathered)."""
        if self.cfg.obs_mode == "rgb":
            return self._renderer.frames(self.tile_ids(level, pos, key_left, chest_left, inventory), self.canvas.size)
        if rec is None:
            rec = self._records.index_select(0, level)
        n, area = level.shape[0], self.canvas.size**2
        obs = self._static.index_select(0, level)
        flat = obs.view(-1)
        base = self._batch_offsets(n)[:, None]
        # Taken keys and opened chests leave the map (missing slots write 0 to a tile no object is on).
        keys = base + KEY_CHANNEL * area + self._canvas_index.take(rec[:, self._keys])
        chests = base + CHEST_CHANNEL * area + self._canvas_index.take(rec[:, self._chests])
        flat.index_put_((keys.reshape(-1),), key_left.to(torch.uint8).reshape(-1))
        flat.index_put_((chests.reshape(-1),), chest_left.to(torch.uint8).reshape(-1))
        flat.index_fill_(0, base[:, 0] + AGENT_CHANNEL * area + self._canvas_index.take(pos), 1)
        obs = obs.view(n, len(CHANNELS), self.canvas.size, self.canvas.size)
        obs[:, INVENTORY_CHANNEL, 0, :] = (self._bar < inventory[:, None]).to(torch.uint8)
        return obs

    def final_obs(self) -> torch.Tensor:
        """Last observation of the episodes of the latest step (before any reset)."""
        return self.observe(*self._final)

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

    def _shown(self, index: int, final: bool) -> tuple[torch.Tensor, ...]:
        state = self._final if final else (self.level, self.pos, self.key_left, self.chest_left, self.inventory)
        return tuple(x[index : index + 1] for x in state)

    def _render_ids(self, index: int, final: bool) -> torch.Tensor:
        return self.tile_ids(*self._shown(index, final), show_hidden=True)

    def render_ansi(self, index: int = 0, final: bool = False) -> str:
        """A text picture of env ``index`` (``k`` key, ``C`` chest, ``h`` hidden chest) and the keys held."""
        from envs.render import ansi

        ids = self._render_ids(index, final)[0, : self.canvas.size**2]
        held = int(self._shown(index, final)[4][0])
        return ansi(ids.view(self.canvas.size, self.canvas.size).cpu()) + f"keys held: {held}\n"


# ------------------------------------------------------------- gymnasium views
class KeysChestsEnv(CoreEnv):
    """``misgen/KeysChests-v0`` as a single gymnasium env (rules and spec: this module's docstring)."""

    core_cls = KeysChestsCore
    load_config = staticmethod(load_keys_chests_config)


class KeysChestsVectorEnv(CoreVectorEnv):
    """``misgen/KeysChests-v0`` as a gymnasium ``VectorEnv`` over one batched core."""

    core_cls = KeysChestsCore
    load_config = staticmethod(load_keys_chests_config)
