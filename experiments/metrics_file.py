"""A run's ``metrics.jsonl``: one JSON object per line, the source of truth of the run (wandb mirrors it).

Lines are appended as the run goes. A process killed mid-write can leave a torn last line; a resumed
run drops that line (and only that one: a malformed line anywhere else is an error naming it) and the
rows logged after the checkpoint it continues from, so the file keeps one row per step.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from envs.atomic import atomic_path

log = logging.getLogger(__name__)

FILENAME = "metrics.jsonl"


class MetricsFileError(ValueError):
    """A metrics file has a malformed line that is not a torn last line; the message names file and line."""


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (non-finite numbers as null, so the file stays strict JSON)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with path.open("a") as f:
        f.write(json.dumps(clean) + "\n")


def read(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The rows of ``path`` (none if it is missing), and whether its last line was torn (and left out)."""
    if not path.is_file():
        return [], False
    text = path.read_text()
    lines = text.split("\n")
    complete = text.endswith("\n") or not text
    if complete:
        lines = lines[:-1]
    rows = []
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            if last and not complete:
                return rows, True  # cut off mid-write
            raise MetricsFileError(
                f"{path}:{number}: malformed metrics line ({err}); only a torn last line is dropped on resume, "
                "so fix or remove this one"
            ) from err
        rows.append(row)
    return rows, False


def keep_until(path: Path, env_steps: int) -> None:
    """Rewrite ``path`` (atomically) with only the rows logged at or before ``env_steps``, without a torn
    last line: what a run resumed from the checkpoint at ``env_steps`` continues from."""
    rows, torn = read(path)
    kept = [r for r in rows if r.get("env_steps", 0) <= env_steps]
    if len(kept) == len(rows) and not torn and (not rows or path.read_text().endswith("\n")):
        return
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    if torn:
        log.warning("resume: dropped the torn last line of %s (the process was killed while writing it)", path)
    if len(kept) != len(rows):
        log.info("resume: dropped %d metric rows logged after the checkpoint", len(rows) - len(kept))
