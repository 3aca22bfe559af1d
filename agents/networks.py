"""Actor-critic networks: an IMPALA-style residual CNN (the procgen standard) and an MLP.

Both take ``uint8`` observations as the envs give them (symbolic ``(C, S, S)`` channels or
``(H, W, 3)`` pixels) and return action logits and a value. The CNN ends in adaptive pooling to a
fixed grid, so a network trained on one canvas runs on any other without surgery.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from envs.config import ConfigError

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


@dataclass
class NetworkConfig:
    """Architecture of the actor-critic."""

    kind: str = "impala"
    """``impala`` (residual CNN) or ``mlp``."""
    channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    """IMPALA: output channels of each conv stack (each halves the resolution)."""
    pool: int = 4
    """IMPALA: side of the adaptive max-pool grid before the dense layer."""
    hidden: int = 256
    """Width of the dense layer(s)."""
    mlp_layers: int = 3
    """MLP: number of hidden layers."""
    activation: str = "tanh"
    """MLP: ``tanh`` or ``relu`` after each hidden layer (relu is about 20% faster end to end on a CPU:
    BENCHMARKS.md). The IMPALA CNN uses relu."""
    egocentric: int | None = None
    """Radius of an agent-centred window cut from the symbolic observation before the torso
    (``2r+1`` tiles a side, zero outside the canvas); ``null``: the whole canvas as it is. A
    translation-invariant input, which a CPU-sized MLP needs to learn mazes at random offsets."""
    agent_channel: int = 1
    """With ``egocentric``: the symbolic channel that marks the agent (1 in both envs)."""
    global_channels: list[int] = field(default_factory=list)
    """MLP on symbolic observations: channels given to the torso as their whole-canvas count of lit
    tiles (one number each, beside the window or canvas) instead of as tiles. For a channel whose
    content is positional rather than spatial, which an egocentric window would move with the agent:
    keys and chests' inventory (channel 4 lights one tile per key held, so its count is the keys held,
    exactly). Counts saturate at 255."""

    def validate(self) -> NetworkConfig:
        if self.kind not in ("impala", "mlp"):
            raise ConfigError(f"agent.network.kind={self.kind!r} is not one of ['impala', 'mlp']")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"agent.network.activation={self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        if not self.channels or min(self.channels) < 1:
            raise ConfigError(f"agent.network.channels={self.channels} must be a non-empty list of positive ints")
        for key in ("pool", "hidden", "mlp_layers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"agent.network.{key}={getattr(self, key)} must be >= 1")
        if self.egocentric is not None and self.egocentric < 1:
            raise ConfigError(f"agent.network.egocentric={self.egocentric} must be >= 1 (or null)")
        if self.agent_channel < 0:
            raise ConfigError(f"agent.network.agent_channel={self.agent_channel} must be >= 0")
        if self.global_channels:
            if self.kind != "mlp":
                raise ConfigError(
                    f"agent.network.global_channels={self.global_channels} needs agent.network.kind=mlp, "
                    f"not {self.kind!r}"
                )
            if min(self.global_channels) < 0 or len(set(self.global_channels)) < len(self.global_channels):
                raise ConfigError(
                    f"agent.network.global_channels={self.global_channels} must be distinct channel indices >= 0"
                )
        return self


def egocentric_crop(obs: torch.Tensor, agent_channel: int, radius: int) -> torch.Tensor:
    """``(B, C, S, S)`` observations -> ``(B, C, 2r+1, 2r+1)`` windows centred on each agent, zero-padded.

    The agent channel stays in (a one at the centre); :class:`Torso` drops it, as it carries nothing.
    """
    b, c, s, _ = obs.shape
    side, padded_side = 2 * radius + 1, s + 2 * radius
    padded = nn.functional.pad(obs, (radius, radius, radius, radius)).reshape(b, c, padded_side * padded_side)
    where = obs[:, agent_channel].reshape(b, s * s).argmax(-1)
    span = torch.arange(side, device=obs.device)
    rows = (where // s)[:, None, None] + span[None, :, None]
    cols = (where % s)[:, None, None] + span[None, None, :]
    index = (rows * padded_side + cols).reshape(b, 1, side * side).expand(b, c, side * side)
    return padded.gather(2, index).reshape(b, c, side, side)


def to_float(obs: torch.Tensor, pixels: bool) -> torch.Tensor:
    """``uint8`` observations to float ``(B, C, H, W)``: pixels scaled to [0, 1] and moved channel-first."""
    if pixels:
        return obs.permute(0, 3, 1, 2).float().div(255.0)
    return obs.float()


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class _ConvStack(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.res0, self.res1 = _Residual(out_channels), _Residual(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res1(self.res0(self.pool(self.conv(x))))


class Torso(nn.Module):
    """The shared feature extractor of the config (IMPALA CNN or MLP): ``uint8`` obs -> ``(B, hidden)``.

    Used by our actor-critic and, as its features extractor, by the SB3 backend.
    """

    def __init__(self, obs_shape: tuple[int, ...], cfg: NetworkConfig, pixels: bool) -> None:
        super().__init__()
        cfg.validate()
        self.pixels = pixels
        self.egocentric, self.agent_channel = cfg.egocentric, cfg.agent_channel
        self.global_channels = list(cfg.global_channels)
        if self.global_channels:
            if pixels:
                raise ConfigError("agent.network.global_channels needs symbolic observations (env.obs_mode=symbolic)")
            if max(self.global_channels) >= obs_shape[0]:
                raise ConfigError(
                    f"agent.network.global_channels={self.global_channels}: the observations {tuple(obs_shape)} "
                    f"have channels 0..{obs_shape[0] - 1}"
                )
            self.register_buffer("global_index", torch.tensor(self.global_channels), persistent=False)
        if cfg.egocentric is not None:
            if pixels:
                raise ValueError("agent.network.egocentric needs symbolic observations (env.obs_mode=symbolic)")
            if not 0 <= cfg.agent_channel < obs_shape[0]:
                raise ConfigError(f"agent.network.agent_channel={cfg.agent_channel} is not a channel of {obs_shape}")
        if cfg.egocentric is not None or self.global_channels:
            # The window's agent channel is the same for every observation (a one at the centre), so the
            # torso keeps the other channels only: a third fewer first-layer FLOPs with 3 channels. Global
            # channels enter as counts only.
            dropped = {*self.global_channels, *([cfg.agent_channel] if cfg.egocentric is not None else [])}
            kept = [c for c in range(obs_shape[0]) if c not in dropped]
            self.register_buffer("kept_channels", torch.tensor(kept), persistent=False)
            side = obs_shape[-1] if cfg.egocentric is None else 2 * cfg.egocentric + 1
            obs_shape = (len(kept), side, side)
        in_channels = obs_shape[-1] if pixels else obs_shape[0]
        if cfg.kind == "impala":
            stacks, c = [], in_channels
            for out in cfg.channels:
                stacks.append(_ConvStack(c, out))
                c = out
            self.layers = nn.Sequential(
                *stacks,
                nn.ReLU(),
                nn.AdaptiveMaxPool2d(cfg.pool),
                nn.Flatten(),
                nn.Linear(c * cfg.pool * cfg.pool, cfg.hidden),
                nn.ReLU(),
            )
        else:
            size = 1
            for d in obs_shape:
                size *= d
            size += len(self.global_channels)
            layers: list[nn.Module] = [nn.Flatten()]
            for i in range(cfg.mlp_layers):
                layers += [nn.Linear(size if i == 0 else cfg.hidden, cfg.hidden), ACTIVATIONS[cfg.activation]()]
            self.layers = nn.Sequential(*layers)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """The torso's input, still ``uint8``: the egocentric window where configured, else ``obs`` itself.

        PPO stores this in its rollout, so the window is cut once per step, not once per epoch. With
        ``global_channels`` it is flat ``(B, window tiles + counts)``: the kept channels' tiles, then the
        global channels' counts over the whole canvas, in the observations' dtype.
        """
        if self.egocentric is None and not self.global_channels:
            return obs
        window = obs if self.egocentric is None else egocentric_crop(obs, self.agent_channel, self.egocentric)
        window = window.index_select(1, self.kept_channels)  # not window[:, list]: slow for uint8 on the CPU
        if not self.global_channels:
            return window
        counts = obs.index_select(1, self.global_index).flatten(2).sum(-1)
        if obs.dtype == torch.uint8:
            counts = counts.clamp(max=255)
        return torch.cat([window.flatten(1), counts.to(obs.dtype)], dim=1)

    def forward_encoded(self, encoded: torch.Tensor) -> torch.Tensor:
        """Features of :meth:`encode`'s output."""
        return self.layers(to_float(encoded, self.pixels))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward_encoded(self.encode(obs))


class ActorCritic(nn.Module):
    """Policy and value heads on a shared torso; ``forward(obs) -> (logits, value)``."""

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, cfg: NetworkConfig, pixels: bool) -> None:
        super().__init__()
        self.torso = Torso(obs_shape, cfg, pixels)
        self.policy = nn.Linear(cfg.hidden, num_actions)
        self.value = nn.Linear(cfg.hidden, 1)
        nn.init.orthogonal_(self.policy.weight, gain=0.01)
        nn.init.zeros_(self.policy.bias)
        nn.init.orthogonal_(self.value.weight, gain=1.0)
        nn.init.zeros_(self.value.bias)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations as the torso takes them (:meth:`Torso.encode`)."""
        return self.torso.encode(obs)

    def forward_encoded(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and value from :meth:`encode`'s output."""
        h = self.torso.forward_encoded(encoded)
        return self.policy(h), self.value(h).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_encoded(self.encode(obs))
