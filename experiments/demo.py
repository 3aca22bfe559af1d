"""The main job (``make demo``, ``misgen demo``): the suite's question answered in miniature, on a CPU.

Trains two small populations on 3x3-cell arrow mazes, side by side: one with the arrow always on the exit
and one with half the training levels' arrow moved (``p_decorrelate=0.5``); evaluates every agent on the
four distributions of the 2x2 (train, shift_arrow, shift_size, shift_both); prints the verdict table over
seeds; and writes under ``outputs/demo/<time>/`` the evaluation reports with their figures, the
experiment's figure, ``results.json``, ``README.md`` and a GIF of one agent per arm and distribution.

It is ``configs/run_experiment/demo.yaml`` run by ``experiments/run_experiment.py``: the same pipeline as
the experiments of ``docs/results.md`` at a few agents and fewer steps. Flags: ``--out DIR``, ``--jobs N``
(default 2), and run_experiment's ``--population``, ``--train``, ``--evaluate`` to shrink it further.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from analysis.aggregate import format_counts, format_value
from experiments.run_experiment import Experiment, Options, run_or_plan

NAME = "demo"


def verdict_table(results: dict[str, Any]) -> str:
    """Per arm and distribution, over seeds: behavioural objectives, verdicts, capability (interval)."""
    rows = [("arm", "distribution", "seeds", "behavioural objective (seeds)", "verdicts", "capability")]
    for g in results["groups"]:
        s = g["summary"]
        rows.append(
            (
                g["arm_label"],
                g["distribution"],
                str(s["seeds"]),
                format_counts(s["behavioural_objectives"]),
                format_counts(s["verdicts"]),
                format_value(s["metrics"]["capability"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def collect_gifs(exp: Experiment, home: Path) -> list[Path]:
    """The last GIF of each distribution of each arm's first agent, copied to ``home/gifs/<arm>_<dist>.gif``."""
    out = []
    for arm in exp.arms:
        first = Path(exp.policies(arm)[0])
        latest: dict[str, tuple[int, Path]] = {}
        for gif in (first / "videos").glob("*.gif"):
            distribution, _, steps = gif.stem.rpartition("_")
            if steps.isdigit() and int(steps) >= latest.get(distribution, (-1, gif))[0]:
                latest[distribution] = (int(steps), gif)
        for distribution, (_, gif) in sorted(latest.items()):
            target = home / "gifs" / f"{arm}_{distribution}.gif"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(gif, target)
            out.append(target)
    return out


def main(argv: list[str] | None = None) -> None:
    """The command line (module docstring)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(prog="misgen demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where (default: outputs/demo/<time>)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings/evaluations side by side, one thread each")
    parser.add_argument("--population", type=int, help="agents per arm instead of 3")
    parser.add_argument("--train", action="append", default=[], metavar="OVERRIDE", help="extra train override")
    parser.add_argument("--evaluate", action="append", default=[], metavar="OVERRIDE", help="extra evaluate override")
    parser.add_argument("--dry-run", action="store_true", help="print the steps it would run; run nothing")
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.population is not None and args.population < 1):
        parser.error("--jobs and --population must be >= 1")
    home = args.out or Path("outputs") / "demo" / time.strftime("%Y-%m-%d_%H-%M-%S")
    start = time.perf_counter()
    options = Options(
        jobs=args.jobs,
        population=args.population,
        train=args.train,
        evaluate=args.evaluate,
        figures=True,
        home=home,
    )
    done = run_or_plan(NAME, options, args.dry_run)
    if done is None:
        return
    exp, results = done
    gifs = collect_gifs(exp, home)
    print(f"\n{results['title']}: over seeds, per distribution")
    print("(capability: mean [95% interval over seeds; none with fewer than 5 seeds])\n")
    print(verdict_table(results))
    reports = sorted(home.glob("evals/*/*/report.json"))
    print(f"\nwrote {home}/ in {(time.perf_counter() - start) / 60:.1f} min:")
    print(f"  README.md, results.json, {NAME}_cpu.png  the table and figure over seeds")
    for report in reports:
        print(f"  {report.relative_to(home)}  (+ report_summary.md, report_figures/)")
    print(f"  gifs/  {len(gifs)} GIFs: the first agent of each arm on each distribution")


if __name__ == "__main__":
    main()
