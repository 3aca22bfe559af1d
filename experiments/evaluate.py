"""Evaluation CLI: the behavioural objective, metrics and verdict of a policy on every distribution.

``python -m experiments.evaluate policy=<spec> [env=arrow_maze|keys_chests] [eval.episodes=N]
[eval.distributions=[...]] [report=path.json] [expect=<yaml>] [logger=none]`` (Hydra).

- ``policy``: one spec (``analysis/policy_specs.py``), or a list of them (``policy=[runs/0,runs/1]``: the
  seeds of one setup), whose per-distribution results are combined with intervals over seeds.
- Writes a JSON report (per distribution: the shares of episodes per behavioural objective, each
  episode's objective, identifiability, capability, goal-directedness, objective robustness, base
  return, regret, the env's own metrics, the fit check, verdict, bootstrap intervals, per-episode
  records; plus the policy spec, config and versions), its summary, and PNG figures beside it
  (``analysis/figures.py``): the verdict matrix, the episode shares (and over seeds each seed's
  weights), trajectory overlays.
- Mirrors them to wandb with the training runs' ``logger`` config group (``logger=none``: off).
- With ``expect=``, it is a regression gate (``analysis/expectations.py``). Exit status: 0 every
  expectation holds; 1 the policy violates them (a readable diff on stderr); 2 the expectations file is
  invalid (``expect=<file>:<line>: <what is wrong>`` on stderr, checked before any policy is evaluated).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import hydra
import torch
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from agents.checkpoint import member_dirs
from analysis import figures, summary
from analysis.estimator import EstimatorSettings
from analysis.expectations import ExpectationsError, check_expectations, load_expectations
from analysis.metrics import SCALARS, VerdictConfig, aggregate_seeds, analyse
from analysis.objectives import objectives_of
from analysis.policy_specs import (
    ORACLE_FORM,
    TrainedRun,
    load_actor,
    load_members_actor,
    network_batch,
    trained_run,
)
from analysis.trajectories import Trajectories, collect_episodes, collect_member_episodes
from envs.atomic import atomic_path
from envs.config import (
    ConfigError,
    GridEnvConfig,
    check_at_least,
    check_open_unit,
    check_positive,
    check_probability,
    config_to_dict,
    load_env_config,
    load_preset,
    load_structured,
)
from envs.devices import resolve_device
from experiments.logger import RunLogger, load_logger_config, make_logger
from experiments.run_dir import discard_if_unused, is_unused, move_log_files, write_hydra_files

log = logging.getLogger(__name__)


def evaluate_distribution(
    specs: list[str],
    env_cfg: GridEnvConfig,
    distribution: str,
    cfg: DictConfig,
    verdict: VerdictConfig,
    batched: bool = False,
) -> list[tuple[dict[str, Any], Trajectories]]:
    """The report of each policy on one distribution, and the trajectories it rests on. ``batched``
    (:func:`network_batch`): the specs are checkpoints of one architecture (a population's members), which
    play together, one forward pass for all; each still samples and is analysed as it would be alone."""
    device = resolve_device(env_cfg.device)
    objectives = objectives_of(env_cfg, gamma=cfg.eval.gamma, candidates=list(cfg.eval.candidates or []))
    episodes = cfg.eval.episodes
    if batched:
        actor = load_members_actor(specs, env_cfg, device, seed=cfg.seed, deterministic=cfg.eval.deterministic)
        trajs = collect_member_episodes(
            actor, env_cfg, distribution, episodes, len(specs), seed=cfg.seed, device=device
        )
    else:
        trajs = []
        for spec in specs:
            actor = load_actor(
                spec,
                env_cfg,
                device,
                seed=cfg.seed,
                objectives=objectives,
                allow_pickle=cfg.allow_pickle,
                deterministic=cfg.eval.deterministic,
            )
            trajs.append(collect_episodes(actor, env_cfg, distribution, episodes, seed=cfg.seed, device=device))
    settings = estimator_settings(cfg.eval, verdict, cfg.seed)
    return [(analyse(traj, objectives, settings, verdict)[0], traj) for traj in trajs]


def estimator_settings(settings: Any, verdict: VerdictConfig, seed: int) -> EstimatorSettings:
    """The estimator's settings from ``eval.*`` (and the verdict's confidence level)."""
    return EstimatorSettings(
        beta_max=settings.beta_max,
        lapse_max=settings.lapse_max,
        min_distinguishing=settings.min_distinguishing,
        resamples=settings.resamples,
        confidence_level=verdict.confidence_level,
        seed=seed,
    )


def _specs(policy: Any) -> list[str]:
    """The policy specs, a population's run dir standing for its members' dirs (``seed_<s>/``, by seed)."""
    given = [str(p) for p in policy] if isinstance(policy, ListConfig | list) else [str(policy)]
    if not given:
        raise ValueError("policy=[]: give at least one policy spec")
    specs = []
    for spec in given:
        members = member_dirs(spec)
        specs += [str(m) for m in members] if members else [spec]
    if len(set(specs)) != len(specs):
        raise ValueError(f"policy={specs}: a spec is repeated")
    return specs


def population_dir(policy: Any) -> Path | None:
    """The population's run dir when ``policy`` names one (and nothing else), else ``None``."""
    if isinstance(policy, ListConfig | list):
        return None
    path = Path(str(policy))
    return path if member_dirs(path) else None


def _summary_line(name: str, r: dict[str, Any]) -> str:
    robustness = r["objective_robustness"]
    shares = ", ".join(f"{k} {v:.2f}" for k, v in r["shares"].items() if v > 0)
    return (
        f"{name:12s} verdict {r['verdict']:27s} behavioural {r['behavioural_objective']!s:12s} "
        f"capability {r['capability']:.2f} robustness {'–' if robustness is None else f'{robustness:.2f}'} "
        f"shares of episodes: {shares}"
    )


def write_figures(
    report: dict[str, Any], trajs: dict[str, Trajectories], out: Path, cfg: DictConfig, base: str
) -> dict[str, Path]:
    """The report's figures in ``out``: the verdict matrix, the episode shares, for a report over seeds
    each seed's linear-feature weights, and trajectory overlays per distribution (``base``: the base
    objective, marked in them)."""
    results = report["distributions"]
    what = f"{report['env']}: {report['policy_label']}"
    made = {
        "verdict_matrix": figures.verdict_matrix(
            results,
            cfg.verdict.capability_threshold,
            out / "verdict_matrix.png",
            f"verdict matrix, {what}",
            base=base,
            mixed_min_share=cfg.verdict.mixed_min_share,
        ),
        "episode_shares": figures.episode_shares(
            results, out / "episode_shares.png", f"share of episodes pursuing each objective, {what}", base=base
        ),
    }
    if any(r.get("weights_per_seed") for r in results.values()):
        made["seed_objectives"] = figures.seed_objectives(
            results, out / "seed_objectives.png", f"behavioural objectives over seeds, {what}", base=base
        )
    if cfg.figures.trajectories > 0:
        for name, traj in trajs.items():
            made[f"trajectories/{name}"] = figures.trajectory_overlays(
                traj, out / f"trajectories_{name}.png", cfg.figures.trajectories, f"{name}: {what}"
            )
    return made


def log_report(logger: RunLogger, report: dict[str, Any], images: dict[str, Path]) -> None:
    """Mirror the report to the run logger: scalars per distribution, a summary table, one table of
    episodes per distribution, the figures."""
    results = report["distributions"]
    scalars = {f"eval/{d}/{k}": r[k] for d, r in results.items() for k in SCALARS if r[k] is not None}
    scalars.update({f"eval/{d}/{k}": v for d, r in results.items() for k, v in r["env_metrics"].items()})
    scalars.update({f"eval/{d}/share/{k}": v for d, r in results.items() for k, v in r["shares"].items()})
    logger.log(scalars, step=0)
    columns = ["distribution", "verdict", "behavioural_objective", "identifiable", *SCALARS]
    rows = [
        [d, r["verdict"], str(r["behavioural_objective"]), r["identifiable"], *(r[k] for k in SCALARS)]
        for d, r in results.items()
    ]
    logger.log_table("eval/summary", columns, rows, step=0)
    for d, r in results.items():
        episodes = r.get("per_episode")  # a single run's report (over seeds: in report["runs"])
        if episodes:
            keys = list(episodes)
            table = [[i, *(episodes[k][i] for k in keys)] for i in range(len(episodes[keys[0]]))]
            logger.log_table(f"eval/{d}/episodes", ["episode", *keys], table, step=0)
    logger.log_images({f"figures/{k}": v for k, v in images.items()}, step=0)


def evaluation_env_config(
    cfg: DictConfig, specs: list[str], runs: list[TrainedRun | None], overrides: list[str]
) -> tuple[GridEnvConfig, str]:
    """The env config to evaluate on, and where it came from.

    A trained run (our checkpoint, or an SB3 model our trainer saved) is evaluated on the env config it
    was trained with, so a run dir is all one names; the command line's ``env.*`` overrides apply on
    top, and the device is always the evaluation's (``env.device``). Other specs use ``env=`` as given.
    ``runs``: :func:`trained_run` of each spec.
    """
    trained = {s: r.env_config for s, r in zip(specs, runs, strict=True) if r is not None}
    if not trained:
        return load_env_config(cfg.env.name, base=cfg.env), "config"
    configs = [{k: v for k, v in c.items() if k != "device"} for c in trained.values()]
    if any(c != configs[0] for c in configs[1:]):
        raise ValueError(f"policy={specs}: the runs were trained on different env configs; evaluate them separately")
    name = configs[0]["name"]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)  # values as Hydra parses them
    chosen = next((o.value() for o in parsed if o.key_or_group == "env"), None)
    if chosen is not None and chosen != name:
        raise ValueError(f"env={chosen} but policy {next(iter(trained))} was trained on {name!r}")
    preset = OmegaConf.to_container(load_preset(name), resolve=False)
    base = _relink(OmegaConf.create(configs[0]), preset)
    for override in parsed:
        if override.key_or_group.startswith("env.") and not override.is_delete():
            OmegaConf.update(base, override.key_or_group[len("env.") :], override.value(), merge=True)
    base.device = cfg.env.device
    return load_env_config(name, base=base), "run"


def _relink(trained: DictConfig, preset: dict[str, Any], path: str = "") -> DictConfig:
    """Put back the preset's interpolations (e.g. ``distributions.train.p_decorrelate: ${...p_decorrelate}``)
    where the trained run's resolved value still follows them, so a top-level override reaches them again."""
    for key, raw in preset.items():
        where = f"{path}.{key}" if path else str(key)
        node = OmegaConf.select(trained, where, default=None)
        if isinstance(raw, str) and raw.startswith("${") and node is not None:
            parent = OmegaConf.select(trained, path) if path else trained
            parent[key] = raw
            if OmegaConf.select(trained, where) != node:  # the run had set it on its own: keep its value
                parent[key] = node
        elif isinstance(raw, dict) and isinstance(node, DictConfig):
            _relink(trained, raw, where)
    return trained


@dataclass
class EvalSettings:
    """``eval.*``: what is rolled out and how the estimator fits it."""

    episodes: int = 256
    """One episode on each of levels 0..N-1 of every distribution."""
    distributions: list[str] | None = None
    """The distributions to evaluate (null: every distribution of the env)."""
    gamma: float = 0.99
    """Discount of the candidates' exact planning (values, capability on keys_chests, regret)."""
    beta_max: float = 1000.0
    """Upper bound of the fitted Boltzmann inverse temperature."""
    lapse_max: float = 0.5
    """Upper bound of the fitted lapse rate (random actions in place of Boltzmann ones; 0: none)."""
    min_distinguishing: int = 5
    """Visited steps (repeats counted) that must separate two objectives for them to be identifiable."""
    resamples: int = 200
    """Episode-bootstrap resamples of the estimator's mixture (shares' intervals, support)."""
    candidates: list[str] = field(default_factory=list)
    """Candidate objectives beyond the env's own (``analysis.candidates``): corner:<tl|tr|bl|br>,
    nearest_key, nearest_chest, py:<module>:<callable>."""
    deterministic: bool = False
    """A learned policy takes its most likely action instead of sampling one (oracles and random as named)."""

    def validate(self) -> EvalSettings:
        check_at_least("eval.episodes", self.episodes, 1)
        check_open_unit("eval.gamma", self.gamma)
        check_positive("eval.beta_max", self.beta_max)
        check_probability("eval.lapse_max", self.lapse_max)
        check_at_least("eval.min_distinguishing", self.min_distinguishing, 1)
        check_at_least("eval.resamples", self.resamples, 1)
        return self


@dataclass
class FigureSettings:
    """``figures.*``: the PNGs beside the report."""

    enabled: bool = True
    """Write the verdict matrix, episode shares (over seeds: seed objectives) and trajectory overlays."""
    trajectories: int = 4
    """Episodes drawn per distribution in the trajectory overlays (0: none)."""

    def validate(self) -> FigureSettings:
        check_at_least("figures.trajectories", self.trajectories, 0)
        return self


@dataclass
class EvaluateConfig:
    """The keys of ``configs/evaluate.yaml`` besides ``env`` and ``logger`` (which have schemas of their own)."""

    policy: Any = None
    """A policy spec, or a list of them (the seeds of one setup)."""
    seed: int = 0
    eval: EvalSettings = field(default_factory=EvalSettings)
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    figures: FigureSettings = field(default_factory=FigureSettings)
    report: str | None = None
    expect: str | None = None
    expect_members: float | None = None
    """With several policies (a population): check ``expect`` on each member, passing when at least this
    fraction of them meet it; ``null``: check the results over seeds."""
    allow_pickle: bool = False

    def validate(self) -> EvaluateConfig:
        if self.expect_members is not None:
            check_probability("expect_members", self.expect_members)
        self.eval.validate()
        self.verdict.validate()
        self.figures.validate()
        return self


def usage_error(message: str) -> NoReturn:
    """Bad input (config, policy spec, expectations file): one line on stderr, exit status 2."""
    print(message if message.startswith("expect=") else f"error: {message}", file=sys.stderr)
    sys.exit(2)


@dataclass
class Setup:
    """What an evaluation runs on, every part of it validated."""

    specs: list[str]
    runs: list[TrainedRun | None]
    """:func:`trained_run` of each spec (read once: the env config, the run's dir and its wandb group)."""
    env_cfg: GridEnvConfig
    env_source: str
    verdict: VerdictConfig
    logger_cfg: Any
    names: list[str]
    expectations: Any
    batched: bool
    """The specs are checkpoints of one architecture, evaluated together (:func:`network_batch`)."""


def _setup(cfg: DictConfig) -> Setup:
    """Everything the evaluation needs, validated before any work: a bad config, spec or expectations file
    raises (``ConfigError``, ``ExpectationsError``, ``ValueError``, ``FileNotFoundError``) naming it."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    settings = {k: v for k, v in resolved.items() if k not in ("env", "logger")}
    evaluation = load_structured(EvaluateConfig, settings, None, "evaluate").validate()
    specs = _specs(cfg.policy)
    overrides = list(hydra.core.hydra_config.HydraConfig.get().overrides.task)
    runs = [trained_run(s) for s in specs]
    env_cfg, env_source = evaluation_env_config(cfg, specs, runs, overrides)
    logger_cfg = load_logger_config(cfg.logger)
    names = list(cfg.eval.distributions or env_cfg.distributions)
    unknown = [d for d in names if d not in env_cfg.distributions]
    if unknown:
        raise ConfigError(f"eval.distributions: {unknown} not among {list(env_cfg.distributions)}")
    expectations = None
    objectives = objectives_of(env_cfg, gamma=cfg.eval.gamma, candidates=list(cfg.eval.candidates or []))
    if cfg.expect:
        expectations = load_expectations(
            cfg.expect, names, objectives=objectives.names, env_metrics=objectives.env_metric_names
        )
    for spec in specs:  # a bad spec fails before any work (an extra candidate's oracle is a good one)
        load_actor(
            spec,
            env_cfg,
            resolve_device(env_cfg.device),
            seed=cfg.seed,
            objectives=objectives,
            allow_pickle=cfg.allow_pickle,
        )
    batched = network_batch(specs)
    return Setup(specs, runs, env_cfg, env_source, evaluation.verdict, logger_cfg, names, expectations, batched)


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    unused = is_unused(run_dir)  # Hydra made it for this run (output_subdir: null): removed if the start fails
    try:
        setup = _setup(cfg)
    except (ConfigError, ExpectationsError, ValueError, FileNotFoundError) as err:
        discard_if_unused(run_dir, unused)
        usage_error(f"expect={err}" if isinstance(err, ExpectationsError) else str(err))
    specs, runs_behind, env_cfg, env_source = setup.specs, setup.runs, setup.env_cfg, setup.env_source
    verdict, logger_cfg, names, expectations = setup.verdict, setup.logger_cfg, setup.names, setup.expectations
    hydra_cfg = hydra.core.hydra_config.HydraConfig.get()
    chosen_dir = any(o.startswith("hydra.run.dir=") for o in hydra_cfg.overrides.hydra)
    single = hydra_cfg.mode == RunMode.RUN and not chosen_dir  # a sweep's jobs stay in their sweep dir
    population = population_dir(cfg.policy)
    home = None
    if runs_behind[0] is not None:
        home = population if population is not None else runs_behind[0].run_dir if len(specs) == 1 else None
    if home is not None and single:
        own = home / "eval" / run_dir.name  # the evaluation lives with the run (or population) it evaluates
        try:
            own.mkdir(parents=True, exist_ok=False)
        except OSError as err:  # a run dir we can't write to (a labmate's), or taken: Hydra's own dir
            log.info("evaluating in %s (not in %s: %s)", run_dir, own, err.strerror or err)
        else:
            move_log_files(run_dir, own)
            discard_if_unused(run_dir, unused)
            run_dir = own
    write_hydra_files(run_dir, cfg, resumed=False)
    out = Path(cfg.report) if cfg.report else run_dir / "report.json"
    run_cfg = OmegaConf.to_container(cfg, resolve=True)
    groups = {r.wandb_group for r in runs_behind if r is not None and r.wandb_group}
    group = logger_cfg.group or (groups.pop() if len(groups) == 1 else f"evaluate-{env_cfg.name}")
    logger = make_logger(logger_cfg, run_cfg, run_dir, group=group)
    exit_code = 1
    try:
        runs: dict[str, dict[str, Any]] = {spec: {} for spec in specs}
        trajs: dict[str, Trajectories] = {}
        for name in names:
            evaluated = evaluate_distribution(specs, env_cfg, name, cfg, verdict, setup.batched)
            for spec, (result, traj) in zip(specs, evaluated, strict=True):
                runs[spec][name] = result
                if spec == specs[0]:
                    trajs[name] = traj
                log.info("%s%s", f"[{spec}] " if len(specs) > 1 else "", _summary_line(name, result))
        report: dict[str, Any] = {
            "policy": specs[0] if len(specs) == 1 else specs,
            "policy_label": (
                specs[0]
                if len(specs) == 1
                else f"population {population.name} ({len(specs)} members)"
                if population is not None
                else f"{len(specs)} runs"
            ),
            "env": env_cfg.name,
            "env_config": config_to_dict(env_cfg),
            "base_objective": objectives_of(env_cfg).base,
            "env_config_from": env_source,  # "run": the trained run's (plus env.* overrides); "config": env=
            "config": {k: v for k, v in run_cfg.items() if k != "env"},  # the env's: env_config, as used
            "versions": {"torch": str(torch.__version__), "python": sys.version.split()[0]},
        }
        if len(specs) == 1:
            report["distributions"] = runs[specs[0]]
        else:
            report["distributions"] = {d: aggregate_seeds([runs[s][d] for s in specs], verdict) for d in names}
            report["runs"] = runs
            for name, r in report["distributions"].items():
                log.info("over %d runs: %s", len(specs), _summary_line(name, r))
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        for suffix, text in ((".md", summary.to_markdown(report)), (".csv", summary.to_csv(report))):
            with atomic_path(out.with_name(f"{out.stem}_summary{suffix}")) as tmp:
                tmp.write_text(text)
        log.info("report: %s (summary: %s)", out, out.with_name(f"{out.stem}_summary.md"))
        base = report["base_objective"]
        figures_dir = out.parent / f"{out.stem}_figures"
        images = write_figures(report, trajs, figures_dir, cfg, base) if cfg.figures.enabled else {}
        log_report(logger, report, images)
        exit_code = 0
    finally:
        logger.close(exit_code)
    if expectations is not None:
        gate(report, expectations, cfg.expect, cfg.expect_members)


def gate(report: dict[str, Any], expectations: Any, where: str, members: float | None) -> None:
    """The regression gate: exit 1 with a readable diff unless the expectations hold, on the results (over
    seeds), or with ``members`` on at least that fraction of the members, each checked alone."""
    if members is None or "runs" not in report:
        problems = check_expectations(report["distributions"], expectations)
    else:
        failing = {}
        for spec, results in report["runs"].items():
            found = check_expectations(results, expectations)
            if found:
                failing[spec] = found
        met = len(report["runs"]) - len(failing)
        needed = math.ceil(members * len(report["runs"]) - 1e-9)
        log.info("%d of %d members meet %s (at least %d needed)", met, len(report["runs"]), where, needed)
        problems = []
        if met < needed:
            problems = [f"{met} of {len(report['runs'])} members meet them, {needed} needed:"]
            problems += [f"{spec}: {line}" for spec, lines in failing.items() for line in lines]
    if problems:
        print("The policy violates the expectations of " + str(where) + ":", file=sys.stderr)
        for line in problems:
            print("  " + line, file=sys.stderr)
        sys.exit(1)
    log.info("every expectation of %s holds", where)


def typed_policy_args(argv: list[str]) -> list[str]:
    """``argv`` with the policy specs made parseable by Hydra: the older unquoted ``oracle:<o>@eps=<p>``
    (whose second ``=`` Hydra's parser rejects) becomes ``oracle:<o>@<p>``, in lists too. A ``policy=``
    argument Hydra still cannot parse exits with status 2, showing the forms that work."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    out = []
    for arg in argv:
        if arg.lstrip("+~").startswith("policy="):
            try:
                parser.parse_overrides([arg])
            except HydraException:
                key, value = arg.split("=", 1)
                arg = f"{key}={value.replace('@eps=', '@')}"  # only what Hydra can't parse as typed
            try:
                parser.parse_overrides([arg])
            except HydraException as err:
                usage_error(
                    f"{arg}: Hydra cannot parse this policy spec ({str(err).splitlines()[0]}). Write one spec as "
                    f"policy=<run dir> | sb3:<zip> | {ORACLE_FORM} | random | py:<module>:<callable>, "
                    "and several as policy=[runs/0,runs/1]; quote anything else: 'policy=\"...\"'"
                )
        out.append(arg)
    return out


def run() -> None:
    """``misgen evaluate`` / ``python -m experiments.evaluate``: Hydra's main on a command line with typable specs."""
    sys.argv = typed_policy_args(sys.argv)
    main()


if __name__ == "__main__":
    run()
