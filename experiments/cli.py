"""The ``misgen`` command: one entry point, a subcommand per job, each taking the Hydra overrides of its
``python -m experiments.<job>`` (which keeps working).

``misgen --help`` lists the subcommands; ``misgen <job> --help`` is Hydra's help for that job: its config
groups (``env``, ``agent``, ``experiment`` presets, ``logger``, launchers) and its config.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, what it does). The module's ``run()`` (or ``main()``) is its Hydra entry point.
COMMANDS = {
    "train": ("experiments.train", "train an agent (PPO on the batched env; -m sweeps; presets: experiment=...)"),
    "evaluate": (
        "experiments.evaluate",
        "the behavioural objective, capability and verdict of a policy; expect= gates",
    ),
    "bench": ("experiments.bench", "env steps/s and end-to-end training throughput (mode=env | mode=train)"),
    "demo": ("experiments.demo", "the main job, in minutes on a CPU: train two small populations, evaluate, verdicts"),
    "experiment": ("experiments.run_experiment", "one experiment of configs/run_experiment/: train, evaluate, figure"),
    "levels": ("experiments.levels", "level sheets of every distribution and exact-planning oracles on them"),
}

USAGE = """usage: misgen <command> [hydra overrides ...]   (misgen <command> --help: its config groups and presets)

commands:
{commands}

examples:
  misgen train experiment=arrow_maze_smoke                  # a CPU-sized run, a few minutes
  misgen evaluate policy=outputs/train/<run dir>            # which objective does the agent pursue?
  misgen evaluate policy=oracle:arrow@0.2 eval.episodes=64  # a sanity baseline
"""


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    return USAGE.format(commands="\n".join(f"  {name:{width}}  {what}" for name, (_, what) in COMMANDS.items()))


def main(argv: list[str] | None = None) -> None:
    """Dispatch ``misgen <command> ...`` to the command's Hydra entry point."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        sys.exit(0 if args else 2)
    if args[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"misgen {version('misgen')}")
        except PackageNotFoundError:
            print("misgen (not installed)")
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose one of {list(COMMANDS)}\n", file=sys.stderr)
        print(usage(), end="", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = [f"misgen {command}", *rest]  # Hydra reads the overrides from sys.argv
    entry = getattr(module, "run", None) or module.main
    entry()


if __name__ == "__main__":
    main()
