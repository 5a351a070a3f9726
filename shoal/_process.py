"""Stopping a child process the library started."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate ``proc`` if it still runs, give it ``grace_s`` seconds to exit, then kill it.

    Always reaps the child, so no zombie is left behind.
    """
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
