"""Extra candidate objectives for the behavioural-objective estimator, named by spec strings
(``eval.candidates=[...]``), so a hypothesis about what an agent pursues can be tested without
editing the package.

Most such hypotheses are "reach one of these tiles": :class:`TileGoal` plans any goal set exactly
(reward 1 on arrival, discount ``gamma``) from a function that marks the goal tiles of each level.
The built-in specs are goal sets; ``py:<module>:<callable>`` is the hook for one's own, either a
goal-tile function or a full :class:`Candidate` (exact values of any objective).

Specs (:data:`CANDIDATE_FORMS`):

- ``corner:tl``, ``corner:tr``, ``corner:bl``, ``corner:br`` (every env): the one open tile nearest
  that corner of the canvas (the rule: :func:`corner_tiles`).
- ``nearest_key``, ``nearest_chest`` (keys and chests): the key (chest) tiles nearest the level's
  start (:func:`nearest_object_tiles`).
- ``py:<module>:<callable>``: see :func:`make_candidates`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from analysis.planning import next_tiles, shortest_path_action
from analysis.trajectories import Actor, Trajectories
from envs.config import ConfigError, GridEnvConfig, KeysChestsConfig
from envs.grid import bfs_distances
from envs.keys_chests_levels import NO_OBJECT

CORNERS = ("tl", "tr", "bl", "br")
"""Corner names: top-left, top-right, bottom-left, bottom-right (rows count from the top)."""

CANDIDATE_FORMS = (
    "corner:tl|tr|bl|br, nearest_key and nearest_chest (keys_chests only), "
    "py:<module>:<callable> (a goal-tile function core -> (L, P) bool, or a class/factory (env_cfg, gamma) "
    "-> a candidate with name, q_values, capability, oracle)"
)
"""The accepted spec forms, in one line (for error messages and docs)."""

GoalTiles = Callable[[Any], torch.Tensor]
"""``goal_tiles(core) -> (L, P)`` bool: the goal tiles of each level of ``core``'s level bank (padded flat
indices, laid out as ``core.levels.blocked``)."""


class Candidate(Protocol):
    """One extra candidate objective: what the estimator, the metrics and the oracles need of it."""

    name: str
    """As it appears in reports, e.g. ``"corner:tl"``."""

    def q_values(self, traj: Trajectories) -> torch.Tensor:
        """``(N, A)`` float64 exact action values on the visited states (``traj.states``)."""
        ...

    def capability(self, traj: Trajectories) -> np.ndarray:
        """``(E,)`` how competently each episode pursued it, in [0, 1]."""
        ...

    def oracle(self, seed: int = 0) -> Actor:
        """An actor pursuing it optimally."""
        ...


def _error(spec: str, why: str) -> ConfigError:
    return ConfigError(f"eval.candidates: {spec!r} {why}; accepted forms: {CANDIDATE_FORMS}")


# ------------------------------------------------------------------------------ goal sets
class TileGoal:
    """The objective "reach any tile of a goal set" (reward 1 on arrival, discount ``gamma``).

    Values are exact, as ``analysis.planning.arrow_maze_q_values`` computes them for one tile:
    ``Q(s, a) = gamma ** d(s')``, ``s'`` where ``a`` leads (``core.move``) and ``d`` the move distance on
    the level's static walls to the nearest goal tile (0 where the goal is unreachable). Static walls
    are the whole story in both envs: keys and chests never block movement. Goal tiles on blocked tiles
    are ignored.
    """

    def __init__(self, name: str, goal_tiles: GoalTiles, gamma: float = 0.99) -> None:
        self.name, self.goal_tiles, self.gamma = name, goal_tiles, gamma
        # Per core (held, so its id stays its own): its bank's goal mask and distance maps, planned once.
        self._plans: dict[int, tuple[Any, torch.Tensor, torch.Tensor]] = {}

    def plan(self, core: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, P)`` bool goal tiles and ``(L, P)`` int64 distances to the nearest one (-1: unreachable)
        on ``core``'s whole level bank; the goal mask is checked here, at its first use."""
        if id(core) not in self._plans:
            blocked = core.levels.blocked
            mask = self.goal_tiles(core)
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != blocked.shape:
                got = f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else mask
                raise ConfigError(
                    f"eval.candidates: {self.name!r}: its goal-tile function must return a bool tensor of shape "
                    f"{tuple(blocked.shape)} (levels, padded tiles, as core.levels.blocked), got {got!r}"
                )
            mask = mask.to(blocked.device)
            self._plans[id(core)] = (core, mask, bfs_distances(blocked, mask, core.canvas.padded))
        _, mask, dist = self._plans[id(core)]
        return mask, dist

    def q_values(self, traj: Trajectories) -> torch.Tensor:
        """``(N, A)`` float64 ``gamma ** d(s')`` on the visited states (0 where no goal is reachable)."""
        core = traj.core
        _, dist = self.plan(core)
        level, pos = traj.states["level"], traj.states["pos"]
        d = dist[level[:, None], next_tiles(core, level, pos)]
        gamma = torch.tensor(self.gamma, dtype=torch.float64, device=level.device)
        return torch.where(d >= 0, torch.pow(gamma, d.clamp(min=0).double()), 0.0)

    def capability(self, traj: Trajectories) -> np.ndarray:
        """``(E,)`` SPL: reached × shortest / max(taken, shortest), ``taken`` the 1-based step at which the
        agent first stands on a goal tile and ``shortest`` the distance from the episode's start. An episode
        starting on a goal tile scores 1, and so does one whose goal is unreachable (nothing to achieve)."""
        mask, dist = self.plan(traj.core)
        e = traj.episodes
        device = traj.episode.device
        first = torch.nonzero(traj.t == 0)[:, 0]
        start_level = torch.zeros(e, dtype=torch.long, device=device)
        start_pos = torch.zeros(e, dtype=torch.long, device=device)
        start_level[traj.episode[first]] = traj.states["level"][first]
        start_pos[traj.episode[first]] = traj.states["pos"][first]
        shortest = dist[start_level, start_pos].double()

        arrived = mask[traj.states["level"], traj.next_states["pos"]]
        never = torch.iinfo(torch.long).max
        step = torch.where(arrived, traj.t + 1, never)
        taken = torch.full((e,), never, dtype=torch.long, device=device)
        taken = taken.scatter_reduce(0, traj.episode, step, reduce="amin")
        reached = taken < never

        spl = torch.where(reached, shortest / torch.maximum(taken.double(), shortest).clamp(min=1), 0.0)
        return torch.where(shortest <= 0, 1.0, spl).clamp(0.0, 1.0).cpu().numpy()

    def oracle(self, seed: int = 0) -> Actor:
        """A shortest path to the nearest goal tile, then stay (``analysis.planning.shortest_path_action``:
        ties go to the first action in ``envs.grid`` order; ``seed`` is unused, it is deterministic)."""

        def act(core: Any, _obs: torch.Tensor) -> torch.Tensor:
            _, dist = self.plan(core)
            return shortest_path_action(core, dist[core.level])

        return act


def _canvas_yx(core: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P,)`` canvas row and column of every padded flat index (the border: -1 or ``size``)."""
    pad = torch.arange(core.canvas.num_padded, device=core.levels.blocked.device)
    return core.canvas.to_yx(pad)


def corner_tiles(corner: str) -> GoalTiles:
    """The goal-tile function of ``corner:<corner>``: per level, the single open tile nearest that
    corner of the canvas.

    The rule, exactly: on the ``S x S`` canvas (the observation's grid; row ``y`` from the top, column
    ``x`` from the left), the corner is ``tl = (0, 0)``, ``tr = (0, S-1)``, ``bl = (S-1, 0)``,
    ``br = (S-1, S-1)``. Among the level's open tiles (walkable: not in ``core.levels.blocked``), take the
    one with the smallest Manhattan distance ``|y - cy| + |x - cx|`` to the corner; ties go to the
    smallest row distance ``|y - cy|`` (then the column distance, which the two already fix). For ``tl``:
    the smallest ``y + x``, then the smallest ``y``. In an observation the open tiles are the tiles that
    are not walls inside the bounding box of the wall tiles (a canvas tile outside a smaller layout shows
    as empty but is impassable); measured from the corner of that box instead of the canvas the rule
    picks the same tile.
    """
    if corner not in CORNERS:
        raise ValueError(f"corner {corner!r} is not one of {list(CORNERS)}")

    def goal_tiles(core: Any) -> torch.Tensor:
        blocked = core.levels.blocked
        size = core.canvas.size
        y, x = _canvas_yx(core)
        dy = y if corner[0] == "t" else size - 1 - y
        dx = x if corner[1] == "l" else size - 1 - x
        # Lexicographic (Manhattan distance, row distance) as one integer key; the border is blocked.
        key = ((dy + dx) * (2 * size + 2) + dy)[None, :].expand_as(blocked)
        key = torch.where(blocked, torch.iinfo(torch.long).max, key)
        mask = torch.zeros_like(blocked)
        mask[torch.arange(len(blocked), device=blocked.device), key.argmin(dim=1)] = True
        return mask & ~blocked

    return goal_tiles


def nearest_object_tiles(kind: str) -> GoalTiles:
    """The goal-tile function of ``nearest_key`` / ``nearest_chest`` (keys and chests): per level, the key
    (visible chest) tiles at the smallest move distance from the level's start, every tied one; none on
    a level without such objects."""
    if kind not in ("keys", "chests"):
        raise ValueError(f"object kind {kind!r} is not one of ['keys', 'chests']")

    def goal_tiles(core: Any) -> torch.Tensor:
        lv = core.levels
        positions = getattr(lv, kind)  # (L, K) padded flat, NO_OBJECT in missing slots
        present = positions != NO_OBJECT
        from_start = bfs_distances(lv.blocked, lv.start, core.canvas.padded)
        d = from_start.gather(1, positions)
        far = torch.iinfo(torch.long).max
        d = torch.where(present & (d >= 0), d, far)
        nearest = present & (d == d.amin(dim=1, keepdim=True)) & (d < far)
        mask = torch.zeros_like(lv.blocked)
        rows = torch.arange(len(positions), device=positions.device)[:, None].expand_as(positions)
        mask[rows[nearest], positions[nearest]] = True
        return mask

    return goal_tiles


# ------------------------------------------------------------------------------ py: hooks
class _External:
    """A user's candidate object under its report name, with an oracle that says it has none if so."""

    def __init__(self, name: str, inner: Any) -> None:
        self.name, self.inner = name, inner

    def q_values(self, traj: Trajectories) -> torch.Tensor:
        return self.inner.q_values(traj)

    def capability(self, traj: Trajectories) -> np.ndarray:
        return self.inner.capability(traj)

    def oracle(self, seed: int = 0) -> Actor:
        if not callable(getattr(self.inner, "oracle", None)):
            raise ConfigError(f"eval.candidates: {self.name!r} ({type(self.inner).__name__}) has no oracle(seed)")
        return self.inner.oracle(seed)


def _takes_two(fn: Any) -> bool:
    """Whether ``fn`` accepts two positional arguments (a factory ``(env_cfg, gamma)``)."""
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): take it for a goal-tile function
        return False
    return True


def _from_hook(spec: str, env_cfg: GridEnvConfig, gamma: float) -> Candidate:
    """``py:<module>:<callable>`` -> the candidate it names (see :func:`make_candidates`)."""
    parts = spec.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise _error(spec, "is not of the form py:<module>:<callable>")
    _, module_name, attr = parts
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise _error(spec, f"cannot be imported: module {module_name!r}: {type(err).__name__}: {err}") from err
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise _error(spec, f"cannot be imported: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise _error(spec, f"names {type(target).__name__} {attr!r}, which is not callable")
    if not (inspect.isclass(target) or _takes_two(target)):
        return TileGoal(spec, target, gamma)
    made = target(env_cfg, gamma)
    missing = [m for m in ("q_values", "capability") if not callable(getattr(made, m, None))]
    if missing:
        raise _error(
            spec,
            f"was built as a candidate, {attr}(env_cfg, gamma) (a class, or a callable taking two arguments), "
            f"but its result {type(made).__name__} has no {' or '.join(missing)}; a goal-tile function takes "
            "exactly one argument, the core",
        )
    name = getattr(made, "name", spec)
    if not isinstance(name, str) or not name:
        raise _error(spec, f"built a candidate whose name {name!r} is not a non-empty string")
    if getattr(made, "name", None) == name and callable(getattr(made, "oracle", None)):
        return made
    return _External(name, made)


# ------------------------------------------------------------------------------ specs
def _one(spec: str, env_cfg: GridEnvConfig, gamma: float) -> Candidate:
    keys_chests = isinstance(env_cfg, KeysChestsConfig)
    if spec.startswith("corner:"):
        corner = spec.removeprefix("corner:")
        if corner not in CORNERS:
            raise _error(spec, f"names corner {corner!r}, not one of {list(CORNERS)}")
        return TileGoal(spec, corner_tiles(corner), gamma)
    if spec in ("nearest_key", "nearest_chest"):
        if not keys_chests:
            raise _error(spec, f"needs keys and chests, but the env is {env_cfg.name!r}")
        return TileGoal(spec, nearest_object_tiles("keys" if spec == "nearest_key" else "chests"), gamma)
    if spec.startswith("py:"):
        return _from_hook(spec, env_cfg, gamma)
    raise _error(spec, "is not a known candidate form")


def make_candidates(
    specs: Sequence[str], env_cfg: GridEnvConfig, gamma: float = 0.99, taken: Sequence[str] = ()
) -> list[Candidate]:
    """The candidates of ``specs`` (``eval.candidates``) for ``env_cfg``'s env, in order.

    ``py:<module>:<callable>`` imports ``<module>`` and takes its attribute ``<callable>`` (dots reach
    nested attributes). A class, or any other callable that accepts two positional arguments, is built
    ``(env_cfg, gamma)`` and must give a full :class:`Candidate` (``q_values`` and ``capability``; its
    ``name`` attribute names it, else the spec; ``oracle`` is needed only to run it as a policy).
    Otherwise it is a goal-tile function ``f(core) -> (L, P)`` bool (checked at first use), planned
    as :class:`TileGoal` under the spec's name.

    Raises ``ConfigError`` naming ``eval.candidates`` and the entry, with :data:`CANDIDATE_FORMS`, on an
    unknown form, a bad corner, ``nearest_key``/``nearest_chest`` off keys and chests, a hook that cannot
    be imported or built, a duplicate, or a name in ``taken`` (the env's own candidates).
    """
    out: list[Candidate] = []
    names = set()
    for raw in specs:
        if not isinstance(raw, str):
            raise _error(str(raw), f"is a {type(raw).__name__}, not a spec string")
        spec = raw.strip()
        if spec in taken:
            raise _error(spec, f"is already one of the env's candidates {list(taken)}")
        if spec in names:
            raise _error(spec, "is listed twice")
        candidate = _one(spec, env_cfg, gamma)
        if candidate.name in taken:
            raise _error(spec, f"names its candidate {candidate.name!r}, already one of the env's {list(taken)}")
        if candidate.name == "random" or "=" in candidate.name:  # the estimator's chance and group names
            raise _error(spec, f"names its candidate {candidate.name!r}: 'random' and names with '=' are reserved")
        if candidate.name in names:
            raise _error(spec, f"names its candidate {candidate.name!r}, as an earlier entry does")
        names |= {spec, candidate.name}
        out.append(candidate)
    return out
