"""Data parallelism for one run: plain ``torch.distributed`` (no Ray here; Ray Train starts the
process group, gloo on CPUs and NCCL on GPUs, and :mod:`adalase_tune.trainable` launches it).

The rule that makes a run of W workers the same run as one worker (docs/distributed.md):

- ``train.batch_size`` is the *global* batch. Every worker draws the same batch order and the same
  site (the generators share one seed) and trains on its shard of the batch.
- Gradients are averaged over the global batch with one all-reduce of the flat gradient per step,
  weighted by shard size, so uneven last batches average exactly; ``g_tr`` and ``g_val`` are the
  global gradients and ``<g_val, g_tr>``, hence q, is the same on every worker.
- Per-sample random draws of the op come from the shared generator for the whole global batch;
  each worker keeps its slice (:class:`ShardedGenerator`). Per-sample ops (translate, cutout)
  then augment exactly as one worker would; mixing ops (mixup, cutmix) pair samples within a
  worker's shard, as data-parallel training usually does; ``noise`` scales by its shard's std.
- BatchNorm normalises with each shard's statistics (the one known difference from one worker);
  the running statistics of worker 0 are broadcast before every evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union, overload

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError


@dataclass(frozen=True)
class World:
    """This worker's place among ``size`` data-parallel workers; ``size == 1``: no communication."""

    rank: int = 0
    size: int = 1

    @classmethod
    def current(cls) -> World:
        """The process group's world when one is initialised, else a world of one."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def sizes(self, n: int) -> list[int]:
        """Shard sizes of a global batch of ``n`` (as even as possible, the first ones larger)."""
        base, extra = divmod(n, self.size)
        return [base + (r < extra) for r in range(self.size)]

    def shard(self, n: int) -> slice:
        """This worker's slice of a global batch of ``n`` samples."""
        sizes = self.sizes(n)
        start = sum(sizes[: self.rank])
        return slice(start, start + sizes[self.rank])

    def check_batches(self, n_train: int, batch: int) -> None:
        """Every global batch must give each worker at least one sample (so that all workers draw alike)."""
        w = self.size
        if w > 1 and (batch < w or 0 < n_train % batch < w):
            last = "is smaller than" if batch < w else f"of {n_train % batch} (the last of each epoch) is smaller than"
            raise ConfigError(
                f"train.batch_size = {batch} over {w} workers with {n_train} training samples: a batch {last} "
                f"the number of workers; train.batch_size is the global batch, so choose one of at least {w} "
                f"that leaves no last batch under {w} samples"
            )

    def average_gradients(self, params: Sequence[nn.Parameter], local: int, total: int) -> None:
        """Replace each ``p.grad`` (the mean over this shard's ``local`` samples) with the mean over
        the global batch of ``total``: one all-reduce of the flat, shard-weighted gradient."""
        if not self.parallel:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]) * (local / total)
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Element-wise sum over workers of a few numbers (identity in a world of one)."""
        if not self.parallel:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Worker 0's buffers (BatchNorm running statistics) to every worker."""
        if self.parallel:
            for buf in model.buffers():
                dist.broadcast(buf, 0)


class ShardedGenerator:
    """A numpy ``Generator`` for an op applied to one shard of a global batch.

    Per-sample draws (``integers``, ``uniform``, ``beta``, ``random``, ``normal`` with a size equal
    to the shard) are drawn for the whole global batch from the shared generator and sliced, so
    every worker consumes the same stream and the samples get what one worker would give them.
    ``permutation`` draws one permutation per shard, in rank order, and keeps this worker's.
    Scalar draws (no size) are the same on every worker.
    """

    def __init__(self, rng: np.random.Generator, world: World, total: int):
        self.rng, self.world, self.total = rng, world, total
        self.sizes = world.sizes(total)
        self.slice = world.shard(total)

    def _per_sample(self, draw: Callable[[Optional[int]], Any], size: Optional[int]) -> Any:
        # Any: numpy's draws return a scalar for no size and an array for a size (their stubs overload)
        if size is None:
            return draw(None)
        if size != self.sizes[self.world.rank]:
            raise ValueError(f"a sharded draw of {size} samples; this shard has {self.sizes[self.world.rank]}")
        return draw(self.total)[self.slice]

    @overload
    def integers(self, low: int, high: Optional[int] = None, size: None = None, **kw: Any) -> int: ...
    @overload
    def integers(self, low: int, high: Optional[int], size: int, **kw: Any) -> np.ndarray: ...
    @overload
    def integers(self, low: int, high: Optional[int] = None, *, size: int, **kw: Any) -> np.ndarray: ...
    def integers(
        self, low: int, high: Optional[int] = None, size: Optional[int] = None, **kw: Any
    ) -> Union[int, np.ndarray]:
        return self._per_sample(lambda n: self.rng.integers(low, high, n, **kw), size)

    @overload
    def uniform(self, low: float = 0.0, high: float = 1.0, size: None = None) -> float: ...
    @overload
    def uniform(self, low: float, high: float, size: int) -> np.ndarray: ...
    @overload
    def uniform(self, low: float = 0.0, high: float = 1.0, *, size: int) -> np.ndarray: ...
    def uniform(self, low: float = 0.0, high: float = 1.0, size: Optional[int] = None) -> Union[float, np.ndarray]:
        return self._per_sample(lambda n: self.rng.uniform(low, high, n), size)

    @overload
    def beta(self, a: float, b: float, size: None = None) -> float: ...
    @overload
    def beta(self, a: float, b: float, size: int) -> np.ndarray: ...
    def beta(self, a: float, b: float, size: Optional[int] = None) -> Union[float, np.ndarray]:
        return self._per_sample(lambda n: self.rng.beta(a, b, n), size)

    @overload
    def normal(self, loc: float = 0.0, scale: float = 1.0, size: None = None) -> float: ...
    @overload
    def normal(self, loc: float, scale: float, size: int) -> np.ndarray: ...
    @overload
    def normal(self, loc: float = 0.0, scale: float = 1.0, *, size: int) -> np.ndarray: ...
    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Optional[int] = None) -> Union[float, np.ndarray]:
        return self._per_sample(lambda n: self.rng.normal(loc, scale, n), size)

    @overload
    def random(self, size: None = None) -> float: ...
    @overload
    def random(self, size: int) -> np.ndarray: ...
    def random(self, size: Optional[int] = None) -> Union[float, np.ndarray]:
        return self._per_sample(lambda n: self.rng.random(n), size)

    def permutation(self, n: int) -> np.ndarray:
        perms = [self.rng.permutation(s) for s in self.sizes]
        if n != self.sizes[self.world.rank]:
            raise ValueError(f"a sharded permutation of {n}; this shard has {self.sizes[self.world.rank]}")
        return perms[self.world.rank]


# the random source an op draws its per-sample parameters from (the op contract: adalase_tune.ops._base)
Draws = Union[np.random.Generator, ShardedGenerator]


def op_generator(rng: np.random.Generator, world: World, total: int) -> Draws:
    """The generator an op draws from for a global batch of ``total``: ``rng`` itself in a world of one."""
    return ShardedGenerator(rng, world, total) if world.parallel else rng
