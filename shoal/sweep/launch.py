"""Child processes of a sweep that end with their parent.

``python -m shoal.sweep.launch PARENT_PID MODULE ARGS...`` asks Linux to send this process
SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), then runs ``python -m MODULE ARGS``
in it. The sweep starts its workers and each worker its trainers this way, so a ``kill -9`` of
either does not leave a trainer running. It replaces a ``preexec_fn`` doing the same prctl: a
``preexec_fn`` runs between fork and exec, where only async-signal-safe calls are safe once the
parent has threads (an Optuna worker has its heartbeat thread), and loading libc through ctypes
there is not one of them. ``PARENT_PID`` closes the window between the fork and the prctl: if
the parent is already gone by then, the process ends at once as the signal would have ended it.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

__all__ = ["die_with_parent", "launch_command"]


def launch_command(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m module args`` as a child of this process that
    receives SIGTERM when this process dies."""
    return [sys.executable, "-m", __name__, str(os.getpid()), module, *args]


def die_with_parent(parent_pid: int) -> None:
    """Have SIGTERM delivered to this process when its parent dies (Linux; elsewhere nothing);
    if the parent (``parent_pid``) has already died, send it now."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    """``python -m shoal.sweep.launch PARENT_PID MODULE ARGS...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit("usage: python -m shoal.sweep.launch PARENT_PID MODULE [ARGS...]")
    parent_pid, module = int(argv[0]), argv[1]
    die_with_parent(parent_pid)
    sys.argv = [module, *argv[2:]]      # what `python -m MODULE ARGS` sees (argv[0] is reset)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
