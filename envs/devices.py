"""Device resolution: ``auto`` picks CUDA when available, else the CPU."""

from __future__ import annotations

import torch


def resolve_device(device: torch.device | str) -> torch.device:
    """``auto`` → ``cuda`` if available else ``cpu``; anything else as given (checked to exist)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} requested but CUDA is not available; use device=auto or cpu")
    return dev
