"""shoal.sweep.launch: how a sweep starts its workers and their trainers (no ``preexec_fn``):
the child runs ``python -m MODULE ARGS`` as that command would, and gets SIGTERM when its
parent dies, even if the parent died before the child could ask for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from shoal.sweep.launch import launch_command
from tools_procs import alive

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="parent-death signals are Linux's (prctl)")

SLEEPER = """import sys, time
print("ready", sys.argv[1:], flush=True)
time.sleep(float(sys.argv[1]))
"""


def _env(tmp_path) -> dict[str, str]:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    return env


def test_runs_the_module_as_python_dash_m_would():
    cmd = launch_command("shoal", "envs")
    assert cmd[:4] == [sys.executable, "-m", "shoal.sweep.launch", str(os.getpid())]
    launched = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    direct = subprocess.run([sys.executable, "-m", "shoal", "envs"], capture_output=True,
                            text=True, timeout=120)
    assert launched.returncode == direct.returncode == 0, launched.stderr
    assert launched.stdout == direct.stdout and "breakout" in launched.stdout
    bad = subprocess.run(launch_command("shoal", "train", "nosuchenv"), capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "unknown env 'nosuchenv'" in bad.stderr


def test_the_child_gets_sigterm_when_its_parent_is_killed(tmp_path):
    # a parent that starts a launched sleeper, reports its pid, then waits to be killed
    parent_code = ("import subprocess, sys, time\n"
                   "from shoal.sweep.launch import launch_command\n"
                   "child = subprocess.Popen(launch_command('sleeper', '600'))\n"
                   "print(child.pid, flush=True)\n"
                   "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE,
                              text=True, env=_env(tmp_path))
    child = None
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:          # the sleeper is running its module
            with open(f"/proc/{child}/cmdline", "rb") as fh:
                if b"sleeper" in fh.read():
                    break
            time.sleep(0.1)
        time.sleep(1.0)
        assert alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "the launched child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_parent_gone_before_the_child_started_ends_it_at_once(tmp_path):
    # PARENT_PID names a process that is not this child's parent: as if the parent had died
    # between the fork and the prctl, the child ends by SIGTERM without running the module
    cmd = [sys.executable, "-m", "shoal.sweep.launch", "1", "sleeper", "600"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert proc.returncode == -signal.SIGTERM and "ready" not in proc.stdout


def test_usage_error_names_the_arguments():
    proc = subprocess.run([sys.executable, "-m", "shoal.sweep.launch", "shoal"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "PARENT_PID MODULE" in proc.stderr
