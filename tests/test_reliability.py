"""What survives a kill, a preemption, a torn file, a corrupt checkpoint, a second run in the same dir and a
bad config value (docs/reliability.md)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agents.checkpoint import (
    FILENAME,
    TRAINING_FIELDS,
    CheckpointError,
    content_hash,
    load_checkpoint,
    require,
    save_checkpoint,
)
from agents.networks import NetworkConfig
from agents.ppo import PPO, PPOConfig
from envs.arrow_maze import ArrowMazeCore
from envs.atomic import atomic_path
from experiments import metrics_file
from experiments.metrics_file import MetricsFileError
from experiments.run_dir import RunDirLocked, lock_run_dir
from experiments.stop import StopRequested, StopSignals, stop_signals
from tests.conftest import ROOT, run_module, small_config
from tests.test_train import SMALL_MAZES, TINY

LONG = [*TINY, *SMALL_MAZES, "checkpoint_every=1000", "total_env_steps=100000000", "progress=log"]


def _train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_module("experiments.train", run_dir, *TINY, *SMALL_MAZES, *overrides)


def _update_steps(run_dir: Path) -> list[int]:
    rows, _ = metrics_file.read(run_dir / "metrics.jsonl")
    return [r["env_steps"] for r in rows if "policy_loss" in r]


def _start_long_run(run_dir: Path, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "experiments.train", f"hydra.run.dir={run_dir}", *LONG, *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_updates(run_dir: Path, proc: subprocess.Popen, n: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file() and metrics.read_text().count("policy_loss") >= n:
            return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no {n} updates within {timeout} s")


# ------------------------------------------------------------------------ stop signals
@pytest.mark.parametrize(
    ("signum", "backend"), [(signal.SIGTERM, "ppo"), (signal.SIGUSR2, "ppo"), (signal.SIGTERM, "sb3_ppo")]
)
def test_a_stop_signal_checkpoints_the_last_iteration_and_the_rerun_continues_exactly(tmp_path, signum, backend):
    proc = _start_long_run(tmp_path, f"agent={backend}")
    _wait_for_updates(tmp_path, proc, 3)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, out
    steps = _update_steps(tmp_path)
    if backend == "ppo":
        saved = load_checkpoint(tmp_path)["env_steps"]
    else:
        from agents.sb3 import read_sb3_meta

        saved = read_sb3_meta(tmp_path)["env_steps"]
    assert saved == steps[-1] and saved % 1000 != 0  # the signal's checkpoint, not a periodic one
    proc = _train(tmp_path, f"agent={backend}", f"total_env_steps={saved + 512}")
    assert proc.returncode == 0, proc.stderr
    assert _update_steps(tmp_path) == list(range(256, saved + 513, 256))  # no row lost, none twice


def test_a_stop_signal_checkpoints_every_member_of_a_population_and_the_rerun_continues_them(tmp_path):
    proc = _start_long_run(tmp_path, "population=2")
    _wait_for_updates(tmp_path / "seed_1", proc, 3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    saved = {load_checkpoint(tmp_path / f"seed_{s}")["env_steps"] for s in (0, 1)}
    assert (
        len(saved) == 1
        and saved.pop() == _update_steps(tmp_path / "seed_0")[-1] == _update_steps(tmp_path / "seed_1")[-1]
    )
    last = _update_steps(tmp_path / "seed_0")[-1]
    proc = _train(tmp_path, "population=2", f"total_env_steps={last + 512}")  # auto_resume: the same dir
    assert proc.returncode == 0, proc.stderr
    for seed in (0, 1):
        assert _update_steps(tmp_path / f"seed_{seed}") == list(range(256, last + 513, 256))


def test_stop_signals_hand_the_signal_to_the_handler_before_them_after_the_checkpoint():
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))  # as submitit's requeue
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert stop.requested and seen == []  # recorded, not acted on yet
            with pytest.raises(StopRequested):
                stop.check()
        with pytest.raises(SystemExit) as exited:  # as the trainer does: after the block, the checkpoint written
            stop.finish(signal.SIGUSR1)
        assert seen == [signal.SIGUSR1] and exited.value.code == 128 + signal.SIGUSR1
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_submitits_preemption_signals_are_stop_signals(monkeypatch):
    assert {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2} <= set(stop_signals())
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "SIGHUP")
    assert signal.SIGHUP in stop_signals()


def test_a_second_ctrl_c_stops_at_once():
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here


# ------------------------------------------------------------------------ metrics file
def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    assert _train(tmp_path, "total_env_steps=512").returncode == 0
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"env_steps": 768, "updates": 3, "polic')  # killed mid-write
    proc = _train(tmp_path, "total_env_steps=1024")
    assert proc.returncode == 0, proc.stderr
    assert _update_steps(tmp_path) == [256, 512, 768, 1024]
    assert "torn last line" in proc.stdout + proc.stderr


def test_a_malformed_metrics_line_in_the_middle_fails_naming_the_line(tmp_path):
    assert _train(tmp_path, "total_env_steps=512").returncode == 0
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    proc = _train(tmp_path, "total_env_steps=1024")
    assert proc.returncode == 2 and "metrics.jsonl:2: malformed metrics line" in proc.stderr
    with pytest.raises(MetricsFileError, match=r"metrics.jsonl:2"):
        metrics_file.read(tmp_path / "metrics.jsonl")


def test_a_complete_last_line_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"env_steps": 256}\n{"env_steps": 512}')
    assert metrics_file.read(path) == ([{"env_steps": 256}, {"env_steps": 512}], False)
    metrics_file.keep_until(path, 512)
    assert path.read_text() == '{"env_steps": 256}\n{"env_steps": 512}\n'


def test_a_restart_before_the_first_checkpoint_starts_its_metrics_anew(tmp_path):
    rows = [{"env_steps": 256, "updates": 1, "policy_loss": 0.0}, {"env_steps": 512, "updates": 2, "policy_loss": 0.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # killed before a checkpoint
    assert _train(tmp_path, "total_env_steps=512").returncode == 0
    assert _update_steps(tmp_path) == [256, 512]


def test_no_temporary_file_of_a_killed_write_survives_a_restart(tmp_path):
    stale = [tmp_path / ".checkpoint.k1ll3d.tmp.pt", tmp_path / ".metrics.k1ll3d.tmp.jsonl"]
    for path in stale:
        path.write_bytes(b"half a file")
    foreign = tmp_path / ".notes.tmp"  # not our pattern: left alone
    foreign.write_text("mine")
    assert _train(tmp_path, "total_env_steps=256").returncode == 0
    assert not any(p.exists() for p in stale) and foreign.exists()


# ---------------------------------------------------------------------------- the lock
def test_a_second_run_in_a_locked_run_dir_fails_at_once_naming_the_holder(tmp_path):
    with lock_run_dir(tmp_path):  # this test process is the first run
        proc = _train(tmp_path, "total_env_steps=256")  # run_module's timeout: a run that waited would fail here
    assert proc.returncode == 2
    assert f"in use by another run (pid {os.getpid()} on host" in proc.stderr
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / ".hydra").exists()


def test_the_lock_of_a_killed_run_is_free_at_once(tmp_path):
    code = "import sys,time; from pathlib import Path; from experiments.run_dir import lock_run_dir\n"
    code += "with lock_run_dir(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirLocked, match=f"pid {holder.pid}"), lock_run_dir(tmp_path):
            pass
    finally:
        holder.kill()  # SIGKILL: no clean-up runs
        holder.wait()
    with lock_run_dir(tmp_path):
        pass


# ------------------------------------------------------------------------- checkpoints
@pytest.fixture
def checkpoint(tmp_path) -> Path:
    cfg = PPOConfig(num_envs=8, num_steps=8, minibatches=2, network=NetworkConfig(kind="mlp", hidden=16))
    ppo = PPO(ArrowMazeCore(small_config(), "train", num_envs=8, seed=0), cfg, seed=0)
    ppo.train_iteration()
    return save_checkpoint(tmp_path, {"env_name": "arrow_maze", "env_config": {}, "run_config": {}, **ppo.state_dict()})


class _Payload:
    """Unpickling this would create the marker file: a loader that ran it would show."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _corrupt(path: Path, how: str, tmp_path: Path) -> None:
    good = torch.load(path, weights_only=True)
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "not a torch file":
        path.write_text("checkpoint? no")
    elif how == "a tensor, not a dict":
        torch.save(torch.zeros(3), path)
    elif how == "no env_name":
        torch.save({k: v for k, v in good.items() if k != "env_name"}, path)
    elif how == "no hash":
        torch.save({k: v for k, v in good.items() if k != "content_sha256"}, path)
    elif how == "unknown format":
        torch.save({**good, "format": 99}, path)
    elif how == "edited weights, stale hash":
        good["model"][next(iter(good["model"]))].add_(1e-3)
        torch.save(good, path)
    elif how == "flipped weight byte":
        weight = good["model"][next(iter(good["model"]))].contiguous()
        raw, data = weight.numpy().tobytes(), bytearray(path.read_bytes())
        at = data.find(raw)
        assert at >= 0, "the weight's bytes are stored as they are"
        data[at + len(raw) // 2] ^= 0x10
        path.write_bytes(bytes(data))
    elif how == "pickle payload":
        torch.save({**good, "extra": _Payload(tmp_path / "marker")}, path)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("empty", "is empty"),
        ("truncated", "not a torch checkpoint"),
        ("not a torch file", "not a torch checkpoint"),
        ("a tensor, not a dict", "holds a Tensor, not a checkpoint"),
        ("no env_name", r"lacks \['env_name'\]"),
        ("no hash", "without its content_sha256"),
        ("unknown format", "checkpoint format 99"),
        ("edited weights, stale hash", "content hash mismatch"),
        ("flipped weight byte", "content hash mismatch"),
        ("pickle payload", "objects other than tensors and plain containers"),
    ],
)
def test_a_corrupt_checkpoint_fails_with_one_error_naming_the_file(checkpoint, tmp_path, how, message):
    _corrupt(checkpoint, how, tmp_path)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(checkpoint)
    assert str(checkpoint) in str(err.value)
    assert not (tmp_path / "marker").exists()  # nothing in the file ran


def test_every_flipped_byte_is_refused_or_changes_nothing(checkpoint):
    original = checkpoint.read_bytes()
    reference = content_hash(load_checkpoint(checkpoint))
    for at in range(0, len(original), max(1, len(original) // 60)):
        flipped = bytearray(original)
        flipped[at] ^= 0xFF
        checkpoint.write_bytes(bytes(flipped))
        try:
            state = load_checkpoint(checkpoint)
        except CheckpointError:
            continue
        assert content_hash(state) == reference, f"byte {at} changed the content unnoticed"


def test_a_resume_needs_every_training_field(checkpoint):
    state = load_checkpoint(checkpoint)
    require(state, TRAINING_FIELDS, checkpoint)
    del state["optimizer"]
    with pytest.raises(CheckpointError, match=r"lacks \['optimizer'\]"):
        require(state, TRAINING_FIELDS, checkpoint)


def test_a_format_3_checkpoint_without_a_hash_still_loads(checkpoint):
    good = torch.load(checkpoint, weights_only=True)
    torch.save({**{k: v for k, v in good.items() if k != "content_sha256"}, "format": 3}, checkpoint)
    assert load_checkpoint(checkpoint)["env_steps"] == good["env_steps"]


def test_resume_and_evaluate_refuse_a_corrupted_run(tmp_path):
    assert _train(tmp_path, "total_env_steps=256").returncode == 0
    _corrupt(tmp_path / FILENAME, "flipped weight byte", tmp_path)
    proc = _train(tmp_path, "total_env_steps=512")
    assert proc.returncode == 2 and "content hash mismatch" in proc.stderr
    out = tmp_path / "eval"
    proc = run_module("experiments.evaluate", out, f"policy={tmp_path}", "logger=none", "eval.episodes=2")
    assert proc.returncode == 2 and "content hash mismatch" in proc.stderr
    assert not out.exists()


# -------------------------------------------------------------------- non-finite, full disk
def test_weights_that_blew_up_are_caught_before_a_checkpoint():
    cfg = PPOConfig(num_envs=8, num_steps=8, minibatches=2, network=NetworkConfig(kind="mlp", hidden=16))
    ppo = PPO(ArrowMazeCore(small_config(), "train", num_envs=8, seed=0), cfg, seed=0)
    ppo.check_finite()
    with torch.no_grad():
        for p in ppo.members.parameters():
            p.fill_(1e20)  # finite, as a last-minibatch blow-up leaves them, but the logits are not
    with pytest.raises(FloatingPointError, match="logits or values"):
        ppo.check_finite()
    with torch.no_grad():
        ppo.members.parameters()[0].fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite weights"):
        ppo.check_finite()


def test_non_finite_weights_are_never_checkpointed(checkpoint):
    before = checkpoint.read_bytes()
    state = load_checkpoint(checkpoint)
    state["model"][next(iter(state["model"]))].fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="the previous checkpoint is kept"):
        save_checkpoint(checkpoint.parent, state)
    assert checkpoint.read_bytes() == before


def test_a_full_disk_says_so_and_keeps_the_previous_file(checkpoint, monkeypatch):
    before = checkpoint.read_bytes()

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(
        OSError, match=r"no space left on the device to write .*checkpoint.pt; the previous file is kept"
    ):
        save_checkpoint(checkpoint.parent, load_checkpoint(checkpoint))
    monkeypatch.undo()
    assert checkpoint.read_bytes() == before
    assert [p.name for p in checkpoint.parent.iterdir() if p.name.startswith(".checkpoint")] == []


def test_atomic_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "report.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------- config on resume
def test_a_resume_with_changed_hyperparameters_is_refused_naming_them(tmp_path):
    assert _train(tmp_path, "total_env_steps=256").returncode == 0
    before = (tmp_path / FILENAME).read_bytes()
    proc = _train(tmp_path, "total_env_steps=512", "agent.lr=1e30", "agent.anneal_lr=false")
    assert proc.returncode == 2
    assert "agent.lr (0.0005 -> 1e+30)" in proc.stderr and "agent.anneal_lr (True -> False)" in proc.stderr
    assert (tmp_path / FILENAME).read_bytes() == before
    proc = _train(tmp_path, "total_env_steps=512", "eval_episodes=2")  # bookkeeping: applied, and said
    assert proc.returncode == 0, proc.stderr
    assert "resume: applying total_env_steps 256 -> 512, eval_episodes 4 -> 2" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    ("module", "override", "key"),
    [
        ("experiments.train", "agent.clip_coef=-0.2", "agent.clip_coef"),
        ("experiments.train", "agent.vf_coef=-1", "agent.vf_coef"),
        ("experiments.train", "checkpoint_every=-5", "checkpoint_every"),
        ("experiments.train", "eval_every=-1", "eval_every"),
        ("experiments.train", "agent.lr=inf", "agent.lr"),
        ("experiments.train", "seed=abc", "'seed'"),
        ("experiments.train", "agent.num_envs=100000000", "agent.num_envs"),
        ("experiments.train", "+agent.lerning_rate=0.1", "lerning_rate"),
        ("experiments.evaluate", "eval.gamma=2", "eval.gamma"),
        ("experiments.evaluate", "verdict.confidence_level=1.5", "verdict.confidence_level"),
        ("experiments.evaluate", "eval.min_distinguishing=-3", "eval.min_distinguishing"),
        ("experiments.evaluate", "figures.trajectories=-1", "figures.trajectories"),
        ("experiments.evaluate", "eval.beta_max=-1", "eval.beta_max"),
        ("experiments.evaluate", "verdict.bootstrap_resamples=0", "verdict.bootstrap_resamples"),
        ("experiments.evaluate", "seed=abc", "'seed'"),
    ],
)
def test_a_bad_value_fails_naming_its_key_and_leaves_no_run_dir(tmp_path, module, override, key):
    run_dir = tmp_path / "run"
    extra = ["policy=random", "logger=none", "env.device=cpu"] if module == "experiments.evaluate" else TINY
    proc = run_module(module, run_dir, *extra, override)
    assert proc.returncode == 2, proc.stderr
    assert key in proc.stderr and "Traceback" not in proc.stderr
    assert not run_dir.exists()


def test_an_impossible_level_distribution_fails_at_start_naming_it(tmp_path):
    run_dir = tmp_path / "run"
    impossible = ["env.distributions.shift_arrow.min_size=1", "env.distributions.shift_arrow.max_size=1"]
    proc = run_module("experiments.train", run_dir, *TINY, *impossible, "total_env_steps=256")
    assert proc.returncode == 2 and "impossible for distribution 'shift_arrow'" in proc.stderr
    assert not run_dir.exists()


def test_a_run_dir_of_the_other_backend_is_refused_and_kept(tmp_path):
    assert _train(tmp_path, "agent=sb3_ppo", "total_env_steps=256").returncode == 0
    before = (tmp_path / "metrics.jsonl").read_text()
    proc = _train(tmp_path, "total_env_steps=512")  # agent=ppo, into the SB3 run's dir
    assert proc.returncode == 2 and "a run of agent.backend=sb3" in proc.stderr
    assert (tmp_path / "metrics.jsonl").read_text() == before and not (tmp_path / FILENAME).exists()


def test_a_resume_without_the_logger_keeps_the_runs_wandb_link(tmp_path):
    assert _train(tmp_path, "total_env_steps=256").returncode == 0
    state = load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, {**state, "wandb_run_id": "abc123", "wandb_group": "arrow_maze-ppo"})
    assert _train(tmp_path, "total_env_steps=512").returncode == 0  # logger=none
    state = load_checkpoint(tmp_path)
    assert (state["env_steps"], state["wandb_run_id"], state["wandb_group"]) == (512, "abc123", "arrow_maze-ppo")
