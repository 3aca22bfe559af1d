"""Hydra configs (YAML) of the entry points, read from this package's files."""

from configs._ownership import ensure_ours

ensure_ours(__name__)  # ImportError if a top-level package of ours is another distribution's: configs/_ownership.py
