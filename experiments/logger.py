"""Run loggers: where a run's metrics go besides ``metrics.jsonl`` (which the caller always writes).

``make_logger(cfg.logger, run_cfg, run_dir)`` gives a :class:`RunLogger` with ``log(record, step)``,
``log_videos({name: path}, step)`` and ``close()``. Two kinds (``configs/logger/``):

- ``none``: does nothing.
- ``wandb``: mirrors every record to a Weights & Biases run that carries the full resolved config,
  with ``group`` / ``job_type`` / ``tags`` derived from the experiment and the sweep so a dashboard
  groups a sweep's seeds. ``mode: auto`` is online when an API key is configured (``WANDB_API_KEY``
  or a ``wandb login`` entry in netrc: checked locally, no network), offline otherwise; the
  ``WANDB_MODE`` environment variable wins over the config. Offline runs live in the run dir
  (``<run dir>/wandb/offline-run-*``); ``wandb sync`` uploads them later.

wandb is imported only when a wandb run is actually started, so ``logger=none`` and disabled runs
(the test suite) never pay for it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from envs.config import ConfigError, load_structured

log = logging.getLogger(__name__)

KINDS = ("none", "wandb")
MODES = ("auto", "online", "offline", "disabled")
DEFAULT_HOST = "https://api.wandb.ai"
# Overrides that say how a run is kept, not which experiment it is: left out of the wandb group,
# so every seed (and a resumed run) of one configuration lands in the same group.
BOOKKEEPING_KEYS = ("seed", "population", "resume", "progress", "log_every", "threads", "checkpoint_every")
BOOKKEEPING_KEYS += ("keep_checkpoint_every",)
BOOKKEEPING_PREFIXES = ("hydra.", "hydra/", "logger")
MAX_GROUP_LEN = 128  # wandb's limit
MAX_TAG_LEN = 64  # wandb's limit


@dataclass
class LoggerConfig:
    """Where a run is mirrored besides ``metrics.jsonl`` (``configs/logger/*.yaml``)."""

    kind: str = "none"
    """``none`` or ``wandb``."""
    mode: str = "auto"
    """wandb: ``auto`` (online with an API key, else offline), ``online``, ``offline`` or ``disabled``.
    The ``WANDB_MODE`` environment variable wins when set."""
    project: str = "misgen"
    """wandb project."""
    entity: str | None = None
    """wandb entity (user or team); ``null``: the account's default."""
    group: str | None = None
    """wandb group; ``null``: the experiment (or env-agent) plus the sweep's non-seed overrides."""
    job_type: str = "train"
    """wandb job type (``train``; the evaluation CLI uses ``eval``)."""
    tags: list[str] = field(default_factory=list)
    """Extra wandb tags, after the derived ``[env, agent backend, experiment]``."""
    video_every_eval: bool = False
    """Record one episode per distribution at each evaluation as a GIF in ``<run dir>/videos``
    (and log it to wandb). Cheap: one env, one episode per distribution."""

    def validate(self) -> LoggerConfig:
        if self.kind not in KINDS:
            raise ConfigError(f"logger.kind={self.kind!r} must be one of {KINDS}")
        if self.mode not in MODES:
            raise ConfigError(f"logger.mode={self.mode!r} must be one of {MODES}")
        return self


def load_logger_config(base: Any = None) -> LoggerConfig:
    """The logger config: ``LoggerConfig`` ← ``base`` (Hydra's ``cfg.logger``), validated.
    An unknown key or a bad value raises ``ConfigError`` naming it."""
    return load_structured(LoggerConfig, base, None, "logger").validate()


class RunLogger(Protocol):
    """What a training or evaluation run reports to, besides its ``metrics.jsonl``."""

    run_id: str | None
    """The backend's id of the run (stored in checkpoints so a resumed run continues it), if any."""
    group: str | None
    """The run's group, if any (stored with the id: a resumed run keeps it even if its overrides differ)."""

    def log(self, record: Mapping[str, Any], step: int) -> None:
        """Record scalar metrics at ``step`` (env steps)."""
        ...

    def log_videos(self, videos: Mapping[str, str | os.PathLike], step: int) -> None:
        """Attach episode videos (GIF/MP4 files) at ``step``, one per name."""
        ...

    def log_images(self, images: Mapping[str, str | os.PathLike], step: int) -> None:
        """Attach images (PNG files) at ``step``, one per name."""
        ...

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        """Attach a table at ``step``."""
        ...

    def close(self, exit_code: int = 0) -> None:
        """Finish the run (flushes; a nonzero ``exit_code`` marks it failed)."""
        ...


class NullLogger:
    """Logs nothing: ``logger=none``, or wandb disabled."""

    run_id: str | None = None
    group: str | None = None

    def log(self, record: Mapping[str, Any], step: int) -> None:
        pass

    def log_videos(self, videos: Mapping[str, str | os.PathLike], step: int) -> None:
        pass

    def log_images(self, images: Mapping[str, str | os.PathLike], step: int) -> None:
        pass

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        pass


class WandbLogger:
    """Mirrors records to one started wandb run (finished by :meth:`close`)."""

    def __init__(self, run: Any) -> None:
        self._run = run
        self.run_id: str | None = run.id
        self.group: str | None = run.group

    def log(self, record: Mapping[str, Any], step: int) -> None:
        self._run.log(dict(record), step=step)

    def log_videos(self, videos: Mapping[str, str | os.PathLike], step: int) -> None:
        import wandb

        if videos:
            media = {
                f"video/{name}": wandb.Video(str(path), format=Path(path).suffix[1:]) for name, path in videos.items()
            }
            self._run.log(media, step=step)

    def log_images(self, images: Mapping[str, str | os.PathLike], step: int) -> None:
        import wandb

        if images:
            self._run.log({name: wandb.Image(str(path)) for name, path in images.items()}, step=step)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        import wandb

        self._run.log({name: wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)

    def close(self, exit_code: int = 0) -> None:
        self._run.finish(exit_code=exit_code)


# ------------------------------------------------------------------------------ mode
def has_wandb_credentials() -> bool:
    """Whether wandb would find an API key here, checked without the network: ``WANDB_API_KEY``
    (or an identity-token file), else a netrc entry for the wandb host (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth
    except ImportError:  # wandb before 0.22 kept this elsewhere: read netrc directly
        return _netrc_has_host(host)
    try:
        return read_netrc_auth(host=host) is not None
    except Exception as err:  # a malformed entry: wandb would refuse it too
        log.warning("ignoring the wandb netrc entry: %s", err)
        return False


def _netrc_has_host(host: str) -> bool:
    import netrc
    from urllib.parse import urlsplit

    try:
        entry = netrc.netrc(os.environ.get("NETRC")).authenticators(urlsplit(host).netloc)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def resolve_mode(mode: str) -> str:
    """The wandb mode a run uses: ``WANDB_MODE`` if set, else ``mode`` with ``auto`` resolved to
    ``online`` when an API key is configured and ``offline`` otherwise."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if mode == "auto":
        return "online" if has_wandb_credentials() else "offline"
    return mode


# -------------------------------------------------------------------------- identity
def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_identity(
    run_cfg: Mapping[str, Any], choices: Mapping[str, Any], overrides: Sequence[str], extra_tags: Sequence[str] = ()
) -> tuple[str, list[str]]:
    """The wandb ``(group, tags)`` of a run.

    group: the experiment preset's name (``experiment=``), else ``<env>-<agent config>``, then the
    command line's overrides (``hydra.overrides.task``, sorted) except seed, resume and other
    bookkeeping (:data:`BOOKKEEPING_KEYS`, ``hydra.*``, ``logger.*``), so a sweep's seeds share a
    group and its other axes do not. tags: env name, agent backend (``agent.backend``, else the
    agent config's name), experiment (if any), then ``extra_tags``.
    """
    env_name = str(run_cfg.get("env", {}).get("name", choices.get("env") or "env"))
    agent = str(choices.get("agent") or "ppo")
    backend = str(run_cfg.get("agent", {}).get("backend") or agent)
    experiment = choices.get("experiment")
    base = str(experiment) if experiment else f"{env_name}-{agent}"
    named = {"experiment"} if experiment else {"experiment", "env", "agent"}
    swept = sorted(
        (o for o in overrides if _override_key(o) not in (*BOOKKEEPING_KEYS, *named)),
        key=lambda o: (_override_key(o), o),
    )
    swept = [o for o in swept if not _override_key(o).startswith(BOOKKEEPING_PREFIXES)]
    group = f"{base}:{','.join(swept)}" if swept else base
    if len(group) > MAX_GROUP_LEN:  # keep it unique: a hash of the whole stands in for the cut tail
        digest = hashlib.sha1(group.encode()).hexdigest()[:8]
        group = f"{group[: MAX_GROUP_LEN - len(digest) - 1]}~{digest}"
    tags = [env_name, backend, *([str(experiment)] if experiment else []), *extra_tags]
    return group, list(dict.fromkeys(t[:MAX_TAG_LEN] for t in tags))


def _hydra_context() -> tuple[dict[str, Any], list[str]]:
    """The config-group choices and command-line overrides of the running Hydra job (empty outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}, []
    hc = HydraConfig.get()
    return dict(hc.runtime.choices), list(hc.overrides.task)


# --------------------------------------------------------------------------- factory
def make_logger(
    logger_cfg: Any,
    run_cfg: Mapping[str, Any],
    run_dir: Path,
    *,
    run_id: str | None = None,
    group: str | None = None,
    choices: Mapping[str, Any] | None = None,
    overrides: Sequence[str] | None = None,
) -> RunLogger:
    """The run logger ``logger_cfg`` (``cfg.logger`` or a :class:`LoggerConfig`) asks for.

    ``run_cfg``: the full resolved config, stored with the run. ``run_dir``: where an offline wandb
    run is kept. ``run_id`` / ``group``: continue that wandb run in that group (a resumed training
    run; ``group`` wins over the config's and the derived one). ``choices`` / ``overrides`` default
    to the running Hydra job's.
    """
    cfg = logger_cfg if isinstance(logger_cfg, LoggerConfig) else load_logger_config(logger_cfg)
    if cfg.kind == "none":
        return NullLogger()
    mode = resolve_mode(cfg.mode)
    if mode == "disabled":
        return NullLogger()
    if choices is None or overrides is None:
        hydra_choices, hydra_overrides = _hydra_context()
        choices = hydra_choices if choices is None else choices
        overrides = hydra_overrides if overrides is None else overrides
    derived, tags = run_identity(run_cfg, choices, overrides, cfg.tags)
    group = group or cfg.group or derived
    import wandb

    run_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=cfg.project,
        entity=cfg.entity,
        group=group,
        job_type=cfg.job_type,
        tags=tags,
        name=f"{group.split(':', 1)[0]}-seed{run_cfg.get('seed', 0)}",
        config=dict(run_cfg),
        dir=str(run_dir),
        mode=mode,
        id=run_id,
        resume="allow" if run_id else None,
        reinit="create_new",  # a population's members are runs of their own, open side by side in one process
    )
    log.info("wandb %s run %s (group %s) in %s", mode, run.id, group, run_dir)
    return WandbLogger(run)
