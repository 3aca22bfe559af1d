"""Training entry point: PPO on the batched core, with evaluation on every distribution.

``python -m experiments.train [env=keys_chests] [agent.lr=3e-4] [seed=1] [resume=<run dir>]`` (Hydra;
``-m seed=0,1,2`` sweeps, one run dir per job). Writes into the run dir: ``metrics.jsonl`` (one line
per update and per evaluation: the source of truth of the run), ``checkpoint.pt`` (atomic; weights
only) and, with ``logger.video_every_eval``, one GIF per distribution per evaluation in ``videos/``.
The run logger (``logger=wandb|none``, ``experiments/logger.py``) mirrors the metrics file. Both
backends (``agent.backend=misgen|sb3``) go through the same run.

``population=K`` trains K independent agents (seeds ``seed .. seed+K-1``) in this one process, each a run
of its own in ``<run dir>/seed_<s>/`` with the files above (docs/training.md, "Populations").

Reliability (docs/reliability.md): a run holds its dir exclusively (``experiments/run_dir.py``); Ctrl-C,
SIGTERM (preemption, ``scancel``) and SIGUSR2 / SIGUSR1 (submitit) stop it after the current iteration with a
checkpoint (``experiments/stop.py``); ``resume=`` continues a run in its own dir (and its wandb run),
refusing a changed agent, env or seed by name; a run started in a dir that already holds a checkpoint
continues it (``auto_resume``: a requeued SLURM job). A bad config exits with status 2 naming the key,
before anything is written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from agents.checkpoint import FILENAME as CHECKPOINT_FILE
from agents.checkpoint import (
    MEMBER_PREFIX,
    TRAINING_FIELDS,
    CheckpointError,
    config_changes,
    find_checkpoint,
    load_checkpoint,
    member_dirs,
    require,
    save_checkpoints,
)
from agents.checkpoint import SB3_MODEL_FILENAME as SB3_MODEL_FILE
from agents.episodes import evaluate_members, record_frames
from agents.networks import NetworkConfig
from agents.policy import Policy
from agents.ppo import PPO, PPOConfig, device_memory, load_ppo_config
from envs import make_core
from envs.atomic import remove_stale_temps
from envs.config import (
    ConfigError,
    GridEnvConfig,
    check_at_least,
    check_choice,
    config_to_dict,
    load_env_config,
    load_structured,
)
from envs.devices import resolve_device
from envs.render import save_episode
from experiments import metrics_file
from experiments.logger import LoggerConfig, RunLogger, load_logger_config, make_logger
from experiments.metrics_file import MetricsFileError
from experiments.run_dir import (
    RunDirLocked,
    discard_if_unused,
    is_unused,
    lock_run_dir,
    move_log_files,
    write_hydra_files,
)
from experiments.stop import StopRequested, StopSignals

log = logging.getLogger(__name__)

PROGRESS = ("auto", "bar", "log")
VIDEO_TILE_SIZE = 8  # pixels per tile in episode GIFs: a 25-tile canvas gives 200x200 frames


class Progress:
    """Training progress for people: a tqdm bar over env steps (with the latest training success
    and the last evaluation) when ``mode`` is ``bar``, or ``auto`` on a terminal; otherwise a log line
    every ``log_every`` updates (a SLURM log needs no line per update) and one per evaluation."""

    def __init__(self, mode: str, total: int, initial: int, log_every: int = 1) -> None:
        self._bar = None
        self._log_every = log_every
        self._stack = contextlib.ExitStack()
        self._eval = ""
        if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(
                total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True, file=sys.stderr
            )
            self._stack.enter_context(self._bar)
            self._stack.enter_context(logging_redirect_tqdm())  # log lines print above the bar

    def update(self, stats: Mapping[str, float], updates: int) -> None:
        """After a training iteration."""
        if self._bar is None:
            if updates % self._log_every:
                return
            log.info(
                "update %d  steps %d  success %.3f  %.0f steps/s",
                updates,
                stats["env_steps"],
                stats["success_rate"],
                stats["steps_per_s"],
            )
            return
        log.debug("update %d  steps %d", updates, stats["env_steps"])
        self._bar.update(int(stats["env_steps"]) - self._bar.n)
        self._bar.set_postfix_str(f"success {stats['success_rate']:.2f}{self._eval}", refresh=False)

    def evaluated(self, record: Mapping[str, Any]) -> None:
        """After an evaluation on every distribution."""
        success = {k.split("/")[1]: v for k, v in record.items() if k.startswith("eval/") and k.endswith("/success")}
        log.info("eval %s", " ".join(f"{k}={v:.3f}" for k, v in record.items() if k.endswith("success")))
        self._eval = "  eval " + " ".join(f"{name} {v:.2f}" for name, v in success.items())

    def close(self) -> None:
        self._stack.close()


@dataclass
class TrainRunConfig:
    """The run-level keys of ``configs/train.yaml`` (the env, agent and logger have schemas of their own)."""

    seed: int = 0
    """Seed of the agent, its action sampling and the level draws (the level sets themselves: env.level_seed)."""
    population: int = 1
    """Agents trained together in this process, seeds ``seed .. seed+population-1``, each independent and
    each a run of its own in ``<run dir>/seed_<s>/`` (1: a single run in the run dir itself)."""
    total_env_steps: int = 25_000_000
    """Env steps to train each agent for, over its envs."""
    eval_every: int = 25
    """Updates between evaluations on every distribution (0: only at the end)."""
    eval_episodes: int = 256
    """Episodes per distribution at each evaluation (one per level, levels 0..N-1)."""
    checkpoint_every: int = 50
    """Updates between checkpoints (one is always written at the end and on a stop signal)."""
    keep_checkpoint_every: int = 0
    """Updates between checkpoints also kept as ``checkpoints/checkpoint_<env steps>.pt`` beside
    ``checkpoint.pt`` (plus one before the first update and one at the end); 0: none kept. What an
    analysis across training reads (when is a proxy adopted?)."""
    resume: str | None = None
    """A run dir or checkpoint file to continue, in its own dir."""
    auto_resume: bool = True
    """A run dir that already holds a checkpoint continues from it (a requeued SLURM job)."""
    progress: str = "auto"
    """``auto``: a progress bar when stderr is a terminal, log lines otherwise; ``bar``; ``log``."""
    log_every: int = 10
    """Without a progress bar: updates between log lines (evaluations are always logged)."""
    threads: int | None = None
    """Torch CPU threads of this process (null: torch's default, one per core); jobs run side by side want 1."""

    def validate(self) -> TrainRunConfig:
        check_at_least("total_env_steps", self.total_env_steps, 1)
        check_at_least("population", self.population, 1)
        check_at_least("eval_episodes", self.eval_episodes, 1)
        check_at_least("eval_every", self.eval_every, 0)
        check_at_least("checkpoint_every", self.checkpoint_every, 0)
        check_at_least("keep_checkpoint_every", self.keep_checkpoint_every, 0)
        check_choice("progress", self.progress, PROGRESS)
        check_at_least("log_every", self.log_every, 1)
        if self.threads is not None:
            check_at_least("threads", self.threads, 1)
        return self


# Keys a resumed run may change: how it is kept and reported, not what it trains.
RESUME_MAY_CHANGE = ("total_env_steps", "eval_every", "eval_episodes", "checkpoint_every", "keep_checkpoint_every")
RESUME_MAY_CHANGE += ("resume", "auto_resume")
RESUME_MAY_CHANGE += ("progress", "log_every", "threads", "logger", "env.device")


def _state(ppo: PPO, member: int, env_cfg: GridEnvConfig, run_cfg: dict[str, Any], run: Run) -> dict[str, Any]:
    """Member ``member``'s checkpoint: a single run's, plus (in a population) which member it is."""
    extra = {"member": {"index": member, "seed": ppo.seeds[member]}} if ppo.population > 1 else {}
    return {
        **extra,
        "env_name": env_cfg.name,
        "env_config": config_to_dict(env_cfg),
        "run_config": run_cfg,
        "versions": {"torch": str(torch.__version__), "python": sys.version.split()[0]},
        "wandb_run_id": run.wandb_run_id,
        "wandb_group": run.wandb_group,
        **ppo.state_dict(member),
    }


class Run:
    """What a training run reports to, whichever backend trains: ``metrics.jsonl``, the run logger,
    the progress display, and evaluations on every distribution (with videos when configured). A
    population has one per member (its ``seed_<s>/`` dir), sharing one progress display."""

    def __init__(
        self,
        cfg: DictConfig,
        env_cfg: GridEnvConfig,
        run_dir: Path,
        logger: RunLogger,
        video: bool,
        env_steps: int,
        previous: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ):
        self.cfg, self.env_cfg, self.run_dir, self.logger, self.video = cfg, env_cfg, run_dir, logger, video
        previous = previous or {}
        # The wandb run this run belongs to: a resume with logger=none keeps it, so a later one continues it.
        self.wandb_run_id = logger.run_id or previous.get("wandb_run_id")
        self.wandb_group = logger.group or previous.get("wandb_group")
        self.metrics = run_dir / metrics_file.FILENAME
        self.progress = progress or Progress(cfg.progress, cfg.total_env_steps, env_steps, cfg.log_every)

    def report(self, record: dict[str, Any], env_steps: int) -> None:
        metrics_file.append(self.metrics, record)
        self.logger.log(record, step=env_steps)

    def evaluated_at(self, env_steps: int) -> bool:
        """Whether ``metrics.jsonl`` already holds an evaluation at ``env_steps``."""
        rows, _ = metrics_file.read(self.metrics)
        return any(r.get("env_steps") == env_steps and any(k.startswith("eval/") for k in r) for r in rows)

    def iteration(self, stats: dict[str, float]) -> bool:
        """Report one training iteration; returns whether an evaluation is due."""
        self.report(stats, int(stats["env_steps"]))
        self.progress.update(stats, int(stats["updates"]))
        return self.eval_due(int(stats["updates"]))

    def eval_due(self, updates: int) -> bool:
        return bool(self.cfg.eval_every and updates % self.cfg.eval_every == 0)

    def evaluate_all(self, policy: Policy, env_steps: int, updates: int) -> None:
        evaluate_runs([self], policy, env_steps, updates)


def evaluate_runs(runs: list[Run], policy: Policy, env_steps: int, updates: int) -> None:
    """Evaluate every member of ``policy`` (one per run, in order: a population's members play batched)
    on every distribution, each with its own seed's levels and sampler, as a single run of it would."""
    first = runs[0]
    cfg, env_cfg = first.cfg, first.env_cfg
    records: list[dict[str, Any]] = [{"env_steps": env_steps, "updates": updates} for _ in runs]
    for name in env_cfg.distributions:
        results = evaluate_members(policy, env_cfg, name, cfg.eval_episodes, cfg.seed + 1)
        for record, result in zip(records, results, strict=True):
            for k, v in result.items():
                record[f"eval/{name}/{k}"] = v
    for run, record in zip(runs, records, strict=True):
        run.report(record, env_steps)
    first.progress.evaluated(mean_record(records))
    if first.video:
        clips = {
            name: record_frames(policy, env_cfg, name, cfg.seed + 1, VIDEO_TILE_SIZE) for name in env_cfg.distributions
        }
        for m, run in enumerate(runs):
            videos = {
                name: save_episode(frames[m], run.run_dir / "videos" / f"{name}_{env_steps}.gif")
                for name, frames in clips.items()
            }
            run.logger.log_videos(videos, step=env_steps)


def mean_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The members' records averaged key by key (what the population's progress display shows);
    ``steps_per_s`` is summed: the population's aggregate."""
    if len(records) == 1:
        return records[0]
    out: dict[str, Any] = {}
    for key in records[0]:
        values = [r[key] for r in records]
        out[key] = sum(values) if key == "steps_per_s" else sum(values) / len(values)
    return out


BACKENDS = ("misgen", "sb3")


def usage_error(message: str) -> NoReturn:
    """A bad config or command line: one line on stderr, exit status 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    unused = is_unused(hydra_dir)  # Hydra made it for this run (output_subdir: null): removed if the start fails
    try:
        if cfg.resume:
            cfg = config_of_run(cfg, list(hydra.core.hydra_config.HydraConfig.get().overrides.task))
        env_cfg, agent_cfg, backend, logger_cfg = load_configs(cfg)
        run_dir = Path(cfg.resume) if cfg.resume else hydra_dir
        run_dir = run_dir.parent if run_dir.is_file() else run_dir
        if cfg.resume and not run_dir.is_dir():
            raise ConfigError(f"resume={cfg.resume}: no such run dir or checkpoint")
        check_sized_for_device(cfg, env_cfg, agent_cfg)
    except (ConfigError, CheckpointError, FileNotFoundError) as err:
        discard_if_unused(hydra_dir, unused)
        usage_error(str(err))
    if run_dir != hydra_dir:  # resuming a run elsewhere: it keeps its one dir, log included
        move_log_files(hydra_dir, run_dir)
        discard_if_unused(hydra_dir, unused)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fresh = unused and run_dir == hydra_dir
    phase = {"training": False}  # set by _start once training begins: what fails after that is not a bad start
    try:
        with lock_run_dir(run_dir):
            _start(cfg, env_cfg, agent_cfg, backend, logger_cfg, run_dir, fresh, phase)
    except (ConfigError, CheckpointError, MetricsFileError, RunDirLocked, FileNotFoundError) as err:
        if phase["training"]:
            raise
        if not isinstance(err, RunDirLocked):
            discard_if_unused(run_dir, fresh)  # refused before training: a new dir leaves nothing behind
        usage_error(str(err))


def saved_run_config(where: Path) -> dict[str, Any] | None:
    """The resolved config a run was started with: from its checkpoint, else its SB3 model's metadata,
    else ``None`` (an SB3 model saved before the metadata held it)."""
    if (where / CHECKPOINT_FILE).is_file() or where.suffix == ".pt":
        state = load_checkpoint(where)
        if state.get("member") is not None:
            parent = find_checkpoint(where).parent.parent
            raise ConfigError(
                f"resume={where}: this is one member of the population of {state['run_config']['population']} "
                f"in {parent}; resume the population (resume={parent}), or evaluate the member alone"
            )
        return state["run_config"]
    members = member_dirs(where)
    if members:  # a population: its members share the run config
        return load_checkpoint(members[0])["run_config"]
    if not ((where / SB3_MODEL_FILE).is_file() or where.suffix == ".zip"):
        raise ConfigError(f"resume={where}: neither {CHECKPOINT_FILE} nor {SB3_MODEL_FILE} is there")
    from agents.sb3 import read_sb3_meta

    meta = read_sb3_meta(where) or {}
    return meta.get("run_config")


def config_of_run(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``resume=<run dir>``: the run's own resolved config with the command line's overrides on top, so a
    preset run resumes without naming its preset again. A group override (``env=``, ``agent=``,
    ``logger=``) takes that section from the command line's composition; with ``experiment=`` the whole
    composition is used. What differs from the run is then refused or applied by :func:`check_resumable`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    where = Path(cfg.resume)
    saved = saved_run_config(where)
    parsed = OverridesParser.create().parse_overrides(overrides)
    if saved is None or any(o.key_or_group == "experiment" for o in parsed):
        return cfg
    composed = OmegaConf.to_container(cfg, resolve=True)
    base = OmegaConf.create(saved)
    for override in parsed:
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra") or override.is_delete():
            continue
        if key in ("env", "agent", "logger"):  # a group: its section as the command line composes it
            base[key] = composed[key]
        else:
            OmegaConf.update(base, key, override.value(), merge=True, force_add=override.is_add())
    base.resume = cfg.resume
    log.info("resume: the config of %s, with this command line's overrides on top", cfg.resume)
    return base


GPU_SIZED_STEPS = 5_000_000  # beyond this, an IMPALA run on a CPU takes hours (a few hundred env steps/s)


def check_sized_for_device(cfg: DictConfig, env_cfg: GridEnvConfig, agent_cfg: PPOConfig) -> None:
    """A bare ``misgen train`` on a machine without a GPU would start the GPU default (the IMPALA CNN for
    25 M steps) on the CPU at a few hundred steps/s: say so at once and name the CPU presets instead.
    Saying ``env.device=cpu`` (or choosing any preset) runs what was asked."""
    choices = hydra.core.hydra_config.HydraConfig.get().runtime.choices
    gpu_sized = agent_cfg.network.kind == "impala" and cfg.total_env_steps > GPU_SIZED_STEPS
    if choices.get("experiment") or cfg.resume or env_cfg.device != "auto" or not gpu_sized:
        return
    if resolve_device("auto").type == "cpu":
        raise ConfigError(
            f"this is the GPU-sized default (IMPALA CNN, {cfg.total_env_steps:,} env steps: hours on a CPU) and "
            "this machine has no GPU. On a CPU run a CPU preset: `misgen train experiment=arrow_maze_smoke` "
            "(about 4 minutes on 2 cores), experiment=arrow_maze_tiny or experiment=keys_chests_smoke; "
            "or add env.device=cpu to run the GPU default on the CPU anyway"
        )


def load_configs(cfg: DictConfig) -> tuple[GridEnvConfig, PPOConfig, str, LoggerConfig]:
    """Every config of a training run, validated (``ConfigError`` names the first bad key)."""
    run_node = {
        k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in ("env", "agent", "logger")
    }
    load_structured(TrainRunConfig, run_node, None, "run").validate()
    env_cfg = load_env_config(cfg.env.name, base=cfg.env)
    agent_node = OmegaConf.to_container(cfg.agent, resolve=True)
    backend = agent_node.pop("backend", "misgen")
    check_choice("agent.backend", backend, BACKENDS)
    return env_cfg, load_ppo_config(agent_node), backend, load_logger_config(cfg.logger)


def _start(
    cfg: DictConfig,
    env_cfg: GridEnvConfig,
    agent_cfg: PPOConfig,
    backend: str,
    logger_cfg: LoggerConfig,
    run_dir: Path,
    fresh: bool,
    phase: dict[str, bool],
) -> None:
    """Everything after the run dir is ours: resume or start, build, train, stop cleanly on a signal."""
    removed = remove_stale_temps(run_dir, ("checkpoint", "model", "metrics"))
    if removed:
        log.warning("removed %d temporary file(s) a killed run left in %s", len(removed), run_dir)
    saved_name, other_name = (
        (CHECKPOINT_FILE, SB3_MODEL_FILE) if backend == "misgen" else (SB3_MODEL_FILE, CHECKPOINT_FILE)
    )
    if (run_dir / other_name).is_file() and not (run_dir / saved_name).is_file():
        other = "sb3" if backend == "misgen" else "misgen"
        raise ConfigError(
            f"{run_dir} holds {other_name}, a run of agent.backend={other}, and this run is agent.backend={backend}: "
            f"resume it with its own backend, or give this run another dir"
        )
    population = cfg.population
    if population > 1 and backend != "misgen":
        raise ConfigError(f"population={population} trains with agent.backend=misgen; SB3 trains one seed per process")
    if cfg.keep_checkpoint_every and backend != "misgen":
        every = cfg.keep_checkpoint_every
        raise ConfigError(f"keep_checkpoint_every={every} needs agent.backend=misgen (SB3 keeps one model.zip)")
    seeds = [cfg.seed + k for k in range(population)]
    # A single run is its run dir; a population's members are runs of their own, one dir each.
    dirs = [run_dir] if population == 1 else [run_dir / f"{MEMBER_PREFIX}{s}" for s in seeds]
    resume = cfg.resume
    if resume and backend == "sb3" and Path(resume).is_file() and Path(resume).name != SB3_MODEL_FILE:
        raise ConfigError(f"resume={resume}: resume an SB3 run by its run dir (its {SB3_MODEL_FILE})")
    saved_members = member_dirs(resume) if resume else []
    if saved_members and population != len(saved_members):
        raise ConfigError(
            f"resume={resume}: a population of {len(saved_members)} members, and this run has population={population}; "
            f"resume it with population={len(saved_members)} (or by resume= alone, which takes the run's config)"
        )
    if resume and population > 1 and Path(resume).is_file():
        raise ConfigError(f"resume={resume}: resume a population by its run dir, which holds its members' dirs")
    if not resume and any((d / saved_name).is_file() for d in dirs):
        if not cfg.auto_resume:
            raise ConfigError(f"{run_dir} already holds {saved_name} and auto_resume=false: give the run another dir")
        resume = str(run_dir)  # this run dir was started before (a requeued SLURM job): continue it
        log.info("auto_resume: %s already holds %s; continuing it", run_dir, saved_name)
    run_cfg = OmegaConf.to_container(cfg, resolve=True)
    resumed: list[dict[str, Any]] | None = None
    if resume:
        resumed = [_resumed(resume, d, backend, env_cfg, run_cfg, population) for d in dirs]
        for d, state in zip(dirs, resumed, strict=True):
            metrics_file.keep_until(d / metrics_file.FILENAME, state["env_steps"])
    for d in dirs:
        metrics = d / metrics_file.FILENAME
        if not resume and metrics.exists():  # killed before its first checkpoint: a restart starts its metrics anew
            metrics.unlink()
            log.warning("%s had metrics but no checkpoint: starting the run over, metrics included", d)
    # Every distribution's level bank now (cached for the evaluations): an impossible one fails here.
    probes = {name: make_core(env_cfg, name, num_envs=1, seed=cfg.seed) for name in env_cfg.distributions}
    ppo = None
    if backend == "misgen":  # built before the logger: a config the env can't take fails before any run exists
        train = probes.get("train") or make_core(env_cfg, "train", num_envs=1)  # no train: its ConfigError
        ppo = build_ppo(env_cfg, agent_cfg, cfg.seed, train.observation_shape, population)
        if resumed is not None:
            check_same_network(resumed[0], ppo.network_spec, resume)
    write_hydra_files(run_dir, cfg, resumed=resumed is not None and not fresh)
    previous = resumed or [{} for _ in dirs]  # a resumed run continues its wandb run, in its group
    progress = Progress(cfg.progress, cfg.total_env_steps, previous[0].get("env_steps", 0), cfg.log_every)
    runs: list[Run] = []
    exit_code = 1
    try:
        for d, member_seed, before in zip(dirs, seeds, previous, strict=True):
            d.mkdir(parents=True, exist_ok=True)
            member_cfg = {**run_cfg, "seed": member_seed} if population > 1 else run_cfg
            logger = make_logger(
                logger_cfg, member_cfg, d, run_id=before.get("wandb_run_id"), group=before.get("wandb_group")
            )
            video = logger_cfg.video_every_eval
            runs.append(Run(cfg, env_cfg, d, logger, video, before.get("env_steps", 0), before, progress))
        stop = StopSignals()
        phase["training"] = True
        with stop:
            if backend == "sb3":
                _train_sb3(cfg, env_cfg, agent_cfg, runs[0], resumed is not None, stop)
            else:
                _train_misgen(cfg, env_cfg, ppo, runs, run_cfg, resumed, stop)
        exit_code = 0
    except StopRequested as signalled:
        exit_code = 128 + signalled.signum
    finally:
        progress.close()
        for run in runs:
            run.logger.close(exit_code)
    if exit_code:
        stop.finish(exit_code - 128)


def _resumed(
    resume: str, where: Path, backend: str, env_cfg: GridEnvConfig, run_cfg: dict[str, Any], population: int
) -> dict[str, Any]:
    """The checkpoint (or SB3 metadata) a run or a population's member continues from, checked against
    this run's config (``where``: its dir; ``resume`` itself for a single run, which may name a file)."""
    source = resume if population == 1 else str(where)
    if backend == "sb3":
        state = _sb3_meta(source, env_cfg)
        if "run_config" in state:  # the agent and env are checked by train_sb3; here the rest (seed)
            check_resumable(state["run_config"], state["env_config"], run_cfg, config_to_dict(env_cfg), resume)
        return state
    if population > 1 and not (where / CHECKPOINT_FILE).is_file():
        raise ConfigError(
            f"resume={resume}: the population's member {where.name} has no {CHECKPOINT_FILE}; "
            f"population={population} from seed {run_cfg['seed']} has members {MEMBER_PREFIX}<seed> for each seed"
        )
    state = load_checkpoint(source, env_name=env_cfg.name)
    require(state, TRAINING_FIELDS, source)
    check_resumable(state["run_config"], state["env_config"], run_cfg, config_to_dict(env_cfg), resume)
    return state


def build_ppo(
    env_cfg: GridEnvConfig, agent_cfg: PPOConfig, seed: int, obs_shape: tuple[int, ...], population: int = 1
) -> PPO:
    """Our PPO on the env's ``train`` distribution (observations of ``obs_shape``), ``population`` agents at
    once; a batch too big for the device's memory is a ``ConfigError`` naming ``agent.num_envs``, not an
    allocator's message."""
    device = resolve_device(env_cfg.device)
    num_envs = agent_cfg.num_envs * population
    need = 2 * num_envs * math.prod(obs_shape)  # the core's observations alone
    have = device_memory(device)
    if have is not None and need > have:
        raise ConfigError(
            f"agent.num_envs={agent_cfg.num_envs} x population={population}: the envs' observations alone need "
            f"{need / 2**30:.1f} GiB but "
            f"{device} has {have / 2**30:.1f} GiB"
        )
    try:
        core = make_core(env_cfg, "train", num_envs=num_envs, seed=seed)
        return PPO(core, agent_cfg, seed=seed, population=population)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not isinstance(err, torch.OutOfMemoryError) and "alloc" not in str(err):
            raise
        raise ConfigError(
            f"agent.num_envs={agent_cfg.num_envs}: the envs do not fit in memory on {device} "
            f"({str(err).splitlines()[0]})"
        ) from err


def _sb3_meta(where: str, env_cfg: GridEnvConfig) -> dict[str, Any]:
    """Our metadata of the SB3 model a run is resumed from (its env checked; no code runs)."""
    from agents.sb3 import read_sb3_meta

    meta = read_sb3_meta(where)
    if meta is None or meta.get("env_name") != env_cfg.name:
        raise CheckpointError(f"resume={where}: not an SB3 model of env {env_cfg.name!r} saved by this trainer")
    return meta


def check_resumable(
    saved_run: dict[str, Any], saved_env: dict[str, Any], run_cfg: dict[str, Any], env: dict[str, Any], where: str
) -> None:
    """Refuse a resume whose agent, env or seed differ from the checkpoint's, naming each changed key
    (the old run would silently go on with its own); log the bookkeeping keys it does change."""
    saved = {**saved_run, "env": saved_env}
    now = {**run_cfg, "env": env}
    defaults = schema_defaults(env["name"])
    # A key the checkpoint lacks was added to the schema since; at its default it changes nothing.
    changes = [c for c in config_changes(saved, now) if not (c[1] == "<unset>" and _lookup(defaults, c[0]) == c[2])]
    refused = [c for c in changes if not c[0].startswith(RESUME_MAY_CHANGE)]
    if refused:
        listed = ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in refused)
        raise ConfigError(
            f"resume={where}: this run's config differs from the checkpoint's in {listed}; resume with the run's "
            "own settings, or start a new run in another dir"
        )
    applied = [c for c in changes if c[0] not in ("resume",) and not c[0].startswith("logger")]
    if applied:
        log.info("resume: applying %s", ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in applied))


def schema_defaults(env_name: str) -> dict[str, Any]:
    """Every key of a run's config at its default: what a checkpoint written before a key existed ran with."""
    env_schema = type(load_env_config(env_name))
    run = config_to_dict(TrainRunConfig())
    return {**run, "agent": config_to_dict(PPOConfig()), "env": config_to_dict(env_schema())}


def _lookup(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return "<no default>"
        tree = tree[key]
    return tree


def check_same_network(resumed: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    """Refuse to resume a checkpoint into a different network (its weights would not mean the same).
    Network options added since the checkpoint was written count at their defaults."""
    saved = resumed.get("network")
    if isinstance(saved, dict) and isinstance(saved.get("config"), dict):
        saved = {**saved, "config": {**config_to_dict(NetworkConfig()), **saved["config"]}}
    if saved != spec:
        raise ConfigError(
            f"resume={where}: the checkpoint's network {saved} differs from this run's {spec}; "
            "resume with the run's own agent.network settings"
        )


def _train_misgen(
    cfg: DictConfig,
    env_cfg: GridEnvConfig,
    ppo: PPO,
    runs: list[Run],
    run_cfg: dict[str, Any],
    resumed: list[dict[str, Any]] | None,
    stop: StopSignals,
) -> None:
    """Our PPO (one run per member): periodic checkpoints (and one on a stop signal), evaluations every
    ``eval_every`` updates."""
    agent_cfg = ppo.cfg
    where = runs[0].run_dir if len(runs) == 1 else runs[0].run_dir.parent
    if resumed is not None:
        try:
            ppo.load_state_dict(resumed)
        except ValueError as err:  # members written at different points: a kill split the set
            raise CheckpointError(f"resume={where}: {err}; retrain the population or restore its checkpoints") from err
        log.info("resumed %s at %d env steps", where, ppo.env_steps)
    total_updates = -(-cfg.total_env_steps // (agent_cfg.num_envs * agent_cfg.num_steps))

    def checkpoint(keep: bool = False) -> None:
        states = [_state(ppo, m, env_cfg, run_cfg, r) for m, r in enumerate(runs)]
        save_checkpoints([r.run_dir for r in runs], states, keep=keep)

    keep_every = cfg.keep_checkpoint_every
    if keep_every and ppo.updates == 0:
        checkpoint(keep=True)  # the untrained networks: where a curve across training starts

    evaluated = False
    while ppo.env_steps < cfg.total_env_steps:
        stats = ppo.train_iteration(total_updates)
        for run, member in zip(runs, stats, strict=True):
            run.report({"updates": ppo.updates, **member}, ppo.env_steps)
        runs[0].progress.update(mean_record(stats), ppo.updates)
        evaluated = runs[0].eval_due(ppo.updates)
        if stop.requested:  # checkpoint at once (SLURM kills soon after SIGTERM); a due evaluation is skipped
            checkpoint()
            log.warning("stopped at %d env steps: checkpoint written to %s", ppo.env_steps, where)
            stop.check()
        if evaluated:
            evaluate_runs(runs, ppo.policy, ppo.env_steps, ppo.updates)
        keep = bool(keep_every) and ppo.updates % keep_every == 0
        if keep or (cfg.checkpoint_every and ppo.updates % cfg.checkpoint_every == 0):
            checkpoint(keep=keep)
    if not evaluated and not all(r.evaluated_at(ppo.env_steps) for r in runs):  # a finished run, resumed: done
        evaluate_runs(runs, ppo.policy, ppo.env_steps, ppo.updates)
    checkpoint(keep=bool(keep_every))
    members = f" for each of {len(runs)} members" if len(runs) > 1 else ""
    log.info("done: %d env steps%s; metrics and checkpoints in %s", ppo.env_steps, members, where)


def _train_sb3(
    cfg: DictConfig, env_cfg: GridEnvConfig, agent_cfg: PPOConfig, run: Run, resume: bool, stop: StopSignals
) -> None:
    """stable-baselines3's PPO on the same core and network; its model is saved as ``model.zip`` (with
    the wandb run, so a resumed run continues it), also after a stop signal."""
    from agents.sb3 import train_sb3

    last: dict[str, Any] = {}

    def callback(stats: dict[str, float], policy: Policy) -> None:
        last.update(stats=stats, policy=policy, evaluated=run.iteration(stats))
        stop.check()  # between updates, before a due evaluation: train_sb3 saves the model on the way out
        if last["evaluated"]:
            run.evaluate_all(policy, int(stats["env_steps"]), int(stats["updates"]))

    path = train_sb3(
        env_cfg,
        agent_cfg,
        cfg.seed,
        cfg.total_env_steps,
        run.run_dir,
        str(resolve_device(env_cfg.device)),
        callback,
        checkpoint_every=cfg.checkpoint_every,
        resume=resume,
        extra_meta={
            "wandb_run_id": run.wandb_run_id,
            "wandb_group": run.wandb_group,
            "run_config": OmegaConf.to_container(cfg, resolve=True),
        },
    )
    if last and not last["evaluated"]:
        run.evaluate_all(last["policy"], int(last["stats"]["env_steps"]), int(last["stats"]["updates"]))
    log.info("done: SB3 model in %s", path)


if __name__ == "__main__":
    main()
