"""Checkpoints: weights, optimiser, RNG states, step counts and the resolved configs, written atomically
and verified on load.

Written to a temporary file in the run dir, fsynced, then ``os.replace``d over ``checkpoint.pt``, so
a crash never leaves a half-written checkpoint. Everything in it is a tensor or a plain container,
so it loads with ``torch.load(weights_only=True)``: loading our own checkpoints executes no code.

Each checkpoint carries ``content_sha256``, a SHA-256 over its content (every tensor's dtype, shape
and bytes, and every plain value, in order), computed before it is written and checked on load: a
flipped byte in the weights, which ``torch.load`` itself does not notice, is refused. The hash is
over content rather than file bytes so the file stays one flat dict that ``torch.load`` reads as it
is. Every way a load can fail (empty, truncated, not a torch file, an object that is not a plain
container, missing fields, a hash mismatch) raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from envs.atomic import atomic_path

log = logging.getLogger(__name__)

# 2: records the network spec (agents.policy.network_spec); 3: egocentric torsos drop the agent channel;
# 4: a content hash, verified on load
FORMAT = 4
FILENAME = "checkpoint.pt"
SB3_MODEL_FILENAME = "model.zip"  # what the SB3 backend saves in a run dir (agents/sb3.py)
HASH_KEY = "content_sha256"
REQUIRED = ("format", "env_name")
"""Fields every checkpoint has; :func:`require` checks those a caller needs beyond these."""
MEMBER_PREFIX = "seed_"
KEPT_DIR = "checkpoints"  # kept copies (``keep_checkpoint_every``): <run dir>/checkpoints/checkpoint_<env steps>.pt
"""A population's run dir holds one ``seed_<s>/`` dir per member, each a run dir of its own."""
TRAINING_FIELDS = ("model", "network", "optimizer", "env_steps", "updates", "rng", "env_config", "run_config")
"""Fields a run needs to continue training from a checkpoint."""


class StopTraining(KeyboardInterrupt):
    """Raised at a point where the training state is consistent, to stop with a checkpoint (a stop signal:
    ``experiments.stop``). A plain ``KeyboardInterrupt`` (a second Ctrl-C) stops without one."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and what is wrong with it."""


def content_hash(state: dict[str, Any]) -> str:
    """SHA-256 over the content of ``state`` (without its own hash field): tensors by dtype, shape and bytes."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != HASH_KEY})
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` to ``digest`` with a type tag, so different structures never hash alike."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{t.dtype}{tuple(value.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(b"D%d" % len(value))
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, list | tuple):
        digest.update(b"L" if isinstance(value, list) else b"U")
        digest.update(b"%d" % len(value))
        for item in value:
            _feed(digest, item)
    elif isinstance(value, bool) or value is None:
        digest.update(f"B{value}".encode())
    elif isinstance(value, int):
        digest.update(f"I{value}".encode())
    elif isinstance(value, float):
        digest.update(b"F" + struct.pack("<d", value))
    elif isinstance(value, str):
        digest.update(b"S%d:" % len(value) + value.encode())
    elif isinstance(value, bytes):
        digest.update(b"Y%d:" % len(value) + value)
    else:
        raise TypeError(f"a checkpoint holds tensors and plain values only, not {type(value).__name__}")


def non_finite_weights(model: Any) -> list[str]:
    """The names of the floating-point tensors of a state dict that hold a NaN or an infinity."""
    if not isinstance(model, dict):
        return []
    return [
        k for k, v in model.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and not v.isfinite().all()
    ]


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (plus the format version and its content hash) to ``run_dir/checkpoint.pt``.

    Refuses (``FloatingPointError``) weights that are not finite, so the last good checkpoint survives a
    blow-up. The file is serialised in memory and written with plain file I/O, so a full disk is an
    ``OSError`` (ENOSPC) that says so, and the previous checkpoint stays.
    """
    return save_checkpoints([Path(run_dir)], [state])[0]


def save_checkpoints(run_dirs: list[Path], states: list[dict[str, Any]], keep: bool = False) -> list[Path]:
    """:func:`save_checkpoint` of each member of a population into its own dir. Every member's file is
    atomic, and every state is checked and serialised before the first file is written, so a refused
    member (non-finite weights) writes none, and a kill can split the set only within the writes
    themselves; a resume then names the members that disagree (``agents.ppo.PPO.load_state_dict``).
    ``keep``: also keep a copy that later checkpoints do not overwrite (:func:`kept_checkpoint_path`)."""
    blobs = []
    for run_dir, state in zip(run_dirs, states, strict=True):
        path = Path(run_dir) / FILENAME
        bad = non_finite_weights(state.get("model"))
        if bad:
            raise FloatingPointError(
                f"not writing {path}: non-finite weights in {bad}; the previous checkpoint is kept"
            )
        blobs.append((path, _serialised(state)))
    for (path, blob), state in zip(blobs, states, strict=True):
        with atomic_path(path) as tmp:
            tmp.write_bytes(blob.getbuffer())
        if keep:
            kept = kept_checkpoint_path(path.parent, int(state["env_steps"]))
            kept.parent.mkdir(exist_ok=True)
            with atomic_path(kept) as tmp:
                tmp.write_bytes(blob.getbuffer())
    return [path for path, _ in blobs]


def kept_checkpoint_path(run_dir: Path, env_steps: int) -> Path:
    """Where the kept copy of ``run_dir``'s checkpoint at ``env_steps`` lives."""
    return Path(run_dir) / KEPT_DIR / f"checkpoint_{env_steps}.pt"


def kept_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """A run's kept checkpoints (``keep_checkpoint_every``) by env steps, in training order."""
    found = {}
    for path in (Path(run_dir) / KEPT_DIR).glob("checkpoint_*.pt"):
        steps = path.stem[len("checkpoint_") :]
        if steps.isdigit():
            found[int(steps)] = path
    return dict(sorted(found.items()))


def _serialised(state: dict[str, Any]) -> io.BytesIO:
    """``state`` with the format version and its content hash, as the bytes of a checkpoint file."""
    full = {"format": FORMAT, **{k: v for k, v in state.items() if k != "format"}}
    full[HASH_KEY] = content_hash(full)
    buffer = io.BytesIO()
    torch.save(full, buffer)
    return buffer


def member_dirs(where: str | Path) -> list[Path]:
    """The member dirs (``seed_<s>/``, by seed) of a population's run dir that hold a checkpoint; empty
    for any other path (a run dir holding a checkpoint of its own is a single run)."""
    path = Path(where)
    if not path.is_dir() or (path / FILENAME).is_file():
        return []
    found = [d for d in path.glob(f"{MEMBER_PREFIX}*") if d.name[len(MEMBER_PREFIX) :].lstrip("-").isdigit()]
    return sorted((d for d in found if (d / FILENAME).is_file()), key=lambda d: int(d.name[len(MEMBER_PREFIX) :]))


def find_run_file(where: str | Path, filename: str, what: str) -> Path:
    """The file named by ``where``: the file itself, or ``filename`` in a run dir; ``what`` names it in the error."""
    path = Path(where)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no {what} at {path}")
    return path


def find_checkpoint(where: str | Path) -> Path:
    """The checkpoint file named by ``where``: the file itself, or ``checkpoint.pt`` in a run dir."""
    return find_run_file(where, FILENAME, "checkpoint")


def load_checkpoint(where: str | Path, env_name: str | None = None) -> dict[str, Any]:
    """Load and verify a checkpoint (weights only: no code runs); with ``env_name``, refuse another env's.

    Raises :class:`CheckpointError` naming the file for anything unusable, ``FileNotFoundError`` when
    there is no file.
    """
    path = find_checkpoint(where)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (a write that never finished, or a truncated copy)")
    try:  # torch.save writes a zip archive; pickle bytes can't be told from garbage
        is_zip = zipfile.is_zipfile(path)
    except zipfile.BadZipFile:  # is_zipfile itself raises on some damaged end records (a "multi-disk" archive)
        is_zip = False
    if not is_zip:
        raise CheckpointError(f"{path} is not a torch checkpoint (not a zip archive): truncated, or another file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if "Unsupported global" in str(err) or "GLOBAL" in str(err):  # an object torch would have to construct
            raise CheckpointError(
                f"{path} holds objects other than tensors and plain containers; refused without running them "
                "(checkpoints load with weights_only=True)"
            ) from err
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated): {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint (a dict of fields)")
    require(state, REQUIRED, path)
    version = state["format"]
    if version not in (2, 3, FORMAT):
        raise CheckpointError(f"{path}: checkpoint format {version!r}, expected {FORMAT} (or 2, 3)")
    if version == FORMAT:
        recorded = state.get(HASH_KEY)
        if not isinstance(recorded, str):
            raise CheckpointError(f"{path}: format {FORMAT} without its {HASH_KEY}; the file was altered")
        try:
            actual = content_hash(state)
        except TypeError as err:
            raise CheckpointError(f"{path}: {err}") from err
        if actual != recorded:
            raise CheckpointError(
                f"{path}: content hash mismatch (recorded {recorded[:12]}…, computed {actual[:12]}…): the file was "
                "corrupted or altered after it was written; use an earlier copy or retrain"
            )
    else:
        log.warning("%s: format-%d checkpoint, written before content hashes; loaded unverified", path, version)
    if version == 2 and (state.get("network") or {}).get("config", {}).get("egocentric") is not None:
        raise CheckpointError(
            f"{path}: a format-2 checkpoint of an egocentric network, whose first layer also took the agent "
            f"channel that format {FORMAT} drops; retrain it"
        )
    state["format"] = FORMAT  # formats 2 and 3 are otherwise the same as 4
    if env_name is not None and state["env_name"] != env_name:
        raise CheckpointError(f"{path} is a checkpoint of env {state['env_name']!r}, not {env_name!r}")
    return state


def config_changes(saved: Any, wanted: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, wanted value)`` for every leaf that differs between two nested config
    dicts (a key on one side only reads ``"<unset>"`` on the other): what a resume would change."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        out = []
        for key in list(saved) + [k for k in wanted if k not in saved]:
            where = f"{prefix}.{key}" if prefix else str(key)
            out += config_changes(saved.get(key, "<unset>"), wanted.get(key, "<unset>"), where)
        return out
    return [] if saved == wanted else [(prefix, saved, wanted)]


def require(state: dict[str, Any], fields: tuple[str, ...], path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming ``path`` if ``state`` lacks any of ``fields``."""
    missing = [f for f in fields if f not in state]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks {missing}; it was not written by this trainer, or altered")
