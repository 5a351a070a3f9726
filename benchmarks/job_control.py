"""Training jobs a benchmark starts, ended when the benchmark ends, however it ends.

Imported by the scripts next to it (``python benchmarks/NAME.py`` puts this folder on the path).

* :func:`start` runs a job (``shoal train`` or torchrun) in a session of its own, so its
  process group can be signalled as a whole, under ``shoal.sweep.launch``: the job gets SIGTERM
  when the benchmark dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``). torchrun stops its
  ranks on SIGTERM; torchrun itself killed, its ranks stop after their epoch's checkpoint
  (docs/distributed.md, failures).
* :func:`end` kills a job at once: its process group and every process below it (torchrun's
  ranks run in sessions of their own, each with its env workers).
* ``with ending_jobs():`` around the benchmark ends every job still running when the block is
  left: normally, by an exception, Ctrl-C (SIGINT), or SIGTERM/SIGHUP (a timeout, a closed
  terminal), which it turns into SystemExit while active.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from typing import Any, Iterator

__all__ = ["start", "end", "ending_jobs", "descendants"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# shoal.sweep.launch of this checkout whatever PYTHONPATH says (a --baseline run points the job's
# PYTHONPATH at another checkout): it asks for SIGTERM on the benchmark's death, then runs
# `python -m MODULE ARGS` in the same process
_LAUNCH = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
           "from shoal.sweep.launch import main; main(sys.argv[1:])")

_running: list[subprocess.Popen] = []


def start(module: str, *args: str, **popen: Any) -> subprocess.Popen:
    """``python -m module args`` as a job of this benchmark (``popen``: subprocess.Popen's
    keyword arguments, env, cwd, stdout, ...)."""
    cmd = [sys.executable, "-c", _LAUNCH, REPO, str(os.getpid()), module, *args]
    proc = subprocess.Popen(cmd, start_new_session=True, **popen)
    _running.append(proc)
    return proc


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, theirs, ...), read from /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as fh:
                    kids = [int(p) for p in fh.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def end(proc: subprocess.Popen) -> None:
    """Kills the job ``proc`` and everything it started, at once, and reaps it."""
    if proc.poll() is None:
        below = descendants(proc.pid)       # before the kill: orphans cannot be found after
        for group in [proc.pid, *below]:    # torchrun's ranks lead groups of their own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        for pid in below:                   # and anything in someone else's group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    proc.wait()
    if proc in _running:
        _running.remove(proc)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def ending_jobs() -> Iterator[None]:
    """Ends every job :func:`start` started that still runs when the block is left; SIGTERM and
    SIGHUP raise SystemExit inside it (SIGINT raises KeyboardInterrupt already)."""
    previous = {s: signal.signal(s, _exit_on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        # no second signal may cut the clean-up short
        ignored = {s: signal.signal(s, signal.SIG_IGN)
                   for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            while _running:
                end(_running[-1])
        finally:
            for s, handler in ignored.items():
                signal.signal(s, previous.get(s, handler))


def checked_baseline_and_variant(parser: argparse.ArgumentParser, args: argparse.Namespace
                                 ) -> dict[str, str]:
    """Validates ``--baseline SRC`` (a built shoal checkout) and parses ``--variant VAR=VALUE``
    into the environment it adds; errors through ``parser``."""
    if args.baseline and not os.path.isfile(os.path.join(args.baseline, "shoal", "__init__.py")):
        parser.error(f"--baseline {args.baseline}: no shoal/__init__.py there (give the root of "
                     "a shoal checkout built with `python setup.py build_ext --inplace`)")
    variant: dict[str, str] = {}
    if args.variant:
        name, sep, value = args.variant.partition("=")
        if not sep or not name:
            parser.error(f"--variant {args.variant}: expected VAR=VALUE")
        variant[name] = value
    return variant
