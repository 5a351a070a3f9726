"""The ``processes`` backend: worker processes step shards of envs in place in shared memory.

Every buffer of the vector env (observations, actions, rewards, ...) lives in one block of
shared memory created by the parent. Worker ``w`` owns a contiguous shard of
``num_envs / num_workers`` envs and steps them directly in that block, so no observation or action
is ever copied between processes: the parent only sends one byte ("step") and waits for one byte
back ("done").

Workers are grouped for double buffering: with ``num_buffers=2`` the first half of the workers
steps buffer group 0 and the second half group 1. ``send`` signals that group's workers and returns
at once; ``recv`` waits for them. So ``num_workers`` must divide ``num_envs`` and be a multiple of
``num_buffers``.

Workers are started with the ``spawn`` method (a fresh interpreter: safe when torch or threads are
loaded in the parent). As with any spawning library, a script that creates a process env must keep
its top-level code under ``if __name__ == "__main__":``.

The shard protocol
------------------
A backend-independent *shard factory* says what a worker runs. It is any picklable object with:

``describe() -> (name, single_observation_space, single_action_space, agents_per_env, action_dtype)``
    Called in the parent, before any worker starts, to size the shared buffers; it should not
    build envs where that can be avoided.

``__call__(num_envs, env_offset, buffers) -> VecEnv``
    Called in the worker: builds a vector env of ``num_envs`` envs over ``buffers`` (a
    :class:`~shoal.vector.base.Buffers` of this shard's rows of the shared arrays) in which env
    ``i`` is env ``env_offset + i`` of the whole vector (for C envs: it uses RNG stream
    ``env_offset + i``, so every backend produces identical results).

The worker drives the returned env only through its backend hooks, always on buffer group 0:
``_reset(seed)``, ``_send(0)`` (the actions are already in the shared buffer; it must finish
stepping before it returns), ``_log(0)``, ``_render(index, mode)`` and ``close()``.
``_send(0)`` raising :class:`ValueError` means the actions were rejected *before any env of the
shard moved* (the C binding's range check); the parent re-raises it as a ValueError and the env
stays usable. Any other exception is fatal: the parent raises a RuntimeError holding the worker's
traceback and closes the env. :func:`native_shard_factory` is the factory for shoal's C envs; a
Python (Gymnasium/PettingZoo) factory plugs in the same way.

Failure handling: the parent waits on the workers' pipes and on their process sentinels together,
so a worker that dies (killed, segfault, ``os._exit``) raises a RuntimeError naming it, its pid and
exit code instead of hanging; a worker that raises sends its traceback, which the parent's
RuntimeError shows. Either way the env is closed: the other workers are stopped.

Ctrl-C: workers ignore SIGINT and SIGTERM; they are the parent's to handle. A KeyboardInterrupt can land
anywhere in the parent, even between a message and the record of it, so after one the parent
trusts no record: the next call first *resynchronises* (each worker echoes a fresh number once
every earlier request is done, and whatever came before the echo is dropped), then goes on, so
the env stays usable and an interrupted step's results are complete. The parent takes each
message off its socket in one call once all of it has arrived, so an interrupt never splits one
(messages over 64 KiB, i.e. large snapshots, are read in pieces).

Workers exit when the parent's end of their pipe closes or the parent process disappears
(killed, or exiting without ``close()``), and the shared memory is unlinked by ``close()``, by
garbage collection of the env, at interpreter exit, or (if the parent is killed) by
multiprocessing's resource tracker; an interrupted ``close()`` is finished by the env's
finalizer. tests/test_process_cleanup.py checks that no process is left behind in each of these
cases, and that the env survives thousands of interrupts at random moments.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import re
import select
import signal
import socket
import struct
import time
import traceback
import weakref
from multiprocessing import resource_tracker, shared_memory
from typing import Any, Mapping, Protocol

import numpy as np
from gymnasium import spaces

from .base import Buffers, PickledStateError, VecEnv, buffer_layout, check_memory

__all__ = ["NativeShardFactory", "ProcessVecEnv", "ShardFactory", "native_shard_factory"]

# Messages on a worker's pipe: one tag byte, then (for the tags in _WITH_PAYLOAD) an 8-byte
# length and a pickle. The per-step traffic is a single byte each way.
_STEP = b"s"          # parent -> worker: step your shard (actions are in shared memory)
_CALL = b"c"          # parent -> worker: (method, args) for reset / log / render
_QUIT = b"q"          # parent -> worker: exit
_OK = b"k"            # worker -> parent: done
_RESULT = b"r"        # worker -> parent: the return value of a _CALL
_REJECTED = b"v"      # worker -> parent: the shard rejected the actions (ValueError text)
_FAILED = b"e"        # worker -> parent: (summary, traceback text) of an exception
_PING = b"p"          # parent -> worker: a number to send back once every earlier request is done
_PONG = b"o"          # worker -> parent: that number
_WITH_PAYLOAD = frozenset((_CALL, _RESULT, _REJECTED, _FAILED, _PING, _PONG))
_LENGTH = struct.Struct("<Q")
_MAX_PAYLOAD = 1 << 40    # a longer length prefix means the stream is out of step

_PARENT_CHECK_MS = 1000   # how often an idle worker checks that its parent is still alive
# How long the parent waits for a worker's answer (a step, reset, snapshot, start-up) before it
# calls the worker hung and closes the env; 0 waits forever. Per env: ProcessVecEnv(...,
# worker_timeout=S) or env.worker_timeout = S; default from SHOAL_WORKER_TIMEOUT.
DEFAULT_WORKER_TIMEOUT_S = 300.0
_QUIT_GRACE_S = 2.0       # how long close() waits for workers to exit before terminating them
_ALIGN = 64               # byte alignment of each array in the shared block


class ShardFactory(Protocol):
    """What a worker process runs: see the module docstring for the contract."""

    def describe(self) -> tuple[str, spaces.Space, spaces.Space, int, Any]: ...

    def __call__(self, num_envs: int, env_offset: int, buffers: Buffers) -> VecEnv: ...


class NativeShardFactory:
    """Shard factory for a registered C env: a serial :class:`NativeVecEnv` per worker."""

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.params = dict(params)

    def describe(self) -> tuple[str, spaces.Space, spaces.Space, int, Any]:
        from ..envs import get_spec

        spec = get_spec(self.name)
        return (spec.name, spec.observation_space(self.params), spec.action_space(self.params),
                int(spec.agents_per_env(self.params)), spec.action_dtype)

    def action_mask_width(self) -> int:
        """Action-mask entries per agent (0: the env writes none)."""
        from ..envs import get_spec
        from .native import spec_mask_width

        spec = get_spec(self.name)
        return spec_mask_width(spec, spec.action_space(self.params))

    def __call__(self, num_envs: int, env_offset: int, buffers: Buffers) -> VecEnv:
        from ..envs import get_spec
        from .native import NativeVecEnv

        return NativeVecEnv(get_spec(self.name), self.params, num_envs, seed=0, buffers=buffers,
                            env_offset=env_offset)

    def __repr__(self) -> str:
        return f"NativeShardFactory({self.name!r}, {self.params!r})"


def native_shard_factory(name: str, params: Mapping[str, Any] | None = None) -> NativeShardFactory:
    """The shard factory of C env ``name`` with ``params`` (validated against its spec)."""
    from ..envs import get_spec

    spec = get_spec(name)
    return NativeShardFactory(spec.name, spec.resolve(params))


# ---- shared memory ----

class _SharedBlock(shared_memory.SharedMemory):
    """A shared memory block whose close() tolerates numpy views that outlive it.

    The caller may keep an observation array after close(); its mapping is then released with the
    last such view, and close() only gives back the file descriptor.
    """

    def close(self) -> None:
        try:
            super().close()
        except BufferError:
            fd = getattr(self, "_fd", -1)
            if fd >= 0:
                os.close(fd)
                self._fd = -1

    @classmethod
    def attach_untracked(cls, name: str) -> "_SharedBlock":
        """Attaches to the parent's block without telling the resource tracker.

        A spawned worker shares its parent's resource tracker. The parent registered the block
        when it created it and is the only one that unlinks it (or the tracker does, if the parent
        is killed); a worker registering (or unregistering) the same name would only disturb that.
        """
        register = resource_tracker.register
        resource_tracker.register = lambda name, rtype: None
        try:
            return cls(name=name)
        finally:
            resource_tracker.register = register


def _block_size(layout: list[tuple[str, tuple[int, ...], np.dtype]]) -> int:
    size = 0
    for _, shape, dtype in layout:
        size += -size % _ALIGN
        size += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return max(size, 1)


def _carve(layout: list[tuple[str, tuple[int, ...], np.dtype]], buf: memoryview) -> Buffers:
    """Numpy views of each buffer of ``layout`` laid out one after another in ``buf``."""
    arrays = {}
    offset = 0
    for name, shape, dtype in layout:
        offset += -offset % _ALIGN
        count = int(np.prod(shape, dtype=np.int64))
        # frombuffer (unlike ndarray(buffer=...)) holds a buffer export, so the mapping cannot be
        # closed under a live view: close() then fails with BufferError instead of leaving
        # dangling arrays.
        arrays[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += count * dtype.itemsize
    return Buffers(**arrays)


# ---- pipe messages (raw reads and writes on the Connection's descriptor: no framing overhead) ----

def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("the other end of the pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _send_message(fd: int, tag: bytes, payload: Any = None) -> None:
    if tag in _WITH_PAYLOAD:
        data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        _write_all(fd, tag + _LENGTH.pack(len(data)) + data)
    else:
        os.write(fd, tag)


class _OutOfStep(Exception):
    """Bytes on a pipe that are not a message (the stream lost its framing)."""


_WHOLE_MESSAGE_MAX = 1 << 16   # messages up to this size are taken off a socket in one call


def _take_message(sock: socket.socket) -> tuple[bytes, Any]:
    """The next message from a worker's socket (the parent's side).

    A message is taken off the socket by a single ``recv`` once all of it has arrived (its
    header is peeked at first), so a KeyboardInterrupt in the parent can make it drop a whole
    message (which the resynchronisation after an interrupt copes with) but never split one and
    lose the stream's framing. Only messages over 64 KiB (large snapshots) are read in pieces.
    """
    head = sock.recv(1, socket.MSG_PEEK)
    if not head:
        raise EOFError("the other end of the pipe closed")
    tag = head[:1]
    if tag not in _WITH_PAYLOAD:
        if tag not in (_STEP, _QUIT, _OK):
            raise _OutOfStep(f"an unknown message tag {tag!r}")
        sock.recv(1)
        return tag, None
    size = 1 + _LENGTH.size
    header = sock.recv(size, socket.MSG_PEEK | socket.MSG_WAITALL)
    if len(header) < size:
        raise EOFError("the other end of the pipe closed")
    (n,) = _LENGTH.unpack_from(header, 1)
    if n > _MAX_PAYLOAD:
        raise _OutOfStep(f"a message length of {n} bytes")
    total = size + n
    if total <= _WHOLE_MESSAGE_MAX:
        while len(sock.recv(total, socket.MSG_PEEK | socket.MSG_WAITALL)) < total:
            if not sock.recv(1, socket.MSG_PEEK):
                raise EOFError("the other end of the pipe closed")
        data = sock.recv(total)
    else:
        data = bytearray(total)
        view, got = memoryview(data), 0
        while got < total:
            k = sock.recv_into(view[got:], total - got)
            if not k:
                raise EOFError("the other end of the pipe closed")
            got += k
    try:
        return tag, pickle.loads(memoryview(data)[size:])
    except Exception as exc:
        raise _OutOfStep(f"a message that does not unpickle ({exc})") from None


def _recv_message(fd: int) -> tuple[bytes, Any]:
    tag = _read_exact(fd, 1)
    if tag in _WITH_PAYLOAD:
        (n,) = _LENGTH.unpack(_read_exact(fd, _LENGTH.size))
        if n > _MAX_PAYLOAD:
            raise _OutOfStep(f"a message length of {n} bytes")
        data = _read_exact(fd, n)
        try:
            return tag, pickle.loads(data)
        except Exception as exc:
            raise _OutOfStep(f"a message that does not unpickle ({exc})") from None
    if tag not in (_STEP, _QUIT, _OK):
        raise _OutOfStep(f"an unknown message tag {tag!r}")
    return tag, None


# ---- the worker process ----

def _failure_payload(exc: BaseException) -> tuple[str, str]:
    summary = f"{type(exc).__name__}: {exc}"
    return summary, "".join(traceback.format_exception(exc))


def _worker_main(conn: Any, shm_name: str, layout: list, env_lo: int, env_hi: int,
                 agents_per_env: int, factory: ShardFactory, parent_pid: int) -> None:
    """Entry point of a worker process: builds its shard, then serves the parent's requests."""
    # Ctrl-C in a terminal, and SIGTERM sent to a whole process group or container, reach every
    # process; the parent decides what they mean (a trainer checkpoints first) and closes us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd = conn.fileno()
    block = vec = None
    try:
        try:
            block = _SharedBlock.attach_untracked(shm_name)
            shard = _carve(layout, block.buf).rows(env_lo * agents_per_env, env_hi * agents_per_env)
            vec = factory(env_hi - env_lo, env_lo, shard)
            del shard
        except Exception as exc:
            _send_message(fd, _FAILED, _failure_payload(exc))
            return
        _send_message(fd, _OK)
        _serve(fd, vec, parent_pid)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away: nothing left to serve
    finally:
        if vec is not None:
            try:
                vec.close()
            except Exception:
                pass
            vec = None
        if block is not None:
            block.close()


def _save_shard(vec: VecEnv) -> dict[str, np.ndarray] | str:
    """The shard's snapshot, or the reason it has none: envs that cannot snapshot are not a
    failure of the worker (the parent raises NotImplementedError and the env stays open)."""
    try:
        return vec._save_state()
    except NotImplementedError as exc:
        return str(exc) or f"{type(vec).__name__} cannot snapshot its envs"


def _load_shard(vec: VecEnv, state: dict[str, Any], allow_pickle: bool) -> None:
    """Loads the shard's snapshot, unpickling Python envs only if the parent's caller allowed it
    (see :meth:`VecEnv.load_state`)."""
    vec._allow_pickle = bool(allow_pickle)
    try:
        vec._load_state(state)
    finally:
        vec._allow_pickle = False


def _serve(fd: int, vec: VecEnv, parent_pid: int) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    calls = {"reset": vec._reset, "log": lambda: vec._log(0), "log_env": vec._log_env,
             "render": vec._render,
             "save": lambda: _save_shard(vec), "load": lambda state, allow: _load_shard(vec, state, allow)}
    while True:
        if not poller.poll(_PARENT_CHECK_MS):
            # Idle: leave if the parent died without closing the pipe (e.g. it forked a child
            # that still holds the parent's end).
            if os.getppid() != parent_pid:
                return
            continue
        tag, payload = _recv_message(fd)
        if tag == _STEP:
            try:
                vec._send(0)
            except ValueError as exc:
                _send_message(fd, _REJECTED, str(exc))
            except Exception as exc:
                _send_message(fd, _FAILED, _failure_payload(exc))
            else:
                os.write(fd, _OK)
        elif tag == _CALL:
            method, args = payload
            try:
                result = calls[method](*args)
            except Exception as exc:
                _send_message(fd, _FAILED, _failure_payload(exc))
            else:
                _send_message(fd, _RESULT, result)
        elif tag == _PING:
            _send_message(fd, _PONG, payload)
        elif tag == _QUIT:
            return
        else:
            raise RuntimeError(f"unknown message {tag!r} from the parent")


# ---- the parent's side ----

class _Workers:
    """The processes, pipes and shared block of one ProcessVecEnv.

    Kept apart from the env so that a finalizer can shut them down when the env is garbage
    collected (or at interpreter exit) without keeping the env alive.
    """

    def __init__(self, block: _SharedBlock) -> None:
        self.block = block
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.socks: list[socket.socket] = []   # views of the conns' descriptors, for reading
        self.quit_sent = False
        self.reaped: set[Any] = set()   # processes joined and closed
        self.closed = False

    def shutdown(self) -> None:
        """Asks workers to quit, terminates the ones that do not, unlinks the block.

        Idempotent, and safe to interrupt (Ctrl-C while it waits for the workers): the work left
        is done by the next call, which the env's finalizer makes at the latest when the env is
        collected or the interpreter exits."""
        if self.closed:
            return
        if not self.quit_sent:
            for conn in self.conns:
                try:
                    os.write(conn.fileno(), _QUIT)
                except (OSError, ValueError):
                    pass  # already gone (or the pipe closed by an earlier, interrupted call)
            self.quit_sent = True
        deadline = time.monotonic() + _QUIT_GRACE_S
        live = [p for p in self.procs if p not in self.reaped]
        for proc in live:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in live:
            if proc.is_alive():
                proc.terminate()
                proc.join(0.5)
            if proc.is_alive():
                proc.kill()
                proc.join(0.5)
        for proc in live:
            try:
                proc.close()
            except ValueError:
                pass  # still running after kill: leave it to the OS
            self.reaped.add(proc)
        for sock in self.socks:
            sock.detach()   # the descriptor is the conn's: closed just below, once
        for conn in self.conns:
            conn.close()
        try:
            self.block.unlink()
        except FileNotFoundError:
            pass
        self.block.close()
        self.closed = True


def _signal_name(exitcode: int | None) -> str:
    if exitcode is None or exitcode >= 0:
        return ""
    try:
        return f" ({signal.Signals(-exitcode).name})"
    except ValueError:
        return ""


def _worker_timeout(value: float | None) -> float:
    source = "worker_timeout"
    if value is None:
        text = os.environ.get("SHOAL_WORKER_TIMEOUT")
        if text is None:
            return DEFAULT_WORKER_TIMEOUT_S
        source = "SHOAL_WORKER_TIMEOUT"
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"SHOAL_WORKER_TIMEOUT={text!r} is not a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{source} must be a number of seconds >= 0 (0: wait forever), "
                         f"got {value!r}")
    return float(value)


def _valid_worker_counts(num_envs: int, num_buffers: int) -> str:
    counts = [w for w in range(num_buffers, min(num_envs, 256) + 1, num_buffers) if num_envs % w == 0]
    return ", ".join(map(str, counts[:8])) or "none (make num_envs a multiple of num_buffers)"


class ProcessVecEnv(VecEnv):
    """Envs stepped by worker processes in shared memory (see the module docstring).

    Args:
        factory: a shard factory (:func:`native_shard_factory` for C envs).
        num_envs: envs in all; each of the ``num_workers`` workers steps ``num_envs/num_workers``.
        seed: seeds every env (env i uses stream i); None draws one at random.
        num_workers: worker processes; must divide ``num_envs`` and be a multiple of
            ``num_buffers``.
        num_buffers: buffer groups for double buffering; each worker belongs to exactly one.
        worker_timeout: seconds to wait for any worker's answer (a step, reset, snapshot, its
            start) before calling it hung: the env is closed and a RuntimeError names the worker
            and its envs. 0 waits forever. Default: ``SHOAL_WORKER_TIMEOUT`` from the
            environment, else 300. Settable later as ``env.worker_timeout``.
    """

    check_actions_before_send = True  # a group's workers must accept or refuse its batch as one

    def __init__(self, factory: ShardFactory, num_envs: int, *, seed: int | None = None,
                 num_workers: int = 1, num_buffers: int = 1,
                 worker_timeout: float | None = None) -> None:
        self.worker_timeout = worker_timeout
        for arg, value in (("num_envs", num_envs), ("num_workers", num_workers),
                           ("num_buffers", num_buffers)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        num_envs, num_workers, num_buffers = int(num_envs), int(num_workers), int(num_buffers)
        if num_workers % num_buffers:
            raise ValueError(
                f"num_workers={num_workers} must be a multiple of num_buffers={num_buffers}: each "
                f"worker process belongs to exactly one buffer group. Valid num_workers for "
                f"num_envs={num_envs}: {_valid_worker_counts(num_envs, num_buffers)}"
            )
        if num_envs % num_workers:
            raise ValueError(
                f"num_envs={num_envs} must be a multiple of num_workers={num_workers}: each worker "
                f"process steps an equal shard of num_envs/num_workers envs. Valid num_workers "
                f"for num_envs={num_envs} and num_buffers={num_buffers}: "
                f"{_valid_worker_counts(num_envs, num_buffers)}"
            )
        name, obs_space, act_space, agents, act_dtype = factory.describe()
        agents = int(agents)
        mask_width = getattr(factory, "action_mask_width", lambda: 0)()
        layout = buffer_layout(num_envs * agents, obs_space, act_space, act_dtype, mask_width)
        check_memory(layout, name=name, num_envs=num_envs)
        block = _SharedBlock(create=True, size=_block_size(layout))
        self._workers = workers = _Workers(block)
        self._finalizer = weakref.finalize(self, workers.shutdown)
        buffers = _carve(layout, block.buf)
        buffers.masks[:] = True
        buffers.action_masks[:] = True
        self._setup(name=name, obs_space=obs_space, act_space=act_space, num_envs=num_envs,
                    agents_per_env=agents, num_buffers=num_buffers, seed=seed, buffers=buffers)
        self.factory = factory
        self.num_workers = num_workers
        self.shm_name = block.name
        per_worker = num_envs // num_workers
        #: [lo, hi) env range of each worker
        self.worker_envs = [(w * per_worker, (w + 1) * per_worker) for w in range(num_workers)]
        per_group = num_workers // num_buffers
        self._group_workers = [list(range(g * per_group, (g + 1) * per_group))
                               for g in range(num_buffers)]
        self._awaiting = [False] * num_workers   # a step reply is due from this worker
        # True while a conversation with the workers is under way: still True afterwards means it
        # was interrupted (Ctrl-C), and the next one first resynchronises (see _resync).
        self._interrupted = False
        self._ping = 0
        try:
            self._start(layout, agents)
        except BaseException:
            self.close()
            raise

    @property
    def worker_timeout(self) -> float:
        """Seconds to wait for a worker's answer before calling it hung (0: forever); setting
        None takes ``SHOAL_WORKER_TIMEOUT`` or the default, 300."""
        return self._worker_timeout

    @worker_timeout.setter
    def worker_timeout(self, value: float | None) -> None:
        self._worker_timeout = _worker_timeout(value)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """As :meth:`VecEnv.step`. After a call interrupted by Ctrl-C (KeyboardInterrupt while
        the workers stepped), the next call first waits for that step to finish, so the env
        goes on from its results."""
        if not self._closed and (self._interrupted or (  # or interrupted just after a recv
                any(self._stepping) and self._held is None and not any(self._awaiting))):
            self._resync()
        return super().step(actions)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers, in shard order."""
        return [p.pid for p in self._workers.procs]

    # ---- start-up ----

    def _start(self, layout: list, agents: int) -> None:
        ctx = mp.get_context("spawn")
        workers = self._workers
        for w, (lo, hi) in enumerate(self.worker_envs):
            parent_end, child_end = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=_worker_main, name=f"shoal-{self.name}-worker-{w}", daemon=True,
                args=(child_end, self.shm_name, layout, lo, hi, agents, self.factory, os.getpid()))
            workers.conns.append(parent_end)
            try:
                proc.start()
            finally:
                child_end.close()  # the worker holds it now: its exit closes the pipe
            workers.procs.append(proc)
        self._fds = [c.fileno() for c in workers.conns]
        # The parent reads through socket objects on the same descriptors (a duplex Pipe is a
        # socket pair): see _take_message.
        workers.socks = [socket.socket(fileno=fd) for fd in self._fds]
        self._fd_worker = {fd: w for w, fd in enumerate(self._fds)}
        self._sentinel_worker = {p.sentinel: w for w, p in enumerate(workers.procs)}
        self._pollers = []
        for group in self._group_workers:
            poller = select.poll()
            for w in group:
                poller.register(self._fds[w], select.POLLIN)
                poller.register(workers.procs[w].sentinel, select.POLLIN)
            self._pollers.append(poller)
        self._all_poller = select.poll()
        for w in range(self.num_workers):
            self._all_poller.register(self._fds[w], select.POLLIN)
            self._all_poller.register(workers.procs[w].sentinel, select.POLLIN)
        replies: dict[int, tuple[bytes, Any]] = {}
        self._collect(list(range(self.num_workers)), "starting", self._all_poller, replies)
        self._check_replies(replies, "starting")

    # ---- talking to workers ----

    def _describe(self, w: int) -> str:
        lo, hi = self.worker_envs[w]
        return f"worker {w} (pid {self._workers.procs[w].pid}, envs [{lo}, {hi}))"

    def _fail(self, message: str) -> RuntimeError:
        """Closes the env (terminating the other workers) and returns the error to raise."""
        self.close()
        return RuntimeError(message)

    def _died(self, w: int, doing: str) -> RuntimeError:
        proc = self._workers.procs[w]
        desc = self._describe(w)
        proc.join(1.0)
        code = proc.exitcode
        if code is None:
            state = "closed its pipe but is still running"
        else:
            state = f"died with exit code {code}{_signal_name(code)}"
        hint = ""
        if doing == "starting":
            hint = (" Its traceback, if any, is on stderr above; a script that makes process envs "
                    "must keep its top-level code under `if __name__ == '__main__':`.")
        return self._fail(f"{self.name}: {desc} {state} while {doing}; the env is closed.{hint}")

    def _hung(self, w: int, doing: str) -> RuntimeError:
        return self._fail(
            f"{self.name}: {self._describe(w)} did not answer within {self.worker_timeout:g} s "
            f"while {doing}, so it is taken as hung (an env stuck in step() or reset()); the env "
            f"is closed and its workers stopped. If its envs are just slow, raise the limit: "
            f"env.worker_timeout = SECONDS or SHOAL_WORKER_TIMEOUT=SECONDS (0 waits forever)")

    def _read(self, w: int, doing: str) -> tuple[bytes, Any]:
        try:
            return _take_message(self._workers.socks[w])
        except (EOFError, OSError):
            raise self._died(w, doing) from None
        except _OutOfStep as exc:
            raise self._fail(f"{self.name}: the pipe from {self._describe(w)} is out of step "
                             f"({exc}), so the env is closed (a large message cut by Ctrl-C can "
                             f"do this). Fix: make a new env") from None

    def _write(self, w: int, tag: bytes, payload: Any, doing: str) -> None:
        try:
            _send_message(self._fds[w], tag, payload)
        except OSError:
            raise self._died(w, doing) from None

    def _collect(self, waiting: list[int], doing: str, poller: Any,
                 replies: dict[int, tuple[bytes, Any]]) -> None:
        """Reads one reply from each worker in ``waiting`` into ``replies``, watching their
        liveness (pipe and process sentinel) while waiting."""
        pending = set(waiting)
        deadline = time.monotonic() + self.worker_timeout if self.worker_timeout else None
        while pending:
            if deadline is None:
                events = poller.poll()
            else:
                events = poller.poll(max(0, int((deadline - time.monotonic()) * 1000)) + 1)
                if not events and time.monotonic() >= deadline:
                    raise self._hung(min(pending), doing)
            dead = []
            for fd, _ in events:
                w = self._fd_worker.get(fd)
                if w is None:
                    dead.append(self._sentinel_worker[fd])
                elif w in pending:
                    replies[w] = self._read(w, doing)
                    pending.discard(w)
            for w in dead:
                if w in pending:
                    raise self._died(w, doing)

    def _collect_steps(self, waiting: list[int], poller: Any) -> dict[int, tuple[bytes, Any]]:
        replies: dict[int, tuple[bytes, Any]] = {}
        self._collect(waiting, "stepping", poller, replies)
        for w in waiting:
            self._awaiting[w] = False
        return replies

    def _resync(self) -> None:
        """Brings the parent and the workers back in step after an interrupted conversation.

        A KeyboardInterrupt can land anywhere in the parent: while it waits for replies (almost
        always), but also between a message and the record of it. So the records are not
        trusted: each worker is sent a new number and every message before that number's echo
        is read and dropped. Workers answer in order, so then every earlier request (the
        interrupted step included) is done and no stale reply is left in a pipe. A worker that
        failed meanwhile is reported as usual. Interrupted itself, it runs again next time.
        """
        self._interrupted = True
        self._ping += 1
        ping = self._ping
        doing = "catching up after an interrupted call"
        for w in range(self.num_workers):
            self._write(w, _PING, ping, doing)
        pending = set(range(self.num_workers))
        failed: dict[int, tuple[bytes, Any]] = {}
        deadline = time.monotonic() + self.worker_timeout if self.worker_timeout else None
        while pending:
            dead = []
            if deadline is None:
                events = self._all_poller.poll()
            else:
                events = self._all_poller.poll(
                    max(0, int((deadline - time.monotonic()) * 1000)) + 1)
                if not events and time.monotonic() >= deadline:
                    raise self._hung(min(pending), doing)
            for fd, _ in events:
                w = self._fd_worker.get(fd)
                if w is None:
                    dead.append(self._sentinel_worker[fd])
                elif w in pending:
                    tag, payload = self._read(w, doing)
                    if tag == _PONG and payload == ping:
                        pending.discard(w)
                    elif tag == _FAILED:
                        failed.setdefault(w, (tag, payload))
            for w in dead:
                if w in pending:
                    raise self._died(w, doing)
        self._awaiting = [False] * self.num_workers
        for g in range(self.num_buffers):
            self._stepping[g] = False
        self._interrupted = False   # last: interrupted before this, it runs again next time
        if failed:
            self._check_replies(failed, "stepping")

    def _check_replies(self, replies: dict[int, tuple[bytes, Any]], doing: str) -> None:
        rejected = None
        for w in sorted(replies):
            tag, payload = replies[w]
            if tag == _FAILED:
                summary, tb = payload
                raise self._fail(f"{self.name}: {self._describe(w)} raised while {doing}; the env "
                                 f"is closed. {summary}\n\nWorker traceback:\n{tb}")
            if tag == _REJECTED and rejected is None:
                rejected = (w, payload)
            elif tag not in (_OK, _RESULT, _REJECTED):
                raise self._fail(f"{self.name}: {self._describe(w)} sent an unexpected reply "
                                 f"{tag!r} while {doing}; the env is closed")
        if rejected is not None:
            w, message = rejected
            first_agent = self.worker_envs[w][0] * self.agents_per_env
            # The binding counts agents within the worker's shard; name the row of the whole env.
            message = re.sub(r"for agent (\d+)",
                             lambda m: f"for agent {int(m.group(1)) + first_agent}", message)
            raise ValueError(message)

    def _call(self, workers: list[int], method: str, *args: Any) -> dict[int, Any]:
        if self._interrupted:
            self._resync()
        self._interrupted = True
        doing = f"running {method}()"
        for w in workers:
            self._write(w, _CALL, (method, args), doing)
        poller = self._all_poller if len(workers) == self.num_workers else None
        if poller is None:
            poller = select.poll()
            for w in workers:
                poller.register(self._fds[w], select.POLLIN)
                poller.register(self._workers.procs[w].sentinel, select.POLLIN)
        replies: dict[int, tuple[bytes, Any]] = {}
        self._collect(workers, doing, poller, replies)
        self._interrupted = False
        self._check_replies(replies, doing)
        return {w: payload for w, (_, payload) in replies.items()}

    # ---- backend hooks ----

    def _reset(self, seed: int) -> None:
        self._call(list(range(self.num_workers)), "reset", seed)

    def _send_steps(self, workers: list[int]) -> None:
        for w in workers:
            try:
                os.write(self._fds[w], _STEP)
            except OSError:
                raise self._died(w, "stepping") from None
            self._awaiting[w] = True

    def _send(self, group: int) -> None:
        if self._interrupted:
            self._resync()
            self._stepping[group] = True   # send() marked it; the resync cleared every group
        self._interrupted = True
        self._send_steps(self._group_workers[group])
        self._interrupted = False

    def _step_all(self) -> None:
        # Every worker at once, waited for with one poll over all of them. Until the replies are
        # in, the groups count as stepping (reset() and save_state() wait for them) and the
        # conversation as interrupted (the next call resynchronises first).
        if self._interrupted:
            self._resync()
        self._interrupted = True
        for g in range(self.num_buffers):
            self._stepping[g] = True
        self._send_steps(list(range(self.num_workers)))
        replies = self._collect_steps(list(range(self.num_workers)), self._all_poller)
        for g in range(self.num_buffers):
            self._stepping[g] = False
        self._interrupted = False
        if any(tag != _OK for tag, _ in replies.values()):
            self._check_replies(replies, "stepping")

    def _recv(self, group: int) -> None:
        if self._interrupted:
            self._resync()   # every step in flight is done after it
            return
        waiting = [w for w in self._group_workers[group] if self._awaiting[w]]
        if not waiting:
            return
        self._interrupted = True
        replies = self._collect_steps(waiting, self._pollers[group])
        self._interrupted = False
        if any(tag != _OK for tag, _ in replies.values()):
            self._stepping[group] = False
            if any(tag == _REJECTED for tag, _ in replies.values()):
                # Rejected actions leave the env usable: settle the other groups in flight too,
                # so that step() can be called again.
                for g in range(self.num_buffers):
                    if g != group and self._stepping[g]:
                        self._recv(g)
                        self._stepping[g] = False
            self._check_replies(replies, "stepping")

    def _log(self, group: int) -> dict[str, float]:
        total: dict[str, float] = {}
        n_total = 0.0
        for stats in self._call(self._group_workers[group], "log").values():
            n = float(stats.pop("n", 0.0))
            if n <= 0:
                continue
            for k, v in stats.items():
                total[k] = total.get(k, 0.0) + v * n
            n_total += n
        if n_total == 0:
            return {}
        out = {k: v / n_total for k, v in total.items()}
        out["n"] = n_total
        return out

    def _log_env(self, index: int) -> dict[str, float]:
        w = index // (self.num_envs // self.num_workers)
        return self._call([w], "log_env", index - self.worker_envs[w][0])[w]

    def _render(self, index: int, mode: str) -> Any:
        w = index // (self.num_envs // self.num_workers)
        group = w // (self.num_workers // self.num_buffers)
        if self._stepping[group]:
            self._recv(group)  # the frame must show the finished step, not a half-written one
            self._stepping[group] = False
        return self._call([w], "render", index - self.worker_envs[w][0], mode)[w]

    def _save_state(self) -> dict[str, np.ndarray]:
        shards = self._call(list(range(self.num_workers)), "save")
        for w, state in sorted(shards.items()):
            if isinstance(state, str):
                raise NotImplementedError(f"{self._describe(w)}: {state}")
        return {f"worker{w}.{k}": v for w, state in shards.items() for k, v in state.items()}

    def _load_state(self, state: dict[str, Any]) -> None:
        saved = {k.split(".", 1)[0] for k in state if k.startswith("worker")}
        if saved != {f"worker{w}" for w in range(self.num_workers)}:
            raise ValueError(f"env snapshot was taken with {len(saved)} worker processes but this env "
                             f"has {self.num_workers}: use the same num_workers")
        allow = bool(getattr(self, "_allow_pickle", False))
        pickled = sorted(k for k in state if k.endswith(".python.envs"))
        if pickled and not allow:
            # refused here, before any worker sees it (a worker's failure would close the env)
            raise PickledStateError(
                f"{self.name}: the env snapshot holds Python envs pickled ({pickled[0]}, ...), and "
                f"unpickling runs whatever code the bytes name: it is loaded only with "
                f"load_state(state, allow_pickle=True) (`shoal train --resume RUN "
                f"--trust-pickled-env-state`), for snapshots you made or trust")
        for w in range(self.num_workers):
            prefix = f"worker{w}."
            self._call([w], "load", {k[len(prefix):]: v for k, v in state.items()
                                     if k.startswith(prefix)}, allow)

    def _close(self) -> None:
        self._workers.shutdown()
        self._finalizer.detach()
