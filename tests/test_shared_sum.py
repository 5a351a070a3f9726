"""Gradient sums through shared memory (shoal/trainer/shared_sum.py, shoal/trainer/shm_sum.c)
below the torchrun jobs of tests/test_distributed.py (which run them inside training):

- the C helper across real forked processes: thousands of racing double-buffered sums, each
  checked against numpy's rank-order sum, the same bits on every rank; bad arguments raise;
- a waiting rank fails with an error naming its peer when the peer's process exited (killed,
  not yet reaped, as under torchrun) or did not publish within the timeout;
- the SHOAL_DIST_SHM setting and when the path applies.
"""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
shared_sum = pytest.importorskip("shoal.trainer.shared_sum")
if shared_sum._shm_sum is None:
    pytest.skip("shoal.trainer._shm_sum is not built", allow_module_level=True)

from shoal.trainer.shared_sum import (SHM_ENV, SharedMemorySum, one_host,  # noqa: E402
                                      shared_memory_setting)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sums_across_processes_and_bad_arguments():
    run = subprocess.run([sys.executable, os.path.join(REPO, "tests", "support",
                                                       "fuzz_shm_sum.py"), "500"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "fuzz ok" in run.stdout, run.stdout + run.stderr[-4000:]


def _rank0_of_two(peer_pid: int, flat: torch.Tensor, timeout: float) -> SharedMemorySum:
    """Rank 0 of a two-rank sum over an anonymous mapping whose rank 1 is ``peer_pid`` (a real
    process that never publishes)."""
    nbytes = flat.numel() * flat.element_size()
    segment = mmap.mmap(-1, shared_sum._shm_sum.segment_size(2, nbytes))
    return SharedMemorySum(segment, nbytes, 0, 2, [os.getpid(), peer_pid], timeout)


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_a_peer_that_exited_is_named_at_once():
    peer = _sleeper()
    try:
        flat = torch.ones(100)
        shm = _rank0_of_two(peer.pid, flat, timeout=60.0)
        work = shm.start(flat)
        assert not work.is_completed()
        os.kill(peer.pid, signal.SIGKILL)          # exited, not reaped: a zombie until below
        began = time.monotonic()
        with pytest.raises(RuntimeError, match=f"rank 1 \\(pid {peer.pid}\\) exited"):
            work.wait()
        assert time.monotonic() - began < 30       # not the timeout
        with pytest.raises(RuntimeError, match="failed"):
            shm.start(flat)                        # no later sum on a broken segment
        shm.close()
    finally:
        peer.kill()
        peer.wait()


def test_a_peer_that_does_not_publish_times_out_naming_it():
    peer = _sleeper()
    try:
        flat = torch.zeros(7, dtype=torch.float64)
        shm = _rank0_of_two(peer.pid, flat, timeout=0.3)
        work = shm.start(flat)
        with pytest.raises(RuntimeError, match=f"rank 1 \\(pid {peer.pid}\\) did not publish "
                                               f"its gradients to shared memory within 0.3s"):
            work.wait()
        assert peer.poll() is None                 # alive all along
        shm.close()
    finally:
        peer.kill()
        peer.wait()


def test_setting_and_where_it_applies(monkeypatch):
    monkeypatch.delenv(SHM_ENV, raising=False)
    assert shared_memory_setting() is True
    monkeypatch.setenv(SHM_ENV, "1")
    assert shared_memory_setting() is True
    monkeypatch.setenv(SHM_ENV, "0")
    assert shared_memory_setting() is False
    for bad in ("yes", "2", "off"):
        monkeypatch.setenv(SHM_ENV, bad)
        with pytest.raises(ValueError, match=f"SHOAL_DIST_SHM='{bad}'"):
            shared_memory_setting()
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert not one_host(2)                          # no torchrun: cannot tell
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert one_host(2) and not one_host(4)          # 4 ranks, 2 here: two hosts
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert not one_host(1)                          # one process: nothing to sum
    assert shared_sum.usable(torch.zeros(3)) and shared_sum.usable(torch.zeros(3).double())
    assert not shared_sum.usable(torch.zeros(3, dtype=torch.bfloat16))
