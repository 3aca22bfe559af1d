"""The stable-baselines3 backend: SB3's PPO on our batched cores, training our network.

Why it exists: a second, independent PPO to check ours against, and the speed baseline. Same env,
same network (``agents.networks.Torso`` with linear policy and value heads), same batch shape.

How SB3 is fitted to the suite:

- ``CoreVecEnv`` is an SB3 ``VecEnv`` over one batched core: one ``core.step`` per vector step, not a
  ``DummyVecEnv`` of single envs. The core resets finished envs in the same step, as SB3 expects.
- Images. SB3 calls a ``uint8`` Box of shape ``(H, W, 3)`` with bounds 0..255 (our ``rgb`` obs) an
  image: it would wrap the env in ``VecTransposeImage`` (to CHW) and divide by 255 in
  ``preprocess_obs``. Our Torso reads HWC pixels and scales them itself, so :class:`CorePPO` skips
  the transpose and the policy gets ``normalize_images=False``: the Torso receives the env's own
  values, cast to float, and divides pixels by 255 exactly once. Symbolic 0/1 boxes are not images
  to SB3 (bounds 0..1) and pass through as they are.
- Truncation. SB3 bootstraps a step (``reward += gamma * V(terminal_observation)``) only where the
  info has ``TimeLimit.truncated`` true, so the adapter sets it from the core's ``truncated``.
- The saved ``model.zip`` is SB3's own zip (``data``, ``policy.pth``, ``policy.optimizer.pth``,
  ``pytorch_variables.pth``, version and system info; plain ``PPO.load`` still reads it) plus one
  member of ours, ``misgen.json`` (metadata format 3): the env name, env and agent configs,
  observation shape, seed and step count, and the SHA-256 of every other member. Reading the zip
  verifies every hash, so a changed, missing or added member is refused (:class:`SB3ModelError`,
  naming the file and what is wrong). Nothing of ours is unpickled: :func:`load_sb3_policy` rebuilds
  the ``ActorCriticPolicy`` from the JSON configs and loads ``policy.pth`` with
  ``torch.load(weights_only=True)``; ``train_sb3(resume=True)`` builds a fresh model the same way and
  loads weights and optimiser as tensors. SB3's ``data`` (cloudpickled objects) is never unpickled.
  Zips of formats 1 and 2 (metadata under ``misgen`` in the ``data`` JSON, read as JSON only) load
  the same way, unverified, with a logged warning. A zip without our metadata can only be loaded by
  unpickling ``data`` (code from the file runs), so :func:`load_sb3_policy` refuses it unless called
  with ``allow_pickle=True`` (``allow_pickle=true`` for ``experiments.evaluate``): local, trusted
  files only (DESIGN.md).

What still differs from our PPO (SB3's choices, kept): SB3's value loss is the mean squared error of
the clipped value only (ours: half the larger of the clipped and unclipped squared errors), and SB3
initialises the torso orthogonally with gain sqrt(2) (ours: PyTorch's default); the heads' init
(orthogonal, gains 0.01 and 1) is the same. SB3 anneals the learning rate from the progress *after*
each rollout, so its k-th of N updates uses ``lr * (1 - k/N)`` (the last one 0); ours uses
``lr * (1 - (k-1)/N)``. SB3's rollout buffer is host numpy, so on a GPU each step and each minibatch
crosses the bus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import LinearSchedule, get_device
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices
from torch.distributions import Categorical

from agents.checkpoint import (
    SB3_MODEL_FILENAME,
    CheckpointError,
    StopTraining,
    config_changes,
    find_run_file,
    non_finite_weights,
)
from agents.networks import NetworkConfig, Torso
from agents.ppo import PPOConfig, check_egocentric, load_ppo_config
from envs import make_core
from envs.atomic import atomic_path
from envs.config import OBS_MODES, ConfigError, config_to_dict, load_env_config, load_structured
from envs.core import GridCore, StepResult
from envs.grid import NUM_ACTIONS
from envs.gym_views import _check_actions, _observation_space, observation_space

log = logging.getLogger(__name__)

MODEL_FILENAME = SB3_MODEL_FILENAME
META_MEMBER = "misgen.json"
"""The zip member holding our metadata and the hashes of the other members (format 3)."""
META_KEY = "misgen"
"""Key of our metadata in the ``data`` JSON of zips of formats 1 and 2 (read, no longer written)."""
HASH_KEY = "sha256"
"""Key, in ``misgen.json``, of the SHA-256 (hex) of every other member of the zip, by member name."""
META_FORMAT = 3  # 2: egocentric torsos drop the agent channel (agents/networks.py); 3: misgen.json, hashed
REQUIRED_META: dict[str, type] = {
    "env_name": str,
    "env_config": dict,
    "agent_config": dict,
    "observation_shape": list,
    "env_steps": int,
}
"""Fields every metadata block has (and their JSON types): what loading and resuming read."""


class SB3ModelError(CheckpointError):
    """A model zip that cannot be used (unreadable, changed since saved, incomplete metadata, or not
    ours and not opted into); the message names the file and what is wrong with it."""


# ------------------------------------------------------------------- vec env
class CoreVecEnv(VecEnv):
    """The ``num_envs`` envs of one batched core as an SB3 ``VecEnv``.

    Each vector step is one ``core.step``; observations, rewards and dones cross to the host once
    each. Infos are empty dicts except for envs whose episode just ended, which get what SB3 reads:
    ``terminal_observation`` (the last observation, before the same-step reset),
    ``TimeLimit.truncated`` (so SB3 bootstraps time-limit ends), ``episode`` (``r``, ``l``, ``t`` as
    SB3's ``Monitor`` writes them) and ``is_success``. Spaces are the gymnasium views' own.

    The envs are rows of one core with one level generator: ``seed()`` takes effect at the next
    ``reset()`` and only its first seed is used. ``get_attr`` reads an attribute of the core (shared
    by every env); setting attributes or calling methods per env has no meaning here and raises.
    """

    def __init__(self, core: GridCore, render_mode: str | None = None) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} is not one of [None, 'rgb_array']")
        self.core = core
        self.render_mode = render_mode
        self._actions: torch.Tensor | None = None
        self._returns = torch.zeros(core.num_envs, dtype=torch.float32, device=core.device)
        self._start = time.perf_counter()
        self._ended = {"episodes": 0, "successes": 0.0, "length": 0.0}
        super().__init__(core.num_envs, _observation_space(core), spaces.Discrete(core.num_actions))

    def reset(self) -> np.ndarray:
        """Start every env on a fresh level (seeded by the last ``seed()`` call, if any)."""
        if any(self._options):
            raise NotImplementedError("CoreVecEnv.reset takes no options; call core.reset(level_ids=...) directly")
        seed = self._seeds[0]
        obs = self.core.reset(seed=None if seed is None else int(seed))
        self._reset_seeds()
        self._reset_options()
        self._returns.zero_()
        return obs.cpu().numpy()

    def step_async(self, actions: np.ndarray) -> None:
        host = np.asarray(actions).reshape(self.num_envs)
        _check_actions(host, self.core.num_actions)
        self._actions = torch.as_tensor(host, dtype=torch.long, device=self.core.device)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        result = self.core.step(self._actions)
        self._actions = None
        self._returns += result.reward
        done = result.done
        dones = done.cpu().numpy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            self._end_episodes(result, done, np.flatnonzero(dones), infos)
        return result.obs.cpu().numpy(), result.reward.cpu().numpy(), dones, infos

    def _end_episodes(
        self, result: StepResult, done: torch.Tensor, ended: np.ndarray, infos: list[dict[str, Any]]
    ) -> None:
        """Fill the infos of the envs that just ended (only those: no Python work per running env)."""
        index = torch.as_tensor(ended, device=self.core.device)
        final_obs = self.core.final_obs().index_select(0, index).cpu().numpy()
        columns = (self._returns, result.info["episode_length"], result.info["success"], result.truncated)
        summary = torch.stack([c.float() for c in columns]).index_select(1, index).cpu().numpy()
        self._returns.masked_fill_(done, 0.0)
        elapsed = round(time.perf_counter() - self._start, 6)
        for k, (ret, length, success, truncated) in enumerate(summary.T.tolist()):
            infos[ended[k]] = {
                "terminal_observation": final_obs[k],
                "TimeLimit.truncated": bool(truncated),
                "episode": {"r": ret, "l": int(length), "t": elapsed},
                "is_success": bool(success),
            }
        self._ended["episodes"] += len(ended)
        self._ended["successes"] += float(summary[2].sum())
        self._ended["length"] += float(summary[1].sum())

    def take_episode_stats(self) -> dict[str, float]:
        """Episodes ended since the last call, their success rate and mean length (nan if none)."""
        n, ended = self._ended["episodes"], self._ended
        stats = {
            "episodes": float(n),
            "success_rate": ended["successes"] / n if n else float("nan"),
            "episode_length": ended["length"] / n if n else float("nan"),
        }
        self._ended = {"episodes": 0, "successes": 0.0, "length": 0.0}
        return stats

    def close(self) -> None:
        """Nothing to release: the core is plain tensors."""

    def get_images(self) -> list[np.ndarray]:
        return [self.core.render_rgb(i).cpu().numpy() for i in range(self.num_envs)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = self.render_mode if attr_name == "render_mode" else getattr(self.core, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise NotImplementedError(
            f"set_attr({attr_name!r}): the envs of a CoreVecEnv are rows of one core; set it on .core instead"
        )

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        raise NotImplementedError(
            f"env_method({method_name!r}): the envs of a CoreVecEnv are rows of one core; call .core directly"
        )

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """Always false: there are no per-env gymnasium wrappers."""
        return [False for _ in self._get_indices(indices)]


class CorePPO(PPO):
    """SB3's PPO, taking a :class:`CoreVecEnv` as it is (no ``VecTransposeImage``: our Torso reads HWC).

    Its saved zips also load with plain ``PPO.load`` (which unpickles); ``train_sb3(resume=True)``
    continues one without unpickling: a fresh ``CorePPO`` with the saved weights and optimiser.
    """

    @staticmethod
    def _wrap_env(env: Any, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        if isinstance(env, CoreVecEnv):
            return env
        return PPO._wrap_env(env, verbose, monitor_wrapper)

    def _maybe_recommend_cpu(self, mlp_class_name: str = "ActorCriticPolicy") -> None:
        """Silenced: SB3 warns against the GPU for any ``ActorCriticPolicy``, but our torso may be a CNN."""


# ------------------------------------------------------------------- network
def _is_pixels(space: spaces.Box) -> bool:
    """Whether ``space`` is the views' ``rgb`` space (bounds 0..255) rather than symbolic (0..1)."""
    return bool(np.all(space.high == 255))


class TorsoExtractor(BaseFeaturesExtractor):
    """Our ``Torso`` as SB3's features extractor, so SB3 trains the network our PPO trains.

    ``network`` is a ``NetworkConfig`` or its plain-dict form (what saved zips hold, so they do not
    pickle the dataclass). Whether obs are pixels is read off the space.
    """

    def __init__(self, observation_space: spaces.Box, network: NetworkConfig | dict[str, Any] | None = None) -> None:
        if not isinstance(network, NetworkConfig):
            network = load_structured(NetworkConfig, network, None, "network")
        network.validate()
        super().__init__(observation_space, features_dim=network.hidden)
        self.torso = Torso(tuple(observation_space.shape), network, pixels=_is_pixels(observation_space))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.torso(observations)


def sb3_ppo_kwargs(cfg: PPOConfig) -> dict[str, Any]:
    """SB3 ``PPO`` keyword arguments equivalent to our ``PPOConfig`` (env, seed and device aside)."""
    cfg.validate()
    return {
        "policy": ActorCriticPolicy,
        "learning_rate": LinearSchedule(cfg.lr, 0.0, 1.0) if cfg.anneal_lr else cfg.lr,
        "n_steps": cfg.num_steps,
        "batch_size": cfg.num_envs * cfg.num_steps // cfg.minibatches,
        "n_epochs": cfg.epochs,
        "gamma": cfg.gamma,
        "gae_lambda": cfg.gae_lambda,
        "clip_range": cfg.clip_coef,
        "clip_range_vf": cfg.clip_coef,
        "ent_coef": cfg.ent_coef,
        "vf_coef": cfg.vf_coef,
        "max_grad_norm": cfg.max_grad_norm,
        "normalize_advantage": cfg.norm_adv,
        "policy_kwargs": {
            "features_extractor_class": TorsoExtractor,
            "features_extractor_kwargs": {"network": dataclasses.asdict(cfg.network)},
            "share_features_extractor": True,
            "net_arch": [],  # linear heads straight on the torso's features, like ours
            "normalize_images": False,  # the Torso scales pixels itself
            "optimizer_class": torch.optim.Adam,
            "optimizer_kwargs": {"eps": 1e-5},
        },
    }


# ------------------------------------------------------------------ training
class _Stats(BaseCallback):
    """Reports each iteration (rollout + update) with the keys of our ``PPO.train_iteration``.

    SB3 has no hook after ``train()``; the next ``on_rollout_start`` (or ``on_training_end``) comes
    right after it, while the logger still holds the update's values.
    """

    def __init__(
        self,
        venv: CoreVecEnv,
        report: Callable[[dict[str, float], SB3Policy], None] | None,
        checkpoint_every: int = 0,
        save: Callable[[], Path] | None = None,
        iterations: int = 0,
    ) -> None:
        super().__init__(verbose=0)
        self.venv, self.report = venv, report
        self.checkpoint_every, self.save = checkpoint_every, save
        self._policy: SB3Policy | None = None
        self._started: float | None = None
        self._iterations = iterations  # a resumed run counts on

    def _on_rollout_start(self) -> None:
        self._emit()
        self._started = time.perf_counter()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._emit()

    def _emit(self) -> None:
        if self._started is None:
            return
        seconds = time.perf_counter() - self._started
        self._started = None
        self._iterations += 1
        logged = self.model.logger.name_to_value
        nan = float("nan")
        entropy_loss = logged.get("train/entropy_loss", nan)
        out = {
            "policy_loss": float(logged.get("train/policy_gradient_loss", nan)),
            "value_loss": float(logged.get("train/value_loss", nan)),
            "entropy": -float(entropy_loss),
            "clip_frac": float(logged.get("train/clip_fraction", nan)),
        }
        if not all(np.isfinite(v) for v in out.values()):
            raise FloatingPointError(f"non-finite SB3 PPO loss at update {self._iterations}: {out}")
        out.update(self.venv.take_episode_stats())
        out["env_steps"] = self.model.num_timesteps
        out["updates"] = self._iterations
        out["steps_per_s"] = self.model.n_steps * self.venv.num_envs / seconds
        if self.report is not None:
            if self._policy is None:
                self._policy = SB3Policy(self.model.policy, seed=self.model.seed or 0)
            self.report(out, self._policy)
        if self.save is not None and self.checkpoint_every and self._iterations % self.checkpoint_every == 0:
            self.save()


def train_sb3(
    env_cfg: Any,
    agent_cfg: PPOConfig,
    seed: int,
    total_env_steps: int,
    run_dir: Path,
    device: str,
    callback: Callable[[dict[str, float], SB3Policy], None] | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Train SB3's PPO on the env's ``train`` distribution and save ``run_dir/model.zip``; returns its path.

    ``callback`` gets each iteration's statistics (keys as ``PPO.train_iteration``'s; SB3's
    ``value_loss`` is its own, without our factor 0.5) and the model as a ``Policy`` (for evaluations).
    The model is also saved every ``checkpoint_every`` iterations (0: only at the end) and on ``StopTraining``,
    with ``extra_meta`` (JSON) beside ours. ``resume``: continue ``run_dir/model.zip`` (weights,
    optimiser, step count; SB3 saves no RNG state, so the level stream restarts from ``seed``) up to
    ``total_env_steps`` in all. The zip is verified and nothing in it is unpickled; one saved with other
    agent or env settings (``device`` aside) is refused, naming the changed keys.
    """
    agent_cfg = agent_cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if agent_cfg.bf16 or agent_cfg.compile:
        raise ValueError("agent.bf16 and agent.compile are switches of agent.backend=misgen; SB3 does not use them")
    core = make_core(env_cfg, "train", num_envs=agent_cfg.num_envs, seed=seed, device=device)
    if agent_cfg.network.egocentric is not None and core.cfg.obs_mode == "symbolic":
        check_egocentric(core.channels, agent_cfg.network)
    venv = CoreVecEnv(core)
    iterations = 0
    saved = _read_model(run_dir) if resume else None
    if saved is not None:
        if saved.meta is None:
            raise SB3ModelError(
                f"resume={run_dir}: {saved.path} was not saved by misgen (no {META_MEMBER}); resuming it would "
                "unpickle its data, which runs code from the file"
            )
        _check_same_settings(run_dir, saved, env_cfg, agent_cfg)
    model = CorePPO(env=venv, seed=seed, device=core.device, verbose=0, **sb3_ppo_kwargs(agent_cfg))
    if saved is not None:
        params = {name: saved.tensors(f"{name}.pth", core.device) for name in ("policy", "policy.optimizer")}
        try:
            model.set_parameters(params, exact_match=True, device=core.device)
        except (RuntimeError, ValueError, KeyError) as err:
            raise SB3ModelError(
                f"{saved.path}: its weights do not fit the network its metadata describes ({err})"
            ) from err
        model.num_timesteps = saved.meta["env_steps"]
        iterations = model.num_timesteps // (agent_cfg.num_envs * agent_cfg.num_steps)
        model._n_updates = iterations * agent_cfg.epochs  # as a loaded model's (SB3 counts epochs; only logged)
    model.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default makes a temp dir per run

    def save() -> Path:
        meta = {
            "env_name": env_cfg.name,
            "env_config": config_to_dict(env_cfg),
            "agent_config": dataclasses.asdict(agent_cfg),
            "observation_shape": list(core.observation_shape),
            "seed": seed,
            "env_steps": model.num_timesteps,
            **(extra_meta or {}),
        }
        return save_sb3_model(model, run_dir, meta)

    stats = _Stats(venv, callback, checkpoint_every, save, iterations)
    remaining = total_env_steps - model.num_timesteps
    try:
        if remaining > 0:
            model.learn(total_timesteps=remaining, callback=stats, reset_num_timesteps=not resume)
    except StopTraining:  # a consistent state between updates; a plain Ctrl-C may be mid-update: no save
        save()
        raise
    return save()


def save_sb3_model(model: PPO, run_dir: Path, meta: dict[str, Any]) -> Path:
    """Write ``run_dir/model.zip`` atomically (temp file, fsync, ``os.replace``): SB3's zip plus ``misgen.json``.

    ``misgen.json`` holds ``meta`` (JSON, with at least the fields of :data:`REQUIRED_META`) and the
    SHA-256 of every member SB3 wrote, which every load verifies. Nothing of ours goes into SB3's
    pickled ``data``.
    """
    path = Path(run_dir) / MODEL_FILENAME
    meta = {"format": META_FORMAT, **meta}
    if HASH_KEY in meta:
        raise ValueError(f"save_sb3_model: {HASH_KEY!r} is the key of the member hashes, not a metadata field")
    _check_fields(path, meta)
    json.dumps(meta)  # fails here, before anything is written
    bad = non_finite_weights(model.policy.state_dict())
    if bad:  # a blow-up is never saved: the previous model stays
        raise FloatingPointError(f"not writing {path}: non-finite weights in {bad}; the previous model is kept")
    buffer = io.BytesIO()
    model.save(buffer)  # to a file object: given a path, SB3 would append ".zip" to the temp name
    with zipfile.ZipFile(buffer, "a") as archive:
        hashes = {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()}
        archive.writestr(META_MEMBER, json.dumps({**meta, HASH_KEY: hashes}, indent=1))
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


# -------------------------------------------------------------------- policy
def find_sb3_model(where: str | Path) -> Path:
    """The model zip named by ``where``: the file itself, or ``model.zip`` in a run dir."""
    return find_run_file(where, MODEL_FILENAME, "SB3 model")


@dataclasses.dataclass(frozen=True)
class _ModelZip:
    """A model zip read once: its members' bytes (the very bytes verified) and our metadata.

    ``meta`` is ``None`` for a zip SB3 saved on its own; ``verified`` is false for formats 1 and 2.
    """

    path: Path
    members: dict[str, bytes]
    meta: dict[str, Any] | None
    verified: bool

    def tensors(self, member: str, device: torch.device | str) -> dict[str, Any]:
        """A ``.pth`` member loaded with ``torch.load(weights_only=True)``: tensors and plain containers only."""
        if member not in self.members:
            raise SB3ModelError(f"{self.path}: the zip has no {member}")
        try:
            state = torch.load(io.BytesIO(self.members[member]), map_location=device, weights_only=True)
        except Exception as err:  # torch raises many types for a bad file; all mean the same here
            raise SB3ModelError(f"{self.path}: {member} is not a weights-only torch file ({err})") from err
        if not isinstance(state, dict):
            raise SB3ModelError(f"{self.path}: {member} holds a {type(state).__name__}, not a state dict")
        return state


_ZIP_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError, ValueError, OSError)
"""What ``zipfile`` raises on an empty, truncated, corrupt (CRC), encrypted or otherwise unreadable file."""


def _read_model(where: str | Path) -> _ModelZip:
    """Read and check the zip named by ``where`` (JSON and bytes only: nothing is unpickled).

    Ours (``misgen.json``): every member hash verified, fields checked. Formats 1 and 2 (metadata in
    ``data``): fields checked, a warning that nothing is verified. Anything unreadable raises
    :class:`SB3ModelError`; a missing file ``FileNotFoundError``.
    """
    path = find_sb3_model(where)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            members = {name: archive.read(name) for name in names}
    except _ZIP_ERRORS as err:
        raise SB3ModelError(f"{path} is not a readable zip ({type(err).__name__}: {err})") from err
    if len(members) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise SB3ModelError(f"{path}: the zip holds more than one member named {twice}; not loading it")
    if META_MEMBER in members:
        return _ModelZip(path, members, _verified_meta(path, members), verified=True)
    meta = _legacy_meta(path, members)
    return _ModelZip(path, members, meta, verified=False)


def _json(path: Path, member: str, raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise SB3ModelError(f"{path}: its {member} member is not valid JSON ({err})") from err


def _verified_meta(path: Path, members: dict[str, bytes]) -> dict[str, Any]:
    """The metadata of ``misgen.json``, once every other member matches the hash recorded there."""
    meta = _json(path, META_MEMBER, members[META_MEMBER])
    if not isinstance(meta, dict):
        raise SB3ModelError(f"{path}: {META_MEMBER} holds a JSON {type(meta).__name__}, not an object")
    recorded = meta.pop(HASH_KEY, None)
    if not isinstance(recorded, dict) or not all(isinstance(h, str) for h in recorded.values()):
        raise SB3ModelError(f"{path}: {META_MEMBER} has no {HASH_KEY!r} table of the members' hashes")
    present = set(members) - {META_MEMBER}
    missing, unrecorded = sorted(set(recorded) - present), sorted(present - set(recorded))
    if missing:
        raise SB3ModelError(f"{path}: members {missing} recorded in {META_MEMBER} are missing from the zip")
    if unrecorded:
        raise SB3ModelError(f"{path}: members {unrecorded} are not recorded in {META_MEMBER} (added after saving)")
    for name in sorted(present):
        if hashlib.sha256(members[name]).hexdigest() != recorded[name]:
            raise SB3ModelError(
                f"{path}: {name} does not match the SHA-256 recorded in {META_MEMBER}; the file was changed or "
                "corrupted after it was saved"
            )
    if meta.get("format") != META_FORMAT:
        raise SB3ModelError(f"{path}: {META_MEMBER} is of metadata format {meta.get('format')!r}, not {META_FORMAT}")
    _check_fields(path, meta)
    return meta


def _legacy_meta(path: Path, members: dict[str, bytes]) -> dict[str, Any] | None:
    """Metadata of formats 1 and 2, read as JSON from SB3's ``data`` (``None``: none, a foreign zip)."""
    if "data" not in members:
        raise SB3ModelError(f"{path}: neither {META_MEMBER} nor SB3's data member; not an SB3 model zip")
    data = _json(path, "data", members["data"])
    if not isinstance(data, dict):
        raise SB3ModelError(f"{path}: its data member holds a JSON {type(data).__name__}, not an object")
    if META_KEY not in data:
        return None
    meta = data[META_KEY]
    if not isinstance(meta, dict):
        raise SB3ModelError(f"{path}: the {META_KEY!r} metadata in its data is a {type(meta).__name__}, not an object")
    meta = {"format": 1, **meta}
    if isinstance(meta["format"], bool) or meta["format"] not in (1, 2):
        raise SB3ModelError(f"{path}: metadata format {meta['format']!r} in its data; only formats 1 and 2 go there")
    _check_fields(path, meta)
    network = meta["agent_config"].get("network") or {}
    if meta["format"] < 2 and isinstance(network, dict) and network.get("egocentric") is not None:
        raise SB3ModelError(
            f"{path}: an SB3 model of an egocentric network saved before metadata format 2, "
            "whose first layer also took the agent channel; retrain it"
        )
    log.warning(
        "%s: SB3 model of metadata format %s, without content hashes: not verified (its JSON and weights are "
        "read, nothing is unpickled); retrain or re-save it for a verified file",
        path,
        meta["format"],
    )
    return meta


def _check_fields(path: Path, meta: dict[str, Any]) -> None:
    """Refuse metadata without the fields of :data:`REQUIRED_META`, or with values of the wrong JSON type."""
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise SB3ModelError(f"{path}: its metadata lacks the fields {missing}")
    wrong = [
        f"{key} is a {type(meta[key]).__name__}, not a {kind.__name__}"
        for key, kind in REQUIRED_META.items()
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool)
    ]
    shape = meta["observation_shape"]
    if isinstance(shape, list) and not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        wrong.append(f"observation_shape {shape} is not a list of positive integers")
    if wrong:
        raise SB3ModelError(f"{path}: its metadata is malformed: {'; '.join(wrong)}")


def read_sb3_meta(where: str | Path) -> dict[str, Any] | None:
    """Our metadata of a saved zip, verified (``None`` for a zip SB3 saved on its own); runs no code.

    Raises :class:`SB3ModelError` naming the file when it is unreadable or fails its hashes, and for a
    format-1 zip of an egocentric network, whose first layer took the agent channel that format 2 drops.
    """
    meta = _read_model(where).meta
    return None if meta is None else dict(meta)


def _trained_observation_space(meta: dict[str, Any], path: Path) -> spaces.Box:
    """The observation space the model was trained on, from its metadata (as ``envs.gym_views`` builds it)."""
    obs_mode = meta["env_config"].get("obs_mode", "symbolic")
    if obs_mode not in OBS_MODES:
        raise SB3ModelError(f"{path}: its env config's obs_mode={obs_mode!r} is not one of {list(OBS_MODES)}")
    return observation_space(obs_mode, meta["observation_shape"])


def _agent_config(saved: _ModelZip) -> PPOConfig:
    try:
        return load_ppo_config(saved.meta["agent_config"])
    except ConfigError as err:
        raise SB3ModelError(f"{saved.path}: its agent config is not one this code can build ({err})") from err


def _build_policy(saved: _ModelZip, device: torch.device | str) -> ActorCriticPolicy:
    """The saved policy rebuilt from its JSON configs, with ``policy.pth`` loaded (strict) as tensors."""
    agent_cfg = _agent_config(saved)
    obs_space = _trained_observation_space(saved.meta, saved.path)
    kwargs = sb3_ppo_kwargs(agent_cfg)["policy_kwargs"]
    device = get_device(device)
    weights = saved.tensors("policy.pth", device)
    try:
        policy = ActorCriticPolicy(obs_space, spaces.Discrete(NUM_ACTIONS), lambda _: agent_cfg.lr, **kwargs)
        policy.to(device).load_state_dict(weights, strict=True)
    except (RuntimeError, ValueError) as err:
        raise SB3ModelError(
            f"{saved.path}: its policy.pth does not fit the network its metadata describes ({err})"
        ) from err
    return policy


class SB3Policy:
    """A ``Policy`` over an SB3 actor-critic policy (a live model's ``model.policy``, or a loaded one): its
    own actor, on ``uint8`` obs as the cores give them."""

    def __init__(self, policy: ActorCriticPolicy, seed: int = 0) -> None:
        self.policy = policy
        self.device = torch.device(policy.device)
        policy.set_training_mode(False)
        self._gen = torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def distribution(self, obs: torch.Tensor) -> Categorical:
        return self.policy.get_distribution(obs).distribution

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        probs = self.distribution(obs).probs
        if deterministic:
            return probs.argmax(-1)
        return torch.multinomial(probs, 1, generator=self._gen).squeeze(-1)


def load_sb3_policy(
    where: str | Path,
    env_name: str | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    allow_pickle: bool = False,
) -> SB3Policy:
    """An ``SB3Policy`` from a saved zip (the file or its run dir); with ``env_name``, refuses another env's.

    A zip of ours is verified and rebuilt from its JSON and weights: nothing is unpickled. A zip SB3
    saved on its own can only be loaded by unpickling it (code from the file runs), so it is refused
    unless ``allow_pickle`` (then loaded with ``PPO.load``, its env unchecked): trusted local files only.
    """
    saved = _read_model(where)
    if saved.meta is None:
        if not allow_pickle:
            raise SB3ModelError(
                f"{saved.path} was not saved by misgen (no {META_MEMBER}): loading it unpickles its data, which "
                "executes code from the file; pass allow_pickle=True (allow_pickle=true for experiments.evaluate) "
                "only for a trusted local file"
            )
        log.warning(
            "%s: not saved by misgen; loading it with allow_pickle unpickles its data (code from the file runs), "
            "and its env cannot be checked%s",
            saved.path,
            "" if env_name is None else f" against {env_name!r}",
        )
        return SB3Policy(PPO.load(saved.path, device=device).policy, seed=seed)
    if env_name is not None and saved.meta["env_name"] != env_name:
        raise ValueError(f"{saved.path} is an SB3 model of env {saved.meta['env_name']!r}, not {env_name!r}")
    return SB3Policy(_build_policy(saved, device), seed=seed)


# ------------------------------------------------------------------ resuming
def _check_same_settings(run_dir: Path, saved: _ModelZip, env_cfg: Any, agent_cfg: PPOConfig) -> None:
    """Refuse to resume a model saved with other agent or env settings (``device`` aside), naming the keys."""
    try:
        saved_env = config_to_dict(load_env_config(saved.meta["env_name"], base=saved.meta["env_config"]))
    except ConfigError as err:
        raise SB3ModelError(f"{saved.path}: its env config is not one this code can build ({err})") from err
    wanted_env = config_to_dict(env_cfg)
    for cfg in (saved_env, wanted_env):
        cfg.pop("device", None)
    changed = {
        "agent": config_changes(dataclasses.asdict(_agent_config(saved)), dataclasses.asdict(agent_cfg), "agent"),
        "env": config_changes(saved_env, wanted_env, "env"),
    }
    which = [part for part, keys in changed.items() if keys]
    if which:
        keys = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed["agent"] + changed["env"])
        raise ConfigError(
            f"resume={run_dir}: the model was trained with other settings ({keys}); "
            f"resume with the run's own {' and '.join(which)} settings"
        )
