"""Counter-based random numbers for level generation, batched on tensors.

Every draw is a hash of ``(seed, level id, purpose, counters)``, so a level depends on nothing but
its own id: level ``i`` of a set is the same whatever the set's size, whichever other levels are
generated with it, and it can be regenerated alone. Level sets of different sizes are therefore
nested, as procgen's are. The hash is a 32-bit integer mixer evaluated in int64 arithmetic (every
product stays below 2^59, so nothing overflows), with the same result on every device.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B

# Purposes: one independent stream per kind of draw.
SIZE_H, SIZE_W, WALK_START, WALK, EXIT, START, ARROW_RANDOM, ARROW, OFFSET_Y, OFFSET_X = range(10)
ROOM_BLOCKS, OBJECTS, COUNT_KEYS, COUNT_CHESTS, COUNT_HIDDEN, ROOM_SOURCE = range(10, 16)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit mixer (values in [0, 2^32) in, the same range out)."""
    x = ((x >> 16) ^ x) * _MUL & _M32
    x = ((x >> 16) ^ x) * _MUL & _M32
    return (x >> 16) ^ x


class LevelRandom:
    """Random draws for a batch of levels ``ids`` (``(N,)`` int64) of the stream ``seed``."""

    def __init__(self, seed: int, ids: torch.Tensor) -> None:
        lo = _mix(torch.tensor(seed & _M32, dtype=torch.long))
        b1 = _mix(lo ^ ((seed >> 32) & _M32))
        b2 = _mix(b1 ^ 0x5BD1E995)
        self.ids = ids.long()
        # Two rounds keyed by the seed: the id enters non-linearly, so no two seeds give level
        # sets that are reorderings of one another (as a single XOR of id and seed would).
        self._key = _mix(_mix((self.ids & _M32) ^ b1) ^ b2)

    def uniform(self, purpose: int, *counters: torch.Tensor | int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Uniform float64 in [0, 1), shape ``(N,)`` or ``(N, *counter_shape)``.

        ``counters`` (ints or tensors broadcast against one another) index draws within a purpose;
        ``rows`` restricts the draw to a subset of the levels (same values as drawing for all).
        """
        key = self._key if rows is None else self._key[rows]
        extra = torch.broadcast_shapes(*(torch.as_tensor(c).shape for c in counters)) if counters else ()
        x = _mix(key.reshape(-1, *([1] * len(extra))) ^ purpose)
        for counter in counters:
            x = _mix(x ^ (torch.as_tensor(counter, dtype=torch.long) & _M32))
        return x.double() / 2.0**32

    def stream(self, purpose: int) -> torch.Tensor:
        """Per-level keys ``(N,)`` of one purpose, for hot loops: see :func:`draw`."""
        return _mix(self._key ^ purpose)

    def integers(
        self, low: int | torch.Tensor, high: int | torch.Tensor, purpose: int, *counters: torch.Tensor | int
    ) -> torch.Tensor:
        """Uniform int64 in ``[low, high)`` (bounds may be per-level tensors)."""
        span = torch.as_tensor(high) - torch.as_tensor(low)
        u = self.uniform(purpose, *counters)
        if span.dim() == 1 and u.dim() > 1:
            span = span.reshape(-1, *([1] * (u.dim() - 1)))
        low_t = torch.as_tensor(low)
        if low_t.dim() == 1 and u.dim() > 1:
            low_t = low_t.reshape(-1, *([1] * (u.dim() - 1)))
        return low_t + torch.minimum((u * span).long(), span - 1)

    def grid_uniform(
        self, purpose: int, height: int, width: int, *counters: int, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(N, height, width)`` uniforms indexed by tile ``(y, x)``: a tile's draw does not depend
        on the grid's size, so on which other levels share the batch. ``rows``: as in :meth:`uniform`."""
        y = torch.arange(height)[:, None]
        x = torch.arange(width)[None, :]
        return self.uniform(purpose, *counters, y, x, rows=rows)

    def choice(self, mask: torch.Tensor, purpose: int) -> torch.Tensor:
        """Per level, a uniformly random ``(y, x)`` among the True entries of the grid ``mask``
        ``(N, H, W)``, as a flat index ``y * W + x``."""
        scores = self.grid_uniform(purpose, mask.shape[1], mask.shape[2])
        return torch.where(mask, scores, -1.0).flatten(1).argmax(dim=1)

    def distinct(self, mask: torch.Tensor, k: int, purpose: int) -> torch.Tensor:
        """Per level, ``k`` distinct flat indices drawn uniformly among the True entries of the grid
        ``mask`` ``(N, H, W)``, in random order (every level needs at least ``k`` True entries)."""
        scores = self.grid_uniform(purpose, mask.shape[1], mask.shape[2])
        return torch.where(mask, scores, -1.0).flatten(1).topk(k, dim=1).indices


def draw(stream: torch.Tensor, counter: int) -> torch.Tensor:
    """Uniform float in [0, 1) for each key of a :meth:`LevelRandom.stream` at ``counter``; equal
    to ``LevelRandom.uniform(purpose, counter)`` on the same levels."""
    return _mix(stream ^ (counter & _M32)).double() / 2.0**32
