"""PPO on the device: rollout, GAE and update all on the batched core's device, no Python loop over envs.

The algorithm reads top to bottom as in CleanRL: rollout, advantages, update. Time-limit truncation
is not termination: a truncated step's reward is topped up with the discounted value of its final
observation (bootstrapping), a terminated step's is not; neither lets advantages leak into the
next episode.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from agents.networks import ActorCritic, NetworkConfig
from agents.policy import NetworkPolicy, network_spec
from envs.config import ConfigError, check_at_least, check_positive, check_probability, load_structured


@dataclass
class PPOConfig:
    """PPO hyperparameters (defaults from the procgen literature)."""

    num_envs: int = 256
    """Envs stepped together."""
    num_steps: int = 64
    """Rollout length per env between updates."""
    gamma: float = 0.999
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    lr: float = 5e-4
    """Adam learning rate."""
    anneal_lr: bool = True
    """Linearly anneal the learning rate to 0 over the run."""
    clip_coef: float = 0.2
    """PPO clip range (policy and value)."""
    epochs: int = 3
    """Passes over each rollout."""
    minibatches: int = 8
    """Minibatches per pass."""
    ent_coef: float = 0.01
    """Entropy bonus."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    network: NetworkConfig = field(default_factory=NetworkConfig)
    """Architecture of the actor-critic."""
    compile: bool = False
    """``torch.compile`` the network (first iterations slower while it compiles; needs a C++ compiler on CPU)."""
    bf16: bool = False
    """CUDA only: run the network's forward passes under bf16 autocast (losses and optimiser stay fp32)."""

    def validate(self) -> PPOConfig:
        """Raise :class:`ConfigError` naming the first out-of-range field; return self when valid."""
        for key in ("num_envs", "num_steps", "epochs", "minibatches"):
            check_at_least(f"agent.{key}", getattr(self, key), 1)
        for key in ("lr", "clip_coef", "max_grad_norm"):
            check_positive(f"agent.{key}", getattr(self, key))
        for key in ("ent_coef", "vf_coef"):
            check_at_least(f"agent.{key}", getattr(self, key), 0.0)
        for key in ("gamma", "gae_lambda"):
            check_probability(f"agent.{key}", getattr(self, key))
        self.network.validate()
        if (self.num_envs * self.num_steps) % self.minibatches:
            batch = self.num_envs * self.num_steps
            raise ConfigError(f"agent.minibatches={self.minibatches} must divide num_envs * num_steps = {batch}")
        return self


def check_egocentric(channels: tuple[str, ...], net: NetworkConfig) -> None:
    """An egocentric window must centre on the agent, and only suits envs whose channels are all spatial."""
    if net.agent_channel >= len(channels):
        raise ValueError(f"agent.network.agent_channel={net.agent_channel}: the env has channels {channels}")
    if channels[net.agent_channel] != "agent":
        raise ValueError(
            f"agent.network.agent_channel={net.agent_channel} is {channels[net.agent_channel]!r}, not 'agent'"
        )
    if "inventory" in channels:
        raise ValueError("agent.network.egocentric would move the positional 'inventory' channel with the agent")


def device_memory(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes (the host's RAM for the CPU), or ``None`` if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    last_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns ``(T, B)`` for a rollout with same-step autoreset.

    ``values[t]`` is V(obs_t); ``last_value`` is V of the observation after the rollout;
    ``final_values[t]`` is V of step t's final observation, used only where ``truncated[t]``.
    """
    done = (terminated | truncated).float()
    bootstrap = gamma * final_values * truncated.float()
    next_values = torch.cat([values[1:], last_value[None]], dim=0)
    deltas = rewards + bootstrap + gamma * next_values * (1.0 - done) - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * (1.0 - done[t]) * running
        advantages[t] = running
    return advantages, advantages + values


class PPO:
    """PPO on one batched core (``envs.arrow_maze.ArrowMazeCore`` or ``envs.keys_chests.KeysChestsCore``)."""

    def __init__(self, core, cfg: PPOConfig, net: NetworkConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg.validate()
        if core.num_envs != cfg.num_envs:
            raise ValueError(f"the core has {core.num_envs} envs but agent.num_envs={cfg.num_envs}")
        self.core = core
        self.device = core.device
        torch.manual_seed(seed)
        net = net if net is not None else cfg.network
        pixels = core.cfg.obs_mode == "rgb"
        if net.egocentric is not None and not pixels:
            check_egocentric(core.channels, net)
        self.net = ActorCritic(core.observation_shape, core.num_actions, net, pixels).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, eps=1e-5)
        if cfg.bf16 and self.device.type != "cuda":
            raise ValueError(f"agent.bf16=true needs a CUDA device; this run is on {self.device}")
        self._forward_encoded = torch.compile(self.net.forward_encoded) if cfg.compile else self.net.forward_encoded
        self.network_spec = network_spec(net, core.observation_shape, core.num_actions, pixels)
        self.policy = NetworkPolicy(self.net, self.device, seed)
        self._sample_gen = torch.Generator(device=self.device).manual_seed(seed)
        self._perm_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.obs = core.reset(seed=seed)
        self._check_rollout_fits()
        self.env_steps = 0
        self.updates = 0

    def _check_rollout_fits(self) -> None:
        """A ``ConfigError`` naming the batch shape when the rollout storage alone would exceed the
        device's memory (instead of an allocator error mid-rollout)."""
        encoded = self.net.encode(self.obs[:1])
        # per stored step: the encoded observation, the action (int64), five floats, two bools
        per_step = encoded.numel() * encoded.element_size() + 8 + 5 * 4 + 2
        need = self.cfg.num_steps * self.cfg.num_envs * per_step
        have = device_memory(self.device)
        if have is not None and need > have:
            raise ConfigError(
                f"agent.num_envs={self.cfg.num_envs} x agent.num_steps={self.cfg.num_steps}: the rollout storage "
                f"needs {need / 2**30:.1f} GiB but {self.device} has {have / 2**30:.1f} GiB"
            )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: weights, optimiser, step counts, RNG streams."""
        return {
            "model": self.net.state_dict(),
            "network": self.network_spec,
            "optimizer": self.optimizer.state_dict(),
            "env_steps": self.env_steps,
            "updates": self.updates,
            "rng": {
                "torch": torch.get_rng_state(),
                "sample": self._sample_gen.get_state(),
                "perm": self._perm_gen.get_state(),
                "levels": self.core.rng_state(),
                "policy": self.policy.rng_state(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the envs start fresh episodes, drawn where the level stream stopped."""
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.env_steps, self.updates = state["env_steps"], state["updates"]
        torch.set_rng_state(state["rng"]["torch"])
        self._sample_gen.set_state(state["rng"]["sample"])
        self._perm_gen.set_state(state["rng"]["perm"])
        self.core.set_rng_state(state["rng"]["levels"])
        self.policy.set_rng_state(state["rng"]["policy"])
        self.obs = self.core.reset()

    def forward_encoded(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and values in fp32 from encoded observations (``net.encode``), through the compiled
        network and bf16 autocast when configured."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cfg.bf16):
            logits, value = self._forward_encoded(encoded)
        return logits.float(), value.float()

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and values in fp32 for a batch of observations."""
        return self.forward_encoded(self.net.encode(obs))

    def act(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sampled actions, their log-probabilities and the values, for a batch of encoded observations."""
        logits, value = self.forward_encoded(encoded)
        logp_all = torch.log_softmax(logits, dim=-1)
        probs = logp_all.exp()
        action = torch.multinomial(probs, 1, generator=self._sample_gen).squeeze(-1)
        return action, logp_all.gather(1, action[:, None]).squeeze(-1), value

    def train_iteration(self, total_updates: int | None = None) -> dict[str, float]:
        """One rollout and one update; returns the iteration's statistics."""
        cfg, core, dev = self.cfg, self.core, self.device
        t_len, b = cfg.num_steps, cfg.num_envs
        if cfg.anneal_lr and total_updates:
            self.optimizer.param_groups[0]["lr"] = cfg.lr * max(1.0 - self.updates / total_updates, 0.0)

        # ------------------------------------------------------------------ rollout
        encoded = self.net.encode(self.obs)
        enc_shape = tuple(encoded.shape[1:])
        enc_buf = torch.empty((t_len, b, *enc_shape), dtype=encoded.dtype, device=dev)
        actions = torch.empty((t_len, b), dtype=torch.long, device=dev)
        logps, values, rewards, final_values = (torch.zeros((t_len, b), device=dev) for _ in range(4))
        terminated = torch.zeros((t_len, b), dtype=torch.bool, device=dev)
        truncated = torch.zeros_like(terminated)
        ended = {"episodes": 0.0, "success": 0.0, "length": 0.0}
        start = time.perf_counter()
        sync_free = dev.type != "cpu"
        with torch.no_grad():
            for t in range(t_len):
                enc_buf[t] = encoded
                actions[t], logps[t], values[t] = self.act(encoded)
                r = core.step(actions[t])
                rewards[t], terminated[t], truncated[t] = r.reward, r.terminated, r.truncated
                # Truncated episodes bootstrap from their final observation. On an accelerator the value
                # pass runs on every env and keeps the truncated rows, since picking rows out would cost
                # a host sync every step. On the CPU it runs on the truncated rows only (a few of 256 on
                # most steps), which saves about a sixth of an MLP iteration.
                if sync_free:
                    final_values[t] = torch.where(r.truncated, self.forward(core.final_obs())[1], 0.0)
                elif bool(r.truncated.any()):
                    rows = r.truncated.nonzero().squeeze(1)
                    final_values[t].index_copy_(0, rows, self.forward(core.final_obs().index_select(0, rows))[1])
                done = r.done.float()
                ended["episodes"] += done.sum()
                ended["success"] += (r.info["success"].float() * done).sum()
                ended["length"] += (r.info["episode_length"].float() * done).sum()
                self.obs = r.obs
                encoded = self.net.encode(self.obs)
            last_value = self.forward_encoded(encoded)[1]

        # --------------------------------------------------------------- advantages
        advantages, returns = compute_gae(
            rewards, values, last_value, terminated, truncated, final_values, cfg.gamma, cfg.gae_lambda
        )

        # ------------------------------------------------------------------- update
        # Minibatches are gathered with index_select: for uint8 rows it is about 10x faster on the CPU
        # than advanced indexing (b_enc[mb]).
        b_enc = enc_buf.reshape(t_len * b, *enc_shape)
        b_actions, b_logps, b_values = actions.reshape(-1), logps.reshape(-1), values.reshape(-1)
        b_adv, b_returns = advantages.reshape(-1), returns.reshape(-1)
        size = t_len * b // cfg.minibatches
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_frac": 0.0}
        for _ in range(cfg.epochs):
            perm = torch.randperm(t_len * b, device=dev, generator=self._perm_gen)
            for start_i in range(0, t_len * b, size):
                mb = perm[start_i : start_i + size]
                logits, new_value = self.forward_encoded(b_enc.index_select(0, mb))
                logp_all = torch.log_softmax(logits, dim=-1)
                new_logp = logp_all.gather(1, b_actions[mb, None]).squeeze(-1)
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                ratio = (new_logp - b_logps[mb]).exp()
                mb_adv = b_adv[mb]
                if cfg.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                policy_loss = torch.max(
                    -mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
                ).mean()
                v_clipped = b_values[mb] + (new_value - b_values[mb]).clamp(-cfg.clip_coef, cfg.clip_coef)
                value_loss = 0.5 * torch.max((new_value - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
                loss = policy_loss - cfg.ent_coef * entropy + cfg.vf_coef * value_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                stats["policy_loss"] += policy_loss.detach()
                stats["value_loss"] += value_loss.detach()
                stats["entropy"] += entropy.detach()
                stats["clip_frac"] += ((ratio - 1).abs() > cfg.clip_coef).float().mean().detach()
        n_mb = cfg.epochs * cfg.minibatches
        out = {k: float(v) / n_mb for k, v in stats.items()}
        if not all(torch.isfinite(torch.tensor(v)) for v in out.values()):
            raise FloatingPointError(f"non-finite PPO loss at update {self.updates}: {out}")
        self.check_finite()
        episodes = float(ended["episodes"])
        out["episodes"] = episodes
        out["success_rate"] = float(ended["success"]) / episodes if episodes else float("nan")
        out["episode_length"] = float(ended["length"]) / episodes if episodes else float("nan")
        self.env_steps += t_len * b
        self.updates += 1
        out["env_steps"] = self.env_steps
        out["steps_per_s"] = t_len * b / (time.perf_counter() - start)
        return out

    @torch.no_grad()
    def check_finite(self) -> None:
        """Raise ``FloatingPointError`` unless the weights, and the policy's logits and values on the current
        observations, are finite, with values whose squares are too (the next value loss squares them).

        The losses alone miss a blow-up in an update's last minibatch: weights around 1e20 are finite, and
        behind a tanh even the logits stay finite, but the value loss of the next update overflows. Checked
        after every update, so such weights are never checkpointed. One forward pass and one host sync per
        iteration."""
        logits, value = self.forward(self.obs)
        checks = [p.isfinite().all() for p in self.net.parameters()]
        checks += [logits.isfinite().all(), value.square().isfinite().all()]
        if not bool(torch.stack(checks).all()):
            bad = [n for n, p in self.net.named_parameters() if not p.isfinite().all()]
            where = f"weights {bad}" if bad else "logits or values (the weights have blown up)"
            raise FloatingPointError(f"non-finite {where} after update {self.updates + 1}")

    def train(self, total_env_steps: int, callback: Callable[[dict[str, float]], None] | None = None) -> None:
        """Run iterations until ``total_env_steps`` env steps have been taken."""
        per_iteration = self.cfg.num_envs * self.cfg.num_steps
        total_updates = -(-total_env_steps // per_iteration)
        while self.env_steps < total_env_steps:
            stats = self.train_iteration(total_updates)
            if callback is not None:
                callback(stats)


def load_ppo_config(base: Any = None) -> PPOConfig:
    """The agent config: ``PPOConfig`` ← ``base`` (Hydra's ``cfg.agent``), validated.
    An unknown key or a bad value raises ``ConfigError`` naming it."""
    return load_structured(PPOConfig, base, None, "agent").validate()
