"""Agents: PPO on the device, networks, the Policy protocol, checkpoints, the SB3 backend, the episode runner."""

try:
    from configs._ownership import ensure_ours
except ModuleNotFoundError:  # this `configs` is not misgen's: our helper, run from its file, says whose it is
    import os
    import runpy

    helper = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "_ownership.py")
    ensure_ours = runpy.run_path(helper)["ensure_ours"]

ensure_ours(__name__)  # ImportError if a top-level package of ours is another distribution's: configs/_ownership.py
