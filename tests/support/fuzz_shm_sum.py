"""Exercises the shared-memory sum's C helper (shoal.trainer._shm_sum) across real processes:
ranks forked from this one share anonymous mappings and race through thousands of
double-buffered sums of float32 and float64 buffers (odd sizes, empty, nan and inf), each rank
checking every sum against numpy's rank-order sum and all ranks getting the same bits; then
bad arguments, which must raise, never fault. Run by tests/test_shared_sum.py with the normal
build and by tests/test_sanitizers.py against an AddressSanitizer/UBSan build; exits non-zero
(or the sanitizer aborts) on any fault.

    python tests/support/fuzz_shm_sum.py [ROUNDS]
"""

import hashlib
import mmap
import os
import signal
import sys
import time

import numpy as np

from shoal.trainer import _shm_sum

# a rank that waits this long for a sum ends the run (another rank failed)
WAIT_SECONDS = 30.0
# (world size, elements, dtype): sizes around the 64-byte slot rounding, and one large
LAYOUTS = [(2, 0, np.float32), (2, 1, np.float32), (2, 15, np.float32), (2, 16, np.float32),
           (3, 17, np.float64), (2, 1000, np.float64), (3, 4099, np.float32),
           (2, 300_000, np.float32)]


def buffer(round_: int, rank: int, n: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(round_ * 1009 + rank)
    x = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(dtype)
    if n > 3 and round_ % 7 == 0:
        x[rank % n] = np.nan
        x[(rank + 1) % n] = np.inf if rank % 2 else -np.inf
    return x


def expected(round_: int, world_size: int, n: int, dtype) -> np.ndarray:
    out = buffer(round_, 0, n, dtype)
    for r in range(1, world_size):
        out = out + buffer(round_, r, n, dtype)     # rank order, in the buffers' dtype
    return out


def run_rank(rank: int, segments, rounds: int) -> str:
    """The sums of every layout this rank takes part in (rank < its world size), checked; one
    digest per layout of every result, "-" for layouts it sits out (every rank's digest of a
    layout is the same when they got the same bits). A rank that sits a layout out blocks no
    one: layouts have segments of their own."""
    digests = []
    for (world_size, n, dtype), segment in zip(LAYOUTS, segments):
        if rank >= world_size:
            digests.append("-")
            continue
        digest = hashlib.sha256()
        laps = rounds if n < 10_000 else max(2, rounds // 100)
        out = np.empty(n, dtype)
        for k in range(laps):
            data = buffer(k, rank, n, dtype)
            _shm_sum.publish(segment, world_size, out.nbytes, rank, k, data)
            deadline = time.monotonic() + WAIT_SECONDS
            while _shm_sum.waiting(segment, world_size, out.nbytes, k) >= 0:
                if time.monotonic() > deadline:     # a rank failed: end, do not hang
                    raise AssertionError(f"rank {rank}, layout {(world_size, n, dtype)}: "
                                         f"sum {k} not published within {WAIT_SECONDS}s")
                os.sched_yield()
            _shm_sum.reduce(segment, world_size, out.nbytes, k, out)
            want = expected(k, world_size, n, dtype)
            if not np.array_equal(out, want, equal_nan=True):
                bad = np.flatnonzero(~((out == want) | (np.isnan(out) & np.isnan(want))))
                raise AssertionError(f"rank {rank}, layout {(world_size, n, dtype)}, sum {k}: "
                                     f"{len(bad)} wrong elements, first {bad[:5]}")
            digest.update(out.tobytes())
        digests.append(digest.hexdigest())
    return " ".join(digests)


def sums_across_processes(rounds: int) -> None:
    # anonymous shared mappings: the forked ranks see the same memory
    segments = [mmap.mmap(-1, _shm_sum.segment_size(ws, n * np.dtype(dt).itemsize))
                for ws, n, dt in LAYOUTS]
    children = []
    for rank in range(1, max(ws for ws, _, _ in LAYOUTS)):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            code = 0
            try:
                os.write(write_end, run_rank(rank, segments, rounds).encode())
            except BaseException as exc:    # noqa: BLE001 - reported, then a non-zero exit
                sys.stderr.write(f"rank {rank}: {exc!r}\n")
                code = 1
            os._exit(code)
        os.close(write_end)
        children.append((rank, pid, read_end))
    try:
        mine = run_rank(0, segments, rounds).split()
    except BaseException:
        for _, pid, _ in children:      # they would wait for rank 0 until their deadline
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    for rank, pid, read_end in children:
        theirs = b""
        while chunk := os.read(read_end, 4096):
            theirs += chunk
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, f"forked rank {rank} failed"
        for layout, a, b in zip(LAYOUTS, mine, theirs.decode().split()):
            assert b == "-" or a == b, f"ranks 0 and {rank} got different bits in {layout}"
    for s in segments:
        s.close()


def bad_arguments() -> None:
    size = _shm_sum.segment_size(2, 40)
    segment = mmap.mmap(-1, size)
    data = np.zeros(10, np.float32)
    calls = [
        (_shm_sum.segment_size, (0, 8)),                               # no ranks
        (_shm_sum.segment_size, (2, -1)),                              # negative size
        (_shm_sum.segment_size, (2, 2 ** 62)),                         # would overflow
        (_shm_sum.publish, (segment, 2, 40, 2, 0, data)),                  # rank out of range
        (_shm_sum.publish, (segment, 2, 40, -1, 0, data)),
        (_shm_sum.publish, (segment, 2, 40, 0, -1, data)),                 # negative sum number
        (_shm_sum.publish, (segment, 2, 40, 0, 1, data)),                  # sum 1 before sum 0
        (_shm_sum.publish, (segment, 2, 40, 0, 0, np.zeros(11, np.float32))),   # other size
        (_shm_sum.publish, (segment, 3, 40, 0, 0, data)),                  # other rank count
        (_shm_sum.publish, (bytes(size), 2, 40, 0, 0, data)),              # read-only segment
        (_shm_sum.publish, (segment, 2, 40, 0, 0, np.zeros((4, 4), np.float32)[:, :2].T)),
        (_shm_sum.waiting, (segment, 2, 100, 0)),                      # other size
        (_shm_sum.reduce, (segment, 2, 40, 0, data)),                      # nobody published
        (_shm_sum.reduce, (segment, 2, 40, 0, np.zeros(10, np.int32))),    # not a float buffer
        (_shm_sum.reduce, (segment, 2, 40, 0, np.zeros(20, np.float16))),  # half precision
        (_shm_sum.reduce, (segment, 2, 40, 0, np.zeros(11, np.float32))),  # other size
        (_shm_sum.reduce, (segment, 2, 40, 0, np.zeros(20, np.float32)[::2])),  # strided
    ]
    for fn, args in calls:
        try:
            fn(*args)
        except (TypeError, ValueError, RuntimeError, BufferError):
            pass
        else:
            raise AssertionError(f"{fn.__name__} accepted bad arguments {args!r:.200}")
    # one rank published: the other is still waited for, and reduce refuses
    _shm_sum.publish(segment, 2, 40, 0, 0, data)
    assert _shm_sum.waiting(segment, 2, 40, 0) == 1
    try:
        _shm_sum.reduce(segment, 2, 40, 0, data)
    except RuntimeError:
        pass
    else:
        raise AssertionError("reduce read a sum that rank 1 had not published")
    try:
        _shm_sum.publish(segment, 2, 40, 0, 0, data)        # the same sum twice
    except RuntimeError:
        pass
    else:
        raise AssertionError("publish accepted sum 0 twice")
    segment.close()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    bad_arguments()
    sums_across_processes(rounds)
    print("fuzz ok")


if __name__ == "__main__":
    main()
