"""Exact planning on known keys-and-chests levels: optimal ``Q`` and ``V`` of each candidate objective.

Candidate objectives (``OBJECTIVES``):

- ``open_chests`` (the base objective): +1 per chest opened. The env's ``step_penalty`` and
  ``key_penalty`` are not part of it.
- ``collect_keys`` (the proxy): +1 per key picked up.

Both are planned in the real process: it ends when the env terminates (every chest open), so a
key-collector that opens the last chest while keys remain loses them. Values are discounted by
``gamma`` over an infinite horizon: the time limit (truncation) is ignored. A state with no chest
left is terminal (value 0).

## Method (exact)
One step from each queried state is taken by the env's own batched core (a scratch
``KeysChestsCore`` loaded with the states): ``Q(s, a) = r(s, a) + gamma * V(s')``, with ``r``
counted from the core's state change and ``V(s') = 0`` where the core terminates. So the
one-step rules, including bumping into walls and triggering an object under the agent, are the
env's.

``V(s')`` comes from a plan over *events*, which is value iteration compressed without loss. Between
events (a key picked up, a chest opened) the abstract state ``sigma = (keys left, chests left)``
is constant and only the position changes; the inventory follows from ``sigma`` (keys taken minus
chests opened, as the core starts from an empty inventory). Under ``sigma`` the *event tiles* are
the keys left, and the chests left if a key is held; every other object tile (a taken key, an
opened chest, a closed chest with no key in hand) is floor. A walk triggers the first event tile
it enters, so a walk to event ``o`` may not cross another event tile. Every return is
``sum_i gamma^(t_i - 1) r_i`` over the events of the trajectory and rewards are non-negative, so
an optimal trajectory walks a shortest allowed path from event to event, and

    V_sigma(x) = max(0, max_o gamma^(d_sigma(x, o) - 1) * (r_o + gamma * [not terminal] * V_sigma\\o(o)))

with ``d_sigma(x, o)`` the fewest moves from ``x`` to ``o`` crossing no other event tile of
``sigma``. Distances: one BFS per object on the level with *every* object tile blocked gives the
direct distances between objects (and from any position to each object); ``d_sigma`` is then the
shortest path over objects whose intermediate stops are the non-event objects of ``sigma`` (a
Floyd-Warshall restricted to those), exact because any walk splits at the object tiles it
crosses. Each event removes an object, so the recursion over ``sigma`` is a DAG of depth
``keys + chests`` and that many sweeps solve it exactly. All of it is batched tensor work over
(levels, sigma, objects) with no loop over cells: loops run over BFS layers, objects and sweeps.

The tables have ``2^(max_keys + max_chests)`` abstract states per level (256 for the presets'
largest); more than ``MAX_OBJECTS`` object slots is refused.
"""

from __future__ import annotations

import torch

from envs.grid import bfs_distances
from envs.keys_chests import KeysChestsCore, KeysChestsState
from envs.keys_chests_levels import NO_OBJECT, object_mask

OBJECTIVES = ("open_chests", "collect_keys")
# Most key + chest slots a level may have for exact planning (2^n abstract states per level).
MAX_OBJECTS = 12
# Distance of "no allowed path" (sums of two stay far below int64 overflow).
_INF = 2**40
# Upper bound on int64 entries of the per-chunk (levels, sigma, objects, objects) distance tables.
_CHUNK_ENTRIES = 2**23


class KeysChestsPlanner:
    """Optimal values of one objective on a set of levels of ``core``'s bank, planned once and then
    queried for any number of states: an oracle's every step, the estimator's every visited state.

    ``level_ids``: the levels to plan (default: the whole bank, fine for evaluation banks of a few
    hundred levels; the tables are about ``2^n * n^2`` int64 per level, ``n`` the object slots).
    """

    def __init__(
        self,
        core: KeysChestsCore,
        objective: str = "open_chests",
        gamma: float = 0.99,
        level_ids: torch.Tensor | None = None,
    ) -> None:
        _check_args(core, objective, gamma)
        self.core, self.objective, self.gamma = core, objective, gamma
        dev = core.device
        bank = len(core.levels)
        levels = torch.arange(bank, device=dev) if level_ids is None else torch.unique(level_ids.to(dev, torch.long))
        n = core.levels.keys.shape[1] + core.levels.chests.shape[1]
        per_plan = max(1, _CHUNK_ENTRIES // ((1 << n) * n * n))
        self._plans = [
            _EventPlan(core, levels[i : i + per_plan], objective, gamma) for i in range(0, levels.shape[0], per_plan)
        ]
        # Level id -> (plan, row in it); -1: not planned.
        self._plan_of = torch.full((bank,), -1, dtype=torch.long, device=dev)
        self._row_of = torch.full((bank,), -1, dtype=torch.long, device=dev)
        order = torch.arange(levels.shape[0], device=dev)
        self._plan_of[levels] = order // per_plan
        self._row_of[levels] = order % per_plan

    def q_values(self, *state: KeysChestsState | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(B, 4)`` optimal ``Q(s, a)`` of ``B`` states (as the core stores them: a ``KeysChestsState``,
        e.g. ``core.state()``; its five tensors in field order are accepted too). A state with no chest
        left is terminal: its row is 0."""
        core = self.core
        state = _as_state(state)
        b = state.level.shape[0]
        if b == 0:
            return torch.zeros((0, core.num_actions), dtype=dtype, device=core.device)
        state = state.cast(core.device)  # type: ignore[assignment]
        _check_states(core, state)
        if bool((self._plan_of.index_select(0, state.level) < 0).any()):
            raise ValueError("a queried level is not among the planner's level_ids")

        # One real step per (state, action): the env's rules give reward, termination and next state.
        a = core.num_actions
        nxt, terminated = _step_all_actions(core, state.map(lambda x: x.repeat_interleave(a, dim=0)))
        if self.objective == "open_chests":
            reward = state.chest_left.sum(1).repeat_interleave(a) - nxt.chest_left.sum(1)
        else:
            reward = state.key_left.sum(1).repeat_interleave(a) - nxt.key_left.sum(1)
        after = self._event_values(nxt)
        q = (reward.double() + self.gamma * torch.where(terminated, 0.0, after)).view(b, a)
        return torch.where(state.chest_left.any(dim=1)[:, None], q, 0.0).to(dtype)

    def state_values(self, *state: KeysChestsState | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(B,)`` optimal ``V(s) = max_a Q(s, a)`` (``state`` as :meth:`q_values`)."""
        return self.q_values(*state, dtype=torch.float64).amax(dim=1).to(dtype)

    def _event_values(self, state: KeysChestsState) -> torch.Tensor:
        """``(Q,)`` float64 optimal values of states with no event pending under the agent."""
        sigma = _sigma_index(torch.cat([state.key_left, state.chest_left], dim=1))
        level, pos = state.level, state.pos
        plan_of, row_of = self._plan_of.index_select(0, level), self._row_of.index_select(0, level)
        out = torch.zeros(level.shape[0], dtype=torch.float64, device=level.device)
        for i, plan in enumerate(self._plans):
            rows = torch.nonzero(plan_of == i)[:, 0]
            if rows.numel():
                out[rows] = plan.values(row_of[rows], sigma[rows], pos[rows])
        return out


def q_values(
    core: KeysChestsCore,
    state: KeysChestsState,
    objective: str = "open_chests",
    gamma: float = 0.99,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(B, 4)`` optimal ``Q_objective(s, a)`` of ``B`` states of ``core``'s level bank, planning just
    their levels (many queries on the same levels: plan once with :class:`KeysChestsPlanner`).

    States are given as the core stores them (``KeysChestsState``: ``level``, ``pos`` (padded flat) and
    ``inventory`` ``(B,)``; ``key_left`` ``(B, max_keys)``, ``chest_left`` ``(B, max_chests)`` bool). A
    state with no chest left is terminal: its row is 0. On ``core.device``; computed in float64.
    """
    _check_args(core, objective, gamma)
    if state.level.shape[0] == 0:
        return torch.zeros((0, core.num_actions), dtype=dtype, device=core.device)
    planner = KeysChestsPlanner(core, objective, gamma, level_ids=state.level)
    return planner.q_values(state, dtype=dtype)


def state_values(
    core: KeysChestsCore,
    state: KeysChestsState,
    objective: str = "open_chests",
    gamma: float = 0.99,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(B,)`` optimal ``V_objective(s) = max_a Q(s, a)`` (arguments as :func:`q_values`)."""
    return q_values(core, state, objective, gamma, torch.float64).amax(dim=1).to(dtype)


def core_q_values(
    core: KeysChestsCore, objective: str = "open_chests", gamma: float = 0.99, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(num_envs, 4)`` :func:`q_values` of the states ``core`` is in now."""
    return q_values(core, core.state(), objective=objective, gamma=gamma, dtype=dtype)


# ---------------------------------------------------------------- checks
def _as_state(args: tuple[KeysChestsState | torch.Tensor, ...]) -> KeysChestsState:
    """One ``KeysChestsState``, or its fields as tensors in order (the older positional form)."""
    if len(args) == 1 and isinstance(args[0], KeysChestsState):
        return args[0]
    if len(args) == len(KeysChestsState.names()) and all(isinstance(a, torch.Tensor) for a in args):
        return KeysChestsState(*args)  # type: ignore[arg-type]
    raise TypeError(f"expected a KeysChestsState (or its fields {list(KeysChestsState.names())}), got {len(args)} args")


def _check_args(core: KeysChestsCore, objective: str, gamma: float) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not one of {list(OBJECTIVES)}")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma={gamma} must be in (0, 1]")
    n = core.levels.keys.shape[1] + core.levels.chests.shape[1]
    if n > MAX_OBJECTS:
        raise ValueError(
            f"distribution {core.distribution!r} has {n} key and chest slots (max_keys + max_chests): exact planning "
            f"over 2^{n} abstract states per level is capped at {MAX_OBJECTS} slots"
        )


def _check_states(core: KeysChestsCore, state: KeysChestsState) -> None:
    lv = core.levels
    level, key_left, chest_left, inventory = state.level, state.key_left, state.chest_left, state.inventory
    if bool(((level < 0) | (level >= len(lv))).any()):
        raise ValueError(f"level_ids must lie in [0, {len(lv)})")
    keys, chests = lv.keys.index_select(0, level), lv.chests.index_select(0, level)
    if bool(((keys == NO_OBJECT) & key_left).any() | ((chests == NO_OBJECT) & chest_left).any()):
        raise ValueError("key_left / chest_left mark a missing object slot as present")
    held = (lv.num_keys.index_select(0, level) - key_left.sum(1)) - (
        lv.num_chests.index_select(0, level) - chest_left.sum(1)
    )
    if not torch.equal(held, inventory):
        raise ValueError(
            "inventory must equal keys taken minus chests opened (the core starts every episode with no key); "
            "planning derives it from key_left and chest_left"
        )


# ------------------------------------------------------------- one real step
def _step_all_actions(core: KeysChestsCore, state: KeysChestsState) -> tuple[KeysChestsState, torch.Tensor]:
    """Step a scratch core (same config and distribution, so the same level bank) loaded with the
    states, taking action ``i % 4`` in row ``i``. Returns the next states before any reset and
    ``terminated``."""
    n = state.level.shape[0]
    scratch = KeysChestsCore(core.cfg, core.distribution, num_envs=n, device=core.device)
    scratch.set_state(state)
    result = scratch.step(torch.arange(core.num_actions, device=core.device).repeat(n // core.num_actions))
    return scratch.final_state(), result.terminated


# ------------------------------------------------------------ event planning
def _sigma_index(present: torch.Tensor) -> torch.Tensor:
    """``(Q, n)`` bool objects left (keys then chests) to the abstract-state index (bit ``i``: object ``i``)."""
    weights = 1 << torch.arange(present.shape[1], device=present.device)
    return (present.long() * weights).sum(dim=1)


class _EventPlan:
    """Event-level optimal values on a few levels: for every abstract state ``sigma`` (objects left),
    the value of triggering each event next and the allowed distances between objects."""

    def __init__(self, core: KeysChestsCore, levels: torch.Tensor, objective: str, gamma: float) -> None:
        lv, dev = core.levels, core.device
        self.gamma = gamma
        self.offsets = core.move_offsets
        num_keys = lv.keys.shape[1]
        self.objects = torch.cat([lv.keys.index_select(0, levels), lv.chests.index_select(0, levels)], dim=1)
        u, n = self.objects.shape
        present = self.objects != NO_OBJECT
        num_padded = lv.blocked.shape[1]

        # Direct distances: BFS from each object with every other object tile blocked.
        blocked = lv.blocked.index_select(0, levels)
        tiles = object_mask(self.objects, present, num_padded)
        own = torch.zeros((u, n, num_padded), dtype=torch.bool, device=dev)
        own.scatter_(2, self.objects[:, :, None], True)
        walls = blocked[:, None, :] | (tiles[:, None, :] & ~own)
        self.direct = bfs_distances(walls.reshape(u * n, -1), self.objects.reshape(-1), core.canvas.padded)
        self.direct = self.direct.view(u, n, num_padded)
        between = self._direct_from(torch.arange(u, device=dev)[:, None].expand(u, n), self.objects)  # (U, n, n)

        # Abstract states: which objects are left, the inventory they imply, the events they allow.
        s = 1 << n
        sig = torch.arange(s, device=dev)
        bit = 1 << torch.arange(n, device=dev)
        left = (sig[:, None] & bit) != 0  # (S, n)
        is_key = torch.arange(n, device=dev) < num_keys
        keys_left, chests_left = (left & is_key).sum(1), (left & ~is_key).sum(1)
        taken = lv.num_keys.index_select(0, levels)[:, None] - keys_left
        opened = lv.num_chests.index_select(0, levels)[:, None] - chests_left
        holding = (taken - opened) > 0  # (U, S)
        self.event = left & present[:, None, :] & (is_key | holding[:, :, None])  # (U, S, n)
        self.floor = present[:, None, :] & ~self.event  # object tiles a walk may cross

        # Allowed distances between objects under each sigma: shortest paths stopping only on floor objects.
        dist = between[:, None].expand(u, s, n, n).clone()
        for k in range(n):
            via = dist[:, :, :, k, None] + dist[:, :, None, k, :]
            dist = torch.where(self.floor[:, :, k, None, None], torch.minimum(dist, via), dist)
        self.dist = dist

        # Event values, by sweeps over the DAG of sigma (each event removes an object).
        reward = (is_key if objective == "collect_keys" else ~is_key).double()  # (n,)
        goes_on = (
            (chests_left[:, None] - (~is_key).long()[None, :]) > 0
        ).double()  # (S, n): a chest left after the event
        flip = (sig[:, None] ^ bit[None, :]).expand(u, s, n)
        weight = self._discount(dist, self.event[:, :, None, :])  # (U, S, from, to)
        after = torch.zeros((u, s, n), dtype=torch.float64, device=dev)  # value standing on object j
        for _ in range(n):  # sweep i makes the values of sigma with up to i objects left exact
            self.trigger = reward + gamma * goes_on * after.gather(1, flip)  # (U, S, n)
            after = (weight * self.trigger[:, :, None, :]).amax(dim=3)

    def _direct_from(self, rows: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """``(..., n)`` fewest moves from ``points`` (padded flat, levels ``rows`` of this plan) to each
        object, crossing no object tile; ``_INF`` where none or where the point is the object itself."""
        num_padded = self.direct.shape[2]
        n = self.objects.shape[1]
        nbrs = (points[..., None] + self.offsets).clamp(0, num_padded - 1)  # (..., 4)
        d = self.direct[rows[..., None, None], torch.arange(n, device=points.device)[:, None], nbrs[..., None, :]]
        d = torch.where(d < 0, _INF, d + 1).amin(dim=-1)  # (..., n)
        return torch.where(points[..., None] == self.objects[rows], _INF, d)

    def _discount(self, dist: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``gamma^(d - 1)`` for reachable, allowed events, else 0."""
        ok = allowed & (dist < _INF)
        exponent = torch.where(ok, dist - 1, 0).double()
        return torch.where(ok, torch.full_like(exponent, self.gamma).pow(exponent), 0.0)

    def values(self, rows: torch.Tensor, sigma: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``(Q,)`` value of standing on ``pos`` in abstract state ``sigma`` of level ``rows`` of this plan."""
        direct = self._direct_from(rows, pos)  # (Q, n)
        dist = self.dist[rows, sigma]  # (Q, n, n)
        via = torch.where(self.floor[rows, sigma][:, :, None], direct[:, :, None] + dist, _INF).amin(dim=1)
        best = torch.minimum(direct, via)
        weight = self._discount(best, self.event[rows, sigma])
        return (weight * self.trigger[rows, sigma]).amax(dim=1).clamp(min=0.0)
