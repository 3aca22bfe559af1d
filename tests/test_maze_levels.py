"""Level generation: perfect mazes, exits, arrows and starts obey the distribution (property-based)."""

from __future__ import annotations

import collections

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from envs.config import ConfigError
from envs.grid import UNREACHABLE, Canvas, bfs_distances
from envs.layout import END, FLOOR, WALL
from envs.level_random import SIZE_H, SIZE_W, LevelRandom
from envs.maze_gen import generate_mazes
from envs.maze_levels import LevelSpec, generate_maze_levels, generate_maze_levels_by_id
from tests.conftest import small_config

sizes = st.tuples(st.integers(2, 9), st.integers(0, 3)).map(lambda t: (t[0], t[0] + t[1]))


def _levels(seed: int, lo: int, hi: int, placement: str = "random", n: int = 24, min_start_distance: int = 1):
    cfg = small_config(
        level_seed=seed,
        placement=placement,
        min_start_distance=min_start_distance,
        distributions={"custom": {"min_size": lo, "max_size": hi, "arrow_placement": "random", "num_levels": n}},
    )
    return cfg, generate_maze_levels(LevelSpec.of(cfg, "custom"))


@given(seed=st.integers(0, 2**31), size=sizes)
def test_every_maze_is_a_spanning_tree_of_its_cells(seed, size):
    n = 16
    rand = LevelRandom(seed, torch.arange(n))
    h = rand.integers(size[0], size[1] + 1, SIZE_H)
    w = rand.integers(size[0], size[1] + 1, SIZE_W)
    mazes = generate_mazes(h, w, rand)
    passages = mazes.open_down.sum((1, 2)) + mazes.open_right.sum((1, 2))
    assert torch.equal(passages, h * w - 1)  # a tree has cells - 1 edges ...
    dist = mazes.cell_distances()
    assert bool((dist[mazes.cell_mask()] >= 0).all())  # ... and is connected: no loops
    # No passage leads out of a maze's own cells.
    mask = mazes.cell_mask()
    assert not bool((mazes.open_down & ~mask).any()) and not bool((mazes.open_right & ~mask).any())
    assert not bool(mazes.open_down[torch.arange(n), h - 1].any())


@given(seed=st.integers(0, 2**31), size=sizes, placement=st.sampled_from(["random", "center"]))
def test_maze_is_perfect_and_inside_its_canvas(seed, size, placement):
    cfg, lv = _levels(seed, *size, placement=placement)
    canvas = Canvas(cfg.canvas)
    open_canvas = ~lv.blocked.view(-1, canvas.padded, canvas.padded)
    # The one-tile border of the padded grid is never walkable: the maze lies inside the canvas.
    assert not bool(open_canvas[:, 0].any() or open_canvas[:, -1].any())
    assert not bool(open_canvas[:, :, 0].any() or open_canvas[:, :, -1].any())
    dist = bfs_distances(lv.blocked, lv.end, canvas.padded)
    walkable = ~lv.blocked
    # Every open tile is reachable from the exit ...
    assert bool((dist[walkable] != UNREACHABLE).all())
    # ... and the open tiles form a tree: cells + (cells - 1) passages + the exit.
    cells = lv.size[:, 0] * lv.size[:, 1]
    assert torch.equal(walkable.sum(1), 2 * cells)
    # Walls in the map are exactly the blocked tiles inside the maze's bounding box.
    assert bool(((lv.tiles == WALL) | (lv.tiles == END) | (lv.tiles == FLOOR)).all())
    assert torch.equal((lv.tiles == END).flatten(1).sum(1), torch.ones(len(lv), dtype=torch.long))


@given(seed=st.integers(0, 2**31), size=sizes)
def test_end_is_an_opening_in_the_outer_wall(seed, size):
    cfg, lv = _levels(seed, *size)
    canvas = Canvas(cfg.canvas)
    walls = (lv.tiles == WALL) | (lv.tiles == END)
    for i in range(len(lv)):
        ys, xs = torch.nonzero(walls[i], as_tuple=True)
        top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
        assert (bottom - top + 1, right - left + 1) == (2 * lv.size[i, 0] + 1, 2 * lv.size[i, 1] + 1)
        ey, ex = canvas.to_yx(lv.end[i])
        on_ring = bool(ey == top or ey == bottom or ex == left or ex == right)
        corner = bool((ey == top or ey == bottom) and (ex == left or ex == right))
        assert on_ring and not corner


@given(seed=st.integers(0, 2**31), size=sizes, min_start=st.integers(1, 5))
def test_start_is_far_enough_from_the_end(seed, size, min_start):
    lo, hi = size
    if 2 * lo - 1 < min_start:  # a 1-row maze of `lo` cells may not have such a cell
        lo = hi = max(hi, min_start)
    cfg, lv = _levels(seed, lo, hi, min_start_distance=min_start)
    dist = bfs_distances(lv.blocked, lv.end, Canvas(cfg.canvas).padded)
    start_dist = dist.gather(1, lv.start[:, None])[:, 0]
    assert torch.equal(start_dist, lv.start_distance)
    assert bool((lv.start_distance >= min_start).all())
    assert bool((lv.start != lv.end).all())


@given(seed=st.integers(0, 2**31), size=sizes)
def test_random_arrow_is_never_on_the_end_or_the_start(seed, size):
    _, lv = _levels(seed, *size)
    assert bool((lv.arrow != lv.end).all())
    assert bool((lv.arrow != lv.start).all())
    assert not bool(lv.blocked.gather(1, lv.arrow[:, None]).any())


def test_arrow_on_end_in_train_and_shift_size(cfg):
    for name in ("train", "shift_size"):
        lv = generate_maze_levels(LevelSpec.of(cfg, name))
        assert torch.equal(lv.arrow, lv.end), name


def test_arrow_never_on_end_in_shift_arrow_and_shift_both(cfg):
    for name in ("shift_arrow", "shift_both"):
        lv = generate_maze_levels(LevelSpec.of(cfg, name))
        assert not bool(lv.arrow_on_end.any()), name


def test_shift_size_mazes_are_larger_than_train_mazes(cfg):
    train = generate_maze_levels(LevelSpec.of(cfg, "train"))
    big = generate_maze_levels(LevelSpec.of(cfg, "shift_size"))
    assert int(train.size.max()) <= 6 < 8 <= int(big.size.min())


@pytest.mark.parametrize("p", [0.0, 0.25, 1.0])
def test_p_decorrelate_is_the_fraction_of_train_levels_with_the_arrow_elsewhere(p):
    cfg = small_config(p_decorrelate=p, num_levels=4000)
    lv = generate_maze_levels(LevelSpec.of(cfg, "train"))
    frac = 1.0 - lv.arrow_on_end.float().mean().item()
    # Binomial(4000, p): 5 standard deviations is < 0.035.
    assert abs(frac - p) < 0.035


def test_levels_are_uniform_spanning_trees():
    # The 2x2 grid of cells has exactly 4 spanning trees (drop one edge of the 4-cycle).
    n = 8000
    ones = torch.full((n,), 2)
    mazes = generate_mazes(ones, ones, LevelRandom(0, torch.arange(n)))
    key = torch.cat([mazes.open_down[:, 0, :], mazes.open_right[:, :, 0]], dim=1)
    counts = collections.Counter(tuple(k) for k in key.tolist())
    assert len(counts) == 4
    for c in counts.values():  # each 2000 ± 5 sd (sd ≈ 39)
        assert abs(c - n / 4) < 200


def test_same_seed_gives_same_levels_and_other_seed_differs(cfg):
    spec = LevelSpec.of(cfg, "train")
    a, b = generate_maze_levels(spec, 64), generate_maze_levels(spec, 64)
    for name in ("tiles", "blocked", "start", "end", "arrow", "max_steps"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    other = generate_maze_levels(LevelSpec.of(small_config(level_seed=1), "train"), 64)
    assert not torch.equal(a.tiles, other.tiles)


def test_distributions_get_distinct_level_streams(cfg):
    a = generate_maze_levels(LevelSpec.of(cfg, "train"), 64)
    b = generate_maze_levels(LevelSpec.of(cfg, "shift_arrow"), 64)
    assert not torch.equal(a.tiles, b.tiles)


def test_impossible_min_start_distance_names_the_field():
    cfg = small_config(min_start_distance=500)
    with pytest.raises(ConfigError, match="min_start_distance=500"):
        generate_maze_levels(LevelSpec.of(cfg, "train"), 16)


def test_time_limit_scales_with_maze_area(cfg):
    lv = generate_maze_levels(LevelSpec.of(cfg, "train"), 64)
    cells = lv.size[:, 0] * lv.size[:, 1]
    assert torch.equal(lv.max_steps, (4.0 * cells).ceil().long())
    fixed = generate_maze_levels(LevelSpec.of(small_config(max_steps=77), "train"), 8)
    assert bool((fixed.max_steps == 77).all())


def test_random_arrow_in_one_cell_mazes_is_an_impossible_layout():
    cfg = small_config(
        min_start_distance=1,
        distributions={"tiny": {"min_size": 1, "max_size": 1, "arrow_placement": "random", "num_levels": 4}},
    )
    with pytest.raises(ConfigError, match="min_size=1"):
        generate_maze_levels(LevelSpec.of(cfg, "tiny"))


def test_level_sets_of_different_sizes_are_nested(cfg):
    spec = LevelSpec.of(cfg, "shift_both")
    small, large = generate_maze_levels(spec, 8), generate_maze_levels(spec, 64)
    for name in ("tiles", "blocked", "start", "end", "arrow", "max_steps"):
        assert torch.equal(getattr(small, name), getattr(large, name)[:8])


@pytest.mark.parametrize("distribution", ["train", "shift_arrow"])
def test_every_level_regenerated_alone_by_id_is_the_same(cfg, distribution):
    spec = LevelSpec.of(cfg, distribution)
    bank = generate_maze_levels(spec, 48)
    for i in range(48):  # alone, each level sits in a batch of its own size only
        alone = generate_maze_levels_by_id(spec, torch.tensor([i]))
        for name in ("tiles", "blocked", "start", "end", "arrow"):
            assert torch.equal(getattr(alone, name)[0], getattr(bank, name)[i]), (i, name)


def test_level_seeds_give_different_level_sets_not_reorderings():
    def fingerprints(seed: int) -> set:
        lv = generate_maze_levels(LevelSpec.of(small_config(level_seed=seed), "train"), 2000)
        return {hash(row.numpy().tobytes()) for row in torch.cat([lv.tiles.flatten(1), lv.start[:, None]], 1)}

    # Seeds 96 and 196 gave the same 2000 levels reordered before the id was mixed non-linearly.
    shared = fingerprints(96) & fingerprints(196)
    assert len(shared) < 20
