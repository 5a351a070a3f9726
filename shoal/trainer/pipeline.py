"""Minibatches as runs of rows (``train.minibatches = "ranges"``), and training on them as they
are collected (``train.pipeline``).

Synchronous PPO cannot collect the next batch during an update (its actions need the update's
result), and the update cannot start before its batch is in. But a minibatch needs only its own
segments: whole rows of the ``[S, T]`` storage, each one env's (or agent's) steps, with the
advantages computed from that row alone. So with minibatch k of a pass made of rows
``[k n, (k + 1) n)`` (``n = minibatch_size / horizon``: :class:`RowRanges`), the learner can
take its first gradient step once the first n rows are in, while a rollout thread collects the
other rows with the same weights (the weights from before the update, as the synchronous path
acts the whole batch with: :meth:`FusedRollout.pipelined_epoch
<shoal.trainer.fused_rollout.FusedRollout.pipelined_epoch>`). Nothing is stale: the batch,
the minibatches and every gradient step are the synchronous path's with ``minibatches =
"ranges"``, bit for bit, whichever thread finishes when (:class:`Arrivals` only decides when
the learner may read a range, never what it reads).

Envs are independent copies, so a run of consecutive rows is as good a sample of the batch as
any other set of that many rows; unlike ``passes``, the order is the same every pass.
"""

from __future__ import annotations

import threading

import torch

from .advantage import compute_advantages
from .distributed import combine_parts, variance_parts

__all__ = ["RowRanges", "Arrivals", "row_bounds"]


def row_bounds(rows: int, per_minibatch: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each run of ``per_minibatch`` rows in ``rows`` (the last one shorter when
    ``per_minibatch`` does not divide ``rows``)."""
    if not 0 < per_minibatch <= rows:
        raise ValueError(f"per_minibatch={per_minibatch} must be in [1, rows={rows}]")
    return [(lo, min(rows, lo + per_minibatch)) for lo in range(0, rows, per_minibatch)]


class Arrivals:
    """Which row ranges a rollout thread has finished: it calls :meth:`arrived` in order (or
    :meth:`fail`), the learner :meth:`wait` before it reads a range."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._count = 0
        self._error: BaseException | None = None
        #: the batch's episode statistics, given with the last range
        self.episodes: dict[str, float] | None = None

    def arrived(self, count: int, episodes: dict[str, float] | None = None) -> None:
        """Ranges ``0 .. count - 1`` are in (and, with the last, the batch's ``episodes``)."""
        with self._cv:
            self._count = count
            if episodes is not None:
                self.episodes = episodes
            self._cv.notify_all()

    def fail(self, exc: BaseException) -> None:
        """The rollout thread stopped with ``exc``: a learner waiting for a range raises."""
        with self._cv:
            self._error = exc
            self._cv.notify_all()

    def wait(self, k: int) -> None:
        """Returns once range ``k`` is in; raises if the rollout thread failed first."""
        with self._cv:
            while self._count <= k and self._error is None:
                self._cv.wait()
            if self._count <= k:
                raise RuntimeError(f"the rollout thread stopped before rows range {k} was "
                                   f"collected: {self._error!r}") from self._error


class RowRanges:
    """The minibatch schedule of ``minibatches = "ranges"`` for one update of ``storage``: pass
    after pass, minibatch k is rows range ``k % count``.

    A range is *prepared* once, before its first minibatch: its advantages (from the stored
    values, ratio 1: the synchronous estimates) go into ``storage.advantages``, its share of the
    update's explained variance is kept, and its minibatch is gathered. On the synchronous path
    the learner prepares each range when it takes it. With ``arrivals`` (``train.pipeline``) the
    rollout thread prepares ranges 1.. as it collects them (:meth:`prepare`, then
    :meth:`Arrivals.arrived`), off the learner's critical path: the learner waits for a range
    before it reads it and takes the minibatch gathered for it (:meth:`gathered`). Either way a
    range's numbers come from its own rows only, by the same ops, so they do not depend on which
    thread prepared it."""

    def __init__(self, storage, per_minibatch: int, t, arrivals: Arrivals | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.storage, self.t, self.arrivals = storage, t, arrivals
        self.bounds = row_bounds(storage.rewards.shape[0], per_minibatch)
        self.count = len(self.bounds)
        self.index = [torch.arange(lo, hi, device=device) for lo, hi in self.bounds]
        self._parts: dict[int, list[float]] = {}
        self._gathered: dict[int, object] = {}

    def prepare(self, k: int, gather: bool = False) -> None:
        """Range ``k``'s advantages and explained-variance share (and, ``gather``, its first
        minibatch): once, from whichever thread gets there first by the schedule."""
        if k in self._parts:
            return
        b, t, T = self.storage, self.t, self.storage.T
        lo, hi = self.bounds[k]
        adv = compute_advantages(b.values[lo:hi], b.rewards[lo:hi], b.dones[lo:hi], None,
                                 t.gamma, t.gae_lambda, t.rho_clip, t.c_clip,
                                 out=b.advantages[lo:hi])
        values = b.values[lo:hi, :T]
        parts = variance_parts(values, adv + values, b.masks[lo:hi, :T])
        if gather:
            from .ppo import Minibatch      # (ppo imports this module)

            idx = self.index[k]
            self._gathered[k] = Minibatch(b, idx, torch.ones(len(idx), device=idx.device))
        self._parts[k] = parts

    def _bring_in(self, upto: int) -> None:
        """Waits for ranges ``.. upto - 1`` and prepares those not prepared yet."""
        for k in range(upto):
            if self.arrivals is not None:
                self.arrivals.wait(k)
            self.prepare(k)

    def take(self, k: int) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Minibatch ``k``: its rows, their importance weights (all 1) and no rank weight."""
        m = k % self.count
        self._bring_in(m + 1)
        idx = self.index[m]
        return idx, torch.ones(len(idx), device=idx.device), None

    def gathered(self, k: int):
        """Minibatch ``k`` as the rollout thread gathered it (first pass only), or None."""
        return self._gathered.pop(k, None) if k < self.count else None

    def explained(self) -> list[float]:
        """The explained-variance parts of the whole batch, from the estimates before any
        minibatch refreshed them (every range brought in first)."""
        self._bring_in(self.count)
        return combine_parts([self._parts[k] for k in range(self.count)])
