"""The fused rollout: C envs stepped and the policy run in C, a whole segment per call.

With ``train.rollout = "fused"`` the trainer collects each ``[S, T]`` batch with one call into
the env's C module (``vec_rollout``, shoal/envs/vec_rollout.h): for every step, env step ->
rewards/terminals/truncations -> truncation bootstrap -> the policy (``shoal_net.h``, exported
from the torch policy at the start of each rollout) -> sampled action, all without Python and
with the GIL released, the envs split over ``train.rollout_threads`` threads. It writes the
same storage the torch rollout (:meth:`Trainer.rollout <shoal.trainer.ppo.Trainer.rollout>`)
writes, slot for slot.

Sampling draws from a per-agent RNG (:class:`AgentRng`, the SplitMix64 streams of
``shoal_net.h``). ``train.action_rng = "agent"`` makes the torch rollout draw from the same
streams (:func:`shoal.net.runtime.sample_from_uniforms`), so both paths take the same actions
under a seed and fill the same storage (up to float32 rounding of log-probs and values).

The C policy acts in float32 whatever ``train.precision`` is; with ``"bfloat16"`` only the
learner (replay, backward, the anchoring of a stale batch) runs in bfloat16, and the stored
log-probs differ from its own by that rounding too (docs/train.md, "Precision").

Reward scaling (``train.norm_reward``) divides the raw rewards before a truncated step's
``gamma * V(final observation)`` is added, so with it on the C call stores raw rewards and
writes that term into a separate ``[S, T]`` buffer; :meth:`FusedRollout._scale_rewards` then
runs the trainer's :class:`~shoal.trainer.normalize.ReturnScaler` over the segment's steps in
the torch rollout's order (step by step, env group by env group:
:meth:`~shoal.trainer.normalize.ReturnScaler.scale_segment_`) and adds the term: the same
arithmetic on the same numbers, so the scaled rewards and the scaler's statistics are the torch
rollout's bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import torch

from ..vector.cores import usable_cores
from .acting_refresh import ActingRefresh, head_steps
from .config import ConfigError, fused_device_error, torch_path_flags
from .pipeline import Arrivals, RowRanges
from .stale_batch import PipelinedAnchor, anchor_at_learner, pipelined_anchoring
from .tail_threads import TailThreads, steps_alike, tail_step

__all__ = ["AgentRng", "FusedRollout", "fused_unavailable_reason", "usable_cores"]


class AgentRng:
    """One RNG stream per agent row (``shoal_net.h``'s SplitMix64), seeded by ``seed``."""

    def __init__(self, num_agents: int, seed: int) -> None:
        from ..net.runtime import agent_rng

        self.states = agent_rng(num_agents, seed)

    def uniforms(self, rows: slice, k: int) -> torch.Tensor:
        """The next ``k`` uniforms of each row in ``rows``, ``[rows, k]`` (advances them)."""
        from ..net.runtime import agent_uniforms

        view = self.states[rows]
        out = agent_uniforms(view, k)     # advances the view's states in place
        return torch.from_numpy(out)

    def state(self) -> torch.Tensor:
        """The states as an int64 tensor (for checkpoints)."""
        return torch.from_numpy(self.states.view(np.int64).copy())

    def load(self, state: torch.Tensor) -> None:
        self.states[:] = state.numpy().view(np.uint64)


#: the most threads one ``vec_rollout`` call runs (shoal/envs/vec_rollout.h's limit)
MAX_ROLLOUT_THREADS = 256


def fused_unavailable_reason(trainer: Any) -> str | None:
    """Why the fused rollout cannot run for this trainer (None when it can)."""
    from ..net.export import export_policy
    from ..vector.native import NativeVecEnv

    t = trainer.config.train
    if not isinstance(trainer.env, NativeVecEnv):
        return ("train.rollout='fused' needs a shoal C env on the serial or threads backend "
                f"(got {type(trainer.env).__name__}); use the torch rollout for Python envs "
                f"and the processes backend ({torch_path_flags(t)})")
    if trainer.device.type != "cpu":
        return fused_device_error(trainer.device, t)
    try:
        export_policy(trainer.policy, trainer.env.observations.dtype)
    except ValueError as exc:
        return (f"train.rollout='fused' cannot run this policy in C: {exc} (the torch "
                f"rollout: {torch_path_flags(t)})")
    return None


class FusedRollout:
    """Collects rollouts for ``trainer`` with the env module's ``vec_rollout``."""

    def __init__(self, trainer: Any) -> None:
        reason = fused_unavailable_reason(trainer)
        if reason is not None:
            raise ConfigError(reason)
        t = trainer.config.train
        self.trainer = trainer
        self.overlap = bool(t.overlap)
        self.pipeline = bool(t.pipeline) and not trainer.pipeline_note  # (where it applies)
        cores = min(usable_cores(), MAX_ROLLOUT_THREADS)
        if t.rollout_threads > MAX_ROLLOUT_THREADS:
            raise ConfigError(f"train.rollout_threads={t.rollout_threads}: the fused rollout runs "
                              f"at most {MAX_ROLLOUT_THREADS} threads; pass at most that, or 0 "
                              f"(one per core)")
        if t.rollout_threads:
            self.threads = t.rollout_threads
        elif self.overlap:   # the learner's threads (each with its torch threads) run meanwhile
            learner = (t.torch_threads or torch.get_num_threads()) * t.learner_threads
            self.threads = max(1, cores - learner)
        else:
            self.threads = cores
        self._net: Any = None
        # overlap: the C policy of the weights an update ended with, exported while the rollout
        # thread finishes its batch, and the weights' identity then (_weights_key)
        self._next_net: tuple[tuple[tuple[int, int], ...], Any] | None = None
        # overlap: a batch collected into trainer.storage and not trained on yet, its episode
        # stats, and the second storage the next batch is collected into
        self.pending = False
        self.pending_stats: dict[str, float] = {}
        self.spare = copy.deepcopy(trainer.storage) if self.overlap else None
        self._anchor_policy: torch.nn.Module | None = None   # overlap: _weights_before_update
        self._worker: ThreadPoolExecutor | None = None       # overlap: the rollout thread
        # overlap: the acting weights refreshed chunk by chunk during collection
        self.acting = (ActingRefresh(trainer.policy, trainer.env.observations.dtype)
                       if self.overlap else None)
        # overlap_tail_threads: the update's last steps on more torch threads once the rollout
        # thread is done (tail_threads.py), where the update overlaps a rollout thread (overlap,
        # or the pipeline where it applies), the learner has one thread of shards, and the
        # process is not one rank of several (ranks on one machine share its cores)
        self.tail = (TailThreads(t, self.acting, functools.partial(steps_alike, trainer))
                     if tail_step(t, 1) is not None and (self.overlap or self.pipeline)
                     and t.learner_threads == 1 and trainer.dist.world_size == 1 else None)
        # train.norm_reward: each truncated step's gamma * V(final obs), kept out of the stored
        # rewards until they are scaled (one buffer: one vec_rollout call runs at a time)
        self.bootstrap = (torch.empty(trainer.S, trainer.T, dtype=torch.float32)
                          if t.norm_reward else None)

    def _export(self) -> Any:
        from ..net import _net
        from ..net.export import export_policy

        tr = self.trainer
        return _net.Net(export_policy(tr.policy, tr.env.observations.dtype))

    def _weights_key(self) -> tuple[tuple[int, int], ...]:
        """Which tensors the policy holds and how often each was written in place: equal keys,
        equal weights."""
        policy = self.trainer.policy
        return tuple((id(x), x._version)
                     for x in (*policy.parameters(), *policy.buffers()))

    def _refresh(self) -> Any:
        """The C policy of the trainer's current weights (exported again every rollout: the
        update changed them; with overlap, already at the end of the update when nothing wrote
        the weights since)."""
        ahead, self._next_net = self._next_net, None
        if ahead is not None and ahead[0] == self._weights_key():
            self._net = ahead[1]
        else:
            self._net = self._export()
        return self._net.capsule()

    def _export_ahead(self) -> None:
        """Overlap, at the end of an update, while the rollout thread finishes its batch: the
        next epoch's C policy (the export holds the interpreter, but the rollout thread is in
        C by then, and the epoch's serial part between batches gets ~0.6 ms shorter)."""
        self._next_net = (self._weights_key(), self._export())

    def _call(self, first_step: int, storage: Any = None, capsule: Any = None,
              last_step: int | None = None, envs: tuple[int, int] | None = None,
              threads: int | None = None) -> float:
        """Runs steps ``first_step..last_step`` (default T; ``first_step`` 0: acting into slot
        0 only) of the segment in ``storage`` (default the trainer's) with the C policy
        ``capsule`` (default the trainer's current weights), for the envs ``[lo, hi)`` of
        ``envs`` (default all) on ``threads`` threads (default :attr:`threads`)."""
        tr = self.trainer
        b, env = (tr.storage if storage is None else storage), tr.env
        state = tr.state

        def arr(x: torch.Tensor | None) -> Any:
            return None if x is None else x.numpy()

        h, c = (None, None) if state is None else (state[0], state[1])
        h0, c0 = (None, None) if b.state0 is None else b.state0
        h0n, c0n = (None, None) if b.state0_next is None else b.state0_next
        bootstrap = self.bootstrap if first_step else None
        last = (tr.T if first_step else 0) if last_step is None else last_step
        lo, hi = (0, env.num_envs) if envs is None else envs
        if bootstrap is not None and (lo, hi) != (0, env.num_envs):
            raise ValueError("train.norm_reward scales a segment's rewards over every env in "
                             "step order: collect it in one call, not by env ranges")
        env_seconds = env._c.vec_rollout(
            env._h, self._refresh() if capsule is None else capsule, first_step, tr.T,
            float(tr.config.train.gamma), self.threads if threads is None else threads,
            arr(b.obs), arr(b.actions), arr(b.logprobs), arr(b.values),
            arr(b.starts), arr(b.masks), arr(b.rewards), arr(b.dones), arr(h), arr(c), arr(h0),
            arr(c0), arr(h0n), arr(c0n), tr.agent_rng.states, env.masks,
            None if tr.env_action_masks is None else b.action_masks.numpy(), arr(bootstrap), last,
            lo, hi)
        if bootstrap is not None and last == tr.T:    # the whole segment is in
            self._scale_rewards(b, bootstrap)
        return env_seconds

    @staticmethod
    def _collecting(tail: TailThreads | None) -> Any:
        """Around the rollout thread's collection calls: timed for the tail's free-core test
        (tail_threads.py)."""
        return contextlib.nullcontext() if tail is None else tail.collecting()

    def _scale_rewards(self, b: Any, bootstrap: torch.Tensor) -> None:
        """Scales the raw rewards of ``b`` (slots 1..T just collected) as the torch rollout does
        step by step, then adds the truncation bootstrap term ``bootstrap`` (``-0.0`` where
        there is none, which leaves a reward as it is)."""
        tr = self.trainer
        # the steps of slots 0..T-1 (the agents live when they acted), group by group
        tr.reward_scaler.scale_segment_(b.rewards, b.dones, b.masks[:, :tr.T], tr.groups)
        b.rewards.add_(bootstrap)

    def act_first(self) -> None:
        """After a reset: the policy acts into slot 0 (``starts[:, 0]`` already set)."""
        self._call(0)

    def rollout(self) -> tuple[dict[str, float], float]:
        """Fills slots 1..T; returns (episode stats, seconds spent stepping envs)."""
        env_seconds = self._call(1)
        return self.trainer.env.log(), env_seconds

    # ---- pipeline: the learner trains on the first rows while the rest are collected ----

    def pipelined_epoch(self) -> tuple[dict[str, float], dict[str, float], float, float]:
        """One synchronous epoch (``train.pipeline``) with the rollout and the update overlapped:
        returns (episode stats of the batch, losses, rollout seconds the update waited for,
        update seconds).

        The batch is collected with the weights the last update ended with, as the synchronous
        path collects it, but env range by env range (the rows of minibatch 0, 1, ... of
        ``minibatches = "ranges"``: :mod:`~shoal.trainer.pipeline`). The first range is
        collected on every core, since the learner cannot start before it is in; then a thread
        collects the others in order while the learner trains on each as soon as it is in. The
        storage, and so the update, are those of one call over all envs."""
        tr = self.trainer
        t0 = time.perf_counter()
        ape = tr.env.agents_per_env
        capsule = self._refresh()
        arrivals = Arrivals()
        ranges = RowRanges(tr.storage, tr.segments, tr.config.train, arrivals, tr.device)
        envs = [(lo // ape, hi // ape) for lo, hi in ranges.bounds]    # whole envs (_setup)

        def landed(count: int) -> None:   # (the episodes of the batch come with its last range)
            arrivals.arrived(count, tr.env.log() if count == len(envs) else None)

        tr._env_time += self._call(1, capsule=capsule, envs=envs[0])
        landed(1)
        rollout_time = time.perf_counter() - t0
        # the learner's torch threads work meanwhile: the rest of the cores collect
        learner = tr.config.train.torch_threads or torch.get_num_threads()
        threads = max(1, self.threads - learner)
        tail = self.tail     # overlap_tail_threads: the update's last steps on more threads
        if tail is not None:
            tail.begin()

        def collect() -> None:
            try:
                for k in range(1, len(envs)):
                    with self._collecting(tail):
                        self._call(1, capsule=capsule, envs=envs[k], threads=threads)
                    ranges.prepare(k, gather=True)  # its advantages and first minibatch
                    landed(k + 1)
            except BaseException as exc:  # re-raised on the training thread
                arrivals.fail(exc)
                raise
            finally:
                if tail is not None:
                    tail.rollout_done()

        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="shoal-fused-rollout")
        worker = self._worker.submit(collect)
        t1 = time.perf_counter()
        try:
            losses = tr.update(None, tail=tail, ranges=ranges)
        finally:
            wait([worker])
            if tail is not None:
                tail.end()
        worker.result()     # (the update raised already if a range it read never came)
        tr.storage.shift()
        episodes = losses.pop("episodes")   # (merged over the ranks of a torchrun job)
        return episodes, losses, rollout_time, time.perf_counter() - t1

    # ---- overlap: the next rollout runs while the learner trains ----

    def overlapped_epoch(self) -> tuple[dict[str, float], dict[str, float], float, float]:
        """One epoch with the next batch collected during the update: returns (episode stats
        of the batch trained on, losses, rollout seconds not hidden by the update, update
        seconds).

        The batch in ``trainer.storage`` (collected first, synchronously, at the start of a
        run) is trained on while a thread runs the fused rollout of the next batch into the
        second storage, with the weights from before this update (or, ``train.overlap_chunks``
        > 1, chunk by chunk with the weights after fixed numbers of its gradient steps:
        :mod:`~shoal.trainer.acting_refresh`): which weights act which step is fixed by this
        schedule and not by timing, so a run is the same under a seed whatever the threads
        do. The update is anchored at the learner's policy and values
        (:func:`~shoal.trainer.stale_batch.anchor_at_learner`). The next batch
        continues from this one's slot T (the carry :meth:`RolloutStorage.shift` does in the
        synchronous path); the storages are swapped at the end.
        """
        tr = self.trainer
        t0 = time.perf_counter()
        if not self.pending:
            self.pending_stats, env_seconds = self.rollout()
            tr._env_time += env_seconds
        stats = self.pending_stats
        current, nxt = tr.storage, self.spare
        for name in current.CARRIED:
            getattr(nxt, name)[:, 0].copy_(getattr(current, name)[:, tr.T])
        if current.state0 is not None:
            for dst, src in zip(nxt.state0, current.state0_next):
                dst.copy_(src)
        capsule = self._refresh()           # the weights before this update
        # the batch was collected one update ago (the run's first one by these same weights,
        # up to float rounding): the update is anchored at the learner's policy and values, the
        # collector's actions importance-weighted (stale_batch.py); where the schedule allows,
        # the rollout thread anchors the minibatches ahead of the learner, with a copy of the
        # weights before this update (it never reads the learner's torch weights)
        precision = tr.config.train.precision
        anchor = (PipelinedAnchor(self._weights_before_update(), tr.distribution, current,
                                  precision)
                  if pipelined_anchoring(tr.config.train, current) else None)
        result: dict[str, Any] = {}
        # the next batch's chunks are acted by the learner's weights after fixed numbers of the
        # update's steps (acting_refresh.py); the anchoring goes first, to stay ahead of the
        # learner, and the chunks then follow the learner's steps
        acting = self.acting
        acting.begin(tr.config.train, nxt)
        tail = self.tail
        if tail is not None:
            tail.begin()

        # the first steps are collected before the update's schedule is drawn (that would
        # leave this thread idle while the learner prepares the update)
        head = head_steps(tr.config.train, tr.T)

        def collect() -> None:
            try:
                with self._collecting(tail):
                    env_seconds = self._call(1, nxt, capsule, head) if head else 0.0
                if anchor is not None:
                    anchor.work_ahead()
                    anchor.work_rest()

                def chunk(first: int, last: int, net: Any) -> float:
                    with self._collecting(tail):
                        return self._call(first, nxt, net, last)
                result["env_seconds"] = env_seconds + acting.collect(chunk, capsule, head)
            except BaseException as exc:  # re-raised on the training thread
                if anchor is not None:
                    anchor.fail(exc)
                result["error"] = exc
            finally:        # its last torch op is done: the learner may change the thread count
                if tail is not None:
                    tail.rollout_done()

        if self._worker is None:    # one thread for the run: a new thread's first torch ops
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="shoal-fused-rollout")
        worker = self._worker.submit(collect)      # (anchoring) cost ms of CPU each time
        rollout_time = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            if anchor is None:
                anchor_at_learner(tr.policy, tr.distribution, current, precision)
            losses = tr.update(stats, anchor, acting, tail)  # stats come merged over ranks
            stats = losses.pop("episodes")
            self._help_collect()
            self._export_ahead()    # (the batch being collected keeps its own C policy)
        finally:
            if anchor is not None:
                anchor.stop()
            acting.stop()
            wait([worker])
            if tail is not None:    # before the next epoch hands the rollout thread torch ops
                tail.end()
        learn_time = time.perf_counter() - t1
        if "error" in result:
            raise result["error"]
        # the env stepping of the background rollout is hidden by the update: not counted
        self.pending_stats = tr.env.log()
        tr.storage, self.spare = nxt, current
        self.pending = True
        return stats, losses, rollout_time, learn_time

    def _help_collect(self) -> int:
        """Learner, its update done: if the rollout thread is still collecting the next batch,
        runs the blocks of envs its call has not taken yet (``vec_rollout_help``,
        shoal/envs/vec_rollout.h) instead of waiting for them, and returns how many it ran. The
        storage ends the same whichever thread steps which block, so this changes when the
        batch is in, never what it holds."""
        env = self.trainer.env
        return env._c.vec_rollout_help(env._h)

    def close(self) -> None:
        """Ends the rollout thread (overlap); safe to call twice."""
        if self._worker is not None:
            if self.acting is not None:     # no chunk waits for weights that will not come
                self.acting.stop()
            self._worker.shutdown(wait=True)
            self._worker = None

    def _weights_before_update(self) -> torch.nn.Module:
        """A copy of the learner's policy with its current weights (and buffers), which the
        update does not change: the rollout thread anchors the stale batch with it."""
        policy = self.trainer.policy
        if self._anchor_policy is None:
            self._anchor_policy = copy.deepcopy(policy).requires_grad_(False)
        # one copy per tensor (the learner's time: load_state_dict's bookkeeping costs more)
        with torch.no_grad():
            torch._foreach_copy_(
                list(self._anchor_policy.parameters()) + list(self._anchor_policy.buffers()),
                list(policy.parameters()) + list(policy.buffers()))
        return self._anchor_policy

    def state_dict(self) -> dict[str, Any] | None:
        """With overlap, the batch collected and not yet trained on (the whole storage) and its
        episode stats, for exact resume; None otherwise."""
        if not (self.overlap and self.pending):
            return None
        b = self.trainer.storage
        names = ("obs", "actions", "logprobs", "values", "starts", "masks", "action_masks",
                 "rewards", "dones")
        out: dict[str, Any] = {n: getattr(b, n).detach().clone() for n in names}
        out["state0"] = None if b.state0 is None else [s.clone() for s in b.state0]
        out["state0_next"] = None if b.state0_next is None else [s.clone() for s in b.state0_next]
        out["stats"] = dict(self.pending_stats)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`'s batch. Without overlap (a run resumed with
        ``train.overlap = false``) the batch is not trained on: the env stopped at its end, so
        its slot T becomes slot 0, as the synchronous path carries a batch into the next."""
        b = self.trainer.storage
        for name, value in state.items():
            if name in ("state0", "state0_next"):
                if value is not None:
                    for dst, src in zip(getattr(b, name), value):
                        dst.copy_(src)
            elif name != "stats":
                getattr(b, name).copy_(value)
        if not self.overlap:
            b.shift()
            return
        self.pending_stats = {k: float(v) for k, v in state["stats"].items()}
        self.pending = True
