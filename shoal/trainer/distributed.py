"""Data-parallel PPO on ``torch.distributed``: one trainer process per rank, launched by torchrun.

    torchrun --nproc-per-node 2 -m shoal train breakout
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 2 --rdzv-endpoint HOST:PORT
        -m shoal train breakout        # and --node-rank 1 on the second machine

Every rank runs the same :class:`~shoal.trainer.ppo.Trainer` loop on its own envs; a
:class:`Collective` is the only thing that differs between one process and many. With one
process (no torchrun) every method of it is a no-op that returns its input, so ``N = 1`` is the
ordinary single-process trainer, not a separate code path.

What is per rank and what is global (config values are per rank, as with DistributedDataParallel):

* ``env.num_envs``, ``train.minibatch_size``: each rank's; the job's batch and minibatch are N
  times a rank's. ``train.total_steps`` counts the agent steps of the whole job.
* Envs and the action/segment samplers are seeded by rank; the model starts from rank 0's
  weights (broadcast), so every rank holds the same weights at every step.
One collective per minibatch and one more per epoch, none in the rollout (docs/distributed.md):

* Each minibatch, every rank draws ``minibatch_size / T`` of its own segments by priority and
  the gradients are summed over ranks (one all-reduce of the flattened gradients, in flight
  while the next minibatch is gathered). Loss terms are divided by the job's count of unmasked
  steps, so the summed gradient is exactly the gradient of the one-process loss over the union
  of the ranks' shares; clipping then sees the global gradient norm.
* The job's count, advantage mean and variance (Chan et al.'s pairwise combination of every
  rank's own two-pass moments: as precise as one process's two-pass formula) and the largest
  importance weight come from every rank's :func:`rank_share` of four numbers, combined by
  :func:`job_moments`. The moments are those of the advantage estimates as drawn (not of the
  ones the loss recomputes with the current policy), so they are known before the forward
  pass: the next minibatch is drawn before the gradient all-reduce starts and every rank's
  share rides in it (:meth:`Collective.sum_gradients`); only an epoch's first minibatch needs
  an all-gather of its own (:func:`minibatch_moments`), started before its replay and waited
  for when its loss first needs the moments (:class:`PendingMoments`).
* Prioritised sampling is stratified by rank: segment s of rank r is drawn with probability
  ``P_r(s)`` inside its rank, i.e. ``P_r(s)/N`` over the job. Its importance weight relative to
  uniform sampling over the job's ``N·S`` segments is ``(N·S·P_r(s)/N)^-β = (S·P_r(s))^-β``,
  the same formula as one process; only the normalisation by the minibatch's largest weight
  needs the maximum over ranks (it rides with the moments above).
* The end of an epoch rides in its last gradient all-reduce (:class:`EpochEnd`): every rank's
  loss terms (summed over ranks: each rank's part is already divided by the job's count),
  explained-variance moments (combined as above), episode statistics from ``env.log()``
  (merged weighted by their episode counts) and stop vote (a SIGINT/SIGTERM it received), as
  JSON in its own slot of the buffer, 3 bytes per float32 (exact). All ranks then log the same
  statistics and stop after the same epoch. Only when the update ended without that
  all-reduce (``train.target_kl``) do they take one all-gather of their own, and only with an
  epoch callback (``shoal.train(callback=...)``, which sees the epoch's metrics) one scalar
  all-reduce after it decides whether all ranks stop.

Ranks on one host: when torchrun started every rank of the job on this machine
(``LOCAL_WORLD_SIZE == WORLD_SIZE``), the gradient sums of CPU training go through a
shared-memory segment instead of gloo (:class:`~shoal.trainer.shared_sum.SharedMemorySum`: each
rank copies its buffer into its own slot and publishes a counter, then every rank adds the slots
in rank order; no threads, no sockets, the same bits on every rank). ``SHOAL_DIST_SHM=0`` keeps
them on gloo; every other collective is on gloo either way. A trace (``SHOAL_DIST_TRACE``)
says which way each collective went (``via``).

Waiting: a rank that reaches a CPU collective first polls it for up to ``SHOAL_DIST_SPIN_MS``
milliseconds (default :data:`DEFAULT_SPIN_MS`) before blocking (:func:`spin_seconds`). With
``SHOAL_DIST_PIN=1`` each rank keeps to its own share of the machine's CPUs (:func:`rank_cpus`);
with ``SHOAL_DIST_PIN=trainer`` only its trainer thread does.

Failures: every collective has a timeout (``SHOAL_DIST_TIMEOUT`` seconds, default
:data:`DEFAULT_TIMEOUT_SECONDS`); a rank whose peer died gets an error from the collective at
once (gloo and nccl notice the closed connection) or at the latest after the timeout, and exits
non-zero; torchrun then stops the remaining workers and reports the failed rank. A rank waiting
for a gradient sum in shared memory checks every 20 ms that its peers' processes are alive and
fails the same way, naming the rank that exited. torchrun's agent
process itself killed (``kill -9``: it cannot stop its ranks, which run in sessions of their own)
is noticed by every rank whose parent it was at the end of its epoch (:class:`AgentWatch`): that
rank votes stop, so every rank checkpoints after the same epoch and exits.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import sys
import time
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import torch
import torch.distributed as dist

from . import shared_sum
from .shared_sum import SHM_ENV, SharedMemorySum, shared_memory_setting

__all__ = ["Collective", "CollectiveError", "GradientSum", "connect", "DEFAULT_TIMEOUT_SECONDS",
           "TIMEOUT_ENV", "launched_by_torchrun", "elastic_resume_target", "merge_means",
           "minibatch_moments", "JobMoments", "PendingMoments", "GatheredRows", "rank_share",
           "job_moments", "variance_parts", "combine_parts",
           "explained_from_parts", "epoch_statistics", "EpochEnd", "JobEpoch",
           "EPOCH_END_MARK", "EPOCH_END_CAPACITY", "RANK_SEED_STRIDE", "TRACE_ENV",
           "SPIN_ENV", "DEFAULT_SPIN_MS", "spin_seconds", "PIN_ENV", "pin_setting", "rank_cpus",
           "AgentWatch", "AGENT_EXITED", "torchrun_agent_pid", "SHM_ENV",
           "shared_memory_setting"]

DEFAULT_TIMEOUT_SECONDS = 120.0
TIMEOUT_ENV = "SHOAL_DIST_TIMEOUT"
# A rank waiting in a CPU (gloo) collective polls it, yielding its core, for up to this many
# milliseconds before it blocks: a rank that blocks lets its core go idle, and an idle core (a
# halted vCPU on a virtual machine) takes far longer to wake than the transfer takes when the
# other rank arrives a moment later. 0 blocks at once.
SPIN_ENV = "SHOAL_DIST_SPIN_MS"
DEFAULT_SPIN_MS = 5.0
# "1": each rank of a machine keeps to its own equal share of the CPUs the job may use (its
# threads, gloo's included, and its env workers), so no rank's thread runs on, and preempts,
# another rank's core; "trainer": only the trainer's thread (and threads it starts later) does,
# so it is never moved off its core while gloo's threads may run on any; "0" or unset: the OS
# places the threads (the default)
PIN_ENV = "SHOAL_DIST_PIN"
# a directory: every rank writes there, at the end, one line per collective it ran (what, bytes,
# entry and exit times on the machine's monotonic clock); benchmarks/dist_trace.py reads them
TRACE_ENV = "SHOAL_DIST_TRACE"
# rank r's envs and samplers use seed + r * RANK_SEED_STRIDE (a prime, so the seeds of ranks and
# of resets at later epochs, seed + 1_000_003 * epoch, do not meet for any practical size)
RANK_SEED_STRIDE = 104_729
# summary["stopped_by"] of a run whose ranks stopped because torchrun's agent process exited
AGENT_EXITED = "torchrun exited"


class CollectiveError(RuntimeError):
    """A collective failed: another rank crashed, was killed, or did not arrive in time."""


class GradientSum:
    """A gradient all-reduce in flight (:meth:`Collective.sum_gradients`)."""

    def __init__(self, ranks: "Collective", grads: list[torch.Tensor],
                 bucket: "_FlatBucket | None", work: Any, share: torch.Tensor | None = None,
                 epoch_end: "EpochEnd | None" = None) -> None:
        self._ranks, self._grads, self._bucket, self._work = ranks, grads, bucket, work
        self._share, self._epoch_end = share, epoch_end

    def wait(self) -> JobMoments | None:
        """Returns once the gradients are summed over ranks (written back into them): with a
        ``next_share``, the job's :class:`JobMoments` of the minibatch it described (None
        without one, and in one process). With an ``epoch_end``, that :class:`EpochEnd`'s
        :attr:`~EpochEnd.job` is the job's epoch statistics and stop vote from here on."""
        if self._work is None:
            return None
        work, self._work = self._work, None
        bucket, flat = self._bucket, self._bucket.flat
        what = "gradient all-reduce" if self._epoch_end is None else \
            f"gradient all-reduce {EPOCH_END_MARK}"
        via = "shared memory" if isinstance(work, SharedMemorySum) else None
        try:
            self._ranks._run(what, lambda flat: self._ranks._wait(work, flat), flat, via=via)
            if self._grads:     # one call for every tensor: no Python loop per parameter
                torch._foreach_copy_(self._grads, bucket.grad_views)
            job = None
            offset = bucket.grads_numel
            if self._share is not None:
                size = _slot_size(self._share.numel(), self._ranks.world_size)
                job = _riding_moments(flat[offset:offset + size], self._ranks.world_size,
                                      self._share.shape, self._ranks.rank)
                offset += size
            if self._epoch_end is not None:
                self._epoch_end.read_riding(flat[offset:])
        finally:
            bucket.in_flight = False
        return job


class _FlatBucket:
    """A flat buffer that a gradient all-reduce sums: the gradients (``grad_views``: views of
    it shaped as the gradients, in order), then the slots riding with them. Kept by the
    :class:`Collective` and used again by every later all-reduce of the same layout, so a
    minibatch allocates nothing and copies its gradients in and out with one call each."""

    def __init__(self, shapes: Sequence[torch.Size], extra: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.grads_numel = sum(math.prod(shape) for shape in shapes)
        self.flat = torch.zeros(self.grads_numel + extra, dtype=dtype, device=device)
        self.grad_views: list[torch.Tensor] = []
        offset = 0
        for shape in shapes:
            n = math.prod(shape)
            self.grad_views.append(self.flat[offset:offset + n].view(shape))
            offset += n
        self.in_flight = False
        # the segment its sums go through when every rank is on one host (None: gloo)
        self.shared: SharedMemorySum | None = None


class GatheredRows:
    """An all-gather in flight (:meth:`Collective.start_gather_rows`)."""

    def __init__(self, ranks: "Collective", parts: list[torch.Tensor], tensor: torch.Tensor,
                 work: Any) -> None:
        self._ranks, self._parts, self._tensor, self._work = ranks, parts, tensor, work

    def wait(self) -> torch.Tensor:
        """``[N, *tensor.shape]``, every rank's tensor in rank order, as
        :meth:`Collective.gather_rows` returns it."""
        if self._work is not None:
            work, self._work = self._work, None
            self._ranks._run("all-gather", lambda parts, tensor: self._ranks._wait(work, tensor),
                             self._parts, self._tensor)
        return torch.stack(self._parts)


def _encode_slot(value: torch.Tensor, rank: int, world_size: int,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """A float32 buffer of ``world_size`` slots, ``value`` (float64) in slot ``rank`` as a
    (high, low) float32 pair (~48 significant bits), zeros elsewhere: summed over ranks it holds
    every rank's value exactly (x + 0 = x), in any summation order. Written into ``out`` (of
    :func:`_slot_size` elements) when given."""
    x = value.reshape(-1).double()
    hi = x.float()
    lo = torch.where(torch.isfinite(hi), (x - hi.double()).float(), 0.0)
    if out is None:
        out = torch.zeros(_slot_size(x.numel(), world_size), dtype=torch.float32,
                          device=x.device)
    else:
        out.zero_()
    rows = out.view(world_size, 2, x.numel())
    rows[rank, 0], rows[rank, 1] = hi, lo
    return out


def _slot_size(numel: int, world_size: int) -> int:
    """float32 elements of an :func:`_encode_slot` buffer of ``numel`` values."""
    return world_size * 2 * numel


def _decode_rows(buffer: torch.Tensor, world_size: int, shape: torch.Size) -> torch.Tensor:
    """``[world_size, *shape]`` float64 from a summed :func:`_encode_slot` buffer."""
    pairs = buffer.reshape(world_size, 2, -1).double()
    return (pairs[:, 0] + pairs[:, 1]).reshape(world_size, *shape)


def _riding_moments(buffer: torch.Tensor, world_size: int, shape: torch.Size, rank: int
                    ) -> "JobMoments":
    """The job's :class:`JobMoments` from a summed :func:`_encode_slot` buffer of every rank's
    :func:`rank_share` (``rank``'s own row gives its weight scale). On the CPU the few numbers
    are combined as Python floats (:func:`_job_moments_of`: the same float64 operations as
    :func:`job_moments`, without a dozen tensor operations per minibatch)."""
    if buffer.device.type != "cpu":
        rows = _decode_rows(buffer, world_size, shape)
        return job_moments(rows, rows[rank])
    values = buffer.tolist()
    k = len(values) // (2 * world_size)
    rows_list = [[values[2 * k * r + i] + values[2 * k * r + k + i] for i in range(k)]
                 for r in range(world_size)]
    return _job_moments_of(rows_list, rows_list[rank][3], torch.float32, buffer.device)


def launched_by_torchrun() -> bool:
    """True in a worker started by torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR...)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def torchrun_agent_pid() -> int | None:
    """The pid of torchrun's agent process, this worker's parent, in a worker torchrun started
    (TORCHELASTIC_RUN_ID is set by its agent); None otherwise. Read at start-up: once the agent
    has exited, the worker's parent is some other process (init or a subreaper)."""
    if not launched_by_torchrun() or "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    return os.getppid()


class AgentWatch:
    """A stop request that is also true once torchrun's agent has exited.

    Wraps ``interrupted`` (a :class:`~shoal.trainer.signals.StopRequest`: true once a stop
    signal arrived, ``name`` says which): calling it is true when that is, or when this
    process's parent is no longer ``agent_pid``. torchrun's agent stops its workers when it
    exits on a signal it can handle; killed (SIGKILL, out of memory) it cannot, and its workers,
    in sessions of their own, would run on forever. The trainer calls it at the end of every
    epoch and every rank's answer rides in that epoch's last collective, so all ranks
    checkpoint and stop after the same epoch. The first time it notices, it says so through
    ``announce``; :attr:`name` is then :data:`AGENT_EXITED` (a signal's name wins)."""

    def __init__(self, interrupted: Any, agent_pid: int, rank: int = 0,
                 announce: Any = None) -> None:
        self.interrupted = interrupted
        self.agent_pid = agent_pid
        self.rank = rank
        self.announce = announce or _to_stderr
        self.agent_exited = False

    def __call__(self) -> bool:
        if not self.agent_exited and os.getppid() != self.agent_pid:
            self.agent_exited = True
            self.announce(f"rank {self.rank}: torchrun's agent (pid {self.agent_pid}) exited; "
                          f"stopping after this epoch's checkpoint")
        return bool(self.interrupted()) or self.agent_exited

    @property
    def name(self) -> str | None:
        """The signal that stopped training, else :data:`AGENT_EXITED` once the agent exited,
        else None."""
        return self.interrupted.name or (AGENT_EXITED if self.agent_exited else None)


def _to_stderr(text: str) -> None:
    try:    # one write: the ranks' lines share torchrun's stderr and must not interleave
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):   # no one reads our output any more: stop all the same
        pass


def spin_seconds() -> float:
    """How long a rank polls a CPU collective before blocking: ``SHOAL_DIST_SPIN_MS``
    milliseconds (default 5; 0: block at once)."""
    raw = os.environ.get(SPIN_ENV, "")
    if not raw:
        return DEFAULT_SPIN_MS / 1000.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{SPIN_ENV}={raw!r} is not a number of milliseconds") from None
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{SPIN_ENV}={raw!r} must be a number of milliseconds >= 0")
    return value / 1000.0


def pin_setting() -> str:
    """Which threads of a rank keep to its share of the CPUs (``SHOAL_DIST_PIN``): ``"rank"``
    (``1``: all of them, gloo's included), ``"trainer"`` (the trainer's thread and the threads it
    starts later; gloo's threads run anywhere) or ``""`` (``0`` or unset: the OS places them)."""
    raw = os.environ.get(PIN_ENV, "").strip()
    if raw not in ("", "0", "1", "trainer"):
        raise ValueError(f"{PIN_ENV}={raw!r}: use 1 (each rank keeps to its share of the CPUs), "
                         f"trainer (only its trainer thread does) or 0 (the OS places the "
                         f"threads)")
    return {"1": "rank", "trainer": "trainer"}.get(raw, "")


def rank_cpus(local_rank: int, local_world_size: int, cpus: Iterable[int]) -> list[int] | None:
    """Local rank ``local_rank``'s equal, contiguous share of ``cpus`` (the CPUs the job may
    use, in order) among ``local_world_size`` ranks; None when there are fewer CPUs than
    ranks (then nothing is pinned)."""
    ordered = sorted(cpus)
    per = len(ordered) // max(1, local_world_size)
    if per == 0 or not 0 <= local_rank < local_world_size:
        return None
    return ordered[local_rank * per:(local_rank + 1) * per]


def timeout_seconds() -> float:
    """The collective timeout: ``SHOAL_DIST_TIMEOUT`` seconds, default 120."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return value


class Collective:
    """The ranks a trainer runs with, and the few collectives the trainer needs.

    ``world_size == 1`` (no torchrun): every operation returns its input unchanged and costs
    nothing. ``comm_seconds`` accumulates the wall time spent inside collectives (with nccl the
    launch time only: those run asynchronously on the device).
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 owned: bool = False, object_group: Any = None,
                 agent_pid: int | None = None) -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.owned = owned
        self.object_group = object_group
        self.agent_pid = agent_pid      # torchrun's agent, this process's parent (None: none)
        self.comm_seconds = 0.0
        self._previous_cuda_device: int | None = None
        self.previous_cpus: set[int] | None = None     # set when connect() pinned this rank
        self.trace_dir = (os.environ.get(TRACE_ENV) or None) if world_size > 1 else None
        self.spin_seconds = spin_seconds() if world_size > 1 else 0.0
        self._trace: list[tuple[str, int, float, float, str]] = []
        # sum_gradients' flat buffers, one per layout (gradient shapes, riding slots), kept
        self._buckets: dict[tuple, _FlatBucket] = {}
        # gradient sums through shared memory (every rank on this host, SHOAL_DIST_SHM not 0)
        self.shared_memory = world_size > 1 and shared_memory_setting() and \
            shared_sum.one_host(world_size)
        self.shared_memory_sums = 0     # how many went that way (the rest: the process group)

    # ---- identity ----

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory, metrics, dashboard and checkpoints."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on: a plain ``cuda`` becomes ``cuda:LOCAL_RANK``."""
        if not (self.distributed and device.type == "cuda"):
            return device
        if device.index is None:
            device = torch.device("cuda", self.local_rank % max(1, torch.cuda.device_count()))
        if self._previous_cuda_device is None:
            self._previous_cuda_device = torch.cuda.current_device()
        torch.cuda.set_device(device)   # nccl talks through the current device
        return device

    def watch_agent(self, interrupted: Any) -> Any:
        """``interrupted`` (a :class:`~shoal.trainer.signals.StopRequest`) made an
        :class:`AgentWatch` of torchrun's agent when torchrun started this process; itself
        otherwise."""
        if self.agent_pid is None:
            return interrupted
        return AgentWatch(interrupted, self.agent_pid, self.rank)

    def seed(self, seed: int) -> int:
        """``seed`` made different for every rank (unchanged on rank 0)."""
        return seed + RANK_SEED_STRIDE * self.rank

    # ---- tensor collectives ----

    def _run(self, what: str, fn: Any, *args: Any, traced: bool = True, via: str | None = None,
             **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, dist.DistBackendError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CollectiveError(
                f"rank {self.rank} of {self.world_size}: {what} failed ({first}). Another rank "
                f"has crashed, was killed or did not arrive within {TIMEOUT_ENV}="
                f"{timeout_seconds():g}s; torchrun's report names the rank that failed "
                f"first.") from exc
        finally:
            end = time.perf_counter()
            self.comm_seconds += end - start
            if self.trace_dir is not None and traced:
                sent = args[1] if what.startswith("all-gather") else args[0] if args else None
                nbytes = sent.numel() * sent.element_size() if isinstance(sent, torch.Tensor) \
                    else len(sent) if isinstance(sent, bytes) else -1
                self._trace.append((f"{what} @ {_caller()}", nbytes, start, end,
                                    via or "process group"))

    def _wait(self, work: Any, tensor: torch.Tensor) -> None:
        """Waits for ``work`` (an async collective on ``tensor``): on the CPU it polls first,
        yielding the core to any other thread, for up to ``spin_seconds``, then blocks."""
        if self.spin_seconds > 0 and tensor.device.type == "cpu":
            deadline = time.perf_counter() + self.spin_seconds
            while not work.is_completed() and time.perf_counter() < deadline:
                os.sched_yield()
        work.wait()

    def _polled(self, fn: Any, tensor: torch.Tensor) -> Any:
        """``fn``, a collective on ``tensor``, started asynchronously and waited for by
        :meth:`_wait`."""
        return lambda *args, **kwargs: self._wait(fn(*args, async_op=True, **kwargs), tensor)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over ranks, in place; returns it."""
        if self.distributed:
            self._run("all-reduce", self._polled(dist.all_reduce, tensor), tensor,
                      op=dist.ReduceOp.SUM)
        return tensor

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over ranks (a new tensor when distributed; ``tensor`` itself at
        N = 1, so one process computes exactly what it always did)."""
        return self.sum_(tensor.clone()) if self.distributed else tensor

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor``'s elementwise maximum over ranks (a new tensor when distributed)."""
        if not self.distributed:
            return tensor
        out = tensor.clone()
        self._run("all-reduce", self._polled(dist.all_reduce, out), out, op=dist.ReduceOp.MAX)
        return out

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (stops training on all together)."""
        if not self.distributed:
            return bool(flag)
        # a CPU tensor: gloo carries it whatever backend the group has for CUDA tensors
        return bool(self.max(torch.tensor([1.0 if flag else 0.0]))[0])

    def gather_rows(self, tensor: torch.Tensor, what: str = "all-gather") -> torch.Tensor:
        """``[N, *tensor.shape]``: every rank's ``tensor``, in rank order, on every rank (one
        all-gather; ``what`` names it in a trace). Reductions of it computed in rank order give
        every rank the same bits."""
        if not self.distributed:
            return tensor.unsqueeze(0)
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        self._run(what, self._polled(dist.all_gather, tensor), parts, tensor)
        return torch.stack(parts)

    def start_gather_rows(self, tensor: torch.Tensor) -> "GatheredRows":
        """:meth:`gather_rows` started asynchronously (gloo runs it on its own threads): the
        rows are there once the returned handle's ``wait()`` returned."""
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        work = self._run("all-gather", dist.all_gather, parts, tensor, async_op=True,
                         traced=False)
        return GatheredRows(self, parts, tensor, work)

    def gather_values(self, value: Any, what: str = "all-gather") -> list[Any]:
        """``[value of rank 0, ..., value of rank N-1]`` on every rank for JSON-able values
        (numbers, strings, lists, dicts; floats exact, nan and inf kept): one all-gather of a
        fixed-size buffer (a second one, sized to the largest, for values that do not fit);
        ``what`` names it in a trace."""
        if not self.distributed:
            return [value]
        data = json.dumps(value, separators=(",", ":")).encode()
        capacity = max(_GATHER_CAPACITY, len(data))
        buffer = torch.zeros(8 + _GATHER_CAPACITY, dtype=torch.uint8)
        buffer[:8] = torch.tensor([len(data)], dtype=torch.int64).view(torch.uint8)
        if len(data) <= _GATHER_CAPACITY:
            buffer[8:8 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        rows = self.gather_rows(buffer, what)
        sizes = [int(size) for size in rows[:, :8].contiguous().view(torch.int64).reshape(-1)]
        if max(sizes) > _GATHER_CAPACITY:     # someone's did not fit: all send at the largest
            capacity = max(sizes)
            big = torch.zeros(capacity, dtype=torch.uint8)
            big[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            rows = self.gather_rows(big, what)
        else:
            rows = rows[:, 8:]
        return [json.loads(row[:size].numpy().tobytes()) for row, size in zip(rows, sizes)]

    def sum_gradients(self, params: Sequence[torch.nn.Parameter], wait: bool = True,
                      next_share: torch.Tensor | None = None,
                      epoch_end: "EpochEnd | None" = None) -> "GradientSum":
        """Sums the gradients of ``params`` over ranks through one flat buffer (one all-reduce
        per minibatch, whatever the number of tensors). Every rank must pass the same params.

        ``next_share`` (this rank's :func:`rank_share` of the next minibatch) rides in the same
        all-reduce, so the next minibatch needs no meeting point of its own: every rank's share
        comes back in its own slot of the buffer and :meth:`GradientSum.wait` returns the job's
        :class:`JobMoments` of that minibatch. Every rank must pass one or none.

        ``epoch_end`` (the epoch's last minibatch: this rank's :class:`EpochEnd`) rides too, so
        the end of an epoch (its logged statistics, whether to stop) needs no meeting point of
        its own; every rank must pass one or none.

        ``wait=False`` only starts it (gloo and nccl run it on their own threads or streams)
        and returns a :class:`GradientSum`: the gradients are the job's once its ``wait()``
        returned, and must not be read or written before."""
        if not self.distributed:
            return GradientSum(self, [], None, None)
        grads = [p.grad for p in params]
        share_size = 0 if next_share is None else _slot_size(next_share.numel(), self.world_size)
        riding = None if epoch_end is None else epoch_end.riding_slot()
        bucket = self._bucket(grads, share_size + (0 if riding is None else riding.numel()))
        if grads:       # one call for every tensor (a cast where a gradient is not float32)
            torch._foreach_copy_(bucket.grad_views, grads)
        flat, offset = bucket.flat, bucket.grads_numel
        if next_share is not None:
            _encode_slot(next_share, self.rank, self.world_size,
                         out=flat[offset:offset + share_size])
            offset += share_size
        if riding is not None:
            flat[offset:].copy_(riding)
        bucket.in_flight = True
        try:
            if bucket.shared is not None:
                work = self._run("gradient all-reduce", bucket.shared.start, flat, traced=False)
                self.shared_memory_sums += 1
            else:
                work = self._run("gradient all-reduce", dist.all_reduce, flat,
                                 op=dist.ReduceOp.SUM, async_op=True, traced=False)
        except BaseException:
            bucket.in_flight = False
            raise
        pending = GradientSum(self, grads, bucket, work, next_share, epoch_end)
        if wait:
            pending.wait()
        return pending

    def _bucket(self, grads: Sequence[torch.Tensor], extra: int) -> _FlatBucket:
        """The kept :class:`_FlatBucket` for gradients shaped as ``grads`` and ``extra`` riding
        elements (a new one the first time, or while the kept one is still in flight). Its
        dtype is the gradients' promoted dtype (float32 at least), as a concatenation's."""
        dtype = torch.float32
        for g in grads:
            dtype = torch.promote_types(dtype, g.dtype)
        device = grads[0].device if grads else torch.device("cpu")
        key = (tuple(g.shape for g in grads), extra, dtype, device)
        bucket = self._buckets.get(key)
        if bucket is not None and not bucket.in_flight:
            return bucket
        fresh = _FlatBucket([g.shape for g in grads], extra, dtype, device)
        if bucket is None:      # kept; every rank makes its buckets in the same order
            self._buckets[key] = fresh
            if self.shared_memory and shared_sum.usable(fresh.flat):
                # once per layout: a broadcast and an all-gather over the process group
                fresh.shared = SharedMemorySum.open(self, fresh.flat, timeout_seconds())
        return fresh

    def weight_peak(self, draw: Any, num_segments: int, beta: float) -> torch.Tensor | None:
        """The largest raw prioritised-sampling weight ``(S·P)^-β`` of ``draw`` (a
        :class:`~shoal.trainer.sampling.SegmentSample` of this rank's ``num_segments``), by which
        ``draw.weights`` were divided; :func:`minibatch_moments` rescales them by the job's
        largest. None when there is nothing to rescale (one process, or ``beta == 0``)."""
        if not self.distributed or beta == 0:
            return None
        p = draw.probabilities[draw.indices]
        # the largest raw weight (S*P)^-beta belongs to the least likely drawn segment;
        # fill-ins of zero probability were given that one's weight (sample_segments)
        p_min = torch.where(p > 0, p, torch.full_like(p, math.inf)).min()
        p_min = torch.where(torch.isfinite(p_min), p_min, 1.0 / num_segments)  # all P zero
        return (num_segments * p_min).pow(-beta)

    def importance_weights(self, draw: Any, num_segments: int, beta: float) -> torch.Tensor:
        """The prioritised-sampling weights of ``draw`` normalised by the largest weight of the
        job's minibatch instead of this rank's share (one all-reduce; the trainer instead
        carries :meth:`weight_peak` into the minibatch's one collective)."""
        peak = self.weight_peak(draw, num_segments, beta)
        return draw.weights if peak is None else draw.weights * (peak / self.max(peak))

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Every rank takes rank 0's parameters and buffers."""
        if not self.distributed:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                self._run("parameter broadcast", dist.broadcast, tensor.data, src=0)

    # ---- object collectives (Python values and CPU tensors, through a CPU group) ----
    # Values travel as torch.save bytes and are read back with the safe loader (tensors and
    # plain values only), as checkpoints are.

    def object_all_gather(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, ..., obj of rank N-1]`` on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        self._run("object all-gather", dist.all_gather_object, out, _pack(obj),
                  group=self.object_group)
        return [_unpack(x) for x in out]

    def object_gather(self, obj: Any) -> list[Any] | None:
        """``[obj of every rank]`` on rank 0, None elsewhere."""
        if not self.distributed:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        self._run("object gather", dist.gather_object, _pack(obj), out, dst=0,
                  group=self.object_group)
        return None if out is None else [_unpack(x) for x in out]

    def object_broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [_pack(obj) if self.is_main else None]
        self._run("object broadcast", dist.broadcast_object_list, box, src=0,
                  group=self.object_group)
        return _unpack(box[0])

    def check_same(self, what: str, value: Any, fix: str) -> None:
        """Raises the same ValueError on every rank unless all ranks have the same ``value``."""
        if not self.distributed:
            return
        values = self.object_all_gather(value)
        if any(v != values[0] for v in values):
            raise ValueError(f"{what} differs between ranks ({', '.join(map(str, values))}): "
                             f"{fix}")

    def close(self) -> None:
        """Ends the process group if this object started it."""
        global _ACTIVE
        if self.trace_dir is not None and self._trace:
            os.makedirs(self.trace_dir, exist_ok=True)
            with open(os.path.join(self.trace_dir, f"collectives.rank{self.rank}.jsonl"), "w",
                      encoding="utf-8") as fh:
                for what, nbytes, start, end, via in self._trace:
                    fh.write(json.dumps({"what": what, "bytes": nbytes, "enter": start,
                                         "exit": end, "via": via}) + "\n")
            self._trace = []
        for bucket in self._buckets.values():
            if bucket.shared is not None:
                bucket.shared.close()
                bucket.shared = None
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
        self.owned = False
        if self._previous_cuda_device is not None:
            torch.cuda.set_device(self._previous_cuda_device)
            self._previous_cuda_device = None
        if self.previous_cpus is not None:
            os.sched_setaffinity(0, self.previous_cpus)
            self.previous_cpus = None
        if _ACTIVE is self:
            _ACTIVE = None


def _caller() -> str:
    """``function:line`` of the first frame outside this module (names a traced collective)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return "?" if frame is None else f"{frame.f_code.co_name}:{frame.f_lineno}"


def _pack(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _unpack(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


_ACTIVE: Collective | None = None
# bytes of a gather_values buffer: an epoch's statistics (a few dozen numbers) fit in one round
_GATHER_CAPACITY = 4096


def connect() -> Collective:
    """The :class:`Collective` of this process.

    Under torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set) the first call starts the
    process group: nccl for CUDA tensors when CUDA is available, gloo for CPU tensors (always),
    with the timeout of :func:`timeout_seconds`; with ``SHOAL_DIST_PIN=1`` the rank first
    keeps to its :func:`rank_cpus` (the threads it starts from then on inherit them; close()
    restores the CPUs it had). A process group the caller started already is used as it is.
    Otherwise: one process, ``world_size == 1``. In a process torchrun started, at any world
    size, the Collective records torchrun's agent (:func:`torchrun_agent_pid`) for
    :meth:`Collective.watch_agent`.
    """
    global _ACTIVE
    if _ACTIVE is not None:
        return _ACTIVE
    if dist.is_available() and dist.is_initialized():
        _ACTIVE = _from_group(owned=False, agent_pid=torchrun_agent_pid())
        return _ACTIVE
    if not (dist.is_available() and launched_by_torchrun()) or int(os.environ["WORLD_SIZE"]) < 2:
        return Collective(agent_pid=torchrun_agent_pid())
    agent_pid = torchrun_agent_pid()    # before anything can take long
    timeout = datetime.timedelta(seconds=timeout_seconds())
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    pin = pin_setting()
    store, rank, world_size = next(dist.rendezvous("env://", timeout=timeout))
    previous_cpus = None
    share = None
    if pin and hasattr(os, "sched_setaffinity"):
        previous_cpus = os.sched_getaffinity(0)     # this thread's (pid 0: the calling thread)
        share = rank_cpus(int(os.environ.get("LOCAL_RANK", rank)),
                          int(os.environ.get("LOCAL_WORLD_SIZE", world_size)), previous_cpus)
        if share is None:
            previous_cpus = None
        elif pin == "rank":     # before the process group starts gloo's threads: they inherit it
            os.sched_setaffinity(0, share)
    # torchrun keeps its store across restarts of the worker group (--max-restarts): a restarted
    # group must not read the addresses the previous attempt left in it
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    try:
        dist.init_process_group(backend=backend,
                                store=dist.PrefixStore(f"shoal/{attempt}", store),
                                rank=rank, world_size=world_size, timeout=timeout)
    except BaseException:
        if previous_cpus is not None:
            os.sched_setaffinity(0, previous_cpus)
        raise
    _ACTIVE = _from_group(owned=True, agent_pid=agent_pid)
    if pin == "trainer" and share is not None:  # gloo's threads, started above, keep every CPU
        os.sched_setaffinity(0, share)
    _ACTIVE.previous_cpus = previous_cpus
    return _ACTIVE


def _from_group(owned: bool, agent_pid: int | None = None) -> Collective:
    backend = str(dist.get_backend())
    object_group = None if backend == "gloo" else dist.new_group(
        backend="gloo", timeout=datetime.timedelta(seconds=timeout_seconds()))
    return Collective(rank=dist.get_rank(), world_size=dist.get_world_size(),
                      local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                      owned=owned, object_group=object_group, agent_pid=agent_pid)


def merge_means(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Merges ``env.log()``-style dicts (means with their count ``n``) into one, each mean
    weighted by its count: the statistics of all ranks' episodes together."""
    total: dict[str, float] = {}
    for stats in parts:
        n = float(stats.get("n", 0.0))
        if n <= 0:
            continue
        old = float(total.get("n", 0.0))
        for key, value in stats.items():
            if key != "n":
                total[key] = (total.get(key, 0.0) * old + float(value) * n) / (old + n)
        total["n"] = old + n
    return total


class JobMoments(NamedTuple):
    """What a minibatch's loss needs from every rank's share of it (:func:`minibatch_moments`)."""

    count: torch.Tensor                 # unmasked steps of the job's minibatch (at least 1)
    mean: torch.Tensor | None           # their advantages' mean and variance (None: not asked)
    var: torch.Tensor | None
    weight_scale: torch.Tensor | None   # this rank's peak / the job's peak (None: 1)


def minibatch_moments(adv: torch.Tensor, masks: torch.Tensor, weight_peak: torch.Tensor | None,
                      ranks: Collective | None = None, moments: bool = True, wait: bool = True
                      ) -> "JobMoments | PendingMoments":
    """The job's step count and advantage mean and variance over the unmasked steps of every
    rank's share of a minibatch, and the factor that renormalises this rank's importance weights
    by the job's largest (``weight_peak``: :meth:`Collective.weight_peak`).

    One process: this minibatch's own count and two-pass moments. Data-parallel: one
    all-gather of every rank's :func:`rank_share`, combined by :func:`job_moments`. (The
    trainer gathers only its first minibatch's this way; every later one's shares ride in the
    gradient all-reduce before it, :meth:`Collective.sum_gradients`; the first one's starts
    with ``wait=False``: a :class:`PendingMoments` that waits for it when first read, so it
    travels while the policy replays the minibatch.)
    """
    if ranks is None or not ranks.distributed:
        live = masks > 0
        count = masks.sum().clamp_min(1.0)
        if not moments:
            return JobMoments(count, None, None, None)
        mean = torch.where(live, adv, torch.zeros_like(adv)).sum() / count
        var = torch.where(live, (adv - mean).square(), torch.zeros_like(adv)).sum() / count
        return JobMoments(count, mean, var, None)
    share = rank_share(adv, masks, weight_peak)
    if not wait:
        return PendingMoments(ranks.start_gather_rows(share), share, adv.dtype)
    return job_moments(ranks.gather_rows(share), share, adv.dtype)


class PendingMoments:
    """The :class:`JobMoments` of a minibatch whose all-gather is in flight: reading a field
    (``count``, ``mean``, ``var``, ``weight_scale``) waits for it, once."""

    def __init__(self, gathering: GatheredRows, share: torch.Tensor, dtype: torch.dtype
                 ) -> None:
        self._gathering, self._share, self._dtype = gathering, share, dtype
        self._job: JobMoments | None = None

    def result(self) -> JobMoments:
        """The job's moments (waits for the all-gather the first time)."""
        if self._job is None:
            self._job = job_moments(self._gathering.wait(), self._share, self._dtype)
        return self._job

    @property
    def count(self) -> torch.Tensor:
        return self.result().count

    @property
    def mean(self) -> torch.Tensor | None:
        return self.result().mean

    @property
    def var(self) -> torch.Tensor | None:
        return self.result().var

    @property
    def weight_scale(self) -> torch.Tensor | None:
        return self.result().weight_scale


def rank_share(adv: torch.Tensor, masks: torch.Tensor, weight_peak: torch.Tensor | None
               ) -> torch.Tensor:
    """This rank's part of a minibatch's statistics, ``[count, Σ adv, M2, weight peak]`` in
    float64 over its unmasked steps (M2: squared deviations from its own mean, two passes;
    the peak 0 when its weights need no rescaling)."""
    live = masks > 0
    wide = adv.double()
    n_r = masks.sum().double()
    sum_r = torch.where(live, wide, 0.0).sum()
    mean_r = sum_r / n_r.clamp_min(1.0)
    m2_r = torch.where(live, (wide - mean_r).square(), 0.0).sum()
    peak = torch.zeros((), dtype=torch.float64, device=adv.device) if weight_peak is None \
        else weight_peak.double().reshape(())
    return torch.stack([n_r, sum_r, m2_r, peak])


def job_moments(rows: torch.Tensor, own: torch.Tensor, dtype: torch.dtype = torch.float32
                ) -> JobMoments:
    """The job's :class:`JobMoments` from every rank's :func:`rank_share` (``rows``, in rank
    order), combined in rank order so every rank gets the same bits: the count, the mean
    ``Σ sums / count`` and the variance by Chan et al.'s pairwise update
    ``M2 = Σ_r M2_r + n_r (mean_r - mean)^2`` (no cancellation), and the factor
    ``own peak / max_r peak_r`` for the weights of the rank whose share is ``own`` (1 when no
    rank's weights need rescaling)."""
    if rows.device.type == "cpu":     # a few numbers: Python floats, the same float64 steps
        return _job_moments_of(rows.tolist(), float(own[3]), dtype, rows.device)
    return _job_moments_tensor(rows, own, dtype)


def _job_moments_tensor(rows: torch.Tensor, own: torch.Tensor, dtype: torch.dtype
                        ) -> JobMoments:
    """:func:`job_moments` as tensor operations (on a device: no copy to the host)."""
    n, sums, m2s, peaks = rows.unbind(1)
    count = n.sum().clamp_min(1.0)
    mean = sums.sum() / count
    means = sums / n.clamp_min(1.0)
    m2 = (m2s + n * (means - mean).square()).sum()    # ranks with n = 0 add 0
    top = peaks.max()
    # peaks are (S·P)^-β > 0 when weighted and 0 on every rank when not (beta = 0, passes)
    scale = torch.where(top > 0, own[3] / top.clamp_min(1e-300), torch.ones_like(top))
    return JobMoments(count.to(dtype), mean.to(dtype), (m2 / count).to(dtype), scale.to(dtype))


def _job_moments_of(rows: Sequence[Sequence[float]], own_peak: float, dtype: torch.dtype,
                    device: torch.device) -> JobMoments:
    """:func:`job_moments` of ``rows`` given as Python floats (every rank's ``[count, Σ adv,
    M2, weight peak]``): the same float64 operations in the same order (sums in rank order,
    each product and square rounded once), so the same bits; the results as 0-d ``dtype``
    tensors on ``device``."""
    count = 0.0
    total = 0.0
    for row in rows:
        count += row[0]
        total += row[1]
    count = max(count, 1.0)
    mean = total / count
    m2 = 0.0
    for n_r, sum_r, m2_r, _ in rows:
        d = sum_r / max(n_r, 1.0) - mean
        m2 += m2_r + n_r * (d * d)      # ranks with n = 0 add 0
    top = max(row[3] for row in rows)
    # peaks are (S·P)^-β > 0 when weighted and 0 on every rank when not (beta = 0, passes)
    scale = own_peak / max(top, 1e-300) if top > 0 else 1.0
    out = torch.tensor([count, mean, m2 / count, scale], dtype=torch.float64).to(dtype)
    if device.type != "cpu":
        out = out.to(device)
    return JobMoments(*out.unbind())


def variance_parts(values: torch.Tensor, returns: torch.Tensor, masks: torch.Tensor
                   ) -> list[float]:
    """This rank's ``[n, mean_y, M2_y, mean_e, M2_e]`` over its unmasked steps (``y`` the
    returns, ``e = y - values``; two passes): what :func:`explained_from_parts` combines."""
    m = (masks > 0).to(values.dtype)
    err = returns - values
    first = torch.stack([m.sum(), (returns * m).sum(), (err * m).sum()]).double()
    n = first[0].clamp_min(1.0)
    mean_y, mean_e = first[1] / n, first[2] / n
    second = torch.stack([((returns.double() - mean_y).square() * m).sum(),
                          ((err.double() - mean_e).square() * m).sum()])
    return [float(first[0]), float(mean_y), float(second[0]), float(mean_e), float(second[1])]


def explained_from_parts(parts: Sequence[Sequence[float]]) -> float:
    """``1 - Var(returns - values) / Var(returns)`` over every rank's unmasked steps, from the
    ranks' :func:`variance_parts` (combined as in :func:`minibatch_moments`); nan when there are
    no steps or the returns are constant."""
    n, _, m2_y, _, m2_e = combine_parts(parts)
    if not n > 0:
        return float("nan")
    return float("nan") if m2_y == 0 else 1.0 - m2_e / m2_y


def combine_parts(parts: Sequence[Sequence[float]]) -> list[float]:
    """Several :func:`variance_parts` combined into the parts of all their steps together."""
    n = sum(p[0] for p in parts)
    if not n > 0:
        return [0.0, 0.0, 0.0, 0.0, 0.0]
    mean_y = sum(p[0] * p[1] for p in parts) / n
    mean_e = sum(p[0] * p[3] for p in parts) / n
    m2_y = sum(p[2] + p[0] * (p[1] - mean_y) ** 2 for p in parts)
    m2_e = sum(p[4] + p[0] * (p[3] - mean_e) ** 2 for p in parts)
    return [float(n), float(mean_y), float(m2_y), float(mean_e), float(m2_e)]


# what a trace calls the collective that ends an epoch (benchmarks/dist_trace.py marks epochs by it)
EPOCH_END_MARK = "[epoch end]"
# bytes of JSON an epoch's end carries in the epoch's last gradient all-reduce: a rank's loss
# terms, explained-variance moments, episode statistics and stop vote take ~0.5 KB; a rank whose
# do not fit says so there and the ranks then gather them in a collective of their own
EPOCH_END_CAPACITY = 1533
# bytes per float32 of the buffer: integers below 2**24 are exact in float32, and a sum with
# the other ranks' zeros leaves them unchanged
_DIGIT_BYTES = 3


class JobEpoch(NamedTuple):
    """The job's end of an epoch, the same on every rank (:class:`EpochEnd`)."""

    losses: dict[str, float]            # each loss term: the job's mean (the ranks' shares summed)
    explained: float                    # explained variance over every rank's steps
    episodes: dict[str, float] | None   # every rank's episode statistics, merged
    stop: bool                          # some rank was asked to stop (a signal)
    callback: bool                      # some rank has an epoch callback: it decides after


class EpochEnd:
    """This rank's part of the end of an epoch's update: its loss terms (each its share of the
    job's mean), explained-variance moments (:func:`variance_parts`), episode statistics and
    whether it was asked to stop. Every rank's travels in the epoch's last gradient all-reduce
    (:meth:`Collective.sum_gradients` ``epoch_end=``: no meeting point of its own) or, when the
    update ended without one (``train.target_kl`` stopped it early), in one all-gather
    (:meth:`gather`). Either way :attr:`job` becomes the same :class:`JobEpoch` on every rank.
    """

    def __init__(self, ranks: Collective, shares: Mapping[str, float],
                 explained: Sequence[float], episodes: Mapping[str, float] | None,
                 stop: bool = False, callback: bool = False) -> None:
        self.ranks = ranks
        self.value = {"shares": {k: float(v) for k, v in shares.items()},
                      "explained": [float(x) for x in explained],
                      "episodes": None if episodes is None else
                      {k: float(v) for k, v in episodes.items()},
                      "stop": bool(stop), "callback": bool(callback)}
        self.job: JobEpoch | None = None

    def _data(self) -> bytes:
        return json.dumps(self.value, separators=(",", ":")).encode()

    def riding_slot(self) -> torch.Tensor:
        """float32 ``[N * (1 + capacity / 3)]``: this rank's JSON in its own row (its size,
        then 3 bytes per element), the other ranks' rows zero; summed over ranks every row is
        that rank's, exactly. A value over :data:`EPOCH_END_CAPACITY` sends its size only."""
        data = self._data()
        width = 1 + EPOCH_END_CAPACITY // _DIGIT_BYTES
        out = torch.zeros(self.ranks.world_size, width, dtype=torch.float32)
        out[self.ranks.rank, 0] = min(len(data), 2 ** 24 - 1)
        if len(data) <= EPOCH_END_CAPACITY:
            padded = data + bytes(-len(data) % _DIGIT_BYTES)
            b = torch.frombuffer(bytearray(padded), dtype=torch.uint8).reshape(-1, 3).int()
            out[self.ranks.rank, 1:1 + len(b)] = (b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16).float()
        return out.reshape(-1)

    def read_riding(self, buffer: torch.Tensor) -> None:
        """Sets :attr:`job` from the summed :meth:`riding_slot` buffers (``buffer``); gathers
        the values in a collective of their own when a rank's did not fit."""
        rows = buffer.reshape(self.ranks.world_size, -1).cpu().round().int()
        sizes = rows[:, 0].tolist()
        if max(sizes) > EPOCH_END_CAPACITY:
            self.gather()
            return
        b = torch.stack([rows[:, 1:] & 255, rows[:, 1:] >> 8 & 255, rows[:, 1:] >> 16 & 255],
                        dim=2).reshape(self.ranks.world_size, -1).to(torch.uint8)
        self.job = self._combine([json.loads(row[:size].numpy().tobytes())
                                  for row, size in zip(b, sizes)])

    def gather(self) -> JobEpoch:
        """Every rank's values through one all-gather (:meth:`Collective.gather_values`): the
        way without a gradient all-reduce to ride in; sets and returns :attr:`job`."""
        self.job = self._combine(self.ranks.gather_values(self.value,
                                                          f"all-gather {EPOCH_END_MARK}"))
        return self.job

    def _combine(self, gathered: Sequence[Mapping[str, Any]]) -> JobEpoch:
        shares = self.value["shares"]
        episodes = None if self.value["episodes"] is None else \
            merge_means(g["episodes"] for g in gathered if g["episodes"] is not None)
        return JobEpoch({k: sum(float(g["shares"][k]) for g in gathered) for k in shares},
                        explained_from_parts([g["explained"] for g in gathered]), episodes,
                        any(g["stop"] for g in gathered), any(g["callback"] for g in gathered))


def epoch_statistics(ranks: Collective, shares: Mapping[str, float],
                     explained: Sequence[float], episodes: Mapping[str, float] | None
                     ) -> tuple[dict[str, float], float, dict[str, float] | None]:
    """The job's statistics of an epoch from every rank's, in one collective
    (:meth:`EpochEnd.gather`): ``shares`` (loss terms, each rank's part of the job's mean)
    summed, the explained variance from :func:`variance_parts`, ``episodes``
    (``env.log()``-style means with their count ``n``) merged by :func:`merge_means`. The
    trainer instead carries them in the epoch's last gradient all-reduce."""
    job = EpochEnd(ranks, shares, explained, episodes).gather()
    return job.losses, job.explained, job.episodes


def elastic_resume_target(run_dir: str | None) -> str | None:
    """In a worker group that torchrun restarted (``--max-restarts``): the run directory to resume
    from (it holds a checkpoint), else None. Raises ValueError when restarts are enabled but no
    run directory was named (a restarted group could not find the run)."""
    if not launched_by_torchrun():
        return None
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if restarts > 0 and not run_dir:
        raise ValueError("torchrun --max-restarts needs a fixed run directory to resume from: "
                         "pass --run-dir DIR (shoal.train(..., log_run_dir=DIR))")
    if attempt == 0 or not run_dir:
        return None
    from .checkpoint import latest_checkpoint

    if latest_checkpoint(run_dir) is not None:
        return run_dir
    # restarted before the first checkpoint: start again from scratch in the same directory
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.environ.get("RANK") == "0" and os.path.exists(metrics):
        os.unlink(metrics)
    return None
