"""benchmarks/gpu_check.py and the host -> device uploads, on the CPU (no GPU here).

The GPU figures come from running the script on a CUDA machine (BENCHMARKS.md); this checks
that every code path of the script runs (its ``--dry-run``: parity and training at tiny sizes
on the CPU) and that the upload the rollout uses copies exactly on the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from shoal.trainer.transfer import HostUpload  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run_runs_every_section():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"),
                           "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "advantages (torch path vs C kernel" in out
    assert "policy mlp-128" in out and "policy lstm-128" in out
    assert out.count("steps/s") == 2 and "split: env" in out


def test_host_upload_copies_the_rows_on_cpu():
    upload = HostUpload(torch.device("cpu"))
    assert not upload.pinned
    src = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    dst = torch.zeros(6, 3, 4)
    upload(dst[2:5, 1], src, slice(2, 5))
    assert torch.equal(dst[2:5, 1], src[2:5])
    assert dst.sum() == src[2:5].sum()
    ended = torch.tensor([True, False, True, False])
    flags = torch.zeros(4, 2)
    upload(flags[:, 0], ended, slice(0, 4))               # bool -> float, as dones are stored
    assert flags[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0]
