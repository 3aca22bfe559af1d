"""Exact planning on keys and chests (analysis.keys_chests_planning): closed forms, brute-force value
iteration over the env's own transitions, Bellman consistency, greedy rollouts in the real core."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from analysis.keys_chests_planning import MAX_OBJECTS, OBJECTIVES, core_q_values, q_values, state_values
from analysis.planning import keys_chests_hoarder_action, keys_chests_planner_action
from envs.grid import bfs_distances
from envs.keys_chests import KeysChestsCore, KeysChestsState
from envs.keys_chests_levels import NO_OBJECT
from tests.conftest import kc_config

DISTRIBUTIONS = ("train", "shift_ratio", "shift_size", "shift_both")
GAMMA = 0.95


def _state(core: KeysChestsCore) -> KeysChestsState:
    return KeysChestsState(core.level, core.pos, core.key_left, core.chest_left, core.inventory).map(torch.clone)


def _random_states(dist: str, n: int, seed: int, layout: str = "room") -> tuple[KeysChestsCore, KeysChestsState]:
    """States met by a random walk from the starts of the first ``n`` levels."""
    core = KeysChestsCore(kc_config(layout=layout), dist, num_envs=n, seed=seed)
    core.reset(level_ids=torch.arange(n))
    gen = torch.Generator().manual_seed(seed)
    steps = torch.randint(0, 40, (n,), generator=gen)
    states = _state(core)
    for t in range(40):
        core.step(torch.randint(0, 4, (n,), generator=gen))
        states = _state(core).where(steps == t, states)
    return core, states


# ------------------------------------------------------------------ closed forms
def test_one_key_levels_match_the_closed_form():
    # A train level with one key: go to the key (closed chests are floor without a key), then to the
    # nearest chest. Rewards come on the step that enters the tile: discount gamma^(moves - 1).
    core = KeysChestsCore(kc_config(), "train", num_envs=256, seed=0)
    core.reset(level_ids=torch.arange(256))
    lv, padded = core.levels, core.canvas.padded
    one = torch.nonzero(lv.num_keys[:256] == 1)[:, 0]
    assert one.numel() > 20
    key = lv.keys[one, 0]
    to_key = bfs_distances(lv.blocked[one], key, padded)
    d_key = to_key.gather(1, lv.start[one, None])[:, 0]
    chests = lv.chests[one]
    d_chest = to_key.gather(1, chests).masked_fill(chests == NO_OBJECT, 10**9).min(dim=1).values
    state = KeysChestsState(one, lv.start[one], core.key_left[one], core.chest_left[one], core.inventory[one])
    v_open = state_values(core, state, objective="open_chests", gamma=GAMMA, dtype=torch.float64)
    v_keys = state_values(core, state, objective="collect_keys", gamma=GAMMA, dtype=torch.float64)
    torch.testing.assert_close(v_open, GAMMA ** (d_key + d_chest - 1).double(), rtol=0, atol=1e-12)
    torch.testing.assert_close(v_keys, GAMMA ** (d_key - 1).double(), rtol=0, atol=1e-12)


def test_one_chest_levels_match_the_closed_form():
    # shift_ratio with one chest: the chest opens on the first visit with a key, so the value is the
    # shortest start -> some key -> chest walk (extra keys on the way change nothing).
    core = KeysChestsCore(kc_config(), "shift_ratio", num_envs=256, seed=0)
    core.reset(level_ids=torch.arange(256))
    lv, padded = core.levels, core.canvas.padded
    one = torch.nonzero(lv.num_chests[:256] == 1)[:, 0]
    assert one.numel() > 20
    to_chest = bfs_distances(lv.blocked[one], lv.chests[one, 0], padded)
    from_start = bfs_distances(lv.blocked[one], lv.start[one], padded)
    keys = lv.keys[one]
    tour = (from_start.gather(1, keys) + to_chest.gather(1, keys)).masked_fill(keys == NO_OBJECT, 10**9)
    state = KeysChestsState(one, lv.start[one], core.key_left[one], core.chest_left[one], core.inventory[one])
    v_open = state_values(core, state, objective="open_chests", gamma=GAMMA, dtype=torch.float64)
    torch.testing.assert_close(v_open, GAMMA ** (tour.min(dim=1).values - 1).double(), rtol=0, atol=1e-12)


# ----------------------------------------------- brute force over the core's own rules
def _brute_force_q(
    core: KeysChestsCore, level: int, objective: str, gamma: float
) -> tuple[KeysChestsState, torch.Tensor]:
    """Every state of one level (walkable position x objects left, with a non-negative inventory
    and a chest left), and its optimal Q by plain value iteration on transitions made by the core."""
    lv = core.levels
    keys, chests = lv.keys[level], lv.chests[level]
    nk, nc = keys.shape[0], chests.shape[0]
    n = nk + nc
    present = torch.cat([keys, chests]) != NO_OBJECT
    sig = torch.arange(1 << n)
    left = ((sig[:, None] >> torch.arange(n)) & 1).bool()
    sig, left = sig[(left & ~present).sum(1) == 0], left[(left & ~present).sum(1) == 0]
    inv = (int(lv.num_keys[level]) - left[:, :nk].sum(1)) - (int(lv.num_chests[level]) - left[:, nk:].sum(1))
    ok = (inv >= 0) & left[:, nk:].any(dim=1)
    sig, left, inv = sig[ok], left[ok], inv[ok]
    cells = torch.nonzero(~lv.blocked[level])[:, 0]
    p, s = cells.shape[0], sig.shape[0]
    states = KeysChestsState(
        torch.full((p * s,), level),
        cells.repeat_interleave(s),
        left[:, :nk].repeat(p, 1),
        left[:, nk:].repeat(p, 1),
        inv.repeat(p),
    )
    # One core step per (state, action).
    m = p * s * 4
    step_core = KeysChestsCore(core.cfg, core.distribution, num_envs=m)
    step_core.set_state(states.map(lambda x: x.repeat_interleave(4, dim=0)))
    r = step_core.step(torch.arange(4).repeat(p * s))
    _, npos, nkeys, nchests, _ = step_core.final_state().values()
    if objective == "open_chests":
        reward = states.chest_left.sum(1).repeat_interleave(4) - nchests.sum(1)
    else:
        reward = states.key_left.sum(1).repeat_interleave(4) - nkeys.sum(1)
    # Dense index of the next state: (position, objects left).
    dense = torch.full((lv.blocked.shape[1], 1 << n), -1)
    sigma = states.key_left.long() @ (1 << torch.arange(nk)) + states.chest_left.long() @ (1 << torch.arange(nk, n))
    dense[states.pos, sigma] = torch.arange(p * s)
    nsig = nkeys.long() @ (1 << torch.arange(nk)) + nchests.long() @ (1 << torch.arange(nk, n))
    nxt = dense[npos, nsig]
    assert bool(((nxt >= 0) | r.terminated).all())
    v = torch.zeros(p * s, dtype=torch.float64)
    for _ in range(3000):
        q = reward.double() + gamma * torch.where(r.terminated, 0.0, v[nxt.clamp(min=0)])
        q = q.view(p * s, 4)
        new = q.amax(dim=1)
        if torch.equal(new, v):
            break
        v = new
    else:
        raise AssertionError("value iteration did not converge")
    return states, q


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize(
    ("dist", "layout"), [("train", "room"), ("shift_ratio", "room"), ("train", "maze"), ("shift_ratio", "maze")]
)
def test_event_planning_equals_value_iteration_over_the_env_transitions(dist, layout, objective):
    core = KeysChestsCore(kc_config(layout=layout), dist, num_envs=1, seed=0)
    lv = core.levels
    # Small levels with the most objects: every abstract state in a few thousand states.
    cost = (~lv.blocked[:32]).sum(1) * 100 - (lv.num_keys[:32] + lv.num_chests[:32])
    for level in cost.argsort()[:4].tolist():
        states, brute = _brute_force_q(core, level, objective, GAMMA)
        planned = q_values(core, states, objective=objective, gamma=GAMMA, dtype=torch.float64)
        torch.testing.assert_close(planned, brute, rtol=0, atol=1e-10)


# ------------------------------------------------------------------- consistency
@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_bellman_optimality_through_the_core(dist, objective):
    core, states = _random_states(dist, 64, seed=5)
    q = q_values(core, states, objective=objective, gamma=GAMMA, dtype=torch.float64)
    for action in range(4):
        core.set_state(states)
        before_keys, before_chests = states.key_left.sum(1), states.chest_left.sum(1)
        r = core.step(torch.full((64,), action))
        nxt = core.final_state()
        reward = (
            before_chests - nxt.chest_left.sum(1) if objective == "open_chests" else before_keys - nxt.key_left.sum(1)
        )
        v_next = state_values(core, nxt, objective=objective, gamma=GAMMA, dtype=torch.float64)
        v_next = torch.where(r.terminated, 0.0, v_next)
        torch.testing.assert_close(q[:, action], reward.double() + GAMMA * v_next, rtol=0, atol=1e-10)
        if objective == "open_chests" and not core.cfg.step_penalty and not core.cfg.key_penalty:
            assert torch.equal(r.reward.double(), reward.double())
    # Terminal states (no chest left) are worth 0.
    states = KeysChestsState(
        states.level,
        states.pos,
        states.key_left,
        torch.zeros_like(states.chest_left),
        states.inventory - states.chest_left.sum(1),
    )
    assert bool((q_values(core, states, objective=objective) == 0).all())


def _greedy_rollout(core: KeysChestsCore, objective: str, gamma: float) -> dict[str, torch.Tensor]:
    """Act greedily on Q in the real core until each env's first episode ends or has nothing left to earn."""
    n = core.num_envs
    ret = torch.zeros(n, dtype=torch.float64)
    keys = torch.zeros(n, dtype=torch.long)
    chests = torch.zeros(n, dtype=torch.long)
    running = torch.ones(n, dtype=torch.bool)
    for t in range(int(core.levels.max_steps.max())):
        q = core_q_values(core, objective, gamma, torch.float64)
        running &= q.amax(dim=1) > 0  # nothing left to earn, whatever the policy
        if not bool(running.any()):
            break
        before_keys, before_chests = core.key_left.sum(1), core.chest_left.sum(1)
        r = core.step(q.argmax(dim=1))
        took = before_keys - core.final_state()["key_left"].sum(1)
        opened = before_chests - core.final_state()["chest_left"].sum(1)
        gain = opened if objective == "open_chests" else took
        ret += torch.where(running, gamma**t * gain.double(), 0.0)
        keys += torch.where(running, took, 0)
        chests += torch.where(running, opened, 0)
        running &= ~r.done
    return {"return": ret, "keys": keys, "chests": chests}


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_greedy_play_in_the_core_earns_the_planned_value(dist, objective):
    core = KeysChestsCore(kc_config(), dist, num_envs=48, seed=7)
    core.reset(level_ids=torch.arange(48))
    v = state_values(core, _state(core), objective=objective, gamma=GAMMA, dtype=torch.float64)
    out = _greedy_rollout(core, objective, GAMMA)
    torch.testing.assert_close(out["return"], v, rtol=0, atol=1e-5)


def _planner_chests(core: KeysChestsCore) -> torch.Tensor:
    n = core.num_envs
    chests = torch.zeros(n, dtype=torch.long)
    running = torch.ones(n, dtype=torch.bool)
    for _ in range(int(core.levels.max_steps.max())):
        r = core.step(keys_chests_planner_action(core))
        chests = torch.where(running, core.chests_opened, chests)
        chests = torch.where(running & r.done, r.info["chests_opened"], chests)
        running &= ~r.done
        if not bool(running.any()):
            break
    return chests


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_greedy_open_chests_opens_as_many_as_the_scripted_planner(dist):
    core = KeysChestsCore(kc_config(), dist, num_envs=48, seed=8)
    core.reset(level_ids=torch.arange(48))
    greedy = _greedy_rollout(core, "open_chests", 0.99)["chests"]
    core.reset(level_ids=torch.arange(48))
    scripted = _planner_chests(core)
    assert bool((greedy >= scripted).all())
    assert torch.equal(greedy, core.levels.openable[:48])


@pytest.mark.parametrize("dist", ["shift_ratio", "shift_both"])
def test_greedy_collect_keys_takes_every_key_when_keys_are_plentiful(dist):
    core = KeysChestsCore(kc_config(), dist, num_envs=64, seed=9)
    core.reset(level_ids=torch.arange(64))
    out = _greedy_rollout(core, "collect_keys", 0.99)
    assert torch.equal(out["keys"], core.levels.num_keys[:64])
    # The hoarder script takes no more.
    core.reset(level_ids=torch.arange(64))
    hoarded = torch.zeros(64, dtype=torch.long)
    running = torch.ones(64, dtype=torch.bool)
    for _ in range(int(core.levels.max_steps.max())):
        r = core.step(keys_chests_hoarder_action(core))
        hoarded = torch.where(running & r.done, r.info["keys_picked_up"], hoarded)
        running &= ~r.done
        if not bool(running.any()):
            break
    assert bool((out["keys"] >= hoarded).all())


# ------------------------------------------------------------------------ errors
def test_bad_arguments_are_refused_with_a_reason():
    core = KeysChestsCore(kc_config(), "train", num_envs=4, seed=0)
    with pytest.raises(ValueError, match="objective"):
        core_q_values(core, "reach_end")
    with pytest.raises(ValueError, match="gamma"):
        core_q_values(core, gamma=1.5)
    state = dataclasses.replace(_state(core), inventory=_state(core).inventory + 1)
    with pytest.raises(ValueError, match="inventory"):
        q_values(core, state)
    empty = _state(core).subset(slice(0, 0))
    assert q_values(core, empty).shape == (0, 4)
    many = {"train": {"min_size": 6, "max_size": 6, "max_keys": 7, "max_chests": 6}}
    big = KeysChestsCore(kc_config(distributions=many), "train", num_envs=2, seed=0)
    assert big.levels.keys.shape[1] + big.levels.chests.shape[1] > MAX_OBJECTS
    with pytest.raises(ValueError, match="capped"):
        core_q_values(big)
