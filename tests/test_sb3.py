"""The SB3 backend: the VecEnv adapter against a bare core, training through it, saved models, obs scaling."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import math
import pathlib
import pickle
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.save_util import json_to_data

from agents.checkpoint import StopTraining
from agents.networks import NetworkConfig
from agents.policy import Policy
from agents.ppo import PPOConfig, load_ppo_config
from agents.sb3 import (
    META_MEMBER,
    MODEL_FILENAME,
    CorePPO,
    CoreVecEnv,
    SB3ModelError,
    SB3Policy,
    load_sb3_policy,
    read_sb3_meta,
    save_sb3_model,
    sb3_ppo_kwargs,
    train_sb3,
)
from analysis.policy_specs import load_actor, trained_env_config
from envs import make_core
from envs.config import config_to_dict
from tests.conftest import kc_config, small_config

# Small layouts and short time limits, so that a few steps end episodes by truncation and by termination.
ENVS = {
    "arrow_maze": lambda **kw: small_config(
        max_steps=40, step_penalty=0.01, distributions={"train": {"max_size": 4}}, **kw
    ),
    # Keys for every chest, so that episodes can also terminate (with train's scarce keys they never do).
    "keys_chests": lambda **kw: kc_config(
        max_steps=24,
        step_penalty=0.01,
        distributions={"train": {"min_keys": 2, "min_chests": 1, "max_chests": 2}},
        **kw,
    ),
}
TINY_NET = NetworkConfig(kind="mlp", hidden=32, mlp_layers=1)


def tiny_agent(num_envs: int = 8, num_steps: int = 16) -> PPOConfig:
    return PPOConfig(num_envs=num_envs, num_steps=num_steps, minibatches=2, epochs=2, network=TINY_NET)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[dict], Path, SB3Policy]]:
    """One short SB3 run per env: (model path, the callback's stats, the run dir, the training model's policy)."""
    runs = {}
    for name, make_cfg in ENVS.items():
        run_dir = tmp_path_factory.mktemp(f"sb3_{name}")
        stats: list[dict] = []
        policies: list[SB3Policy] = []

        def keep(st: dict, policy: SB3Policy, stats: list[dict] = stats, policies: list[SB3Policy] = policies) -> None:
            stats.append(st)
            policies.append(policy)

        path = train_sb3(make_cfg(), tiny_agent(), 0, 3 * 8 * 16, run_dir, "cpu", callback=keep)
        runs[name] = (path, stats, run_dir, policies[-1])  # after the last report: the weights saved
    return runs


@pytest.mark.parametrize("env_name", sorted(ENVS))
def test_adapter_matches_a_bare_core_and_marks_episode_ends(env_name: str) -> None:
    cfg = ENVS[env_name]()
    venv = CoreVecEnv(make_core(cfg, "train", num_envs=16, seed=3, device="cpu"))
    core = make_core(cfg, "train", num_envs=16, seed=3, device="cpu")
    venv.seed(3)
    obs = venv.reset()
    assert np.array_equal(obs, core.reset(seed=3).numpy())
    returns = torch.zeros(16)
    rng = np.random.default_rng(0)
    seen = {"truncated": 0, "terminated": 0}
    for _ in range(60):
        actions = rng.integers(0, 4, size=16)
        obs, rewards, dones, infos = venv.step(actions)
        ref = core.step(torch.as_tensor(actions))
        returns += ref.reward
        assert np.array_equal(obs, ref.obs.numpy())
        assert np.array_equal(rewards, ref.reward.numpy())
        assert np.array_equal(dones, ref.done.numpy())
        final_obs = core.final_obs()
        for i in range(16):
            if not dones[i]:
                assert infos[i] == {}
                continue
            info = infos[i]
            assert np.array_equal(info["terminal_observation"], final_obs[i].numpy())
            assert info["TimeLimit.truncated"] == bool(ref.truncated[i])
            assert info["is_success"] == bool(ref.info["success"][i])
            assert info["episode"]["l"] == int(ref.info["episode_length"][i])
            assert math.isclose(info["episode"]["r"], float(returns[i]), abs_tol=1e-5)
            seen["truncated" if ref.truncated[i] else "terminated"] += 1
        returns[ref.done] = 0.0
    assert seen["truncated"] > 0 and seen["terminated"] > 0, seen


def test_adapter_plumbing_answers_or_refuses_clearly() -> None:
    venv = CoreVecEnv(make_core(small_config(), "train", num_envs=4, seed=0, device="cpu"), render_mode="rgb_array")
    assert venv.get_attr("render_mode") == ["rgb_array"] * 4
    assert venv.get_attr("distribution", indices=[1, 2]) == ["train", "train"]
    assert venv.env_is_wrapped(object) == [False] * 4
    with pytest.raises(NotImplementedError, match="one core"):
        venv.set_attr("distribution", "shift_size")
    with pytest.raises(NotImplementedError, match="one core"):
        venv.env_method("reset")
    with pytest.raises(ValueError, match="actions must be integers"):
        venv.step(np.array([0, 1, 2, 4]))
    frame = venv.render()
    assert frame is not None and frame.ndim == 3 and frame.shape[-1] == 3


class _CheckBootstrap(BaseCallback):
    """At the end of a rollout (weights not yet updated), what SB3 stored as rewards against the env's own
    rewards plus ``gamma * V(final obs)`` on truncated steps only."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[np.ndarray, np.ndarray, list[dict]]] = []
        self.ends = {"truncated": 0, "terminated": 0}

    def _on_step(self) -> bool:  # runs before SB3 adds its bootstrap to the rewards in place
        self.steps.append((self.locals["rewards"].copy(), self.locals["dones"].copy(), self.locals["infos"]))
        return True

    def _on_rollout_end(self) -> None:
        gamma, stored = self.model.gamma, self.model.rollout_buffer.rewards
        for t, (rewards, dones, infos) in enumerate(self.steps):
            expected = rewards.copy()
            for i in np.flatnonzero(dones):
                if infos[i]["TimeLimit.truncated"]:
                    final = torch.as_tensor(infos[i]["terminal_observation"])[None]
                    with torch.no_grad():
                        expected[i] += gamma * float(self.model.policy.predict_values(final))
                self.ends["truncated" if infos[i]["TimeLimit.truncated"] else "terminated"] += 1
            np.testing.assert_allclose(stored[t], expected, rtol=1e-5, atol=1e-6)


def test_sb3_bootstraps_truncated_steps_and_not_terminated_ones() -> None:
    agent = tiny_agent(num_envs=16, num_steps=48)  # longer than the time limit: every env ends at least once
    venv = CoreVecEnv(make_core(ENVS["arrow_maze"](), "train", num_envs=16, seed=0, device="cpu"))
    model = CorePPO(env=venv, seed=0, device="cpu", **sb3_ppo_kwargs(agent))
    model.set_logger(Logger(folder=None, output_formats=[]))
    check = _CheckBootstrap()
    model.learn(total_timesteps=16 * 48, callback=check)  # one rollout
    assert check.ends["truncated"] > 0 and check.ends["terminated"] > 0, check.ends


@pytest.mark.parametrize("env_name", sorted(ENVS))
def test_train_sb3_reports_each_update_and_writes_one_model_file(env_name: str, trained: dict) -> None:
    path, stats, run_dir, _ = trained[env_name]
    assert [s["env_steps"] for s in stats] == [128, 256, 384]
    assert [s["updates"] for s in stats] == [1, 2, 3]
    for s in stats:
        for key in ("policy_loss", "value_loss", "entropy", "clip_frac", "steps_per_s"):
            assert math.isfinite(s[key]), (key, s)
        if s["episodes"]:
            assert 0.0 <= s["success_rate"] <= 1.0 and s["episode_length"] >= 1, s
        else:  # no episode ended in that rollout
            assert math.isnan(s["success_rate"]) and math.isnan(s["episode_length"]), s
    assert sum(s["episodes"] for s in stats) > 0
    assert path == run_dir / MODEL_FILENAME
    assert sorted(p.name for p in run_dir.iterdir()) == [MODEL_FILENAME]  # no temp file left
    meta = read_sb3_meta(path)
    assert meta is not None and meta["env_name"] == env_name and meta["env_steps"] == 384


@pytest.mark.parametrize("env_name", sorted(ENVS))
def test_loaded_policy_acts_as_model_predict(env_name: str, trained: dict) -> None:
    path, _, run_dir, _ = trained[env_name]
    policy = load_sb3_policy(run_dir, env_name=env_name)
    assert isinstance(policy, Policy)
    obs = make_core(ENVS[env_name](), "train", num_envs=32, seed=5, device="cpu").reset(seed=5)
    expected, _ = PPO.load(path, device="cpu").predict(obs.numpy(), deterministic=True)
    assert np.array_equal(policy.act(obs, deterministic=True).numpy(), expected)
    probs = policy.distribution(obs).probs
    assert probs.shape == (32, 4) and torch.allclose(probs.sum(-1), torch.ones(32))
    sampled = policy.act(obs)
    assert sampled.shape == (32,) and bool(((sampled >= 0) & (sampled < 4)).all())


def test_loading_refuses_another_envs_model_and_a_missing_file(trained: dict, tmp_path) -> None:
    path, _, _, _ = trained["arrow_maze"]
    with pytest.raises(ValueError, match="'arrow_maze', not 'keys_chests'"):
        load_sb3_policy(path, env_name="keys_chests")
    with pytest.raises(FileNotFoundError, match="no SB3 model"):
        load_sb3_policy(tmp_path / "nowhere" / MODEL_FILENAME)


@pytest.mark.parametrize("obs_mode", ["symbolic", "rgb"])
def test_torso_sees_the_env_values_and_scales_pixels_once(obs_mode: str) -> None:
    core = make_core(ENVS["arrow_maze"](obs_mode=obs_mode), "train", num_envs=4, seed=0, device="cpu")
    venv = CoreVecEnv(core)
    model = CorePPO(env=venv, seed=0, device="cpu", **sb3_ppo_kwargs(tiny_agent(num_envs=4, num_steps=8)))
    model.set_logger(Logger(folder=None, output_formats=[]))
    assert model.get_env() is venv  # no VecTransposeImage: the torso reads HWC pixels
    torso = model.policy.features_extractor.torso
    inputs: list[torch.Tensor] = []
    layer_inputs: list[torch.Tensor] = []
    torso.register_forward_pre_hook(lambda _, args: inputs.append(args[0].detach().clone()))
    torso.layers.register_forward_pre_hook(lambda _, args: layer_inputs.append(args[0].detach().clone()))

    obs = core.reset(seed=1)
    model.policy.predict(obs.numpy(), deterministic=True)
    assert torch.equal(inputs[-1], obs.float())  # SB3 passed the raw values, same layout
    if obs_mode == "rgb":
        assert torch.allclose(layer_inputs[-1], obs.permute(0, 3, 1, 2).float() / 255.0)
    else:
        assert torch.equal(layer_inputs[-1], obs.float())

    model.learn(total_timesteps=4 * 8)  # the rollout and update paths too
    for x in inputs:  # integers as the env gives them: 0/1 channels, or pixels up to 255
        assert torch.equal(x, x.round()) and (float(x.max()) > 1.0 if obs_mode == "rgb" else float(x.max()) == 1.0)
    assert all(float(x.max()) <= 1.0 for x in layer_inputs)


def test_sb3_kwargs_keep_our_batch_shape_and_schedule() -> None:
    cfg = PPOConfig(num_envs=256, num_steps=64, minibatches=8, epochs=3, lr=5e-4, anneal_lr=True)
    kwargs = sb3_ppo_kwargs(cfg)
    assert (kwargs["n_steps"], kwargs["batch_size"], kwargs["n_epochs"]) == (64, 2048, 3)
    assert kwargs["clip_range"] == kwargs["clip_range_vf"] == cfg.clip_coef
    assert math.isclose(kwargs["learning_rate"](1.0), 5e-4) and kwargs["learning_rate"](0.0) == 0.0
    assert sb3_ppo_kwargs(PPOConfig(anneal_lr=False))["learning_rate"] == cfg.lr
    policy = kwargs["policy_kwargs"]
    assert policy["net_arch"] == [] and policy["share_features_extractor"] and not policy["normalize_images"]


def test_sb3_agent_preset_is_the_ppo_preset_but_for_the_backend() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    configs = str(Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        sb3 = OmegaConf.to_container(compose("train", overrides=["agent=sb3_ppo"]).agent)
        ours = OmegaConf.to_container(compose("train", overrides=["agent=ppo"]).agent)
    assert sb3.pop("backend") == "sb3" and ours.pop("backend") == "misgen"
    assert load_ppo_config(sb3) == load_ppo_config(ours)


def test_train_sb3_refuses_settings_it_cannot_honour(tmp_path):
    ego = tiny_agent()
    ego.network = NetworkConfig(kind="mlp", hidden=16, egocentric=3)
    with pytest.raises(ValueError, match="inventory"):
        train_sb3(kc_config(), ego, 0, 128, tmp_path, "cpu")
    bf16 = tiny_agent()
    bf16.bf16 = True
    with pytest.raises(ValueError, match="SB3 does not use them"):
        train_sb3(small_config(), bf16, 0, 128, tmp_path, "cpu")
    assert not (tmp_path / "model.zip").exists()


@pytest.mark.parametrize(("stop", "saved"), [(StopTraining, 3 * 128), (KeyboardInterrupt, 2 * 128)])
def test_train_sb3_saves_periodically_and_on_a_stop_but_not_on_a_bare_ctrl_c(tmp_path, stop, saved):
    seen: list[int] = []

    def interrupt_on_third(stats: dict, _policy: Policy) -> None:
        seen.append(int(stats["env_steps"]))
        if len(seen) == 3:
            assert read_sb3_meta(tmp_path)["env_steps"] == 2 * 128  # the periodic save of iteration 2
            raise stop

    with pytest.raises(stop):
        train_sb3(small_config(), tiny_agent(), 0, 10 * 128, tmp_path, "cpu", interrupt_on_third, checkpoint_every=2)
    # A stop (a consistent point) is saved on the way out; a second Ctrl-C may be mid-update: the last save stays.
    assert read_sb3_meta(tmp_path)["env_steps"] == saved
    assert [p.name for p in tmp_path.iterdir()] == [MODEL_FILENAME]


# ------------------------------------------------------------ saved zips: verified, never unpickled
def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A well-formed zip (CRCs right) of ``members``: only our hashes can tell what changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in members.items():
            archive.writestr(name, raw)
    return path


def _rehash(members: dict[str, bytes]) -> dict[str, bytes]:
    """What a forger can do: record the hashes of the members as they now are (hashes are no signature)."""
    meta = json.loads(members[META_MEMBER])
    meta["sha256"] = {name: hashlib.sha256(raw).hexdigest() for name, raw in members.items() if name != META_MEMBER}
    return {**members, META_MEMBER: json.dumps(meta).encode()}


class _TouchWhenUnpickled:
    """Unpickles into ``Path(marker).touch()``: evidence that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _forge(real: Path, marker: Path, with_misgen_json: bool) -> dict[str, bytes]:
    """A real zip whose ``data`` carries a forged ``misgen`` block and a pickled payload in a ``:serialized:``
    field SB3 unpickles; with ``misgen_json``, also a ``misgen.json`` whose hashes match the forgery."""
    members = _members(real)
    data = json.loads(members["data"])
    data["policy_class"][":serialized:"] = base64.b64encode(pickle.dumps(_TouchWhenUnpickled(marker))).decode()
    meta = json.loads(members[META_MEMBER])
    del meta["sha256"]
    data["misgen"] = {**meta, "format": 2}
    members["data"] = json.dumps(data).encode()
    if not with_misgen_json:
        del members[META_MEMBER]
        return members
    return _rehash(members)


@pytest.mark.parametrize("with_misgen_json", [True, False], ids=["misgen.json", "metadata_in_data"])
def test_a_forged_zip_runs_no_code_when_read_loaded_or_resumed(
    with_misgen_json: bool, trained: dict, tmp_path: Path
) -> None:
    path, _, _, _ = trained["arrow_maze"]
    marker = tmp_path / "payload_ran"
    members = _forge(path, marker, with_misgen_json)
    forged = _write_zip(tmp_path / "run" / MODEL_FILENAME, members)
    assert read_sb3_meta(forged)["env_name"] == "arrow_maze"
    assert trained_env_config(f"sb3:{forged}")["name"] == "arrow_maze"
    load_sb3_policy(forged, env_name="arrow_maze")  # rebuilt from JSON and weights
    train_sb3(ENVS["arrow_maze"](), tiny_agent(), 0, 3 * 8 * 16, forged.parent, "cpu", resume=True)
    assert not marker.exists()
    json_to_data(members["data"].decode())  # the payload is live: SB3's own loader would have run it
    assert marker.exists()


def test_a_flipped_byte_in_the_weights_fails_the_hash_naming_the_file(trained: dict, tmp_path: Path) -> None:
    path, _, _, _ = trained["arrow_maze"]
    members = _members(path)
    weights = bytearray(members["policy.pth"])
    weights[len(weights) // 2] ^= 0x01
    bad = _write_zip(tmp_path / MODEL_FILENAME, {**members, "policy.pth": bytes(weights)})
    expected = f"{re.escape(str(bad))}: policy.pth does not match the SHA-256 recorded in misgen.json"
    with pytest.raises(SB3ModelError, match=expected):
        load_sb3_policy(bad)
    with pytest.raises(SB3ModelError, match=expected):
        train_sb3(ENVS["arrow_maze"](), tiny_agent(), 0, 3 * 8 * 16, tmp_path, "cpu", resume=True)


def _without_field(field: str) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
    def change(members: dict[str, bytes]) -> dict[str, bytes]:
        meta = json.loads(members[META_MEMBER])
        del meta[field]
        return {**members, META_MEMBER: json.dumps(meta).encode()}

    return change


UNUSABLE: dict[str, tuple[Callable[[bytes], bytes] | None, Callable | None, str]] = {
    # name: (change to the file's bytes, or change to its members; what the error says)
    "empty": (lambda raw: b"", None, "is not a readable zip"),
    "truncated": (lambda raw: raw[: len(raw) // 2], None, "is not a readable zip"),
    "not_a_zip": (lambda raw: b"a text file, not a model\n" * 20, None, "is not a readable zip"),
    "metadata_not_json": (None, lambda m: {**m, META_MEMBER: b"{not json"}, "misgen.json member is not valid JSON"),
    "metadata_not_an_object": (None, lambda m: {**m, META_MEMBER: b"[1, 2]"}, "holds a JSON list, not an object"),
    "no_hashes": (None, _without_field("sha256"), "no 'sha256' table"),
    "no_env_steps": (None, _without_field("env_steps"), r"lacks the fields \['env_steps'\]"),
    "no_agent_config": (None, _without_field("agent_config"), r"lacks the fields \['agent_config'\]"),
    "member_missing": (
        None,
        lambda m: {k: v for k, v in m.items() if k != "system_info.txt"},
        r"\['system_info.txt'\] recorded in misgen.json are missing",
    ),
    "member_added": (None, lambda m: {**m, "extra.pth": b"x"}, r"\['extra.pth'\] are not recorded in misgen.json"),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_an_unusable_zip_fails_with_one_error_naming_the_file(case: str, trained: dict, tmp_path: Path) -> None:
    path, _, _, _ = trained["arrow_maze"]
    change_bytes, change_members, says = UNUSABLE[case]
    target = tmp_path / MODEL_FILENAME
    if change_bytes is not None:
        target.write_bytes(change_bytes(path.read_bytes()))
    else:
        _write_zip(target, change_members(_members(path)))
    for read in (read_sb3_meta, load_sb3_policy, lambda where: trained_env_config(f"sb3:{where}")):
        with pytest.raises(SB3ModelError, match=re.escape(str(target)) + ".*" + says):
            read(tmp_path)


def test_a_foreign_zip_is_refused_without_the_opt_in_and_loads_with_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = ENVS["arrow_maze"]()
    core = make_core(cfg, "train", num_envs=4, seed=0, device="cpu")
    foreign = PPO("MlpPolicy", CoreVecEnv(core), n_steps=8, batch_size=32, seed=0, device="cpu")
    foreign.save(tmp_path / MODEL_FILENAME)  # SB3 on its own: no metadata of ours
    assert read_sb3_meta(tmp_path) is None and trained_env_config(f"sb3:{tmp_path}") is None
    refusal = "loading it unpickles its data, which executes code from the file; pass allow_pickle=True"
    with pytest.raises(SB3ModelError, match=refusal):
        load_sb3_policy(tmp_path, env_name="arrow_maze")
    with pytest.raises(SB3ModelError, match=refusal):
        load_actor(f"sb3:{tmp_path}", cfg)
    with caplog.at_level(logging.WARNING, logger="agents.sb3"):
        policy = load_sb3_policy(tmp_path, env_name="arrow_maze", allow_pickle=True)
    assert "its env cannot be checked against 'arrow_maze'" in caplog.text
    obs = core.reset(seed=1)
    with torch.no_grad():
        expected = foreign.policy.get_distribution(obs).distribution.probs
    assert torch.equal(policy.distribution(obs).probs, expected)
    actor = load_actor(f"sb3:{tmp_path}", cfg, allow_pickle=True)
    assert actor(core, obs).shape == (4,)


@pytest.mark.parametrize("env_name", sorted(ENVS))
def test_a_saved_then_loaded_policy_gives_the_training_models_action_probabilities(
    env_name: str, trained: dict
) -> None:
    _, _, run_dir, training = trained[env_name]
    loaded = load_sb3_policy(run_dir, env_name=env_name)
    assert loaded.policy is not training.policy
    obs = make_core(ENVS[env_name](), "train", num_envs=32, seed=5, device="cpu").reset(seed=5)
    assert torch.equal(loaded.distribution(obs).probs, training.distribution(obs).probs)
    same_seed = SB3Policy(training.policy, seed=3), SB3Policy(loaded.policy, seed=3)
    assert torch.equal(same_seed[0].act(obs), same_seed[1].act(obs))  # and the same samples


def _legacy_zip(run_dir: Path, meta: dict) -> tuple[Path, CorePPO]:
    """A zip as formats 1 and 2 were written: our metadata an attribute of the model, so in SB3's ``data``."""
    cfg, agent = ENVS["arrow_maze"](), tiny_agent()
    core = make_core(cfg, "train", num_envs=agent.num_envs, seed=0, device="cpu")
    model = CorePPO(env=CoreVecEnv(core), seed=0, device="cpu", **sb3_ppo_kwargs(agent))
    model.misgen = {
        "env_name": cfg.name,
        "env_config": config_to_dict(cfg),
        "agent_config": dataclasses.asdict(agent),
        "observation_shape": list(core.observation_shape),
        "seed": 0,
        "env_steps": 0,
        **meta,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / MODEL_FILENAME)
    return run_dir / MODEL_FILENAME, model


def test_a_legacy_zip_with_metadata_in_data_still_loads_unverified(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, model = _legacy_zip(tmp_path, {"format": 2})
    with caplog.at_level(logging.WARNING, logger="agents.sb3"):
        policy = load_sb3_policy(path, env_name="arrow_maze")
    assert "metadata format 2, without content hashes: not verified" in caplog.text
    assert read_sb3_meta(path)["format"] == 2
    obs = make_core(ENVS["arrow_maze"](), "train", num_envs=16, seed=5, device="cpu").reset(seed=5)
    assert torch.equal(policy.distribution(obs).probs, SB3Policy(model.policy).distribution(obs).probs)


def test_a_format_1_zip_of_an_egocentric_network_is_refused(tmp_path: Path) -> None:
    network = dataclasses.asdict(NetworkConfig(kind="mlp", hidden=32, egocentric=3))
    path, _ = _legacy_zip(tmp_path, {"agent_config": {**dataclasses.asdict(tiny_agent()), "network": network}})
    with pytest.raises(SB3ModelError, match=f"{re.escape(str(path))}: an SB3 model of an egocentric network"):
        read_sb3_meta(path)


def test_resuming_with_other_settings_is_refused_naming_the_changed_keys(trained: dict, tmp_path: Path) -> None:
    _, _, run_dir, _ = trained["arrow_maze"]
    shutil.copytree(run_dir, tmp_path, dirs_exist_ok=True)
    steps = read_sb3_meta(tmp_path)["env_steps"]
    faster = dataclasses.replace(tiny_agent(), lr=0.1)
    with pytest.raises(ValueError, match=r"\(agent\.lr: 0\.0005 -> 0\.1\); resume with the run's own agent settings"):
        train_sb3(ENVS["arrow_maze"](), faster, 0, steps, tmp_path, "cpu", resume=True)
    with pytest.raises(ValueError, match=r"\(env\.level_seed: 0 -> 1\); resume with the run's own env settings"):
        train_sb3(ENVS["arrow_maze"](level_seed=1), tiny_agent(), 0, steps, tmp_path, "cpu", resume=True)
    train_sb3(ENVS["arrow_maze"](device="auto"), tiny_agent(), 0, steps, tmp_path, "cpu", resume=True)  # device aside
    assert read_sb3_meta(tmp_path)["env_steps"] == steps


def test_weights_that_do_not_fit_the_recorded_network_fail_naming_the_file(trained: dict, tmp_path: Path) -> None:
    path, _, _, _ = trained["arrow_maze"]
    members = _members(path)
    meta = json.loads(members[META_MEMBER])
    meta["agent_config"]["network"]["hidden"] = 64  # misgen.json itself is not hashed: only what it describes
    bad = _write_zip(tmp_path / MODEL_FILENAME, {**members, META_MEMBER: json.dumps(meta).encode()})
    with pytest.raises(SB3ModelError, match=f"{re.escape(str(bad))}: its policy.pth does not fit the network"):
        load_sb3_policy(bad)


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    path, model = _legacy_zip(tmp_path, {})
    meta = model.misgen
    del model.misgen  # saved the current way: metadata in misgen.json
    save_sb3_model(model, tmp_path, meta)
    before = path.read_bytes()
    with torch.no_grad():
        next(model.policy.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite weights"):
        save_sb3_model(model, tmp_path, meta)
    assert path.read_bytes() == before
