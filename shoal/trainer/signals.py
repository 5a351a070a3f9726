"""Stopping a training run cleanly on SIGINT (Ctrl-C) and SIGTERM (schedulers, containers,
torchrun).

While :func:`deferred_stop` is active, the first SIGINT or SIGTERM only sets a flag: the trainer
finishes the epoch in progress, writes a checkpoint and returns, and ``shoal train`` then exits
with ``128 + signal number`` for SIGTERM (143), the convention schedulers expect. A second signal
raises KeyboardInterrupt at once (the trainer keeps its newest checkpoint). The handlers are
installed only in the main thread and only over the default dispositions (Python's own SIGINT
handler; SIG_DFL for SIGTERM): a process that ignores a signal or handles it its own way keeps
doing so. The previous handlers are put back on exit.

Worker processes of the ``processes`` backend ignore both signals: a signal sent to the whole
process group (Ctrl-C in a terminal, ``kill -TERM -PGID``, a container stop) is the parent's to
act on, and the workers exit when the parent closes them or disappears.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator

__all__ = ["StopRequest", "deferred_stop", "STOP_SIGNALS"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Callable: True once a stop signal arrived; ``signum`` says which (None before)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name


def _is_default(signum: int, handler: Any) -> bool:
    if signum == signal.SIGINT:
        return handler is signal.default_int_handler
    return handler == signal.SIG_DFL


@contextlib.contextmanager
def deferred_stop(announce: Callable[[str], None] = print) -> Iterator[StopRequest]:
    """See the module docstring; ``announce`` shows the one-line notice of a first signal."""
    request = StopRequest()
    installed: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        def handler(signum: int, frame: Any) -> None:
            if request.signum is not None:
                raise KeyboardInterrupt
            request.signum = signum
            name = signal.Signals(signum).name
            how = "Ctrl-C" if signum == signal.SIGINT else name
            announce(f"\n{name}: finishing this epoch, then saving a checkpoint ({how} again to "
                     f"stop now)")

        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if _is_default(signum, previous):
                signal.signal(signum, handler)
                installed[signum] = previous
    try:
        yield request
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)
