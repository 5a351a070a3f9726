"""Gradient sums through a shared-memory segment, for a data-parallel job whose ranks all run on
one host (:class:`SharedMemorySum`; :mod:`shoal.trainer.distributed` uses it for
:meth:`~shoal.trainer.distributed.Collective.sum_gradients` where it applies).

Why: gloo moves a CPU all-reduce through TCP on loopback, with its own threads on each side
and hand-offs between them: about 0.8 ms of CPU per collective per rank, on the same cores the
trainers need. Ranks on one host can instead meet in memory they all map: each copies its flat
buffer into its own slot and publishes a counter; each then adds the slots in rank order. No
thread, no socket, and every rank gets the same bits.

``SHOAL_DIST_SHM`` (:func:`shared_memory_setting`): unset or ``1`` uses it where it applies
(every rank on one host: torchrun's ``LOCAL_WORLD_SIZE`` equals ``WORLD_SIZE``; CPU float
buffers); ``0`` keeps every collective on gloo.
"""

from __future__ import annotations

import mmap
import os
import select
import sys
import time
import uuid
from typing import Any

import torch

try:
    from . import _shm_sum
except ImportError:     # not built: every sum goes through the process group
    _shm_sum = None

__all__ = ["SharedMemorySum", "SHM_ENV", "shared_memory_setting", "one_host"]

SHM_ENV = "SHOAL_DIST_SHM"
# where the segment's file is created (and unlinked at once, once every rank mapped it)
SEGMENT_DIR = "/dev/shm"
# how often a rank waiting for its peers checks that they are still alive
PEER_CHECK_SECONDS = 0.02
# after its spin (SHOAL_DIST_SPIN_MS), a waiting rank sleeps this long between looks: its core
# is free for other threads, and a late peer costs at most this much more; after
# LONG_WAIT_SECONDS (a peer writing a checkpoint) it looks every LONG_PAUSE_SECONDS
PAUSE_SECONDS = 0.0002
LONG_WAIT_SECONDS = 0.02
LONG_PAUSE_SECONDS = 0.001


def shared_memory_setting() -> bool:
    """``SHOAL_DIST_SHM``: True (unset or ``1``: gradient sums of ranks on one host go through
    shared memory) or False (``0``: through the process group, gloo)."""
    raw = os.environ.get(SHM_ENV, "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"{SHM_ENV}={raw!r}: use 1 (gradient sums of ranks on one host go "
                         f"through shared memory, the default) or 0 (always through gloo)")
    return raw != "0"


def one_host(world_size: int) -> bool:
    """True when torchrun started every rank of the job on this host (``LOCAL_WORLD_SIZE ==
    WORLD_SIZE``); False when it cannot tell (a process group started otherwise)."""
    try:
        return int(os.environ.get("LOCAL_WORLD_SIZE", "")) == world_size > 1
    except ValueError:
        return False


def usable(flat: torch.Tensor) -> bool:
    """Whether a flat buffer can be summed through shared memory: CPU float32/float64, and
    the C helper built."""
    return (_shm_sum is not None and flat.device.type == "cpu"
            and flat.dtype in (torch.float32, torch.float64) and flat.is_contiguous())


class SharedMemorySum:
    """Sums of one flat buffer layout over the ranks of a job on one host, through a segment
    every rank maps (layout and memory ordering: shoal/trainer/shm_sum.c).

    Made by :meth:`open` (collectively, once per layout). Then, on every rank, in the same
    order: :meth:`start` copies the buffer into this rank's slot and publishes it;
    :meth:`is_completed` / :meth:`wait` (the two methods of a process group's work handle that
    :meth:`Collective._wait <shoal.trainer.distributed.Collective._wait>` calls) wait until
    every rank published it and write the sum, in rank order, into the buffer. One sum at a
    time: the next :meth:`start` needs this rank's :meth:`wait` done.

    Why two data areas suffice (sum k uses area k % 2): a rank writes sum k + 2 into the area
    of sum k only after its wait for sum k + 1 returned, i.e. after every rank published sum
    k + 1; each rank publishes k + 1 only after its wait for sum k returned, which is after it
    finished reading sum k's slots (publish is a release store, the waits' loads acquire). So
    no rank overwrites a slot that another may still read, and no rank ever waits for more
    than one sum per layout.

    Failures stay bounded, as with gloo: :meth:`wait` raises a RuntimeError naming the rank
    when a peer's process exited (checked every :data:`PEER_CHECK_SECONDS`) or when a peer
    did not publish within ``timeout`` seconds of this rank's :meth:`start`.
    """

    def __init__(self, segment: mmap.mmap, nbytes: int, rank: int, world_size: int,
                 pids: list[int], timeout: float) -> None:
        self._segment, self.nbytes = segment, nbytes
        self.rank, self.world_size, self.pids, self.timeout = rank, world_size, pids, timeout
        self.sums = 0                               # sums started on this segment
        self.failed = False
        self._pending: int | None = None
        self._out: Any = None                       # the buffer's numpy view, while pending
        self._deadline = 0.0
        # a pidfd turns readable once its process has exited (a zombie included), and cannot
        # name a later process that reuses the pid; os.kill(pid, 0) where there is none
        self._peers: dict[int, tuple[int, int]] = {}     # fd -> (rank, pid)
        self._by_kill: list[tuple[int, int]] = []
        self._poller = select.poll() if hasattr(select, "poll") else None
        for r, pid in enumerate(pids):
            if r == rank:
                continue
            try:
                fd = os.pidfd_open(pid)
            except (AttributeError, OSError):
                self._by_kill.append((r, pid))
                continue
            self._peers[fd] = (r, pid)
            if self._poller is not None:
                self._poller.register(fd, select.POLLIN)

    @classmethod
    def open(cls, ranks: Any, flat: torch.Tensor, timeout: float) -> "SharedMemorySum | None":
        """A segment for sums of buffers like ``flat`` over ``ranks`` (a
        :class:`~shoal.trainer.distributed.Collective`), or None when shared memory is not
        available (then every rank gets None and sums through the process group).

        Collective: every rank calls it for the same layouts in the same order. Rank 0
        creates a file under /dev/shm (a name of its own, mode 0600, its space reserved so a
        full /dev/shm is an error here and not a SIGBUS later) and broadcasts its name; every
        rank maps it; after an all-gather (every rank's pid, or None where mapping failed)
        rank 0 unlinks it: nothing is left behind whatever happens to the ranks later."""
        nbytes = flat.numel() * flat.element_size()
        size = _shm_sum.segment_size(ranks.world_size, nbytes) if _shm_sum is not None else 0
        path, fd, why = None, -1, ""
        if ranks.is_main:
            if _shm_sum is None:
                why = "the C helper shoal.trainer._shm_sum is not built"
            else:
                path, fd, why = _create(size)
        path = ranks.object_broadcast(path)
        if path is None:
            if why:
                _to_stderr(f"{SHM_ENV}: gradient sums go through gloo ({why})")
            return None
        segment = None
        try:
            if _shm_sum is None:
                why = f"the C helper shoal.trainer._shm_sum is not built on rank {ranks.rank}"
            else:
                if fd < 0:
                    fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
                if os.fstat(fd).st_size == size:
                    segment = mmap.mmap(fd, size)
                else:
                    why = f"rank {ranks.rank} found {path} of another size"
        except OSError as exc:
            why = f"rank {ranks.rank} could not map {path}: {exc}"
        finally:
            if fd >= 0:
                os.close(fd)
        try:
            pids = ranks.object_all_gather(os.getpid() if segment is not None else None)
        finally:
            if ranks.is_main:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        if any(pid is None for pid in pids):
            if segment is not None:
                segment.close()
            if why:
                _to_stderr(f"{SHM_ENV}: gradient sums go through gloo ({why})")
            return None
        return cls(segment, nbytes, ranks.rank, ranks.world_size, pids, timeout)

    def start(self, flat: torch.Tensor) -> "SharedMemorySum":
        """Publishes ``flat`` (this rank's buffer) as the next sum; returns self, the handle
        that :meth:`wait` completes (the sum is written into ``flat``)."""
        if self.failed or self._pending is not None:
            raise RuntimeError("a shared-memory gradient sum started while the previous one "
                               + ("failed" if self.failed else "is still pending"))
        out = flat.numpy()
        _shm_sum.publish(self._segment, self.world_size, self.nbytes, self.rank, self.sums,
                         out)
        self._pending, self._out = self.sums, out
        self._deadline = time.monotonic() + self.timeout
        self.sums += 1
        return self

    def is_completed(self) -> bool:
        """True once every rank published the pending sum (:meth:`wait` then only adds)."""
        return self._pending is not None and _shm_sum.waiting(
            self._segment, self.world_size, self.nbytes, self._pending) < 0

    def wait(self) -> None:
        """Waits until every rank published the pending sum, sleeping between looks (the
        caller spun already), then writes the ranks' buffers added in rank order into this
        rank's. Raises RuntimeError naming a peer that exited or did not arrive in time."""
        seq = self._pending
        if seq is None:
            return
        try:
            began = check_at = time.monotonic()
            while True:
                late = _shm_sum.waiting(self._segment, self.world_size, self.nbytes, seq)
                if late < 0:
                    break
                now = time.monotonic()
                if now >= check_at:
                    self._check_peers(late)
                    if now > self._deadline:
                        raise RuntimeError(
                            f"rank {late} (pid {self.pids[late]}) did not publish its "
                            f"gradients to shared memory within {self.timeout:g}s")
                    check_at = now + PEER_CHECK_SECONDS
                time.sleep(PAUSE_SECONDS if now - began < LONG_WAIT_SECONDS
                           else LONG_PAUSE_SECONDS)
            _shm_sum.reduce(self._segment, self.world_size, self.nbytes, seq, self._out)
        except BaseException:
            self.failed = True      # the ranks' counters no longer agree: no later sum here
            raise
        finally:
            self._pending, self._out = None, None

    def _check_peers(self, late: int) -> None:
        """Raises RuntimeError naming a peer whose process has exited."""
        gone: list[tuple[int, int]] = []
        if self._poller is not None and self._peers:
            gone += [self._peers[fd] for fd, _ in self._poller.poll(0) if fd in self._peers]
        for r, pid in self._by_kill:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                gone.append((r, pid))
            except PermissionError:     # alive, someone else's: not ours to judge
                pass
        if gone:
            r, pid = min(gone)
            raise RuntimeError(f"rank {r} (pid {pid}) exited while rank {self.rank} waited "
                               f"for its gradients in shared memory (rank {late} had not "
                               f"published them)")

    def close(self) -> None:
        """Unmaps the segment and closes the peers' pidfds."""
        for fd in self._peers:
            os.close(fd)
        self._peers = {}
        self._poller = None
        if not self._segment.closed:
            self._segment.close()


def _create(size: int) -> tuple[str | None, int, str]:
    """A new file of ``size`` bytes under :data:`SEGMENT_DIR` (a unique name, mode 0600, its
    space reserved): ``(path, fd, "")``, or ``(None, -1, why)``."""
    path = os.path.join(SEGMENT_DIR, f"shoal-grad-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                     0o600)
    except OSError as exc:
        return None, -1, f"cannot create a file in {SEGMENT_DIR}: {exc}"
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        else:
            os.ftruncate(fd, size)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        return None, -1, f"cannot reserve {size} bytes in {SEGMENT_DIR}: {exc}"
    return path, fd, ""


def _to_stderr(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
