"""Every command printed in the README and docs/ runs as printed: each composes its config (Hydra's
``--cfg job``), and the cheap ones (help, oracle evaluations) run for real."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENTRY = ("misgen", "python -m experiments.")


def _commands() -> list[tuple[str, str]]:
    """``(where, command)`` for each command line in a ```bash block of the docs."""
    found = []
    for doc in DOCS:
        blocks = re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S)
        for block in blocks:
            for line in block.splitlines():
                command = re.sub(r"\s+#.*$", "", line).strip()  # the trailing comment
                if command.startswith(ENTRY):
                    found.append((doc.name, command))
    return found


COMMANDS = _commands()


def test_the_docs_print_the_daily_commands():
    printed = {c for _, c in COMMANDS}
    assert any(c.startswith("misgen train experiment=") for c in printed)
    assert any(c.startswith("misgen evaluate policy=") for c in printed)
    assert any(" -m " in c for c in printed)  # a sweep


def _argv(command: str, run_dir: Path) -> list[str]:
    """The command's arguments, with the placeholders filled: a run dir for ``<run dir>`` and ``runs/N``."""
    command = re.sub(r"(outputs/train/)?<run dir>", str(run_dir), command)
    command = re.sub(r"\bruns/\d", str(run_dir), command).replace("<yours>", "gpu")
    args = shlex.split(command)
    if args[0] == "python":  # python -m experiments.<x>
        args = [sys.executable, *args[1:]]
    else:
        script = shutil.which("misgen", path=str(Path(sys.executable).parent))
        args = [script, *args[1:]] if script else [sys.executable, "-m", "experiments.cli", *args[1:]]
    return args


def _composed(argv: list[str]) -> list[str]:
    """A sweep as one job (``-m`` dropped, the first value of each swept key) with Hydra's ``--cfg job``;
    ``misgen experiment`` and ``demo`` (not Hydra) with ``--dry-run``: their spec loads and their steps resolve."""
    if any(a in ("experiment", "demo", "experiments.run_experiment", "experiments.demo") for a in argv[:3]):
        return [*argv, "--dry-run"]
    out = []
    for arg in argv:
        if arg == "-m":
            continue
        key, eq, value = arg.partition("=")
        if eq and "," in value and not value.startswith(("[", "'", '"')):
            arg = f"{key}={value.split(',')[0]}"
        out.append(arg)
    return [*out, "--cfg", "job"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from tests.test_train import SMALL_MAZES, TINY

    where = tmp_path_factory.mktemp("docs_run")
    cmd = [sys.executable, "-m", "experiments.train", f"hydra.run.dir={where}", *TINY, *SMALL_MAZES]
    proc = subprocess.run([*cmd, "total_env_steps=256"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return where


def _cheap(command: str) -> bool:
    if command.endswith("--help"):
        return True
    episodes = re.search(r"eval\.episodes=(\d+)", command)
    return "evaluate" in command and "policy=oracle:" in command and bool(episodes) and int(episodes[1]) <= 64


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_a_printed_command_runs_as_printed(where, command, run_dir, tmp_path):
    argv = _argv(command, run_dir)
    if _cheap(command):
        extra = [] if command.endswith("--help") else [f"hydra.run.dir={tmp_path / 'out'}", "logger=none"]
        proc = subprocess.run([*argv, *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)
    else:
        proc = subprocess.run(_composed(argv), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{where}: {command}\n{proc.stderr[-3000:]}"
