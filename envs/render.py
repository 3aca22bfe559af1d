"""Pictures of grid levels: a tile atlas for RGB frames, ANSI text, and episode GIF/MP4 files.

A tile id is a map tile (floor, wall, end: 2 bits), an overlay (none, arrow, key, chest, hidden
chest: 3 bits) and an agent bit, so 64 ids cover every tile. The atlas holds one small image per
id, drawn supersampled so that even 4-pixel tiles keep the arrow's shape. Frames are built on the
tensors' device by one lookup into the atlas.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from envs.atomic import atomic_path
from envs.layout import END, FLOOR, WALL

OVERLAY_SHIFT = 2
NO_OVERLAY, ARROW, KEY, CHEST, HIDDEN_CHEST = range(5)
ARROW_BIT = ARROW << OVERLAY_SHIFT
KEY_BIT = KEY << OVERLAY_SHIFT
CHEST_BIT = CHEST << OVERLAY_SHIFT
HIDDEN_CHEST_BIT = HIDDEN_CHEST << OVERLAY_SHIFT
AGENT_BIT = 1 << 5
NUM_TILE_IDS = 64

FLOOR_RGB = (236, 236, 232)
WALL_RGB = (38, 42, 64)
END_RGB = (250, 205, 90)
ARROW_RGB = (24, 170, 60)
AGENT_RGB = (214, 48, 49)
KEY_RGB = (232, 170, 20)
CHEST_RGB = (140, 82, 40)
CHEST_BAND_RGB = (232, 170, 20)
HIDDEN_RGB = (150, 150, 150)
_SUPERSAMPLE = 8


def _arrow_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """An upward arrow: triangular head over a shaft, in unit tile coordinates (v down)."""
    head = (v >= 0.12) & (v <= 0.52) & (np.abs(u - 0.5) <= (v - 0.12) * 0.95)
    shaft = (v > 0.5) & (v <= 0.9) & (np.abs(u - 0.5) <= 0.13)
    return head | shaft


def _agent_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.3**2


def _key_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A key: a round bow on the left, a shaft to the right, two teeth below it."""
    bow = ((u - 0.28) ** 2 + (v - 0.5) ** 2 <= 0.17**2) & ((u - 0.28) ** 2 + (v - 0.5) ** 2 >= 0.07**2)
    shaft = (u >= 0.4) & (u <= 0.9) & (np.abs(v - 0.5) <= 0.06)
    teeth = ((np.abs(u - 0.72) <= 0.05) | (np.abs(u - 0.86) <= 0.04)) & (v >= 0.5) & (v <= 0.7)
    return bow | shaft | teeth


def _chest_mask(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A chest: a box, and a band across it at the lid."""
    box = (u >= 0.12) & (u <= 0.88) & (v >= 0.25) & (v <= 0.82)
    band = box & (np.abs(v - 0.45) <= 0.05) | box & (np.abs(u - 0.5) <= 0.06) & (v <= 0.55)
    return box, band


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:] & mask[1:-1, 1:-1]
    return mask & ~inner


def build_atlas(tile_size: int, show_end: bool) -> np.ndarray:
    """``(NUM_TILE_IDS, t, t, 3)`` uint8 images of every tile id. ``show_end=False`` draws the end as floor."""
    n = tile_size * _SUPERSAMPLE
    coords = (np.arange(n) + 0.5) / n
    v, u = np.meshgrid(coords, coords, indexing="ij")
    base_rgb = {FLOOR: FLOOR_RGB, WALL: WALL_RGB, END: END_RGB if show_end else FLOOR_RGB}
    atlas = np.zeros((NUM_TILE_IDS, tile_size, tile_size, 3), dtype=np.uint8)
    box, band = _chest_mask(u, v)
    hidden = _outline(box) | _outline(np.roll(_outline(box), 1, axis=0) | _outline(box))
    for tile_id in range(NUM_TILE_IDS):
        base, overlay = tile_id & 3, (tile_id >> OVERLAY_SHIFT) & 7
        if base not in base_rgb or overlay > HIDDEN_CHEST:
            continue
        img = np.empty((n, n, 3), dtype=np.float64)
        img[:] = base_rgb[base]
        if overlay == ARROW:
            img[_arrow_mask(u, v)] = ARROW_RGB
        elif overlay == KEY:
            img[_key_mask(u, v)] = KEY_RGB
        elif overlay == CHEST:
            img[box] = CHEST_RGB
            img[band] = CHEST_BAND_RGB
        elif overlay == HIDDEN_CHEST:
            img[hidden] = HIDDEN_RGB
        if tile_id & AGENT_BIT:
            # Over an object the agent is drawn smaller and lower, so both stay visible.
            if overlay == NO_OVERLAY:
                mask = _agent_mask(u, v)
            else:
                mask = (u - 0.5) ** 2 + (v - 0.66) ** 2 <= 0.2**2
            img[mask] = AGENT_RGB
        pooled = img.reshape(tile_size, _SUPERSAMPLE, tile_size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
        atlas[tile_id] = np.round(pooled).astype(np.uint8)
    return atlas


class TileRenderer:
    """Turns batches of tile-id grids into RGB frames with one atlas lookup, on any device."""

    def __init__(self, tile_size: int, show_end: bool) -> None:
        self.tile_size = tile_size
        self._atlas = torch.from_numpy(build_atlas(tile_size, show_end))

    def frames(self, ids: torch.Tensor, size: int) -> torch.Tensor:
        """``ids`` ``(B, R*S)`` (R rows of S tiles) → ``(B, R*t, S*t, 3)`` uint8, on ``ids``' device."""
        if self._atlas.device != ids.device:
            self._atlas = self._atlas.to(ids.device)
        t = self.tile_size
        rows = ids.shape[1] // size
        tiles = self._atlas.index_select(0, ids.reshape(-1).long())  # (B*R*S, t, t, 3)
        tiles = tiles.view(ids.shape[0], rows, size, t, t, 3).permute(0, 1, 3, 2, 4, 5)
        return tiles.reshape(ids.shape[0], rows * t, size * t, 3)


_ANSI_BASE = {FLOOR: " ", WALL: "#", END: "E"}
_ANSI_OVERLAY = {ARROW: "^", KEY: "k", CHEST: "C", HIDDEN_CHEST: "h"}


def ansi(ids: torch.Tensor) -> str:
    """``(R, S)`` tile ids → text: ``#`` wall, ``E`` end, ``^`` arrow, ``k`` key, ``C`` chest,
    ``h`` hidden chest, ``@`` agent."""
    rows = []
    for row in ids.tolist():
        chars = []
        for tile_id in row:
            overlay = (tile_id >> OVERLAY_SHIFT) & 7
            if tile_id & AGENT_BIT:
                chars.append("@")
            elif overlay:
                chars.append(_ANSI_OVERLAY[overlay])
            else:
                chars.append(_ANSI_BASE[tile_id & 3])
        rows.append("".join(chars).rstrip())
    return "\n".join(rows) + "\n"


def save_episode(frames: Sequence[np.ndarray] | np.ndarray, path: str | os.PathLike, fps: int = 8) -> Path:
    """Write ``(H, W, 3)`` uint8 frames to a ``.gif`` (Pillow) or ``.mp4`` (imageio-ffmpeg) file.

    Written to a temporary file in the same folder, then renamed: no half-written file is left.
    """
    path = Path(path)
    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise ValueError("save_episode needs at least one frame")
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"save_episode writes .gif or .mp4, not {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            from PIL import Image

            images = [Image.fromarray(f) for f in frames]
            images[0].save(
                tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
            )
        else:
            try:
                import imageio.v2 as iio
                import imageio_ffmpeg  # noqa: F401
            except ImportError as err:
                raise RuntimeError("writing .mp4 needs imageio-ffmpeg: pip install 'misgen[video]'") from err
            iio.mimwrite(tmp, frames, format="FFMPEG", fps=fps, macro_block_size=1)
    return path
