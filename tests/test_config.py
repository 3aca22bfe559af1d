"""Bad configuration fails at once, with a message naming the field."""

from __future__ import annotations

import pytest

from envs.config import ConfigError, load_arrow_maze_config
from tests.conftest import small_config


def test_presets_load_with_the_four_distributions_of_the_design():
    cfg = load_arrow_maze_config()
    assert set(cfg.distributions) == {"train", "shift_arrow", "shift_size", "shift_both"}
    assert cfg.canvas == 2 * cfg.max_maze_size + 1


def test_training_knobs_reach_the_train_distribution_only():
    cfg = small_config(p_decorrelate=0.3, num_levels=123)
    assert cfg.distributions["train"].p_decorrelate == 0.3
    assert cfg.distributions["train"].num_levels == 123
    assert cfg.distributions["shift_size"].p_decorrelate == 0.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"canvas_size": 13}, r"distributions\.shift_size\.max_size=12 needs a 25x25 canvas, but canvas_size=13"),
        ({"p_decorrelate": -0.1}, r"p_decorrelate=-0\.1 must be a probability"),
        ({"distributions": {"train": {"p_decorrelate": 1.5}}}, r"distributions\.train\.p_decorrelate=1\.5"),
        ({"distributions": {"train": {"min_size": 7, "max_size": 4}}}, r"distributions\.train\.max_size=4 is below"),
        ({"base_objective": "exit"}, r"base_objective='exit' is not one of \['end', 'arrow'\]"),
        ({"num_levels": 0}, r"num_levels=0 must be >= 1"),
        ({"obs_mode": "pixels"}, r"obs_mode='pixels'"),
        ({"device": "tpu"}, r"device='tpu'"),
        ({"arrow_placment": "random"}, r"arrow_placment"),
        ({"distributions": {"train": {"max_size": "big"}}}, r"distributions\.train\.max_size"),
    ],
)
def test_bad_config_names_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        small_config(**overrides)
