"""Fresher acting weights while the next batch is collected (``train.overlap_chunks``).

With overlap (:mod:`shoal.trainer.fused_rollout`) the rollout thread collects batch k+1 while
the learner trains update k. Acting with the weights from the start of update k for the whole
batch makes every sample one whole update stale when update k+1 trains on it. Instead the
batch's horizon is split into ``C`` chunks of consecutive steps, and chunk ``j`` is acted by
the learner's weights after ``j * n // C`` of the update's ``n`` gradient steps (chunk 0 by the
weights at the start of the update): the learner copies its weights into a snapshot after each
of those steps (a tensor copy per parameter: no export, no wait), and the rollout thread waits
for chunk j's snapshot, exports it to a C policy and collects the chunk with it (one
``vec_rollout`` call per chunk, which continues the env state and the actions the previous
chunk left). The samples' staleness falls from ``n`` gradient steps to ``n (C + 1) / (2 C)`` on
average (4.5 of 8 for breakout's shipped settings).

Which weights act on which step is fixed by the schedule (``C``, ``n``, ``T``), never by
timing: a chunk waits for its snapshot, and a snapshot is the learner's weights after a fixed
number of steps, so a run is the same under a seed whatever the threads do. Each sample stores
the log-prob of the policy that acted it, so the learner-side correction (the collector ratio
of :mod:`shoal.trainer.stale_batch`) reads the right behaviour policy with no change. The
learner never waits for the rollout thread on account of the chunks: it only publishes; the
rollout thread anchors the update's minibatches (:class:`~shoal.trainer.stale_batch.
PipelinedAnchor`) before its first chunk, so those stay ahead of the learner, and its chunks
then follow the learner's steps (chunk j can start once step ``j n / C`` is done and the last
one runs beside the update's last ``n / C`` steps).

Only where that is sane (:func:`refresh_chunks`): feedforward policies (a recurrent policy's
carried state would mix chunks of different weights, and the LSTM sanity env's late learning
is sensitive to how its stale batches are handled, see
:func:`~shoal.trainer.stale_batch.pipelined_anchoring`); a recurrent policy acts the whole
batch with the weights from the start of the update, as ``overlap_chunks = 1`` does. An update
that stops early (``target_kl``) after d steps hands the weights it ended with to the chunks
of later steps: d is fixed by the run's numbers, not by timing.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Callable

import torch

__all__ = ["refresh_chunks", "head_steps", "ActingRefresh", "HEAD_SHARE"]


#: the share of the horizon the rollout thread collects before the update draws its schedule
#: (:func:`head_steps`)
HEAD_SHARE = 8


def head_steps(train: Any, horizon: int) -> int:
    """How many of the next batch's first steps the rollout thread collects before the update
    has drawn its schedule (:class:`~shoal.trainer.fused_rollout.FusedRollout`): it would
    otherwise wait for the schedule, idle, while the learner prepares the update. The first
    ``horizon // HEAD_SHARE`` steps (8 of breakout's 64: ~3 ms of collection, about what the
    learner spends before its first minibatch), kept within the first chunk, which the
    weights from the start of the update act whatever the update's number of steps. A segment
    collected in two calls is the segment one call collects, so this changes no number."""
    chunks = max(1, min(int(train.overlap_chunks), horizon))
    return min(horizon // HEAD_SHARE, horizon // chunks)


def refresh_chunks(train: Any, storage: Any, num_steps: int) -> int:
    """How many chunks the next batch is collected in, for an update of ``num_steps`` gradient
    steps with these settings (a :class:`~shoal.trainer.config.TrainConfig`) and a rollout
    storage like ``storage``: ``train.overlap_chunks`` capped by the horizon and ``num_steps``,
    and 1 (no refresh) for a recurrent policy (module docstring)."""
    if storage.state0 is not None:
        return 1
    return max(1, min(int(train.overlap_chunks), storage.T, num_steps))


class ActingRefresh:
    """The chunk schedule of one overlapped epoch, shared by the learner and the rollout thread.

    The learner calls :meth:`begin` before handing the collection to the rollout thread, then
    (in the update) :meth:`start` with its number of gradient steps, :meth:`stepped` after each
    optimizer step and :meth:`finish` after the last, and :meth:`stop` when the update ends or
    fails. The rollout thread calls :meth:`collect`. The snapshots (copies of the policy) are
    kept for the run.
    """

    def __init__(self, policy: torch.nn.Module, obs_dtype: Any) -> None:
        self.policy, self.obs_dtype = policy, obs_dtype
        self._snapshots: list[torch.nn.Module] = []
        self._sources: list[torch.Tensor] = []
        self._targets: list[list[torch.Tensor]] = []
        self.train: Any = None
        self.storage: Any = None
        self.chunks = 1
        self.bounds: list[tuple[int, int]] = []    # each chunk's steps, first..last (1-based)
        self.steps: list[int] = []                 # each chunk's gradient steps of the update
        self._ready: list[threading.Event] = []
        self._published: list[bool] = []
        self._planned = threading.Event()

    def begin(self, train: Any, storage: Any) -> None:
        """Learner, before the rollout thread starts collecting into ``storage`` (the
        :class:`~shoal.trainer.ppo.RolloutStorage` of the next batch) with settings ``train``."""
        self.train, self.storage = train, storage
        self.chunks, self.bounds, self.steps = 1, [(1, storage.T)], [0]
        self._ready, self._published = [], []
        self._planned = threading.Event()

    def start(self, num_steps: int) -> None:
        """Learner, at the start of the update (``num_steps`` gradient steps): fixes the
        chunks."""
        C = refresh_chunks(self.train, self.storage, num_steps)
        T = self.storage.T
        self.chunks = C
        self.bounds = [(1 + j * T // C, (j + 1) * T // C) for j in range(C)]
        self.steps = [j * num_steps // C for j in range(C)]
        while len(self._snapshots) < C - 1:
            self._snapshots.append(copy.deepcopy(self.policy).requires_grad_(False))
        # the tensors each copy reads and writes (the policy's are updated in place)
        self._sources = list(self.policy.parameters()) + list(self.policy.buffers())
        self._targets = [list(s.parameters()) + list(s.buffers()) for s in self._snapshots]
        self._ready = [threading.Event() for _ in range(C)]
        self._published = [False] * C
        self._published[0] = True
        self._ready[0].set()            # chunk 0: the weights from the start of the update
        self._planned.set()

    def stepped(self, done: int) -> None:
        """Learner, after its ``done``-th optimizer step of the update: publishes the weights
        for the chunk acted by them (if any)."""
        for j in range(1, self.chunks):
            if self.steps[j] == done:
                self._publish(j)

    def finish(self) -> None:
        """Learner, after the update's last gradient step (before anything else changes the
        weights): the chunks whose steps never came (the update stopped early on
        ``target_kl``) are acted by the weights it ended with."""
        for j in range(1, self.chunks):
            if not self._published[j]:
                self._publish(j)

    def _publish(self, j: int) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._targets[j - 1], self._sources)
        self._published[j] = True
        self._ready[j].set()

    def stop(self) -> None:
        """Learner, when the update ends (or fails): releases the rollout thread; a chunk whose
        weights were not published is not collected (the epoch failed)."""
        self._planned.set()
        for event in self._ready:
            event.set()

    def collect(self, call: Callable[[int, int, Any], float], first_capsule: Any,
                collected: int = 0) -> float:
        """Rollout thread: collects the batch chunk by chunk, ``call(first_step, last_step,
        capsule)`` running the C rollout of steps ``first_step..last_step`` with a C policy;
        ``first_capsule`` is the C policy of the weights from the start of the update. Steps
        ``1..collected`` (within the first chunk: :func:`head_steps`) were already collected
        with it. Returns the seconds spent stepping envs."""
        self._planned.wait()
        if not self._ready:     # stopped before start()
            raise RuntimeError("the update ended before the next batch's collection was planned")
        from ..net import _net
        from ..net.export import export_policy

        if collected > self.bounds[0][1]:
            raise RuntimeError(f"steps 1..{collected} were collected before the update, but "
                               f"the first chunk ends at step {self.bounds[0][1]}")
        env_seconds = 0.0
        for j, (first, last) in enumerate(self.bounds):
            if j == 0:
                first = collected + 1
                if first > last:
                    continue
            self._ready[j].wait()
            if not self._published[j]:
                raise RuntimeError(f"the update ended before gradient step {self.steps[j]}, "
                                   f"whose weights act chunk {j} of the next batch")
            capsule = first_capsule
            if j:
                net = _net.Net(export_policy(self._snapshots[j - 1], self.obs_dtype))
                capsule = net.capsule()
            env_seconds += call(first, last, capsule)
        return env_seconds
