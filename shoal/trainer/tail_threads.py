"""The update's last minibatches on more torch threads once the rollout thread is done
(``train.overlap_tail_threads``, with overlap or ``train.pipeline``).

With overlap (:mod:`shoal.trainer.fused_rollout`) the rollout thread anchors the update's
minibatches, then collects the next batch in C, and is then done for the epoch, while the
learner (one torch thread, as breakout ships) still has minibatches to train: a core idles for
the rest of the update. With ``overlap_tail_threads = N`` (N > 1) the learner runs the update's
gradient steps from ``overlap_tail_start`` x (their number) on with ``N`` torch intra-op
threads, and goes back to its own thread count when the update ends.

The switch point is fixed by the config, not by timing: before it the learner waits until the
rollout thread has finished every torch op of its epoch (anchoring, the reward scaling after the
collection), so no torch op of either thread ever runs under a thread count that depends on how
the threads raced. A matrix product on two threads can round differently from one on a single
thread, so runs with different settings differ in the last bits; a run under one setting is the
same under a seed whatever the threads do, and resumes exactly. A switch point earlier than the
rollout thread's finish makes the learner wait for it; a later one leaves the core idle longer:
BENCHMARKS.md, "The update's tail on both cores", measures where breakout's lies.

With ``train.pipeline`` (:meth:`~shoal.trainer.fused_rollout.FusedRollout.pipelined_epoch`) the
rollout thread runs no torch op at all: it is done once the batch's last rows range is in.

The torch thread count is process-wide state (torch's own count, MKL's and OpenMP's), which
the rollout thread also reads: the learner sets it only while the rollout thread runs no torch
op, and restores it before the next epoch hands the rollout thread its work. It then releases
its idle OpenMP workers (:func:`release_workers`), which would otherwise spin-wait on the core
the rollout thread starts the next epoch on.

Where it applies: beside a rollout thread (overlap, or the pipeline where it applies) with
``learner_threads = 1``, in a process that is not one rank of a torchrun job (ranks on one
machine share its cores; :class:`~shoal.trainer.fused_rollout.FusedRollout` makes no tail
elsewhere, so breakout's shipped tail leaves ``--train.pipeline false`` as it reads).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import torch

__all__ = ["tail_step", "TailThreads", "release_workers"]


def tail_step(train: Any, num_steps: int) -> int | None:
    """How many of an update's ``num_steps`` optimizer steps the learner takes before it
    switches to ``train.overlap_tail_threads`` torch threads (``overlap_tail_start`` of them,
    rounded up, at least one), or None when these settings (a
    :class:`~shoal.trainer.config.TrainConfig`) never switch."""
    if not (train.overlap or getattr(train, "pipeline", False)) or train.overlap_tail_threads <= 1:
        return None
    # at least one step first: the update hands the rollout thread its anchoring schedule at
    # its start, and the rollout thread cannot finish before it has it
    # (less a hair: 0.07 x 100 is 7.000000000000001 in floats, and means 7 steps)
    return min(num_steps, max(1, math.ceil(train.overlap_tail_start * num_steps - 1e-9)))


class TailThreads:
    """One run's tail switch, shared by the learner and the rollout thread.

    Each overlapped epoch: the learner calls :meth:`begin` before handing the rollout thread its
    work, which calls :meth:`rollout_done` once it has run its last torch op (or failed); in the
    update the learner calls :meth:`start` with its number of gradient steps and
    :meth:`stepped` after each optimizer step, and :meth:`end` once the update is over (also on
    failure), which restores its thread count.
    """

    def __init__(self, train: Any, acting: Any = None) -> None:
        self.train, self.acting = train, acting
        self.threads = int(train.overlap_tail_threads)
        self._done = threading.Event()
        self._at: int | None = None
        self._restore: int | None = None

    def begin(self) -> None:
        """Learner, before the rollout thread starts the epoch's work."""
        self._done = threading.Event()
        self._at, self._restore = None, None

    def rollout_done(self) -> None:
        """Rollout thread: its epoch's torch ops are all done (or it failed)."""
        self._done.set()

    def start(self, num_steps: int) -> None:
        """Learner, at the start of an update of ``num_steps`` gradient steps (after the
        :class:`~shoal.trainer.acting_refresh.ActingRefresh`'s start, if any: the rollout thread
        can only finish once the weights for its last chunk are published, so the switch waits
        for those steps too)."""
        self._at = tail_step(self.train, num_steps)
        if self._at is not None and self.acting is not None:
            self._at = max(self._at, self.acting.steps[-1])

    def stepped(self, done: int) -> None:
        """Learner, after its ``done``-th optimizer step of the update."""
        if self._at is not None and done == self._at and self._restore is None:
            self._switch()

    def _switch(self) -> None:
        self._done.wait()
        self._restore = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def end(self) -> None:
        """Learner, when the update is over (or failed): its thread count back as it was, and
        its OpenMP workers released (:func:`release_workers`)."""
        if self._restore is not None:
            torch.set_num_threads(self._restore)
            self._restore = None
            release_workers()


def release_workers() -> bool:
    """Lets the calling thread's idle OpenMP workers sleep now (``shoal.trainer._openmp``).

    After a parallel region GNU OpenMP's workers spin-wait for the next one for about 8 ms of a
    core (``benchmarks/learner_floor.py``). After the update's tail that spin held the core the
    rollout thread starts the next epoch on: with it, the tail cost the pipeline 4-11% of its
    steps/s; released, the tail is speed-neutral (0.97-1.02x) and the second core works
    through the update's end (BENCHMARKS.md, "The update's tail on both cores, without the
    spin"). The next parallel region starts the workers again. Returns whether they were
    released (not in a build without OpenMP)."""
    try:
        from . import _openmp
    except ImportError:     # not built (a source tree without build_ext)
        return False
    return bool(_openmp.pause())
