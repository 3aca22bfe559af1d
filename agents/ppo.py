"""PPO on the device: rollout, GAE and update all on the batched core's device, no Python loop over envs.

The algorithm reads top to bottom as in CleanRL: rollout, advantages, update. Every rollout and update tensor
has a member axis, so one PPO trains a population of independent agents (``population`` K, stacked
networks: ``agents/members.py``); a single run is K = 1. Time-limit truncation
is not termination: a truncated step's reward is topped up with the discounted value of its final
observation (bootstrapping), a terminated step's is not; neither lets advantages leak into the
next episode.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.profiler import record_function

from agents.members import Members
from agents.networks import ActorCritic, NetworkConfig
from agents.policy import NetworkPolicy, network_spec, sample_blocks
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
    """An egocentric window must centre on the agent, and only suits envs whose channels are all spatial
    (or whose positional channels are ``global_channels``)."""
    if net.agent_channel >= len(channels):
        raise ValueError(f"agent.network.agent_channel={net.agent_channel}: the env has channels {channels}")
    if channels[net.agent_channel] != "agent":
        raise ValueError(
            f"agent.network.agent_channel={net.agent_channel} is {channels[net.agent_channel]!r}, not 'agent'"
        )
    if "inventory" in channels and channels.index("inventory") not in net.global_channels:
        raise ValueError(
            "agent.network.egocentric would move the positional 'inventory' channel with the agent; give it as "
            f"a count instead: agent.network.global_channels=[{channels.index('inventory')}]"
        )


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


PHASES = (
    "ppo/act",
    "ppo/env_step",
    "ppo/encode",
    "ppo/final_values",
    "ppo/gae",
    "ppo/minibatch_gather",
    "ppo/update_forward",
    "ppo/backward",
    "ppo/optimizer",
)
"""The parts of an iteration marked for the torch profiler (``python -m experiments.bench mode=profile``):
sampling actions (forward pass included), the env step, the egocentric crop, bootstrap values, GAE,
gathering minibatches, the update's forward and backward passes, clip and Adam."""


class PPO:
    """PPO on one batched core (``envs.arrow_maze.ArrowMazeCore`` or ``envs.keys_chests.KeysChestsCore``).

    ``population`` K > 1 trains K independent agents at once, seeds ``seed .. seed+K-1``: the core holds
    K blocks of ``num_envs`` envs (block k draws its levels from member k's stream), the networks are
    stacked (``agents.members``), and every tensor of the rollout and the update has a member axis. Each
    member has its own weights, optimiser state, level stream, action sampling, minibatch order,
    advantage normalisation, gradient clip, statistics and finite check, each seeded as a single run of
    its seed is, so member k is that run up to float rounding. K = 1 is a single run.
    """

    def __init__(
        self, core, cfg: PPOConfig, net: NetworkConfig | None = None, seed: int = 0, population: int = 1
    ) -> None:
        self.cfg = cfg.validate()
        check_at_least("population", population, 1)
        if core.num_envs != cfg.num_envs * population:
            raise ValueError(
                f"the core has {core.num_envs} envs but agent.num_envs={cfg.num_envs} x population={population} "
                f"= {cfg.num_envs * population}"
            )
        self.core = core
        self.device = core.device
        self.seeds = [seed + k for k in range(population)]
        net = net if net is not None else cfg.network
        pixels = core.cfg.obs_mode == "rgb"
        if net.egocentric is not None and not pixels:
            check_egocentric(core.channels, net)
        nets = []
        for member_seed in self.seeds:  # member k's initial weights are those of a single run of its seed
            torch.manual_seed(member_seed)
            nets.append(ActorCritic(core.observation_shape, core.num_actions, net, pixels).to(self.device))
        self.members = Members(nets)
        self.optimizer = torch.optim.Adam(self.members.parameters(), lr=cfg.lr, eps=1e-5)
        if cfg.bf16 and self.device.type != "cuda":
            raise ValueError(f"agent.bf16=true needs a CUDA device; this run is on {self.device}")
        forward = self.members.forward_encoded
        self._forward_encoded = torch.compile(forward) if cfg.compile else forward
        self.network_spec = network_spec(net, core.observation_shape, core.num_actions, pixels)
        self.policy = NetworkPolicy(self.members, self.device, self.seeds)
        self._sample_gens = [torch.Generator(device=self.device).manual_seed(s) for s in self.seeds]
        self._perm_gens = [torch.Generator(device=self.device).manual_seed(s + 1) for s in self.seeds]
        self.obs = core.reset(seed=self.seeds)
        self._check_rollout_fits()
        self.env_steps = 0
        """Env steps taken by each member (a population's aggregate is ``population`` times this)."""
        self.updates = 0

    @property
    def population(self) -> int:
        """Number of members K."""
        return self.members.size

    def _check_rollout_fits(self) -> None:
        """A ``ConfigError`` naming the batch shape when the rollout storage alone would exceed the
        device's memory (instead of an allocator error mid-rollout)."""
        encoded = self.members.encode(self.obs[:1])
        # per stored step: the encoded observation, the action (int64), five floats, two bools
        per_step = encoded.numel() * encoded.element_size() + 8 + 5 * 4 + 2
        need = self.cfg.num_steps * self.cfg.num_envs * self.population * per_step
        have = device_memory(self.device)
        if have is not None and need > have:
            raise ConfigError(
                f"agent.num_envs={self.cfg.num_envs} x agent.num_steps={self.cfg.num_steps} x "
                f"population={self.population}: the rollout storage needs {need / 2**30:.1f} GiB but "
                f"{self.device} has {have / 2**30:.1f} GiB"
            )

    def state_dict(self, member: int = 0) -> dict[str, Any]:
        """Everything needed to continue training member ``member`` (a single run's checkpoint format:
        weights, optimiser, step counts, RNG streams), loadable alone."""
        return {
            "model": self.members.state_dict(member),
            "network": self.network_spec,
            "optimizer": self.members.optimizer_state(self.optimizer, member),
            "env_steps": self.env_steps,
            "updates": self.updates,
            "rng": {
                "torch": torch.get_rng_state(),
                "sample": self._sample_gens[member].get_state(),
                "perm": self._perm_gens[member].get_state(),
                "levels": self.core.rng_state(member),
                "policy": self.policy.rng_state(member),
            },
        }

    def load_state_dict(self, state: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Continue from :meth:`state_dict` (one per member): the envs start fresh episodes, drawn where
        each member's level stream stopped. The members must be at the same update."""
        states = [state] if isinstance(state, dict) else list(state)
        if len(states) != self.population:
            raise ValueError(f"{len(states)} member states for a population of {self.population}")
        steps = {(s["env_steps"], s["updates"]) for s in states}
        if len(steps) != 1:
            raise ValueError(f"the members were saved at different points (env steps, updates): {sorted(steps)}")
        for k, one in enumerate(states):
            self.members.load_state_dict(k, one["model"])
            self._sample_gens[k].set_state(one["rng"]["sample"])
            self._perm_gens[k].set_state(one["rng"]["perm"])
            self.core.set_rng_state(one["rng"]["levels"], k)
            self.policy.set_rng_state(one["rng"]["policy"], k)
        self.members.load_optimizer_states(self.optimizer, [s["optimizer"] for s in states])
        self.env_steps, self.updates = states[0]["env_steps"], states[0]["updates"]
        torch.set_rng_state(states[0]["rng"]["torch"])
        self.obs = self.core.reset()

    def forward_encoded(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(K, B, A)`` and values ``(K, B)`` in fp32 from ``(K, B, ...)`` encoded observations,
        through the compiled network and bf16 autocast when configured."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cfg.bf16):
            logits, value = self._forward_encoded(encoded)
        return logits.float(), value.float()

    def _per_member(self, x: torch.Tensor) -> torch.Tensor:
        """``(K * B, ...)`` -> ``(K, B, ...)``: the core's envs are the members' blocks in order."""
        return x.view(self.population, -1, *x.shape[1:])

    def act(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sampled actions, their log-probabilities and the values ``(K, B)`` for ``(K, B, ...)`` encoded
        observations, member k sampling with its own generator."""
        logits, value = self.forward_encoded(encoded)
        logp_all = torch.log_softmax(logits, dim=-1)
        action = sample_blocks(logp_all.exp(), self._sample_gens)
        return action, logp_all.gather(-1, action[..., None]).squeeze(-1), value

    def _final_values(
        self, truncations: list[tuple[int, torch.Tensor, torch.Tensor]], final_values: torch.Tensor
    ) -> None:
        """Fill ``final_values`` ``(T, K, B)`` with V of the final observations of the truncated steps,
        ``(t, env rows, encoded final observations)``, in one batched pass after the rollout (the weights
        do not change during it): each member's rows padded to the longest member's."""
        if not truncations:
            return
        t = torch.cat([torch.full_like(rows, step) for step, rows, _ in truncations])
        rows = torch.cat([r for _, r, _ in truncations])
        encoded = torch.cat([e for _, _, e in truncations])
        b = self.cfg.num_envs
        member, env = rows // b, rows % b
        order = torch.argsort(member, stable=True)
        member, env, t, encoded = member[order], env[order], t[order], encoded[order]
        counts = torch.bincount(member, minlength=self.population)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(member), device=member.device) - starts[member]
        padded = encoded.new_zeros((self.population, int(counts.max()), *encoded.shape[1:]))
        padded[member, slot] = encoded
        final_values[t, member, env] = self.forward_encoded(padded)[1][member, slot]

    def train_iteration(self, total_updates: int | None = None) -> list[dict[str, float]]:
        """One rollout and one update; returns each member's statistics (one dict per member)."""
        cfg, core, dev = self.cfg, self.core, self.device
        t_len, b, k = cfg.num_steps, cfg.num_envs, self.population
        if cfg.anneal_lr and total_updates:
            self.optimizer.param_groups[0]["lr"] = cfg.lr * max(1.0 - self.updates / total_updates, 0.0)

        # ------------------------------------------------------------------ rollout
        encoded = self._per_member(self.members.encode(self.obs))
        enc_shape = tuple(encoded.shape[2:])
        enc_buf = torch.empty((k, t_len, b, *enc_shape), dtype=encoded.dtype, device=dev)  # member-major
        actions = torch.empty((t_len, k, b), dtype=torch.long, device=dev)
        logps, values, rewards, final_values = (torch.zeros((t_len, k, b), device=dev) for _ in range(4))
        terminated = torch.zeros((t_len, k, b), dtype=torch.bool, device=dev)
        truncated = torch.zeros_like(terminated)
        ended = {key: torch.zeros(k, device=dev) for key in ("episodes", "success", "length")}
        truncations: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        start = time.perf_counter()
        sync_free = dev.type != "cpu"
        with torch.no_grad():
            for t in range(t_len):
                enc_buf[:, t] = encoded
                with record_function("ppo/act"):
                    actions[t], logps[t], values[t] = self.act(encoded)
                with record_function("ppo/env_step"):
                    r = core.step(actions[t].reshape(-1))
                rewards[t], terminated[t] = self._per_member(r.reward), self._per_member(r.terminated)
                truncated[t] = self._per_member(r.truncated)
                # Truncated episodes bootstrap from their final observation. On an accelerator the value
                # pass runs on every env and keeps the truncated rows, since picking rows out would cost
                # a host sync every step. On the CPU the truncated rows' final observations (a few of 256
                # on most steps) are kept and valued together after the rollout, in one pass.
                if sync_free:
                    final = self._per_member(self.members.encode(core.final_obs()))
                    final_values[t] = torch.where(truncated[t], self.forward_encoded(final)[1], 0.0)
                elif bool(r.truncated.any()):
                    rows = r.truncated.nonzero().squeeze(1)
                    truncations.append((t, rows, self.members.encode(core.final_obs().index_select(0, rows))))
                done = self._per_member(r.done.float())
                ended["episodes"] += done.sum(1)
                ended["success"] += (self._per_member(r.info["success"].float()) * done).sum(1)
                ended["length"] += (self._per_member(r.info["episode_length"].float()) * done).sum(1)
                self.obs = r.obs
                with record_function("ppo/encode"):
                    encoded = self._per_member(self.members.encode(self.obs))
            last_value = self.forward_encoded(encoded)[1]
            with record_function("ppo/final_values"):
                self._final_values(truncations, final_values)

        # --------------------------------------------------------------- advantages
        with record_function("ppo/gae"):
            advantages, returns = compute_gae(
                rewards, values, last_value, terminated, truncated, final_values, cfg.gamma, cfg.gae_lambda
            )

        # ------------------------------------------------------------------- update
        # Every member's rollout flattened to (K, T * B) in its own step order; member k's minibatch rows
        # are drawn from its own permutation. Observations are gathered with index_select on the
        # (K * T * B) rows: for uint8 it is about 10x faster on the CPU than advanced indexing.
        n = t_len * b
        b_enc = enc_buf.reshape(k * n, *enc_shape)
        b_actions, b_logps, b_values, b_adv, b_returns = (
            x.permute(1, 0, 2).reshape(k, n) for x in (actions, logps, values, advantages, returns)
        )
        offsets = (torch.arange(k, device=dev) * n)[:, None]
        size = n // cfg.minibatches
        stats = {key: torch.zeros(k, device=dev) for key in ("policy_loss", "value_loss", "entropy", "clip_frac")}
        for _ in range(cfg.epochs):
            perms = torch.stack([torch.randperm(n, device=dev, generator=g) for g in self._perm_gens])
            for start_i in range(0, n, size):
                mb = perms[:, start_i : start_i + size]
                with record_function("ppo/minibatch_gather"):
                    enc_mb = b_enc.index_select(0, (mb + offsets).reshape(-1)).view(k, size, *enc_shape)
                with record_function("ppo/update_forward"):
                    logits, new_value = self.forward_encoded(enc_mb)
                logp_all = torch.log_softmax(logits, dim=-1)
                new_logp = logp_all.gather(-1, b_actions.gather(1, mb)[..., None]).squeeze(-1)
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean(1)
                ratio = (new_logp - b_logps.gather(1, mb)).exp()
                mb_adv = b_adv.gather(1, mb)
                if cfg.norm_adv:  # per member
                    mb_adv = (mb_adv - mb_adv.mean(1, keepdim=True)) / (mb_adv.std(1, keepdim=True) + 1e-8)
                policy_loss = torch.max(
                    -mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
                ).mean(1)
                old_value, mb_returns = b_values.gather(1, mb), b_returns.gather(1, mb)
                v_clipped = old_value + (new_value - old_value).clamp(-cfg.clip_coef, cfg.clip_coef)
                value_loss = 0.5 * torch.max((new_value - mb_returns) ** 2, (v_clipped - mb_returns) ** 2).mean(1)
                loss = policy_loss - cfg.ent_coef * entropy + cfg.vf_coef * value_loss  # (K,): one per member
                self.optimizer.zero_grad(set_to_none=True)
                with record_function("ppo/backward"):
                    loss.sum().backward()  # member k's parameters get member k's gradient only
                with record_function("ppo/optimizer"):
                    self.members.clip_grad_norm_(cfg.max_grad_norm)
                    self.optimizer.step()
                stats["policy_loss"] += policy_loss.detach()
                stats["value_loss"] += value_loss.detach()
                stats["entropy"] += entropy.detach()
                stats["clip_frac"] += ((ratio - 1).abs() > cfg.clip_coef).float().mean(1).detach()
        n_mb = cfg.epochs * cfg.minibatches
        table = (torch.stack(list(stats.values())) / n_mb).tolist()  # one host transfer for every member
        out = [{key: table[i][m] for i, key in enumerate(stats)} for m in range(k)]
        bad = [m for m in range(k) if not all(math.isfinite(v) for v in out[m].values())]
        if bad:
            raise FloatingPointError(
                f"non-finite PPO loss at update {self.updates} in {self._named(bad)}: {out[bad[0]]}"
            )
        self.check_finite()
        counts = torch.stack(list(ended.values())).tolist()
        self.env_steps += n
        self.updates += 1
        per_s = n / (time.perf_counter() - start)
        for m, member in enumerate(out):
            episodes = counts[0][m]
            member["episodes"] = episodes
            member["success_rate"] = counts[1][m] / episodes if episodes else float("nan")
            member["episode_length"] = counts[2][m] / episodes if episodes else float("nan")
            member["env_steps"] = self.env_steps
            member["steps_per_s"] = per_s
        return out

    def _named(self, members: list[int]) -> str:
        """``member 2 (seed 5)``: how errors name members (a population of one: ``the agent (seed 5)``)."""
        if self.population == 1:
            return f"the agent (seed {self.seeds[0]})"
        return ", ".join(f"member {m} (seed {self.seeds[m]})" for m in members)

    @torch.no_grad()
    def check_finite(self) -> None:
        """Raise ``FloatingPointError`` unless every member's weights, and its policy's logits and values on
        the current observations, are finite, with values whose squares are too (the next value loss
        squares them); the error names the members that are not.

        The losses alone miss a blow-up in an update's last minibatch: weights around 1e20 are finite, and
        behind a tanh even the logits stay finite, but the value loss of the next update overflows. Checked
        after every update, so such weights are never checkpointed. One forward pass and one host sync per
        iteration."""
        logits, value = self.forward_encoded(self._per_member(self.members.encode(self.obs)))
        k = self.population
        good = self.members.finite_weights()
        good &= logits.reshape(k, -1).isfinite().all(1) & value.square().isfinite().all(1)
        if not bool(good.all()):
            bad = [m for m in range(k) if not bool(good[m])]
            names = self.members.non_finite_names(bad[0])
            where = f"weights {names}" if names else "logits or values (the weights have blown up)"
            raise FloatingPointError(f"non-finite {where} after update {self.updates + 1} in {self._named(bad)}")

    def train(self, total_env_steps: int, callback: Callable[[list[dict[str, float]]], None] | None = None) -> None:
        """Run iterations until each member has taken ``total_env_steps`` env steps."""
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
