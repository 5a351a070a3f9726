"""The learner on several threads: each minibatch split into fixed shards, one per thread.

With ``train.learner_threads = N`` (N > 1) every minibatch of the update is cut into N
contiguous shards of its segments; each shard's PPO loss and its gradients are computed on its
own thread (the trainer's thread takes shard 0, N - 1 helper threads the others), every torch
op inline on that thread (``train.torch_threads = 1``). The threads meet only where the loss
needs the whole minibatch: the count of unmasked steps and the advantage mean and variance (the
``ranks`` hook of :func:`~shoal.trainer.ppo.ppo_loss`, the same one a data-parallel job
uses: here the shards stand in for the ranks) and the KL early stop. The shards' gradients are then added in shard order into
``param.grad`` and the trainer clips and steps as usual.

Why: torch's intra-op threads do not pay for a small policy (breakout's MLP-128 trains faster
on one torch thread than on two, and two OpenMP threads that spin-wait collapse when a core is
busy with the overlapped rollout), but two shards of a minibatch are two independent chunks of
work, each as large as one torch thread handles well, and a shard thread that finds its core
busy simply waits for it. With ``train.overlap`` the second core is then busy through the whole
update: with the rollout thread while the next batch is collected, with a shard thread after.

Determinism: which thread computes which shard does not matter, every sum across shards is
taken in shard order, and each op runs on one thread, so a run gives the same numbers under a
seed whatever the scheduling. The numbers depend on N (the shards' gradients are rounded
separately before they are added): runs with different ``learner_threads`` differ by float32
rounding, as runs with different ``minibatch_size`` differ by more.
"""

from __future__ import annotations

import copy
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import torch

__all__ = ["ShardedLearner", "make_learner", "shard_bounds"]


def shard_bounds(segments: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``(start, stop)`` ranges covering ``range(segments)``, sizes
    differing by at most one (the first ones larger); empty ranges are left out."""
    base, extra = divmod(segments, shards)
    out, start = [], 0
    for i in range(shards):
        stop = start + base + (1 if i < extra else 0)
        if stop > start:
            out.append((start, stop))
        start = stop
    return out


def _shard(mb: Any, start: int, stop: int) -> Any:
    """Segments ``start:stop`` of a gathered minibatch (views, no copies): every per-segment
    tensor (first dimension = the minibatch's segments, so a field added to ``Minibatch`` is
    split too) and the start state; scalars such as ``weight_peak`` are shared."""
    part = copy.copy(mb)
    segments = int(mb.idx.numel())
    for name, value in vars(mb).items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == segments:
            setattr(part, name, value[start:stop])
    part.state0 = None if mb.state0 is None else tuple(s[start:stop] for s in mb.state0)
    return part


class _Exchange:
    """Sums a tensor over the shard threads of one minibatch, in shard order (each thread gets
    the same sum, computed the same way)."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties)
        self.slots: list[torch.Tensor | None] = [None] * parties

    def sum(self, shard: int, tensor: torch.Tensor) -> torch.Tensor:
        self.slots[shard] = tensor
        self.barrier.wait()
        total = self.slots[0]
        for other in self.slots[1:]:
            total = total + other
        self.barrier.wait()     # every thread has read the slots before they are reused
        return total

    def gather(self, shard: int, tensor: torch.Tensor) -> torch.Tensor:
        """``[shards, *tensor.shape]``: every shard's ``tensor`` in shard order."""
        self.slots[shard] = tensor
        self.barrier.wait()
        rows = torch.stack(self.slots)
        self.barrier.wait()
        return rows

    def abort(self) -> None:
        self.barrier.abort()


class _ShardRanks:
    """The shards of one minibatch seen as the ranks of a job, for
    :func:`~shoal.trainer.distributed.minibatch_moments` (the only collective
    :func:`~shoal.trainer.ppo.ppo_loss` takes): one all-gather, combined in shard order."""

    distributed = True

    def __init__(self, exchange: _Exchange, shard: int) -> None:
        self.exchange, self.shard = exchange, shard

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.exchange.gather(self.shard, tensor)


class ShardedLearner:
    """Computes one minibatch's loss and gradients on ``threads`` threads (see the module
    docstring). ``loss_fn(mb, ranks)`` is :func:`~shoal.trainer.ppo.ppo_loss` with the
    trainer's policy, distribution, config and forward bound."""

    def __init__(self, policy: torch.nn.Module, threads: int,
                 loss_fn: Callable[[Any, Any], Any]) -> None:
        if threads < 2:
            raise ValueError(f"ShardedLearner needs at least 2 threads, got {threads}")
        self.policy = policy
        self.threads = threads
        self.loss_fn = loss_fn
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="shoal-learner")
        return self._pool

    def loss_and_gradients(self, mb: Any, target_kl: float
                           ) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
        """The minibatch's loss statistics and advantages, its gradient written into the
        parameters' ``.grad``; None (no gradient) when its KL passes ``target_kl`` (> 0)."""
        bounds = shard_bounds(int(mb.idx.numel()), self.threads)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        exchange = _Exchange(len(bounds))

        torch_threads = torch.get_num_threads()

        def work(shard: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, Any]:
            try:
                if shard:
                    # OpenMP's thread count is per calling thread and a new thread starts with
                    # one per core: a helper must use the trainer's count too (torch.set_num_
                    # threads also sets the process-wide value, to the one it already has)
                    torch.set_num_threads(torch_threads)
                part = _shard(mb, *bounds[shard])
                loss, stats, adv = self.loss_fn(part, _ShardRanks(exchange, shard))
                # each shard's approx_kl is its share of the minibatch's mean
                kl = exchange.sum(shard, stats["approx_kl"].detach().reshape(1))
                if target_kl > 0 and float(kl) > target_kl:
                    return stats, adv, None
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                return stats, adv, grads
            except BaseException:
                exchange.abort()    # the other shards stop waiting for this one
                raise

        futures: list[Future] = [self._executor().submit(work, i) for i in range(1, len(bounds))]
        results, errors = [], []
        try:
            results.append(work(0))
        except BaseException as exc:
            errors.append(exc)
        for f in futures:
            try:
                results.append(f.result())
            except BaseException as exc:
                errors.append(exc)
        if errors:
            # the first error that is not another shard's abort is the cause
            cause = next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)),
                         errors[0])
            raise cause
        if results[0][2] is None:     # every shard saw the same summed KL
            return None
        stats = {k: sum((r[0][k] for r in results[1:]), results[0][0][k]) for k in results[0][0]}
        for i, p in enumerate(params):
            grads = [r[2][i] for r in results if r[2][i] is not None]
            if not grads:
                p.grad = None
                continue
            total = grads[0]
            for g in grads[1:]:
                total = total + g
            p.grad = total
        return stats, torch.cat([r[1] for r in results])

    def close(self) -> None:
        """Stops the helper threads (a later call starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def make_learner(trainer: Any) -> ShardedLearner:
    """The :class:`ShardedLearner` of ``trainer``'s config (``train.learner_threads`` > 1);
    refuses the settings it cannot run with a :class:`~shoal.trainer.config.ConfigError`."""
    from .config import ConfigError
    from .ppo import ppo_loss

    t = trainer.config.train
    if trainer.dist.distributed:
        raise ConfigError("train.learner_threads > 1 is not supported in a torchrun job: use "
                          "--train.learner-threads 1 (each rank is already one learner)")
    if t.compile:
        raise ConfigError("train.learner_threads > 1 does not run a torch.compile'd policy: use "
                          "--train.compile false or --train.learner-threads 1")
    if trainer.device.type != "cpu":
        raise ConfigError(f"train.learner_threads > 1 splits the update over CPU threads; "
                          f"train.device is {trainer.device}: use --train.learner-threads 1")

    def loss_fn(mb: Any, ranks: Any) -> Any:
        return ppo_loss(trainer.policy, trainer.distribution, mb, t, trainer.forward, ranks)

    return ShardedLearner(trainer.policy, t.learner_threads, loss_fn)
