"""What a training run shows in the terminal.

``rich``: a live dashboard (steps, SPS, epoch, elapsed/remaining, where the time goes, losses,
episode stats), redrawn in place; used when stdout is a terminal and rich is installed.
``plain``: one line every ``print_interval`` seconds (and at the end), for logs and pipes.
``off``: nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Dashboard", "format_duration", "format_count"]


def format_duration(seconds: float) -> str:
    """``3h02m``, ``4m05s`` or ``12s``."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(max(0.0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def format_count(n: float) -> str:
    """``1.23M``, ``45.6k``, ``789``."""
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.4g}" if n != int(n) else str(int(n))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.3e}"
    return str(value)


class Dashboard:
    """Shows per-epoch metrics; ``mode`` is ``auto``, ``rich``, ``plain`` or ``off``."""

    def __init__(self, mode: str = "auto", title: str = "shoal", print_interval: float = 5.0,
                 stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        if mode == "auto":
            mode = "rich" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        if mode == "rich":
            try:
                import rich  # noqa: F401
            except ImportError:
                mode = "plain"
        self.mode = mode
        self.title = title
        self.print_interval = print_interval
        self._last_print = -float("inf")
        self._live = None
        self._last: dict[str, Any] | None = None

    def start(self) -> None:
        """Begins drawing (rich mode opens its live display)."""
        if self.mode == "rich" and self._live is None:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream)
            self._live = Live(self._render({}), console=console, refresh_per_second=4,
                              transient=False)
            self._live.start()

    def message(self, text: str) -> None:
        """A one-off line (e.g. 'checkpoint saved') that does not disturb the live display."""
        if self.mode == "off":
            return
        if self._live is not None:
            self._live.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def update(self, m: dict[str, Any], force: bool = False) -> None:
        """Shows the metrics of the epoch just finished."""
        self._last = m
        if self.mode == "off":
            return
        if self.mode == "rich":
            if self._live is not None:
                self._live.update(self._render(m))
            return
        now = time.monotonic()
        if force or now - self._last_print >= self.print_interval:
            self._last_print = now
            print(self.line(m), file=self.stream, flush=True)

    def stop(self) -> None:
        """Ends the display (plain mode prints the last line if it was not shown)."""
        if self._live is not None:
            if self._last is not None:
                self._live.update(self._render(self._last))
            self._live.stop()
            self._live = None

    # ---- rendering ----

    @staticmethod
    def line(m: dict[str, Any]) -> str:
        """One plain-text progress line."""
        ep = m.get("episodes", {})
        parts = [
            f"epoch {m.get('epoch', 0)}",
            f"steps {format_count(m.get('agent_steps', 0))}/{format_count(m.get('total_steps', 0))}",
            f"sps {format_count(m.get('sps', 0))}",
            f"elapsed {format_duration(m.get('elapsed', 0))}",
            f"left {format_duration(m.get('remaining', float('nan')))}",
        ]
        if "score" in ep:
            parts.append(f"score {ep['score']:.3f}")
        if "episode_return" in ep:
            parts.append(f"return {ep['episode_return']:.3f}")
        losses = m.get("losses", {})
        for key in ("policy", "value", "entropy"):
            if key in losses:
                parts.append(f"{key} {_fmt(losses[key])}")
        return "  ".join(parts)

    def _render(self, m: dict[str, Any]):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        head = Text(f" {self.title}", style="bold cyan")
        if not m:
            return Group(head, Text(" starting...", style="dim"))
        progress = min(1.0, m.get("agent_steps", 0) / max(1, m.get("total_steps", 1)))
        width = 30
        filled = int(round(width * min(1.0, progress)))
        bar = Text(" [" + "#" * filled + "-" * (width - filled) + f"] {100 * progress:5.1f}%")

        summary = Table.grid(padding=(0, 2))
        summary.add_column(style="bold")
        summary.add_column(justify="right")
        summary.add_row("epoch", str(m.get("epoch", 0)))
        summary.add_row("agent steps",
                        f"{format_count(m.get('agent_steps', 0))} / "
                        f"{format_count(m.get('total_steps', 0))}")
        summary.add_row("steps/s", format_count(m.get("sps", 0)))
        summary.add_row("elapsed", format_duration(m.get("elapsed", 0)))
        summary.add_row("remaining", format_duration(m.get("remaining", float("nan"))))

        split = Table("time", "share", "s/epoch", box=None, padding=(0, 1))
        times = m.get("time", {})
        total = sum(times.values()) or 1.0
        for key in ("env", "inference", "learn", "comm", "other"):   # comm: data-parallel jobs
            if key in times:
                split.add_row(key, f"{100 * times[key] / total:4.1f}%", f"{times[key]:.3f}")

        losses = Table("loss", "value", box=None, padding=(0, 1))
        for key, value in m.get("losses", {}).items():
            losses.add_row(key, _fmt(value))

        episodes = Table("episodes", "mean", box=None, padding=(0, 1))
        for key, value in m.get("episodes", {}).items():
            episodes.add_row(key, _fmt(value))
        if "score100" in m:
            episodes.add_row("score (last 100)", _fmt(m["score100"]))
        episodes.add_row("episodes so far", str(int(m.get("episodes_total", 0))))

        grid = Table.grid(padding=(0, 4))
        grid.add_row(summary, split)
        grid.add_row(losses, episodes)
        return Group(head, bar, Text(""), grid)
