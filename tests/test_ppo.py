"""PPO core: advantages against a plain-loop reference, truncation bootstrapping, config checks."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

import agents.ppo as ppo_module
from agents.checkpoint import FILENAME, load_checkpoint
from agents.networks import ActorCritic, NetworkConfig, egocentric_crop
from agents.ppo import PPO, PPOConfig, compute_gae
from envs.arrow_maze import ArrowMazeCore
from envs.config import ConfigError
from envs.keys_chests import KeysChestsCore
from tests.conftest import kc_config, small_config, tiny_learner, tiny_maze_config


def reference_gae(rewards, values, last_value, terminated, truncated, final_values, gamma, lam):
    """GAE written as a plain loop over steps and envs, one branch per case."""
    t_len, b = rewards.shape
    adv = torch.zeros(t_len, b, dtype=torch.float64)
    for e in range(b):
        running = 0.0
        for t in reversed(range(t_len)):
            if terminated[t, e]:
                next_value, carry = 0.0, 0.0  # a true end: nothing after it
            elif truncated[t, e]:
                next_value, carry = float(final_values[t, e]), 0.0  # bootstrap, but the next obs is a new episode
            else:
                next_value = float(values[t + 1, e]) if t + 1 < t_len else float(last_value[e])
                carry = 1.0
            delta = float(rewards[t, e]) + gamma * next_value - float(values[t, e])
            running = delta + gamma * lam * carry * running
            adv[t, e] = running
    return adv


def test_fast_gae_equals_the_plain_loop_reference():
    g = torch.Generator().manual_seed(0)
    t_len, b = 17, 5
    rewards = torch.rand(t_len, b, generator=g)
    values, final_values = torch.randn(t_len, b, generator=g), torch.randn(t_len, b, generator=g)
    last_value = torch.randn(b, generator=g)
    ends = torch.rand(t_len, b, generator=g)
    terminated, truncated = ends < 0.15, (ends >= 0.15) & (ends < 0.3)
    adv, ret = compute_gae(rewards, values, last_value, terminated, truncated, final_values, 0.97, 0.9)
    expected = reference_gae(rewards, values, last_value, terminated, truncated, final_values, 0.97, 0.9)
    assert torch.allclose(adv.double(), expected, atol=1e-5)
    assert torch.allclose(ret, adv + values)


def test_truncation_bootstraps_from_the_final_value_and_termination_does_not():
    zeros = torch.zeros(1, 1)
    reward, value, final = torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[10.0]])
    last = torch.tensor([100.0])  # the next episode's first value: never used across an end
    truncated_adv, _ = compute_gae(reward, value, last, zeros.bool(), ~zeros.bool(), final, 0.9, 0.95)
    terminated_adv, _ = compute_gae(reward, value, last, ~zeros.bool(), zeros.bool(), final, 0.9, 0.95)
    assert math.isclose(float(truncated_adv), 1.0 + 0.9 * 10.0 - 0.5, rel_tol=1e-6)
    assert math.isclose(float(terminated_adv), 1.0 - 0.5, rel_tol=1e-6)


def test_the_rollout_bootstraps_each_truncated_step_from_its_final_observation(monkeypatch):
    """final_values[t, e] is V(final observation) where step t truncated env e's episode, and 0 elsewhere."""
    cfg = small_config(distributions={"train": {"min_size": 3, "max_size": 3}})  # 36-step time limit
    core = ArrowMazeCore(cfg, "train", num_envs=8, seed=0)
    ppo = PPO(core, PPOConfig(num_envs=8, num_steps=40, minibatches=2, epochs=1), NetworkConfig(kind="mlp", hidden=16))
    finals, captured = [], {}
    step, gae = core.step, ppo_module.compute_gae

    def recording_step(action):
        result = step(action)
        finals.append(core.final_obs().clone())
        return result

    def capture(*args):
        captured["args"] = args
        return gae(*args)

    monkeypatch.setattr(core, "step", recording_step)
    monkeypatch.setattr(ppo_module, "compute_gae", capture)
    net_before_update = ppo.members.network(0)
    ppo.train_iteration()
    truncated, final_values = captured["args"][4], captured["args"][5]
    assert truncated.any() and not truncated.all()
    with torch.no_grad():
        expected = torch.stack([net_before_update(obs)[1] for obs in finals])[:, None]  # (T, members, B)
    assert torch.allclose(final_values[truncated], expected[truncated], atol=1e-6)
    assert torch.equal(final_values[~truncated], torch.zeros_like(final_values[~truncated]))


@pytest.mark.parametrize("kind", ["impala", "mlp"])
@pytest.mark.parametrize("env", ["arrow_maze", "keys_chests"])
def test_one_ppo_iteration_on_each_env_gives_finite_statistics(env, kind):
    core_cls, cfg = (ArrowMazeCore, small_config()) if env == "arrow_maze" else (KeysChestsCore, kc_config())
    core = core_cls(cfg, "train", num_envs=16, seed=0)
    ppo = PPO(
        core, PPOConfig(num_envs=16, num_steps=8, minibatches=2, epochs=1), NetworkConfig(kind=kind, hidden=32), seed=0
    )
    before = [p.detach().clone() for p in ppo.members.parameters()]
    (stats,) = ppo.train_iteration()
    assert stats["env_steps"] == 128
    assert all(math.isfinite(stats[k]) for k in ("policy_loss", "value_loss", "entropy", "clip_frac"))
    assert any(not torch.equal(a, p) for a, p in zip(before, ppo.members.parameters(), strict=True))


def test_the_mlp_activation_is_a_config_value_and_a_bad_one_is_named():
    net = ActorCritic((3, 9, 9), 4, NetworkConfig(kind="mlp", hidden=8, mlp_layers=2, activation="relu"), False)
    assert [type(m).__name__ for m in net.torso.layers] == ["Flatten", "Linear", "ReLU", "Linear", "ReLU"]
    with pytest.raises(ValueError, match=r"agent\.network\.activation='gelu'"):
        NetworkConfig(kind="mlp", activation="gelu").validate()


@pytest.mark.skipif(shutil.which("c++") is None, reason="torch.compile on the CPU needs a C++ compiler")
def test_a_compiled_ppo_trains_as_the_eager_one():
    """agent.compile=true: the same iterations, the same statistics up to float reordering (about 30 s of compiling)."""
    stats = []
    for compiled in (False, True):
        core = ArrowMazeCore(small_config(), "train", num_envs=16, seed=0)
        cfg = PPOConfig(num_envs=16, num_steps=8, minibatches=2, epochs=1, compile=compiled)
        ppo = PPO(core, cfg, NetworkConfig(kind="mlp", hidden=32, egocentric=3), seed=0)
        stats.append([ppo.train_iteration()[0] for _ in range(2)])
    for eager, compiled in zip(*stats, strict=True):
        for key in ("policy_loss", "value_loss", "entropy"):
            assert math.isclose(eager[key], compiled[key], rel_tol=1e-3, abs_tol=1e-6), key


def test_impala_network_runs_on_any_canvas():
    net = ActorCritic((3, 25, 25), 4, NetworkConfig(), pixels=False)
    for side in (9, 13, 25, 31):
        logits, value = net(torch.zeros(2, 3, side, side, dtype=torch.uint8))
        assert logits.shape == (2, 4) and value.shape == (2,)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": -1.0}, r"agent\.lr=-1\.0 must be > 0"),
        ({"minibatches": 3}, r"agent\.minibatches=3 must divide"),
        ({"gamma": 1.5}, r"agent\.gamma=1\.5 must be a probability in \[0, 1\]"),
    ],
)
def test_bad_ppo_config_names_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(num_envs=16, num_steps=8, **overrides).validate()


def test_egocentric_crop_equals_a_per_env_window_reference():
    g = torch.Generator().manual_seed(0)
    b, c, s, r = 6, 3, 9, 3
    obs = torch.randint(0, 2, (b, c, s, s), generator=g, dtype=torch.uint8)
    obs[:, 1] = 0
    ys, xs = torch.randint(0, s, (b,), generator=g), torch.randint(0, s, (b,), generator=g)
    obs[torch.arange(b), 1, ys, xs] = 1
    crop = egocentric_crop(obs, agent_channel=1, radius=r)
    for e in range(b):
        expected = torch.zeros(c, 2 * r + 1, 2 * r + 1, dtype=torch.uint8)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                y, x = int(ys[e]) + dy, int(xs[e]) + dx
                if 0 <= y < s and 0 <= x < s:
                    expected[:, dy + r, dx + r] = obs[e, :, y, x]
        assert torch.equal(crop[e], expected)
        assert crop[e, 1, r, r] == 1  # the agent is at the centre


def test_an_egocentric_torso_drops_the_constant_agent_channel():
    """The window's agent channel is a one at the centre for every observation: the torso does not take it."""
    r, hidden = 3, 8
    net = ActorCritic((3, 9, 9), 4, NetworkConfig(kind="mlp", hidden=hidden, mlp_layers=1, egocentric=r), False)
    first = net.torso.layers[1]
    assert first.in_features == 2 * (2 * r + 1) ** 2
    obs = torch.zeros(2, 3, 9, 9, dtype=torch.uint8)
    obs[:, 0, 0, :] = 1  # a wall along the top
    obs[0, 1, 4, 4] = obs[1, 1, 2, 4] = 1  # the agents, at different distances from it
    window = egocentric_crop(obs, 1, r)[:, [0, 2]].flatten(1).float()
    assert torch.allclose(net.torso(obs), torch.tanh(first(window)))


def test_global_channels_give_the_inventory_as_a_count_beside_the_window():
    """keys_chests: egocentric window without the agent and inventory channels, plus the keys held (exact),
    the same from float obs (the SB3 extractor's), trainable as a population; bad settings are refused."""
    r = 3
    net = NetworkConfig(kind="mlp", hidden=8, mlp_layers=1, egocentric=r, global_channels=[4])
    core = KeysChestsCore(kc_config(), "shift_ratio", num_envs=32, seed=0)  # up to 6 keys to hold
    torso = ActorCritic(core.observation_shape, 4, net, False).torso
    assert torso.layers[1].in_features == 3 * (2 * r + 1) ** 2 + 1
    obs, gen, held = core.reset(seed=0), torch.Generator().manual_seed(0), set()
    for _ in range(40):
        encoded = torso.encode(obs)
        window = egocentric_crop(obs, 1, r)[:, [0, 2, 3]].flatten(1)
        assert torch.equal(encoded, torch.cat([window, core.state().inventory[:, None].to(torch.uint8)], dim=1))
        assert torch.equal(torso(obs.float()), torso(obs))
        held |= set(core.state().inventory.tolist())
        obs = core.step(torch.randint(0, 4, (32,), generator=gen)).obs
    assert max(held) >= 2
    ppo = PPO(
        KeysChestsCore(kc_config(), "train", num_envs=8, seed=0),
        PPOConfig(num_envs=4, num_steps=8, minibatches=2, network=net),
        population=2,
    )
    assert all(math.isfinite(s["value_loss"]) for s in ppo.train_iteration())
    with pytest.raises(ConfigError, match=r"global_channels=\[5\]"):
        ActorCritic((5, 9, 9), 4, NetworkConfig(kind="mlp", global_channels=[5]), False)
    with pytest.raises(ConfigError, match="kind=mlp"):
        NetworkConfig(global_channels=[4]).validate()
    with pytest.raises(ConfigError, match="distinct"):
        NetworkConfig(kind="mlp", global_channels=[4, 4]).validate()
    with pytest.raises(ConfigError, match="symbolic"):
        ActorCritic((28, 28, 3), 4, NetworkConfig(kind="mlp", global_channels=[0]), pixels=True)


def test_a_format_2_egocentric_checkpoint_is_refused_naming_the_change(tmp_path):
    spec = {"config": {"kind": "mlp", "egocentric": 3}, "obs_shape": [3, 9, 9], "num_actions": 4, "pixels": False}
    torch.save({"format": 2, "env_name": "arrow_maze", "network": spec, "model": {}}, tmp_path / FILENAME)
    with pytest.raises(ValueError, match=r"agent channel.*retrain"):
        load_checkpoint(tmp_path)


def test_egocentric_networks_refuse_what_they_cannot_centre():
    with pytest.raises(ValueError, match=r"inventory.*global_channels=\[4\]"):
        PPO(
            KeysChestsCore(kc_config(), "train", num_envs=4, seed=0),
            PPOConfig(num_envs=4, minibatches=2, network=NetworkConfig(kind="mlp", egocentric=3)),
        )
    with pytest.raises(ValueError, match="symbolic"):
        ActorCritic((28, 28, 3), 4, NetworkConfig(kind="mlp", egocentric=3), pixels=True)
    with pytest.raises(ValueError, match=r"agent\.network\.egocentric=0"):
        NetworkConfig(egocentric=0).validate()
    with pytest.raises(ValueError, match="the env has channels"):
        PPO(
            ArrowMazeCore(small_config(), "train", num_envs=4, seed=0),
            PPOConfig(num_envs=4, minibatches=2, network=NetworkConfig(kind="mlp", egocentric=3, agent_channel=7)),
        )


def test_bf16_on_a_cpu_run_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"agent\.bf16"):
        PPO(ArrowMazeCore(small_config(), "train", num_envs=4, seed=0), PPOConfig(num_envs=4, minibatches=2, bf16=True))


def test_ppo_learns_a_tiny_maze():
    """The whole loop learns: 3x3-cell random mazes, egocentric MLP, >= 90% eval success (about 30 s)."""
    cfg, agent = tiny_maze_config(), tiny_learner()
    ppo = PPO(ArrowMazeCore(cfg, "train", num_envs=64, seed=0), agent, seed=0)
    ppo.train(450_000)
    evaluation = ArrowMazeCore(cfg, "train", num_envs=256, seed=1)
    obs = evaluation.reset(seed=1, level_ids=torch.arange(256))
    finished, success = torch.zeros(256, dtype=torch.bool), torch.zeros(256, dtype=torch.bool)
    while not bool(finished.all()):
        r = evaluation.step(ppo.policy.act(obs))
        success |= r.info["success"] & r.done & ~finished
        finished |= r.done
        obs = r.obs
    assert success.float().mean() >= 0.9
