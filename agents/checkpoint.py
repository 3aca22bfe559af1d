"""Checkpoints: weights, optimiser, RNG states, step counts and the resolved configs, written atomically.

Written to a temporary file in the run dir, fsynced, then ``os.replace``d over ``checkpoint.pt``, so
a crash never leaves a half-written checkpoint. Everything in it is a tensor or a plain container,
so it loads with ``torch.load(weights_only=True)``: loading our own checkpoints executes no code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from envs.atomic import atomic_path

FORMAT = 3  # 2: records the network spec (agents.policy.network_spec); 3: egocentric torsos drop the agent channel
FILENAME = "checkpoint.pt"
SB3_MODEL_FILENAME = "model.zip"  # what the SB3 backend saves in a run dir (agents/sb3.py)


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (plus the format version) to ``run_dir/checkpoint.pt``."""
    path = Path(run_dir) / FILENAME
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


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
    """Load a checkpoint (weights only: no code runs); with ``env_name``, refuse another env's."""
    path = find_checkpoint(where)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") not in (2, FORMAT):
        raise ValueError(f"{path}: checkpoint format {state.get('format')!r}, expected {FORMAT}")
    if state["format"] == 2:
        if (state.get("network") or {}).get("config", {}).get("egocentric") is not None:
            raise ValueError(
                f"{path}: a format-2 checkpoint of an egocentric network, whose first layer also took the agent "
                f"channel that format {FORMAT} drops; retrain it"
            )
        state["format"] = FORMAT  # otherwise the same as format 3
    if env_name is not None and state["env_name"] != env_name:
        raise ValueError(f"{path} is a checkpoint of env {state['env_name']!r}, not {env_name!r}")
    return state
