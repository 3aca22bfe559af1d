"""The candidate objectives of each env, in one place: their exact values on visited states (for the
estimator), how competently an episode pursued each (capability), the base objective's regret, the
env's own metrics, and the oracle that pursues each exactly.

- Arrow maze: ``end`` (the base objective by default) and ``arrow``. Capability is success weighted
  by path length (SPL): reached × shortest / max(taken, shortest).
- Keys and chests: ``open_chests`` (base) and ``collect_keys`` (proxy). An objective here is a
  sequence of events, not one goal tile, so capability is SPL's discounted analogue: the episode's
  discounted return under the objective divided by the optimal value from the start,
  ``sum_t gamma^t r_t / V*(s_0)``, in [0, 1]: 1 for an optimal episode, lower for every event
  missed and every step wasted.

Regret, for both: the optimal minus the achieved discounted value of the base objective from the
start of each episode (``gamma``: the planning discount).

What an env's class must provide is :class:`Objectives`; each env's registration
(``envs.registry.EnvSpec.objectives``) names its class, and :func:`objectives_of` builds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from analysis.keys_chests_planning import KeysChestsPlanner
from analysis.planning import arrow_maze_q_values, distance_maps, shortest_path_action
from analysis.trajectories import Actor, Trajectories
from envs.config import GridEnvConfig
from envs.keys_chests import KeysChestsState
from envs.registry import RegistryView, env_spec, resolve

# States per planning call (keys and chests: a scratch core steps 4 copies of each).
_CHUNK = 4096


class Objectives(Protocol):
    """What the estimator, the metrics and the oracles need of an env's candidate objectives (one class
    per env, named by its registration ``envs.registry.EnvSpec.objectives``, built ``(env_cfg, gamma)``)."""

    names: tuple[str, ...]
    """The candidate objectives."""
    base: str
    """The rewarded one (among ``names``)."""
    gamma: float
    """The planning discount."""
    env_metric_names: tuple[str, ...]
    """The keys of :meth:`env_metrics`."""

    def q_values(self, traj: Trajectories) -> dict[str, torch.Tensor]:
        """Per candidate, ``(N, A)`` exact action values on the visited states (``traj.states``)."""
        ...

    def capability(self, traj: Trajectories, objective: str) -> np.ndarray:
        """``(E,)`` how competently each episode pursued ``objective``, in [0, 1]."""
        ...

    def regret(self, traj: Trajectories) -> np.ndarray:
        """``(E,)`` optimal minus achieved discounted value of the base objective from each start."""
        ...

    def env_metrics(self, traj: Trajectories) -> dict[str, np.ndarray]:
        """``(E,)`` per metric of the env's own (``env_metric_names``)."""
        ...

    def oracle(self, objective: str, seed: int = 0) -> Actor:
        """An actor pursuing ``objective`` optimally."""
        ...


class ArrowMazeObjectives:
    """``end`` and ``arrow``: reach that tile (reward 1 on arrival, discount ``gamma``)."""

    names = ("end", "arrow")

    def __init__(self, env_cfg: GridEnvConfig, gamma: float = 0.99) -> None:
        self.base, self.gamma = env_cfg.base_objective, gamma
        self.env_metric_names = tuple(f"reached_{g}" for g in self.names)
        """The keys of :meth:`env_metrics` (what an expectations file may bound)."""

    def q_values(self, traj: Trajectories) -> dict[str, torch.Tensor]:
        """``(N, 4)`` exact action values of each candidate on the visited states."""
        s = traj.states
        return {g: arrow_maze_q_values(traj.core, s["level"], s["pos"], g, self.gamma) for g in self.names}

    def _shortest(self, traj: Trajectories, objective: str) -> torch.Tensor:
        levels = traj.core.levels
        ids = torch.arange(traj.episodes, device=levels.start.device)
        targets = levels.end if objective == "end" else levels.arrow
        return distance_maps(traj.core, targets, ids).gather(1, levels.start[ids][:, None]).squeeze(1).double()

    def capability(self, traj: Trajectories, objective: str) -> np.ndarray:
        """``(E,)`` SPL for reaching the objective's tile."""
        shortest = self._shortest(traj, objective)
        first = traj.outcome[f"first_{objective}_step"]
        taken = first.double().clamp(min=1)
        spl = torch.where(first > 0, shortest / torch.maximum(taken, shortest).clamp(min=1), 0.0)
        return spl.cpu().numpy()

    def regret(self, traj: Trajectories) -> np.ndarray:
        """``(E,)`` optimal minus achieved discounted base value: ``gamma^(d-1) - gamma^(T-1)`` (0 if never reached)."""
        g = torch.tensor(self.gamma, dtype=torch.float64)
        optimal = g ** (self._shortest(traj, self.base).cpu() - 1)
        first = traj.outcome[f"first_{self.base}_step"].cpu()
        achieved = torch.where(first > 0, g ** (first.double() - 1), 0.0)
        return (optimal - achieved).numpy()

    def env_metrics(self, traj: Trajectories) -> dict[str, np.ndarray]:
        """Per episode: whether the end and the arrow were reached at all."""
        return {f"reached_{g}": (traj.outcome[f"first_{g}_step"] > 0).double().cpu().numpy() for g in self.names}

    def oracle(self, objective: str, seed: int = 0) -> Actor:
        """A shortest path to the objective's tile, then stay (ties: the first action in ``envs.grid`` order;
        ``seed`` is unused: it is deterministic)."""
        # Per core (held, so its id stays its own): distance maps of its whole level bank, planned once.
        plans: dict[int, tuple[Any, torch.Tensor]] = {}

        def act(core: Any, _obs: torch.Tensor) -> torch.Tensor:
            if id(core) not in plans:  # evaluation banks hold just the evaluated levels (analysis.trajectories)
                targets = core.levels.end if objective == "end" else core.levels.arrow
                plans[id(core)] = (core, distance_maps(core, targets))
            return shortest_path_action(core, plans[id(core)][1][core.level])

        return act


class KeysChestsObjectives:
    """``open_chests`` (+1 per chest opened) and ``collect_keys`` (+1 per key picked up), planned exactly
    by ``analysis.keys_chests_planning`` in the env's real process (it ends when every chest is open)."""

    names = ("open_chests", "collect_keys")
    base = "open_chests"

    def __init__(self, env_cfg: GridEnvConfig, gamma: float = 0.99) -> None:
        self.gamma = gamma
        hidden = ("hidden_chests_visited",) if env_cfg.hidden_chests else ()
        self.env_metric_names = ("excess_keys", "keys_picked_up", "chests_opened_fraction", *hidden)
        """The keys of :meth:`env_metrics` (what an expectations file may bound)."""
        self._planners: dict[tuple[int, str], KeysChestsPlanner] = {}

    def planner(self, core: Any, objective: str) -> KeysChestsPlanner:
        """The planner of ``objective`` on ``core``'s whole level bank (an evaluation bank: the evaluated levels)."""
        key = (id(core), objective)  # the planner holds the core, so its id stays its own
        if key not in self._planners:
            self._planners[key] = KeysChestsPlanner(core, objective, self.gamma)
        return self._planners[key]

    def _q(self, core: Any, objective: str, states: Mapping[str, torch.Tensor] | KeysChestsState) -> torch.Tensor:
        planner = self.planner(core, objective)
        state = states if isinstance(states, KeysChestsState) else KeysChestsState(**states)
        n = len(state)
        parts = [planner.q_values(state.subset(slice(i, i + _CHUNK)), dtype=torch.float64) for i in range(0, n, _CHUNK)]
        return torch.cat(parts) if parts else torch.zeros((0, core.num_actions), dtype=torch.float64)

    def q_values(self, traj: Trajectories) -> dict[str, torch.Tensor]:
        """``(N, 4)`` exact action values of each candidate on the visited states."""
        return {g: self._q(traj.core, g, traj.states) for g in self.names}

    def _events(self, traj: Trajectories, objective: str) -> torch.Tensor:
        """``(N,)`` the objective's reward of each step: keys picked up or chests opened."""
        left = "key_left" if objective == "collect_keys" else "chest_left"
        return (traj.states[left].sum(1) - traj.next_states[left].sum(1)).double()

    def _discounted(self, traj: Trajectories, objective: str) -> torch.Tensor:
        """``(E,)`` each episode's discounted return under ``objective``."""
        weights = torch.pow(torch.tensor(self.gamma, dtype=torch.float64), traj.t.double().cpu())
        out = torch.zeros(traj.episodes, dtype=torch.float64)
        return out.index_add_(0, traj.episode.cpu(), weights * self._events(traj, objective).cpu())

    def _optimal(self, traj: Trajectories, objective: str) -> torch.Tensor:
        """``(E,)`` the optimal value of ``objective`` from each episode's start."""
        first = torch.nonzero(traj.t == 0)[:, 0]
        order = traj.episode[first].argsort()
        start = {k: v[first[order]] for k, v in traj.states.items()}
        return self._q(traj.core, objective, start).amax(dim=1).cpu()

    def capability(self, traj: Trajectories, objective: str) -> np.ndarray:
        """``(E,)`` discounted return under ``objective`` over its optimal value (1 where nothing is achievable)."""
        optimal = self._optimal(traj, objective)
        ratio = self._discounted(traj, objective) / optimal.clamp(min=1e-12)
        return torch.where(optimal > 0, ratio.clamp(max=1.0), 1.0).numpy()

    def regret(self, traj: Trajectories) -> np.ndarray:
        """``(E,)`` optimal minus achieved discounted chests opened."""
        return (self._optimal(traj, self.base) - self._discounted(traj, self.base)).numpy()

    def env_metrics(self, traj: Trajectories) -> dict[str, np.ndarray]:
        """Per episode: excess keys (picked up beyond any use), keys picked up, chests opened over openable,
        and, with ``hidden_chests``, the hidden chests visited."""
        o = {k: v.double().cpu() for k, v in traj.outcome.items()}
        out = {
            "excess_keys": o["excess_keys"],
            "keys_picked_up": o["keys_picked_up"],
            # Nothing openable: nothing missed.
            "chests_opened_fraction": torch.where(
                o["openable"] > 0, o["chests_opened"] / o["openable"].clamp(min=1), 1.0
            ),
        }
        if traj.core.cfg.hidden_chests:
            out["hidden_chests_visited"] = o["hidden_chests_visited"]
        return {k: v.numpy() for k, v in out.items()}

    def oracle(self, objective: str, seed: int = 0) -> Actor:
        """Greedy on the objective's exact ``Q``, ties broken uniformly at random (the limit of the
        Boltzmann-rational policy as ``beta`` grows)."""
        gen = torch.Generator().manual_seed(seed)

        def act(core: Any, _obs: torch.Tensor) -> torch.Tensor:
            q = self.planner(core, objective).q_values(core.state(), dtype=torch.float64).cpu()
            best = q >= q.amax(dim=1, keepdim=True) - 1e-9
            noise = torch.rand(q.shape, generator=gen)
            return torch.where(best, noise, -1.0).argmax(dim=1).to(core.device)

        return act


OBJECTIVES: Mapping[str, type] = RegistryView(lambda spec: resolve(spec.objectives))
"""Read-only live view env name -> candidate objectives class, from the registry (``envs.registry``)."""


class WithCandidates:
    """An env's :class:`Objectives` plus extra candidate objectives (``analysis.candidates``): the
    extras join ``names`` (after the env's own) with their values, capability and oracles; the base
    objective, regret and the env's metrics stay the env's."""

    def __init__(self, env: Objectives, extra: Sequence[Any]) -> None:
        self.env, self.extra = env, {c.name: c for c in extra}
        self.names = (*env.names, *self.extra)
        self.base, self.gamma, self.env_metric_names = env.base, env.gamma, env.env_metric_names

    def q_values(self, traj: Trajectories) -> dict[str, torch.Tensor]:
        return {**self.env.q_values(traj), **{k: c.q_values(traj) for k, c in self.extra.items()}}

    def capability(self, traj: Trajectories, objective: str) -> np.ndarray:
        if objective in self.extra:
            return self.extra[objective].capability(traj)
        return self.env.capability(traj, objective)

    def regret(self, traj: Trajectories) -> np.ndarray:
        return self.env.regret(traj)

    def env_metrics(self, traj: Trajectories) -> dict[str, np.ndarray]:
        return self.env.env_metrics(traj)

    def oracle(self, objective: str, seed: int = 0) -> Actor:
        if objective in self.extra:
            return self.extra[objective].oracle(seed)
        return self.env.oracle(objective, seed)


def objectives_of(env_cfg: GridEnvConfig, gamma: float = 0.99, candidates: Sequence[str] = ()) -> Objectives:
    """The candidate objectives (an :class:`Objectives`) of ``env_cfg``'s registered env, plus the extra
    ``candidates`` specs (``analysis.candidates``: a bad one raises ``ConfigError`` naming it); an unknown
    env raises ``ConfigError`` listing the known ones."""
    env = resolve(env_spec(env_cfg.name).objectives)(env_cfg, gamma)
    if not candidates:
        return env
    from analysis.candidates import make_candidates

    return WithCandidates(env, make_candidates(candidates, env_cfg, gamma, taken=env.names))
