"""Entry points: ``python -m experiments.demo``, ``python -m experiments.bench`` (Hydra)."""
