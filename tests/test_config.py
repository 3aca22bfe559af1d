"""Bad configuration fails at once, with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from envs.config import ConfigError, load_arrow_maze_config
from tests.conftest import small_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


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


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_into_valid_env_and_agent_configs(name):
    from omegaconf import OmegaConf

    from agents.ppo import load_ppo_config
    from envs.config import load_env_config

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}"])
    load_env_config(cfg.env.name, base=cfg.env)
    agent = OmegaConf.to_container(cfg.agent, resolve=True)
    agent.pop("backend")  # read by experiments/train.py before the PPO config
    load_ppo_config(agent)
    if name == "arrow_maze_smoke":  # the regression gate's learner and training mazes, trained for longer
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            tiny = compose("train", overrides=["experiment=arrow_maze_tiny"])
        assert OmegaConf.to_container(cfg.agent) == OmegaConf.to_container(tiny.agent)
        assert cfg.env.distributions.train == tiny.env.distributions.train
        assert cfg.total_env_steps > tiny.total_env_steps
