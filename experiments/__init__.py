"""Entry points (Hydra): ``misgen train|evaluate|bench|demo`` (``experiments/cli.py``), each also
``python -m experiments.<name>``; and what runs them: the run logger, run dirs, stop signals, metrics files."""

try:
    from configs._ownership import ensure_ours
except ModuleNotFoundError:  # this `configs` is not misgen's: our helper, run from its file, says whose it is
    import os
    import runpy

    helper = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "_ownership.py")
    ensure_ours = runpy.run_path(helper)["ensure_ours"]

ensure_ours(__name__)  # ImportError if a top-level package of ours is another distribution's: configs/_ownership.py
