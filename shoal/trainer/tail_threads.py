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
the threads raced.

Which updates take the tail (``overlap_tail_when``):

- ``free_core`` (the default): those in which the rollout thread had its core to itself while
  it collected (its CPU time at least :data:`FREE_CORE_SHARE` of its collection's wall-clock).
  Each of a tail step's some thirty parallel regions waits for both threads, so with another
  process on the other core every region waits for a time slice: two breakout runs at once
  with the tail in every update took 7.4-8.1x one run's wall-clock, 1.5-1.65x without it
  (``benchmarks/runs_at_once.py``). Whether an update takes the tail then depends on the load,
  so it is taken only where it cannot change the numbers: where one gradient step on the run's
  minibatches computes the same bits (loss and weights after the optimizer step) on the tail's
  threads as on one (:func:`steps_alike`, once per run and minibatch size, on copies of the
  weights and optimizer). Where it does not (a product split over two threads rounding
  differently on some machine), the tail stays off and the run is the one-thread run.
- ``always``: every update, by the schedule; the numbers may differ in the last bits from a
  run without the tail, and a run under one setting is the same under a seed whatever the
  threads do, and resumes exactly.

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

import contextlib
import copy
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["tail_step", "TailThreads", "steps_alike", "release_workers", "FREE_CORE_SHARE"]

# The rollout thread's CPU time over its collection's wall-clock at or above which its core
# counts as its own (overlap_tail_when = free_core). Breakout's pipeline on the 2-core AMD EPYC
# of BENCHMARKS.md, 5th-95th percentiles: 0.94-1.00 alone, 0.45-0.56 beside a second run
# (benchmarks/pipeline_profile.py --tail-rounds; BENCHMARKS.md, "The tail where the core is
# free").
FREE_CORE_SHARE = 0.8


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
    work, which runs its collection inside :meth:`collecting` and calls :meth:`rollout_done`
    once it has run its last torch op (or failed); in the update the learner calls
    :meth:`start` with its number of gradient steps and :meth:`stepped` after each optimizer
    step, and :meth:`end` once the update is over (also on failure), which restores its thread
    count.

    ``step_alike(minibatch, threads)`` says whether a gradient step on ``minibatch`` computes
    the same bits on ``threads`` torch threads as on the learner's own (:func:`steps_alike`
    with the run's trainer); with ``overlap_tail_when = free_core`` and none, the tail is never
    taken. Counted: ``taken`` updates with the tail, and without it ``busy`` (the rollout
    thread did not have its core to itself) and ``rounding`` (the threads compute other bits).
    """

    def __init__(self, train: Any, acting: Any = None,
                 step_alike: Callable[[Any, int], bool] | None = None) -> None:
        self.train, self.acting = train, acting
        self.threads = int(train.overlap_tail_threads)
        self.guarded = train.overlap_tail_when == "free_core"
        self.step_alike = step_alike
        self._alike: dict[int, bool] = {}       # a minibatch's rows -> the same bits
        self._done = threading.Event()
        self._at: int | None = None
        self._restore: int | None = None
        self._collected = [0.0, 0.0]            # this epoch's collection: CPU, wall seconds
        self.taken = self.busy = self.rounding = 0
        self._note: str | None = None

    def begin(self) -> None:
        """Learner, before the rollout thread starts the epoch's work."""
        self._done = threading.Event()
        self._at, self._restore = None, None
        self._collected = [0.0, 0.0]

    @contextlib.contextmanager
    def collecting(self) -> Iterator[None]:
        """Rollout thread, around a collection call: its CPU time and wall-clock count towards
        :meth:`core_share`."""
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self._collected[0] += time.thread_time() - cpu
            self._collected[1] += time.perf_counter() - wall

    def core_share(self) -> float:
        """The rollout thread's CPU time over its collection's wall-clock this epoch (1 before
        it collected anything): well below 1 where another thread held its core."""
        cpu, wall = self._collected
        return cpu / wall if wall > 0 else 1.0

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

    def stepped(self, done: int, following: Any = None) -> None:
        """Learner, after its ``done``-th optimizer step of the update; ``following`` is the
        minibatch of its next step (None after the last: no tail to run)."""
        if self._at is not None and done == self._at and self._restore is None \
                and following is not None:
            self._switch(following)

    def _switch(self, following: Any) -> None:
        self._done.wait()
        if self.guarded:
            # (the bits first: checked once, at the run's first tail whatever the load)
            if not self._same_bits(following):
                self.rounding += 1
                return
            if self.core_share() < FREE_CORE_SHARE:
                self.busy += 1
                return
        self._restore = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        self.taken += 1

    def _same_bits(self, minibatch: Any) -> bool:
        rows = len(minibatch.idx)
        if rows not in self._alike:
            self._alike[rows] = (self.step_alike is not None
                                 and self.step_alike(minibatch, self.threads))
            if not self._alike[rows]:
                why = ("a compiled policy (train.compile) is not checked" if self.train.compile
                       else f"a gradient step on {self.threads} threads computes other bits "
                            f"than on one on this machine")
                self._note = (f"note: the update's tail stays on one torch thread: {why}, and "
                              f"train.overlap_tail_when = free_core takes the tail only where it "
                              f"cannot change the numbers (--train.overlap-tail-when always "
                              f"takes it in every update)")
        return self._alike[rows]

    def take_note(self) -> str | None:
        """Once: why the tail is not taken, where its threads compute other bits."""
        note, self._note = self._note, None
        return note

    def counts(self) -> dict[str, int]:
        """This session's updates: with the tail, and without it for a busy core or for other
        bits (the run summary's ``tail_updates``)."""
        return {"taken": self.taken, "core_busy": self.busy, "other_bits": self.rounding}

    def end(self) -> None:
        """Learner, when the update is over (or failed): its thread count back as it was, and
        its OpenMP workers released (:func:`release_workers`)."""
        if self._restore is not None:
            torch.set_num_threads(self._restore)
            self._restore = None
            release_workers()


def steps_alike(trainer: Any, minibatch: Any, threads: int) -> bool:
    """Whether one gradient step of ``trainer`` (a :class:`~shoal.trainer.ppo.Trainer`) on
    ``minibatch`` computes the same bits on ``threads`` torch threads as on the current count:
    the loss, and every weight after gradient clipping and the optimizer step. Run on copies of
    the policy and optimizer (the run's own are untouched), while no other thread runs torch
    ops. A compiled policy (``train.compile``) counts as not alike: its generated loops split
    reductions by the thread count, which the eager copy would not show."""
    from .optim import clip_grad_norm
    from .ppo import ppo_loss

    t = trainer.config.train
    if t.compile:
        return False
    own = torch.get_num_threads()
    after: list[list[torch.Tensor]] = []
    try:
        for n in (own, threads):
            torch.set_num_threads(n)
            try:
                policy, optimizer = copy.deepcopy((trainer.policy, trainer.optimizer))
            except Exception as exc:
                raise RuntimeError(
                    "the update's tail (train.overlap_tail_when = free_core) checks its "
                    "gradient step on copies of the policy and optimizer, and these cannot be "
                    f"copied ({type(exc).__name__}: {exc}); pass --train.overlap-tail-when "
                    "always, or --train.overlap-tail-threads 0") from exc
            loss, _, _ = ppo_loss(policy, trainer.distribution, minibatch, t, policy,
                                  trainer.dist)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.max_grad_norm > 0:
                clip_grad_norm([p for p in policy.parameters() if p.grad is not None],
                               t.max_grad_norm)
            optimizer.step()
            after.append([loss.detach(), *(p.detach() for p in policy.parameters())])
    finally:
        torch.set_num_threads(own)
        release_workers()
    return all(torch.equal(a, b) for a, b in zip(*after))


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
