"""The env registry: a new env is its core, config schema, objectives and one registration, and then
every part of the suite serves it (config loading, ``make_core``, the gymnasium views and checker, the
estimator's evaluation). The test env is a corridor: walk right to the goal."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from analysis.estimator import EstimatorSettings
from analysis.metrics import analyse
from analysis.objectives import objectives_of
from analysis.trajectories import Actor, Trajectories, collect_episodes
from envs import EnvSpec, env_spec, gym_id, make_core, register_env, unregister_env
from envs.config import ConfigError, Distribution, GridEnvConfig, load_env_config
from envs.core import GridCore, GridState, Transition
from envs.grid import RIGHT, Canvas
from envs.layout import FLOOR, WALL, TensorBatch

NOT_REACHED = -1


# ------------------------------------------------------------------ the corridor env
@dataclass
class CorridorConfig(GridEnvConfig):
    """A straight corridor of ``2 * size + 1`` tiles; reward 1 at its right end."""

    name: str = "corridor"
    distributions: dict[str, Distribution] = field(default_factory=dict)


@dataclass
class CorridorLevels(TensorBatch):
    tiles: torch.Tensor  # (N, S, S) uint8
    blocked: torch.Tensor  # (N, P) bool
    start: torch.Tensor  # (N,) left end
    goal: torch.Tensor  # (N,) right end
    max_steps: torch.Tensor  # (N,)


@dataclass
class CorridorRecords(TensorBatch):
    first_goal: torch.Tensor  # (B,)


def corridor_levels(cfg: CorridorConfig, distribution: str, device: torch.device) -> CorridorLevels:
    dist, canvas = cfg.distribution(distribution), Canvas(cfg.canvas)
    gen = torch.Generator().manual_seed(cfg.level_seed)
    size = torch.randint(dist.min_size, dist.max_size + 1, (dist.num_levels,), generator=gen)
    x = torch.arange(canvas.size)
    row = canvas.size // 2
    tiles = torch.full((dist.num_levels, canvas.size, canvas.size), WALL, dtype=torch.uint8)
    tiles[:, row] = torch.where(x[None, :] <= 2 * size[:, None], FLOOR, WALL).to(torch.uint8)
    start = canvas.to_padded(torch.full_like(size, row), torch.zeros_like(size))
    goal = canvas.to_padded(torch.full_like(size, row), 2 * size)
    max_steps = torch.full_like(size, cfg.max_steps or 4 * canvas.size)
    levels = CorridorLevels(tiles, canvas.pad(tiles == WALL, value=True), start, goal, max_steps)
    return levels.to(device)


class CorridorCore(GridCore[GridState]):
    """Walk right to the goal: reward 1 and the end of the episode there."""

    channels = ("wall", "agent", "goal")

    def __init__(
        self,
        cfg: CorridorConfig,
        distribution: str = "train",
        num_envs: int = 1,
        seed: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(cfg, distribution, num_envs, device)
        self.levels: CorridorLevels = corridor_levels(self.cfg, distribution, self.device)
        self.observation_shape = (len(self.channels), self.canvas.size, self.canvas.size)
        self.reset(seed=seed)

    def _start(self, level: torch.Tensor) -> GridState:
        return GridState(level=level, pos=self.levels.start.take(level))

    def _new_records(self) -> CorridorRecords:
        return CorridorRecords(torch.full((self.num_envs,), NOT_REACHED, dtype=torch.long, device=self.device))

    def _rules(self, state: GridState, pos: torch.Tensor, t: torch.Tensor) -> Transition[GridState]:
        at_goal = pos == self.levels.goal.take(state.level)
        first = torch.where(at_goal & (self.records.first_goal < 0), t, self.records.first_goal)
        return Transition(
            state=GridState(level=state.level, pos=pos),
            records=CorridorRecords(first),
            reward=at_goal.to(torch.float32),
            terminated=at_goal,
            success=at_goal,
            info={"first_goal_step": first},
        )

    def observe(self, state: GridState) -> torch.Tensor:
        n, area = state.level.shape[0], self.canvas.size**2
        obs = torch.zeros((n, len(self.channels), area), dtype=torch.uint8, device=self.device)
        obs[:, 0] = (self.levels.tiles.index_select(0, state.level) == WALL).flatten(1)
        rows = torch.arange(n, device=self.device)
        obs[rows, 1, self._canvas_index.take(state.pos)] = 1
        obs[rows, 2, self._canvas_index.take(self.levels.goal.take(state.level))] = 1
        return obs.view(n, *self.observation_shape)

    def tile_ids(self, level: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        from envs.render import AGENT_BIT

        ids = self.levels.tiles.index_select(0, level).flatten(1).long()
        ids[torch.arange(level.shape[0], device=self.device), self._canvas_index.take(pos)] += AGENT_BIT
        return ids


class CorridorObjectives:
    """``goal`` (walk to the right end: the base objective) and ``start`` (stay at the left end)."""

    names = ("goal", "start")
    base = "goal"

    def __init__(self, env_cfg: GridEnvConfig, gamma: float = 0.99) -> None:
        self.gamma = gamma
        self.env_metric_names = ("reached_goal",)

    def _q(self, core: CorridorCore, level: torch.Tensor, pos: torch.Tensor, objective: str) -> torch.Tensor:
        """``gamma ** d(s')``: along one row the distance is the difference of padded flat indices."""
        target = (core.levels.goal if objective == "goal" else core.levels.start).take(level)
        n, a = level.shape[0], core.num_actions
        actions = torch.arange(a, device=level.device).repeat(n)
        nxt = core.move(level.repeat_interleave(a), pos.repeat_interleave(a), actions).view(n, a)
        return torch.pow(torch.tensor(self.gamma, dtype=torch.float64), (nxt - target[:, None]).abs().double())

    def q_values(self, traj: Trajectories) -> dict[str, torch.Tensor]:
        s = traj.states
        return {g: self._q(traj.core, s["level"], s["pos"], g) for g in self.names}

    def capability(self, traj: Trajectories, objective: str) -> np.ndarray:
        """1 where the episode ended on the objective's tile."""
        levels = traj.core.levels
        target = (levels.goal if objective == "goal" else levels.start)[: traj.episodes]
        last = torch.stack([traj.next_states["pos"][traj.episode == e][-1] for e in range(traj.episodes)])
        return (last == target).double().numpy()

    def regret(self, traj: Trajectories) -> np.ndarray:
        levels = traj.core.levels
        shortest = (levels.goal - levels.start)[: traj.episodes].double()
        first = traj.outcome["first_goal_step"].double()
        achieved = torch.where(first > 0, self.gamma ** (first - 1), 0.0)
        return (self.gamma ** (shortest - 1) - achieved).numpy()

    def env_metrics(self, traj: Trajectories) -> dict[str, np.ndarray]:
        return {"reached_goal": (traj.outcome["first_goal_step"] > 0).double().numpy()}

    def oracle(self, objective: str, seed: int = 0) -> Actor:
        def act(core: CorridorCore, _obs: torch.Tensor) -> torch.Tensor:
            return self._q(core, core.level, core.pos, objective).argmax(dim=1)

        return act


PRESET = {
    "name": "corridor",
    "device": "cpu",
    "num_levels": 32,
    "distributions": {"train": {"min_size": 2, "max_size": 4, "num_levels": "${...num_levels}"}},
}


def corridor_spec(**changes: object) -> EnvSpec:
    fields_ = {
        "name": "corridor",
        "gym_id": "misgen-test/Corridor-v0",
        "core": CorridorCore,
        "config": CorridorConfig,
        "objectives": CorridorObjectives,
        "preset": PRESET,
        **changes,
    }
    return EnvSpec(**fields_)  # type: ignore[arg-type]


@pytest.fixture
def corridor() -> Iterator[EnvSpec]:
    spec = register_env(corridor_spec())
    try:
        yield spec
    finally:
        unregister_env(spec.name)


# ------------------------------------------------------------------------------ tests
def test_a_registered_env_is_served_by_config_loading_make_core_and_gymnasium(corridor):
    cfg = load_env_config("corridor", {"num_levels": 16})
    assert isinstance(cfg, CorridorConfig) and cfg.distributions["train"].num_levels == 16  # the preset's interpolation
    assert gym_id("corridor") == "misgen-test/Corridor-v0" and env_spec("corridor") is corridor
    core = make_core(cfg, "train", num_envs=4, seed=0)
    assert isinstance(core, CorridorCore)
    for _ in range(2 * 4):
        result = core.step(torch.full((4,), RIGHT))
    assert bool(result.terminated.any())
    env = gym.make("misgen-test/Corridor-v0", render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    venv = gym.make_vec("misgen-test/Corridor-v0", num_envs=3, max_steps=5)
    venv.reset(seed=0)
    *_, truncated, _ = venv.step(np.zeros(3, dtype=np.int64))
    assert venv.unwrapped.core.cfg.max_steps == 5 and not truncated.any()


@pytest.mark.parametrize(("policy", "verdict", "behavioural"), [("goal", "robust", "goal"), ("start", None, "start")])
def test_a_registered_env_is_evaluated_by_the_estimator(corridor, policy, verdict, behavioural):
    cfg = load_env_config("corridor")
    objectives = objectives_of(cfg, gamma=0.9)
    assert isinstance(objectives, CorridorObjectives)
    traj = collect_episodes(objectives.oracle(policy), cfg, "train", episodes=16, seed=0)
    report, est = analyse(traj, objectives, EstimatorSettings())
    assert est.identifiable and report["behavioural_objective"] == behavioural
    assert report["verdict"] == (verdict or "objective_misgeneralisation")
    assert report["capability"] == 1.0


def test_a_preset_may_be_a_yaml_file(tmp_path):
    preset = tmp_path / "corridor.yaml"
    preset.write_text(
        "name: corridor\ndevice: cpu\nmax_steps: 7\ndistributions:\n  train: {min_size: 3, max_size: 3}\n"
    )
    spec = register_env(corridor_spec(preset=preset))
    try:
        cfg = load_env_config("corridor")
        assert cfg.max_steps == 7 and cfg.distributions["train"].min_size == 3
        assert make_core(cfg, num_envs=2).levels.max_steps.tolist() == [7] * 4096
    finally:
        unregister_env(spec.name)


def test_unregistering_removes_the_env_everywhere():
    spec = register_env(corridor_spec())
    unregister_env(spec.name)
    assert spec.gym_id not in gym.registry
    with pytest.raises(ConfigError, match=r"env='corridor' is not one of \['arrow_maze', 'keys_chests'\]"):
        load_env_config("corridor")
    with pytest.raises(ConfigError, match="is not one of"):
        make_core(CorridorConfig(distributions={"train": Distribution()}))


def test_a_duplicate_name_or_gym_id_is_refused(corridor):
    with pytest.raises(ValueError, match="env 'corridor' is already registered"):
        register_env(corridor_spec())
    with pytest.raises(
        ValueError, match="gymnasium id 'misgen/ArrowMaze-v0' is already registered, by env 'arrow_maze'"
    ):
        other = type("Corridor2Config", (CorridorConfig,), {"name": "corridor2"})
        register_env(corridor_spec(name="corridor2", gym_id="misgen/ArrowMaze-v0", config=other))
    with pytest.raises(ValueError, match="has name='corridor'"):
        corridor_spec(name="other")
    assert [s.name for s in envs.registered_envs()] == ["arrow_maze", "keys_chests", "corridor"]


def test_the_builtin_envs_are_one_explicit_list_read_by_every_table():
    from analysis.objectives import OBJECTIVES, ArrowMazeObjectives
    from envs.config import SCHEMAS, ArrowMazeConfig

    assert [s.name for s in envs.BUILTIN_ENVS] == ["arrow_maze", "keys_chests"]
    assert SCHEMAS["arrow_maze"] is ArrowMazeConfig and OBJECTIVES["arrow_maze"] is ArrowMazeObjectives
    assert gym.spec("misgen/KeysChests-v0").entry_point == "envs.keys_chests:KeysChestsEnv"
    with pytest.raises(ConfigError, match=r"env='mazes' is not one of \['arrow_maze', 'keys_chests'\]"):
        env_spec("mazes")
