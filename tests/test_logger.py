"""Run logging: an offline wandb run read back from its own record, mode resolution, group and tags.

The one test here that starts wandb runs it offline in a temporary dir (no network); everything else
in the suite runs with WANDB_MODE=disabled (conftest).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.checkpoint import load_checkpoint
from experiments.logger import LoggerConfig, NullLogger, make_logger, resolve_mode, run_identity
from tests.conftest import ROOT
from tests.test_train import SMALL_MAZES, TINY

DISTRIBUTIONS = ("train", "shift_arrow", "shift_size", "shift_both")
TRAINING_KEYS = {"policy_loss", "value_loss", "entropy", "clip_frac", "success_rate", "episode_length", "steps_per_s"}

# wandb's transaction log (``run-<id>.wandb``) is a leveldb-style log: a 7-byte file header
# (ident, magic, version), then 32 KiB blocks of chunks, each with a header (crc32 of type and data,
# length, type) and the bytes of a ``wandb_internal_pb2.Record``, split over chunks when it does not
# fit in a block. wandb 0.31 writes it from its Go core and ships no Python reader, hence this one.
_FILE_HEADER = struct.Struct("<4sHB")
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> Iterator:
    """The ``Record`` protobufs of a ``.wandb`` file, in order (checksums verified)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = _FILE_HEADER.unpack_from(data)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a wandb transaction log"
    pos, pending = _FILE_HEADER.size, b""
    while pos + _CHUNK_HEADER.size <= len(data):
        if _BLOCK - pos % _BLOCK < _CHUNK_HEADER.size:  # a block's zero-padded tail
            pos += _BLOCK - pos % _BLOCK
            continue
        crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0:  # zero padding at the end of the file
            break
        chunk = data[pos + _CHUNK_HEADER.size : pos + _CHUNK_HEADER.size + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"bad checksum at byte {pos}"
        pos += _CHUNK_HEADER.size + length
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """The test process's environment without any WANDB_* setting, wandb's own dirs in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        env[var] = str(tmp_path / "wandb-home" / var.lower())
    env["NETRC"] = str(tmp_path / "no-netrc")
    return env


def test_offline_wandb_run_records_config_group_metrics_and_a_video_per_distribution(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "experiments.train",
        f"hydra.run.dir={run_dir}",
        *(o for o in TINY if not o.startswith("logger=")),
        *SMALL_MAZES,
        "logger=wandb",
        "logger.mode=offline",
        "agent.lr=0.001",
        "total_env_steps=512",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=_offline_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (log_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = list(read_wandb_records(log_file))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]

    assert run.project == "misgen" and run.job_type == "train"
    assert run.run_group.startswith("arrow_maze-ppo:agent.lr=0.001,") and "seed" not in run.run_group
    assert list(run.tags) == ["arrow_maze", "misgen"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["seed"] == 0 and config["agent"]["lr"] == 0.001 and config["env"]["name"] == "arrow_maze"

    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({"/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item})
    logged = set().union(*rows)
    assert TRAINING_KEYS | {"env_steps", "updates"} <= logged
    for d in DISTRIBUTIONS:
        assert {f"eval/{d}/success", f"eval/{d}/return"} <= logged
        assert f"video/{d}/_type" in logged
    assert [row["_step"] for row in rows] == [row["env_steps"] for row in rows] == [256, 512]
    final = rows[-1]
    assert {final[f"video/{d}/_type"] for d in DISTRIBUTIONS} == {"video-file"}

    media = [f.path for r in records if r.WhichOneof("record_type") == "files" for f in r.files.files]
    for d in DISTRIBUTIONS:
        assert any(p.startswith(f"media/videos/video/{d}_512") and p.endswith(".gif") for p in media), media
        assert (run_dir / "videos" / f"{d}_512.gif").stat().st_size > 0

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["eval/train/success"] == final["eval/train/success"]
    assert load_checkpoint(run_dir)["wandb_run_id"] == run.run_id


def test_auto_mode_is_offline_without_a_key_and_online_with_one(monkeypatch, tmp_path):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("online") == "online"

    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'a' * 40}\n")
    netrc.chmod(0o600)
    assert resolve_mode("auto") == "online"  # what `wandb login` leaves behind

    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "b" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"  # the environment wins over the config


def test_disabled_wandb_and_logger_none_log_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_cfg = {"env": {"name": "arrow_maze"}, "seed": 0}
    for cfg in (LoggerConfig(kind="wandb"), LoggerConfig(kind="none")):
        logger = make_logger(cfg, run_cfg, tmp_path, choices={}, overrides=[])
        assert isinstance(logger, NullLogger) and logger.run_id is None
    assert list(tmp_path.iterdir()) == []


def test_unknown_logger_kind_or_mode_is_refused():
    with pytest.raises(ValueError, match=r"logger\.kind='tensorboard'"):
        make_logger({"kind": "tensorboard"}, {}, Path("."))
    with pytest.raises(ValueError, match=r"logger\.mode='sometimes'"):
        make_logger({"kind": "wandb", "mode": "sometimes"}, {}, Path("."))


def test_group_is_the_experiment_and_its_non_seed_overrides_so_seeds_share_it():
    run_cfg = {"env": {"name": "arrow_maze"}}
    common = ["agent.lr=0.001", "+env.p_decorrelate=0.1", "hydra.run.dir=x", "resume=y", "logger.mode=offline"]
    groups = {run_identity(run_cfg, {"agent": "ppo", "experiment": None}, [f"seed={s}", *common])[0] for s in range(3)}
    assert groups == {"arrow_maze-ppo:agent.lr=0.001,+env.p_decorrelate=0.1"}

    group, tags = run_identity(run_cfg, {"agent": "ppo", "experiment": "flip"}, ["experiment=flip", "seed=1"], ["x"])
    assert (group, tags) == ("flip", ["arrow_maze", "ppo", "flip", "x"])
    sb3_cfg = {**run_cfg, "agent": {"backend": "sb3"}}
    assert run_identity(sb3_cfg, {"agent": "sb3_ppo"}, ["agent=sb3_ppo"]) == (
        "arrow_maze-sb3_ppo",
        ["arrow_maze", "sb3"],
    )

    many = [f"env.distributions.d{i}.num_levels=1000" for i in range(4)]
    a, b = (run_identity(run_cfg, {}, [*many, f"total_env_steps={n}"])[0] for n in (1, 2))
    assert len(a) == len(b) == 128 and a != b  # cut to wandb's limit, told apart by a hash
