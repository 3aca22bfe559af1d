"""One experiment, one command: train its arms, evaluate them, aggregate over seeds, draw its figure.

``python -m experiments.run_experiment <name> [--scale cpu|gpu] [--jobs N] [--out results]
[--population K] [--train OVERRIDE ...] [--evaluate OVERRIDE ...] [--logger none|wandb]``
(also ``misgen experiment <name> ...``; ``--list``: the experiments).

An experiment is a spec in ``configs/run_experiment/<name>.yaml``: its question, its figure, its scales
(``cpu``: this machine in under half an hour; ``gpu``: the IMPALA-sized version), its arms (training
setups, each a population of seeds; or an oracle baseline, evaluated only) and its evaluations (which
distributions, at which sizes, or at every kept checkpoint). Everything lands in
``<out>/<name>/<scale>/``: ``runs/<arm>/`` (the trainer's population dirs), ``evals/<arm>/<evaluation>/``
(the evaluation reports), and what is committed: ``results.json`` (every number of the figure, per seed,
with the hardware and wall-clock), the figure PNGs and ``README.md`` (the table).

Resumable: an arm or evaluation whose finished marker (``.experiment.json``, beside its output) holds the
same command is skipped; a killed training resumes where its checkpoint left it (the trainer's
``auto_resume``; ``results.json`` lists it under ``resumed``: a resume starts fresh episodes, so it is not
the bit-exact run from scratch), and a changed one is refused by the trainer, naming the key. ``--population``,
``--train`` and ``--evaluate`` shrink or alter a run (a test runs every experiment this way in seconds);
they go into the commands, so their results never pass for the spec's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from agents.checkpoint import FILENAME as CHECKPOINT_FILE
from agents.checkpoint import kept_checkpoints, member_dirs
from analysis import aggregate
from analysis.metrics import VerdictConfig
from envs.atomic import atomic_path
from envs.config import ConfigError, load_structured
from experiments.logger import LoggerConfig, make_logger

log = logging.getLogger("misgen.experiment")
SPECS = Path(__file__).resolve().parent.parent / "configs" / "run_experiment"
MARKER = ".experiment.json"
FIGURES = ("distributions", "curve", "seeds")
SCALES = ("cpu", "gpu")


# --------------------------------------------------------------------------- the spec
@dataclass
class Scale:
    """How big one scale of an experiment is."""

    population: int = 10
    """Seeds per arm (a population trained in one process)."""
    seed: int = 0
    """The first seed: an arm's members are seeds ``seed .. seed+population-1``."""
    train: list[str] = field(default_factory=list)
    """Overrides of ``experiments.train`` for every arm (``experiment=<preset>`` first)."""
    evaluate: list[str] = field(default_factory=list)
    """Overrides of ``experiments.evaluate`` for every evaluation."""
    hardware: str = ""
    """What it was made for, said in the results (``2-core CPU``, ``one GPU``)."""


@dataclass
class Arm:
    """One training setup of an experiment (or a baseline policy, evaluated only)."""

    label: str = ""
    """How the figure and table name it (default: the arm's name)."""
    train: list[str] = field(default_factory=list)
    """Overrides of ``experiments.train`` on top of the scale's."""
    evaluate: list[str] = field(default_factory=list)
    """Overrides of ``experiments.evaluate`` for this arm's evaluations."""
    x: float | None = None
    """Its position on a curve whose x is the arm (``figure.x_from: arm``)."""
    runs_from: str | None = None
    """``<experiment>:<arm>``: evaluate that experiment's agents (same scale) instead of training anew."""
    members: int | None = None
    """Evaluate only the first this many members (seeds) of the population."""
    policy: str | None = None
    """A policy spec evaluated instead of trained agents (``oracle:<objective>``): a baseline."""


@dataclass
class Evaluation:
    """One evaluation of every arm: which distributions, with which overrides."""

    label: str = ""
    evaluate: list[str] = field(default_factory=list)
    """Overrides of ``experiments.evaluate`` (``eval.distributions=[...]``, extra distributions)."""
    x: float | None = None
    """Its position on a curve whose x is the evaluation (``figure.x_from: evaluation``)."""
    checkpoints: bool = False
    """One evaluation per kept checkpoint (``keep_checkpoint_every``), x = env steps."""


@dataclass
class Figure:
    kind: str = "distributions"
    """``distributions`` (per distribution: objective counts over seeds, capability and robustness),
    ``curve`` (against the arms' or evaluations' x), ``seeds`` (every seed's weight gap and capability)."""
    distributions: list[str] = field(default_factory=list)
    """Distributions drawn (default: every one evaluated)."""
    x_from: str = "arm"
    """``curve``: x is the ``arm``'s or the ``evaluation``'s."""
    metrics: list[str] = field(default_factory=list)
    """Metrics drawn after the objectives (``capability``, ``success``, ``objective_robustness``,
    ``weight_gap``, ``env:<env metric>``); default: the kind's (``analysis.result_figures``)."""
    x_label: str = ""
    log_x: bool = False
    """``curve``: a log x axis (a symlog one when x takes 0)."""


@dataclass
class ExperimentSpec:
    title: str = "???"
    question: str = "???"
    env: str = "arrow_maze"
    """The env the arms train on (``env=`` of baselines and of the trainer)."""
    figure: Figure = field(default_factory=Figure)
    scales: dict[str, Scale] = field(default_factory=dict)
    arms: dict[str, Arm] = field(default_factory=dict)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    """Default: one, ``all`` (every distribution of the env)."""

    def validate(self, name: str) -> ExperimentSpec:
        where = f"configs/run_experiment/{name}.yaml"
        if self.figure.kind not in FIGURES:
            raise ConfigError(f"{where}: figure.kind={self.figure.kind!r} is not one of {list(FIGURES)}")
        if self.figure.x_from not in ("arm", "evaluation"):
            raise ConfigError(f"{where}: figure.x_from={self.figure.x_from!r} is not 'arm' or 'evaluation'")
        if not self.arms:
            raise ConfigError(f"{where}: no arms")
        if not self.evaluations:
            self.evaluations = {"all": Evaluation(label="every distribution")}
        for scale_name, scale in self.scales.items():
            if scale_name not in SCALES:
                raise ConfigError(f"{where}: scale {scale_name!r} is not one of {list(SCALES)}")
            if scale.population < 1:
                raise ConfigError(f"{where}: scales.{scale_name}.population={scale.population} must be >= 1")
        for arm_name, arm in self.arms.items():
            if arm.policy and (arm.runs_from or arm.train):
                raise ConfigError(f"{where}: arms.{arm_name} has a policy and also training (train/runs_from)")
            if arm.runs_from and ":" not in arm.runs_from:
                raise ConfigError(f"{where}: arms.{arm_name}.runs_from={arm.runs_from!r} is not <experiment>:<arm>")
            if self.figure.kind == "curve" and self.figure.x_from == "arm" and arm.x is None and not arm.policy:
                raise ConfigError(f"{where}: arms.{arm_name} has no x, and the curve's x is the arm's")
        for eval_name, evaluation in self.evaluations.items():
            needs_x = self.figure.kind == "curve" and self.figure.x_from == "evaluation"
            if needs_x and evaluation.x is None and not evaluation.checkpoints:
                raise ConfigError(f"{where}: evaluations.{eval_name} has no x, and the curve's x is the evaluation's")
        return self


def spec_names() -> list[str]:
    """The experiments there are specs for."""
    return sorted(p.stem for p in SPECS.glob("*.yaml"))


def load_spec(name: str) -> ExperimentSpec:
    """The experiment ``name``'s spec, validated (``ConfigError`` naming the file and key otherwise)."""
    path = SPECS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no experiment {name!r}: choose one of {spec_names()} (configs/run_experiment/)")
    return load_structured(ExperimentSpec, OmegaConf.load(path), None, f"configs/run_experiment/{name}.yaml").validate(
        name
    )


# --------------------------------------------------------------------------- running
@dataclass
class Options:
    """The command line: scale, where, how many at once, and the overrides that shrink a run."""

    scale: str = "cpu"
    out: Path = Path("results")
    jobs: int = 1
    population: int | None = None
    train: list[str] = field(default_factory=list)
    evaluate: list[str] = field(default_factory=list)
    logger: str = "none"
    arms: list[str] = field(default_factory=list)
    """Only these arms (default: all)."""
    evaluations: list[str] = field(default_factory=list)
    """Only these evaluations (default: all)."""
    figures: bool = False
    """Also the evaluation CLI's own figures beside each report (verdict matrix, shares, trajectories)."""
    home: Path | None = None
    """The experiment's dir (default: ``<out>/<name>/<scale>``)."""
    python: str = sys.executable


def _marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _write_marker(path: Path, record: dict[str, Any]) -> None:
    with atomic_path(path / MARKER) as tmp:
        tmp.write_text(json.dumps(record, indent=2))


@dataclass
class Step:
    """One training or evaluation: a ``misgen`` command, where it logs, and the marker it leaves when done."""

    command: str
    """``train`` or ``evaluate`` (``experiments.cli``)."""
    args: list[str]
    log: Path
    marker_dir: Path
    record: dict[str, Any]
    what: str
    seconds: float | None = None
    """Its wall-clock, once run (or as its marker says, when it was done before)."""


def _child(command: str, args: list[str], log_path: str) -> None:
    """A forked step: output to its log, one CPU thread, the command's entry point, its exit status."""
    import torch

    from experiments import cli

    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1), os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)
    logging.root.handlers.clear()
    torch.set_num_threads(1)
    code = 1
    try:
        cli.main([command, *args])
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
    except BaseException:  # reported in the step's log, as a subprocess would
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def run_steps(steps: list[Step], jobs: int) -> None:
    """Run ``steps``, ``jobs`` at a time, each with one CPU thread; set each one's ``seconds`` and write its
    marker when it succeeds. Forked from this process where the OS allows it (the imports are done once:
    seconds saved per step), else a subprocess each. Raises ``RuntimeError`` naming the first that failed,
    once the running ones are done."""
    import multiprocessing
    from multiprocessing.connection import wait

    fork = "fork" in multiprocessing.get_all_start_methods()
    if fork and steps:
        for module in ("experiments.train", "experiments.evaluate"):  # imported once, before forking
            importlib.import_module(module)
    pending, running, failed = list(steps), {}, []
    while pending or running:
        while pending and len(running) < jobs and not failed:
            step = pending.pop(0)
            step.log.parent.mkdir(parents=True, exist_ok=True)
            with step.log.open("a") as out:
                out.write(f"$ misgen {step.command} {' '.join(step.args)}\n")
            log.info("%s", step.what)
            if fork:
                proc: Any = multiprocessing.get_context("fork").Process(
                    target=_child, args=(step.command, step.args, str(step.log))
                )
                proc.start()
                handle = proc.sentinel
            else:
                with step.log.open("a") as out:  # the child holds its own copy of the descriptor
                    module = f"experiments.{step.command}"
                    env = {**os.environ, "OMP_NUM_THREADS": "1"}
                    proc = subprocess.Popen([sys.executable, "-m", module, *step.args], stdout=out, stderr=out, env=env)
                handle = proc
            running[handle] = (step, proc, time.perf_counter())
        if not running:
            break
        ready = wait(list(running)) if fork else [_first_done(running)]
        for handle in ready:
            step, proc, start = running.pop(handle)
            if fork:
                proc.join()
                code = proc.exitcode
            else:
                code = proc.wait()
            step.seconds = time.perf_counter() - start
            if code != 0:
                failed.append((step, code))
                continue
            _write_marker(
                step.marker_dir, {**step.record, "wall_clock_s": step.seconds, "finished": time.strftime("%FT%T%z")}
            )
            log.info("done in %.0f s: %s", step.seconds, step.what)
    if failed:
        step, code = failed[0]
        tail = "\n".join(step.log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{step.what}: failed (exit {code}); see {step.log}:\n{tail}")


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether a training left a checkpoint in ``run_dir`` (a population's members, or a single run)."""
    return (run_dir / CHECKPOINT_FILE).is_file() or bool(member_dirs(run_dir))


def _first_done(running: dict[Any, Any]) -> Any:
    """The first subprocess of ``running`` to finish (polling; only where fork is unavailable)."""
    while True:
        for handle, (_, proc, _) in running.items():
            if proc.poll() is not None:
                return handle
        time.sleep(0.2)


class Experiment:
    """One experiment at one scale: its commands, its outputs, and the runner of each step."""

    def __init__(self, name: str, options: Options) -> None:
        self.name, self.options = name, options
        self.spec = load_spec(name)
        if options.scale not in self.spec.scales:
            raise ConfigError(f"experiment {name!r} has no scale {options.scale!r} (it has {list(self.spec.scales)})")
        self.scale = self.spec.scales[options.scale]
        self.home = options.home or options.out / name / options.scale
        self.population = options.population or self.scale.population
        for what, chosen, known in (
            ("arm", options.arms, self.spec.arms),
            ("evaluation", options.evaluations, self.spec.evaluations),
        ):
            unknown = [c for c in chosen if c not in known]
            if unknown:
                raise ConfigError(f"experiment {name!r} has no {what} {unknown} (it has {list(known)})")
        self.arms = [a for a in self.spec.arms if not options.arms or a in options.arms]
        self.evaluations = [e for e in self.spec.evaluations if not options.evaluations or e in options.evaluations]

    # ----------------------------------------------------------------- training
    def run_dir(self, arm: str) -> Path:
        return self.home / "runs" / arm

    def train_overrides(self, arm: str) -> list[str]:
        """What the arm's training is: the scale's, the arm's and the command line's overrides, and its seeds."""
        a = self.spec.arms[arm]
        return [
            *self.scale.train,
            *a.train,
            *self.options.train,
            f"population={self.population}",
            f"seed={self.scale.seed}",
        ]

    def trained_dir(self, arm: str) -> tuple[Experiment, str]:
        """The experiment and arm whose run dir holds ``arm``'s agents (``runs_from``: another's)."""
        source = self.spec.arms[arm].runs_from
        if source is None:
            return self, arm
        other, other_arm = source.split(":", 1)
        exp = Experiment(other, replace(self.options, arms=[], evaluations=[], home=None))
        if other_arm not in exp.spec.arms:
            raise ConfigError(f"{self.name}: arms.{arm}.runs_from={source!r}: {other} has no arm {other_arm!r}")
        return exp.trained_dir(other_arm)

    def train_step(self, arm: str) -> Step:
        """The training of ``arm``'s population; its ``seconds`` already set when its marker says it is
        done with this command (then it is skipped)."""
        overrides = self.train_overrides(arm)
        run_dir = self.run_dir(arm)
        args = [*overrides, f"hydra.run.dir={run_dir}", f"logger={self.options.logger}", "threads=1", "progress=log"]
        what = f"{self.name}/{arm}: training {self.population} seeds: {' '.join(overrides)}"
        step = Step("train", args, run_dir.parent / f"{arm}.log", run_dir, {"overrides": overrides}, what)
        done = _marker(run_dir)
        if done is not None and done.get("overrides") == overrides:
            log.info("%s/%s: trained already (%s)", self.name, arm, run_dir)
            step.seconds = float(done["wall_clock_s"])
        elif _has_checkpoint(run_dir):  # a killed training: the trainer resumes it, with fresh episodes
            step.record["resumed"] = True
            step.what += " (resuming its checkpoints)"
        return step

    def resumed(self, key: tuple[str, str]) -> bool:
        """Whether the training ``key`` finished by resuming a killed run (then it is not the bit-exact
        from-scratch run of its seeds: a resume starts fresh episodes)."""
        exp, arm = self.trainers()[key]
        return bool((_marker(exp.run_dir(arm)) or {}).get("resumed"))

    # ----------------------------------------------------------------- evaluation
    def policies(self, arm: str) -> list[str]:
        """The specs evaluated for ``arm``: its baseline policy, or its population's members."""
        a = self.spec.arms[arm]
        if a.policy:
            return [a.policy]
        exp, source = self.trained_dir(arm)
        run_dir = exp.run_dir(source)
        members = member_dirs(run_dir) or ([run_dir] if (run_dir / CHECKPOINT_FILE).is_file() else [])  # population=1
        if not members:
            raise FileNotFoundError(f"{exp.run_dir(source)}: no trained members (train {exp.name} first)")
        return [str(m) for m in members[: a.members or len(members)]]

    def evaluation_jobs(self, arm: str) -> list[tuple[str, float | None, list[str], list[str]]]:
        """``(evaluation id, x, policy specs, overrides)`` of each evaluation of ``arm``."""
        a = self.spec.arms[arm]
        specs = self.policies(arm)
        jobs = []
        for name in self.evaluations:
            evaluation = self.spec.evaluations[name]
            overrides = [*self.scale.evaluate, *a.evaluate, *evaluation.evaluate, *self.options.evaluate]
            if a.policy:
                overrides = [f"env={self.spec.env}", *overrides]
            if not evaluation.checkpoints or a.policy:
                jobs.append((name, evaluation.x, specs, overrides))
                continue
            kept = [kept_checkpoints(s) for s in specs]
            steps = sorted(set.intersection(*(set(k) for k in kept)))
            if not steps:
                raise FileNotFoundError(f"{specs[0]}: no kept checkpoints (train with keep_checkpoint_every)")
            jobs.append((name, None, [str(k[s]) for s in steps for k in kept], overrides))  # one batched evaluation
        return jobs

    def evaluate_step(self, arm: str, evaluation: str, specs: list[str], overrides: list[str]) -> Step:
        """The evaluation of ``specs``; its ``seconds`` already set when done before with this command."""
        where = self.home / "evals" / arm / evaluation
        report = where / "report.json"
        record = {"policy": specs, "overrides": overrides}
        policy = specs[0] if len(specs) == 1 else "[" + ",".join(specs) + "]"
        args = [f"policy={policy}", *overrides, f"report={report}", f"hydra.run.dir={where}"]
        args += [f"figures.enabled={str(self.options.figures).lower()}", f"logger={self.options.logger}"]
        what = f"{self.name}/{arm}/{evaluation}: evaluating {len(specs)} policies"
        step = Step("evaluate", args, where / "run_experiment.log", where, record, what)  # Hydra's: evaluate.log
        done = _marker(where)
        if done is not None and {k: done.get(k) for k in record} == record and report.is_file():
            step.seconds = float(done["wall_clock_s"])
        return step

    # ----------------------------------------------------------------- all of it
    def trainers(self) -> dict[tuple[str, str], tuple[Experiment, str]]:
        """Each training the chosen arms need, once: ``(experiment, arm)`` whose run dir holds their agents."""
        out: dict[tuple[str, str], tuple[Experiment, str]] = {}
        for arm in (a for a in self.arms if not self.spec.arms[a].policy):
            exp, source = self.trained_dir(arm)
            out.setdefault((exp.name, source), (exp, source))
        return out

    def plan(self) -> list[str]:
        """What :meth:`run` would do, one line per step (``--dry-run``); nothing is run or written."""
        lines = []
        for exp, arm in self.trainers().values():
            step = exp.train_step(arm)
            state = "done, skipped" if step.seconds is not None else "to run"
            lines.append(f"[{state}] misgen {step.command} {' '.join(step.args)}")
        for arm in self.arms:
            try:
                jobs = self.evaluation_jobs(arm)
            except FileNotFoundError:  # not trained yet: the members are known once it is
                jobs = [(name, None, [f"<the members of {arm}>"], []) for name in self.evaluations]
            for name, _, specs, overrides in jobs:
                step = self.evaluate_step(arm, name, specs, overrides)
                state = "done, skipped" if step.seconds is not None else "to run"
                lines.append(f"[{state}] misgen {step.command} {' '.join(step.args)}")
        return lines

    def run(self) -> dict[str, Any]:
        """Train, evaluate and aggregate; write ``results.json``, the figures and ``README.md``; the results."""
        start = time.perf_counter()
        trainers = self.trainers()
        train_steps = {key: exp.train_step(arm) for key, (exp, arm) in trainers.items()}
        run_steps([t for t in train_steps.values() if t.seconds is None], self.options.jobs)
        trained = {key: float(t.seconds or 0.0) for key, t in train_steps.items()}
        jobs = [(arm, *job) for arm in self.arms for job in self.evaluation_jobs(arm)]
        steps = [self.evaluate_step(arm, name, specs, overrides) for arm, name, _, specs, overrides, *_ in jobs]
        run_steps([s for s in steps if s.seconds is None], self.options.jobs)
        evaluated = [(s.marker_dir / "report.json", float(s.seconds or 0.0)) for s in steps]
        results = self.aggregate(jobs, evaluated, trained)
        results["wall_clock_s"]["run"] = time.perf_counter() - start
        self.write(results)
        return results

    def aggregate(
        self,
        jobs: list[tuple[str, str, float | None, list[str], list[str]]],
        evaluated: list[tuple[Path, float]],
        trained: dict[tuple[str, str], float],
    ) -> dict[str, Any]:
        """Every report into per-seed rows and summaries over seeds (``analysis.aggregate``)."""
        verdict = VerdictConfig()
        groups = []
        base = proxy = None
        for (arm, evaluation, x, _, _), (path, _) in zip(jobs, evaluated, strict=True):
            report = json.loads(path.read_text())
            verdict = VerdictConfig(**report["config"]["verdict"])
            base = report["base_objective"]
            names = _objective_names(report)
            proxy = next((n for n in names if n != base), None)
            arm_x = self.spec.arms[arm].x
            for distribution, all_rows in aggregate.report_rows(report, base, proxy).items():
                for at, rows in _by_checkpoint(all_rows, x).items():
                    groups.append(
                        {
                            "arm": arm,
                            "arm_label": self.spec.arms[arm].label or arm,
                            "baseline": bool(self.spec.arms[arm].policy),
                            "evaluation": evaluation,
                            "distribution": distribution,
                            "x": arm_x if self.spec.figure.x_from == "arm" else at,
                            "env_steps": at if self.spec.evaluations[evaluation].checkpoints else None,
                            "summary": aggregate.summarise(rows, base, verdict),
                            "seeds": rows,
                        }
                    )
        import torch

        return {
            "experiment": self.name,
            "title": self.spec.title,
            "question": self.spec.question,
            "scale": self.options.scale,
            "env": self.spec.env,
            "base_objective": base,
            "proxy_objective": proxy,
            "figure": OmegaConf.to_container(OmegaConf.structured(self.spec.figure)),
            "command": self.command(),
            "arms": {a: self.arm_record(a) for a in self.arms},
            "groups": groups,
            "confidence_level": verdict.confidence_level,
            "hardware": {
                "machine": self.scale.hardware or platform.machine(),
                "cpu_count": os.cpu_count(),
                "processor": platform.processor() or platform.machine(),
                "torch": str(torch.__version__),
                "python": platform.python_version(),
                "jobs": self.options.jobs,
                "threads_per_job": 1,
            },
            "resumed": [f"{e}:{a}" for e, a in trained if self.resumed((e, a))],
            "wall_clock_s": {
                "train": {f"{e}:{a}": s for (e, a), s in trained.items()},
                "evaluate": sum(s for _, s in evaluated),
            },
        }

    def arm_record(self, arm: str) -> dict[str, Any]:
        """What ``results.json`` says of an arm: its label, and how its agents were trained (or its policy)."""
        a = self.spec.arms[arm]
        if a.policy:
            return {"label": a.label or arm, "policy": a.policy}
        exp, source = self.trained_dir(arm)
        return {"label": a.label or arm, "trained_in": f"{exp.name}:{source}", "train": exp.train_overrides(source)}

    def command(self) -> str:
        """The command that reproduces these results."""
        parts = ["misgen experiment", self.name]
        if self.options.scale != "cpu":
            parts.append(f"--scale {self.options.scale}")
        if self.options.population:
            parts.append(f"--population {self.options.population}")
        parts += [f"--train {o}" for o in self.options.train] + [f"--evaluate {o}" for o in self.options.evaluate]
        parts += [f"--arm {a}" for a in self.options.arms] + [f"--evaluation {e}" for e in self.options.evaluations]
        return " ".join(parts)

    def write(self, results: dict[str, Any]) -> None:
        """``results.json``, the figures and ``README.md`` in the experiment's dir (each written atomically)."""
        from analysis import result_figures

        self.home.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.home / "results.json") as tmp:
            tmp.write_text(json.dumps(results, indent=1))
        figures = result_figures.draw(results, self.home)
        with atomic_path(self.home / "README.md") as tmp:
            tmp.write_text(result_figures.readme(results, [p.name for p in figures]))
        log.info("results: %s (figures: %s)", self.home / "results.json", ", ".join(p.name for p in figures))
        if self.options.logger == "wandb":
            log_to_wandb(results, figures, self.home)


def log_to_wandb(results: dict[str, Any], figures: list[Path], home: Path) -> None:
    """The summary to wandb: a run per arm in the group ``experiment-<name>-<scale>``, so each metric is one
    panel with a line or bar per arm. Keys ``<distribution>/<metric>`` (means over seeds, interval bounds as
    ``_lo``/``_hi``), logged at step = the row's x (0 without), and the per-seed rows as a table."""
    group = f"experiment-{results['experiment']}-{results['scale']}"
    for arm, record in results["arms"].items():
        rows = [g for g in results["groups"] if g["arm"] == arm]
        cfg = LoggerConfig(kind="wandb", group=group, job_type="experiment", tags=[results["experiment"]])
        run_cfg = {"experiment": results["experiment"], "scale": results["scale"], "arm": arm, **record}
        logger = make_logger(cfg, run_cfg, home / "wandb" / arm, choices={}, overrides=[])
        try:
            for x in sorted({g["x"] or 0 for g in rows}):
                record_at: dict[str, Any] = {"x": x}
                for g in (g for g in rows if (g["x"] or 0) == x):
                    s = g["summary"]
                    entries = {"base_fraction": {"mean": s["base_fraction"], "interval": s["base_fraction_interval"]}}
                    entries.update(s["metrics"])
                    entries.update({f"env/{k}": v for k, v in s["env_metrics"].items()})
                    for metric, entry in entries.items():
                        key = f"{g['distribution']}/{metric}"
                        if entry["mean"] is not None:
                            record_at[key] = entry["mean"]
                        if entry.get("interval") is not None:
                            record_at[f"{key}_lo"], record_at[f"{key}_hi"] = entry["interval"]
                logger.log(record_at, step=int(x))
            columns = ["evaluation", "distribution", "x", "seed", "behavioural_objective", "verdict", "capability"]
            columns += ["success", "weight_gap"]
            table = [
                [g["evaluation"], g["distribution"], g["x"], *(r[k] for k in columns[3:])]
                for g in rows
                for r in g["seeds"]
            ]
            logger.log_table("seeds", columns, table, step=0)
            logger.log_images({p.stem: p for p in figures}, step=0)
        finally:
            logger.close(0)


def _by_checkpoint(rows: list[dict[str, Any]], x: float | None) -> dict[float | None, list[dict[str, Any]]]:
    """Rows of kept checkpoints (``.../checkpoint_<env steps>.pt``) by env steps; other rows under ``x``."""
    out: dict[float | None, list[dict[str, Any]]] = {}
    for row in rows:
        name = Path(row["policy"]).stem
        steps = name.removeprefix("checkpoint_")
        at = float(steps) if name.startswith("checkpoint_") and steps.isdigit() else x
        out.setdefault(at, []).append(row)
    return dict(sorted(out.items(), key=lambda kv: -1.0 if kv[0] is None else kv[0]))


def _objective_names(report: dict[str, Any]) -> list[str]:
    """The candidate objectives a report weighed (the keys of a seed's weights)."""
    first = next(iter(aggregate.member_results(report).values()))
    return list(next(iter(first.values()))["weights"])


def redraw(path: Path) -> list[Path]:
    """The figures and README of a committed ``results.json``, drawn again from its numbers alone."""
    from analysis import result_figures

    results = json.loads(path.read_text())
    figures = result_figures.draw(results, path.parent)
    with atomic_path(path.parent / "README.md") as tmp:
        tmp.write_text(result_figures.readme(results, [p.name for p in figures]))
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="misgen experiment",
        description="Train, evaluate and aggregate an experiment (configs/run_experiment/) into results/.",
    )
    parser.add_argument("name", nargs="?", help="the experiment (--list: all of them)")
    parser.add_argument("--list", action="store_true", help="list the experiments and their questions")
    parser.add_argument("--scale", default="cpu", choices=SCALES)
    parser.add_argument("--out", type=Path, default=Path("results"), help="results root (default: results/)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings/evaluations side by side, one CPU thread each")
    parser.add_argument("--population", type=int, help="seeds per arm instead of the scale's (a smaller run)")
    parser.add_argument("--train", action="append", default=[], metavar="OVERRIDE", help="extra train override")
    parser.add_argument("--evaluate", action="append", default=[], metavar="OVERRIDE", help="extra evaluate override")
    parser.add_argument("--arm", action="append", default=[], help="only this arm (repeatable)")
    parser.add_argument("--evaluation", action="append", default=[], help="only this evaluation (repeatable)")
    parser.add_argument("--logger", default="none", choices=("none", "wandb"), help="logger of every run")
    parser.add_argument("--redraw", action="store_true", help="only redraw figures and README from results.json")
    parser.add_argument("--dry-run", action="store_true", help="print the steps it would run (and skip); run nothing")
    args = parser.parse_args(argv)
    if not args.list and not args.name:
        parser.error("name the experiment (or --list)")
    if args.jobs < 1 or (args.population is not None and args.population < 1):
        parser.error("--jobs and --population must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """The command line (module docstring)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    if args.list:
        for name in spec_names():
            spec = load_spec(name)
            print(f"{name:16} {spec.title}: {spec.question}")
        return
    options = Options(
        args.scale,
        args.out,
        args.jobs,
        args.population,
        args.train,
        args.evaluate,
        args.logger,
        args.arm,
        args.evaluation,
    )
    try:
        if args.redraw:
            for path in redraw(args.out / args.name / args.scale / "results.json"):
                print(path)
            return
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ConfigError) else 1)
    done = run_or_plan(args.name, options, args.dry_run)
    if done is None:
        return
    _, results = done
    print(result_table(results))
    print(f"\nresults in {args.out / args.name / args.scale}/ (README.md, results.json, figures)")


def run_or_plan(name: str, options: Options, dry_run: bool) -> tuple[Experiment, dict[str, Any]] | None:
    """Run experiment ``name`` (its results), or with ``dry_run`` print its plan (``None``); a bad spec,
    a missing run or a failed step exits with a message naming it (status 2 for a config error, else 1)."""
    try:
        experiment = Experiment(name, options)
        if dry_run:
            print("\n".join(experiment.plan()))
            return None
        return experiment, experiment.run()
    except (ConfigError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ConfigError) else 1)


def result_table(results: dict[str, Any]) -> str:
    """The README's table, for the terminal."""
    from analysis.result_figures import table

    return table(results)


if __name__ == "__main__":
    main()
