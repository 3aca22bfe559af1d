"""Atomic writes: a failed write leaves the old file and no temporary file."""

from __future__ import annotations

import pytest

from envs.atomic import atomic_path


def test_a_write_replaces_the_file_and_a_failed_one_leaves_it(tmp_path):
    target = tmp_path / "report.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp != target
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
