"""Rendering: the atlas draws every tile distinctly, and episodes are written atomically."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from envs.layout import END, FLOOR, WALL
from envs.render import AGENT_BIT, AGENT_RGB, ARROW_BIT, ARROW_RGB, build_atlas, save_episode


def test_arrow_is_green_and_agent_is_drawn_over_it():
    atlas = build_atlas(8, show_end=True)
    arrow = atlas[FLOOR | ARROW_BIT].reshape(-1, 3)
    assert (arrow == ARROW_RGB).all(1).sum() >= 8
    both = atlas[FLOOR | ARROW_BIT | AGENT_BIT].reshape(-1, 3)
    assert (both == ARROW_RGB).all(1).any() and (both == AGENT_RGB).all(1).any()


def test_end_is_visible_only_when_shown():
    shown, hidden = build_atlas(4, show_end=True), build_atlas(4, show_end=False)
    assert not np.array_equal(shown[END], shown[FLOOR])
    assert np.array_equal(hidden[END], hidden[FLOOR])
    assert not np.array_equal(hidden[WALL], hidden[FLOOR])


def test_save_episode_writes_a_gif_and_leaves_no_temp_file(tmp_path):
    frames = [np.full((8, 8, 3), i * 20, dtype=np.uint8) for i in range(5)]
    out = save_episode(frames, tmp_path / "ep.gif", fps=5)
    assert out.exists() and Image.open(out).n_frames == 5
    assert [p.name for p in tmp_path.iterdir()] == ["ep.gif"]


def test_save_episode_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match=r"ep\.avi"):
        save_episode([np.zeros((4, 4, 3), dtype=np.uint8)], tmp_path / "ep.avi")
    assert list(tmp_path.iterdir()) == []


def test_save_episode_writes_an_mp4(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    frames = [np.full((20, 20, 3), i * 20, dtype=np.uint8) for i in range(6)]
    out = save_episode(frames, tmp_path / "ep.mp4")
    assert out.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["ep.mp4"]
