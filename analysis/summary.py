"""The short summary beside a report: one row per distribution (verdict, behavioural objective,
capability, objective robustness, ... with their intervals), as Markdown for people and CSV for scripts.
``report.json`` holds everything; this is what one reads first."""

from __future__ import annotations

import csv
import io
from typing import Any

from analysis.metrics import SCALARS


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per distribution of ``report``: its labels, each scalar and env metric, and the
    bounds of each interval the report has (``<metric>_lo`` / ``<metric>_hi``)."""
    rows = []
    for name, result in report["distributions"].items():
        row: dict[str, Any] = {"distribution": name}
        if "seeds" in result:
            row["seeds"] = result["seeds"]
        for key in ("verdict", "behavioural_objective", "identifiable"):
            row[key] = result[key]
        row["shares"] = " ".join(f"{k} {v:.2f}" for k, v in result["shares"].items() if v > 0)
        intervals = result.get("intervals", {})
        for key, value in [*((k, result[k]) for k in SCALARS), *result["env_metrics"].items()]:
            row[key] = value
            if intervals.get(key) is not None:
                row[f"{key}_lo"], row[f"{key}_hi"] = intervals[key]
        rows.append(row)
    return rows


def _number(value: Any) -> str:
    if value is None:  # not identifiable there (no behavioural objective, no robustness)
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def to_markdown(report: dict[str, Any]) -> str:
    """A Markdown table of :func:`summary_rows`, each interval beside its value (``0.812 [0.75, 0.87]``)."""
    rows = summary_rows(report)
    verdict = report.get("config", {}).get("verdict", {})
    level = 100 * verdict.get("confidence_level", 0.95)
    columns = list(dict.fromkeys(k for row in rows for k in row if not k.endswith(("_lo", "_hi"))))
    over = "seeds" if "seeds" in rows[0] else "episodes"
    note = f"Intervals: {level:g}% bootstrap over {over}"
    counts = (
        [row.get("seeds", 0) for row in rows]
        if over == "seeds"
        else [r["episodes"] for r in report["distributions"].values()]
    )
    fewest = verdict.get("min_interval_samples", 5)
    if min(counts) < fewest:
        note += f"; none with fewer than {fewest} {over} ({min(counts)} here: too few for an interval)"
    lines = [
        f"# {report['env']}: {report['policy_label']}",
        "",
        note + ". Shares: the fraction of episodes pursuing each objective (random: none).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    for row in rows:
        cells = []
        for key in columns:
            cell = _number(row.get(key))
            if f"{key}_lo" in row:
                cell += f" [{row[f'{key}_lo']:.2f}, {row[f'{key}_hi']:.2f}]"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(report: dict[str, Any]) -> str:
    """:func:`summary_rows` as CSV (one column per value and per interval bound)."""
    rows = summary_rows(report)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
