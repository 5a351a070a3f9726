"""Every C extension built with AddressSanitizer + UBSan (and -Werror) and fuzzed in a subprocess:
the envs (support/fuzz_envs.py), their snapshot loader (support/fuzz_snapshots.py), the
trainer's kernels (support/fuzz_kernels.py), the C policy (support/fuzz_net.py) and the
shared-memory gradient sum (support/fuzz_shm_sum.py, across forked processes).

The snapshot fuzzing here is CI-sized (300 random mutations per env after a sweep of every
field); a longer run: SHOAL_FUZZ_SNAPSHOTS=20000 python -m pytest tests/test_sanitizers.py -k snapshot
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _runtime(lib: str) -> str | None:
    out = subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if out.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


needs_asan = pytest.mark.skipif(
    shutil.which("gcc") is None or _runtime("libasan.so") is None,
    reason="needs gcc with the AddressSanitizer runtime")


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory):
    """Every extension (envs and trainer kernels) built with ASan + UBSan and -Werror; returns
    the environment that runs Python against that build."""
    tmp_path = tmp_path_factory.mktemp("asan")
    lib = tmp_path / "lib"
    shutil.copytree(ROOT / "shoal", lib / "shoal",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    env = dict(os.environ, SHOAL_SANITIZE="1", SHOAL_WERROR="1")
    build = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(lib),
         "--build-temp", str(tmp_path / "tmp")],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert build.returncode == 0, f"sanitizer build failed (warnings are errors):\n{build.stderr[-4000:]}"
    preload = ":".join(p for p in (_runtime("libasan.so"), _runtime("libubsan.so")) if p)
    return tmp_path, dict(os.environ, PYTHONPATH=str(lib), LD_PRELOAD=preload,
                          ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
                          UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")


def _run_fuzzer(sanitized, script: str, *args: str, timeout: float = 900) -> None:
    cwd, run_env = sanitized
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / script), *args],
                         cwd=cwd, env=run_env, capture_output=True, text=True, timeout=timeout)
    report = run.stdout[-2000:] + run.stderr[-6000:]
    assert run.returncode == 0, f"fuzzing under sanitizers failed:\n{report}"
    assert "fuzz ok" in run.stdout
    assert "runtime error" not in run.stderr and "AddressSanitizer" not in run.stderr, report


@needs_asan
def test_envs_under_asan_and_ubsan(sanitized):
    _run_fuzzer(sanitized, "fuzz_envs.py")


@needs_asan
def test_trainer_kernels_under_asan_and_ubsan(sanitized):
    _run_fuzzer(sanitized, "fuzz_kernels.py")


@needs_asan
def test_snapshot_loader_under_asan_and_ubsan(sanitized):
    """Corrupted and random env snapshots either load (and then step, render and log cleanly) or
    are refused with a ValueError that leaves the env as it was."""
    mutations = os.environ.get("SHOAL_FUZZ_SNAPSHOTS", "300")
    _run_fuzzer(sanitized, "fuzz_snapshots.py", mutations, timeout=max(900, int(mutations)))


@needs_asan
def test_c_policy_under_asan_and_ubsan(sanitized):
    _run_fuzzer(sanitized, "fuzz_net.py")


@needs_asan
def test_shared_memory_sum_under_asan_and_ubsan(sanitized):
    _run_fuzzer(sanitized, "fuzz_shm_sum.py", "1000")
