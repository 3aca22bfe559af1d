"""Pinned fixed-seed rollouts of both cores: a hash of everything a step returns (observations, rewards,
terminations, truncations, info, final observations and states) over a few hundred steps with
auto-resets. A refactor of the cores must leave every hash unchanged: the behaviour is bit-for-bit the
same. (Recorded on the CPU; CUDA draws a different level stream.)"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import torch

from envs import make_core
from tests.conftest import kc_config, small_config

PINS = {
    "arrow_maze": "3c197df17a35b7f20d19bfcc5339cc00c5c2aaee009ad060ebf00588e8bd4e51",
    "arrow_maze_flipped_tile_penalty": "56b2e88bd8855ec0076e09ee9eee0194199765af3d148ad4ddbc6e36df75c064",
    "arrow_maze_rgb": "1f7778bbd4b2cd7021798efd3765d7df2df43e2a093403d3768ef51aea19a56d",
    "keys_chests": "a4b3ab24c25514cbe013f3a519d231ad71f70b9307cb9039216cfbed5819c02f",
    "keys_chests_maze_hidden_penalties": "2019f6cc1914c7a4fdea8b98ce3eedc24b2ce235e05e0ea0c38cef6e5e2ba11f",
    "keys_chests_rgb": "623c9fca1195c640756c8340591b8642b048c940b8a0192600a62dac86bab78c",
}

CONFIGS = {
    "arrow_maze": lambda: small_config(),
    "arrow_maze_flipped_tile_penalty": lambda: small_config(
        base_objective="arrow", end_marker="tile", step_penalty=0.01
    ),
    "arrow_maze_rgb": lambda: small_config(obs_mode="rgb", rgb_tile_size=2),
    "keys_chests": lambda: kc_config(),
    "keys_chests_maze_hidden_penalties": lambda: kc_config(
        layout="maze", hidden_chests=True, step_penalty=0.013, key_penalty=0.1
    ),
    "keys_chests_rgb": lambda: kc_config(obs_mode="rgb", rgb_tile_size=2),
}
DISTRIBUTION = {"arrow_maze": "shift_arrow", "keys_chests": "shift_ratio"}


def _feed(digest: Any, *tensors: torch.Tensor) -> None:
    for x in tensors:
        digest.update(str((x.dtype, tuple(x.shape))).encode())
        digest.update(x.detach().cpu().contiguous().numpy().tobytes())


def rollout_hash(name: str, num_envs: int = 48, steps: int = 150) -> str:
    """sha256 of one fixed-seed rollout of random actions with auto-resets."""
    cfg = CONFIGS[name]()
    core = make_core(cfg, DISTRIBUTION[cfg.name], num_envs=num_envs, seed=3, device="cpu")
    digest = hashlib.sha256()
    _feed(digest, core.reset(seed=3))
    gen = torch.Generator().manual_seed(7)
    for _ in range(steps):
        before = core.state()
        r = core.step(torch.randint(0, 4, (num_envs,), generator=gen))
        _feed(digest, r.obs, r.reward, r.terminated, r.truncated, core.final_obs(), core.t)
        _feed(digest, *(before[k] for k in core.STATE), *(core.final_state()[k] for k in core.STATE))
        live = core.live_info() if hasattr(core, "live_info") else {}
        for prefix, info in (("", r.info), ("live.", live)):
            for key in sorted(info):
                digest.update((prefix + key).encode())
                _feed(digest, info[key])
    return digest.hexdigest()


@pytest.mark.parametrize("name", PINS)
def test_a_fixed_seed_rollout_is_unchanged(name):
    assert rollout_hash(name) == PINS[name]


if __name__ == "__main__":  # print the hashes (to record new pins after an intended change of behaviour)
    for pin in PINS:
        print(f'    "{pin}": "{rollout_hash(pin)}",')
