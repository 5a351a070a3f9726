"""``shoal plot``: learning curves of one or more runs, overlaid, from their ``metrics.jsonl``.

    shoal plot RUN_DIR [RUN_DIR ...] [-o FILE] [--labels A,B,...] [--title TEXT]

Panels: score and episode return against agent steps and against wall-clock seconds, steps per
second, and the losses (value, policy, entropy, approximate KL). The score is the mean over the
last 100 episodes (``score100``) where the run logged it. FILE is a PNG (or any format
matplotlib writes: .svg, .pdf); default ``<first RUN_DIR>/curves.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

__all__ = ["PlotError", "read_metrics", "plot_runs", "main"]


class PlotError(ValueError):
    """A run directory without usable metrics; the message names the file and the fix."""


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """The epochs of a run's ``metrics.jsonl`` (a run directory or the file itself)."""
    path = run_dir if run_dir.endswith(".jsonl") else os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise PlotError(f"{path} does not exist: pass run directories of `shoal train` (they "
                        f"hold metrics.jsonl)")
    rows = []
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            # a run killed mid-write leaves a partial last line: the epochs before it stand
            if number == len(lines):
                break
            raise PlotError(f"{path}:{number} is not JSON: the file is corrupt") from None
        if isinstance(row, dict) and "agent_steps" in row:
            rows.append(row)
    if not rows:
        raise PlotError(f"{path} holds no epochs yet: let the run train for at least one epoch")
    return rows


def _get(row: dict[str, Any], *path: str) -> float:
    value: Any = row
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return math.nan
        value = value[key]
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _score(row: dict[str, Any]) -> float:
    s = _get(row, "score100")
    return s if math.isfinite(s) else _get(row, "episodes", "score")


PANELS: list[tuple[str, str, Any]] = [
    ("score (mean of last 100 episodes)", "agent_steps", _score),
    ("score vs wall-clock", "elapsed", _score),
    ("episode return (epoch mean)", "agent_steps", lambda r: _get(r, "episodes", "episode_return")),
    ("episode return vs wall-clock", "elapsed", lambda r: _get(r, "episodes", "episode_return")),
    ("agent steps per second", "agent_steps", lambda r: _get(r, "sps")),
    ("value loss", "agent_steps", lambda r: _get(r, "losses", "value")),
    ("policy loss", "agent_steps", lambda r: _get(r, "losses", "policy")),
    ("entropy", "agent_steps", lambda r: _get(r, "losses", "entropy")),
    ("approximate KL", "agent_steps", lambda r: _get(r, "losses", "approx_kl")),
]


def plot_runs(run_dirs: list[str], out: str | None = None, labels: list[str] | None = None,
              title: str | None = None) -> str:
    """Draws the runs' curves into one figure file; returns its path."""
    if not run_dirs:
        raise PlotError("name at least one run directory")
    if labels is not None and len(labels) != len(run_dirs):
        raise PlotError(f"{len(labels)} labels for {len(run_dirs)} runs: give one per run")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("plots need matplotlib: pip install 'shoal[tools]'") from None
    runs = [read_metrics(d) for d in run_dirs]
    names = labels or [os.path.basename(os.path.normpath(d)) or d for d in run_dirs]
    fig = Figure(figsize=(13, 9), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)   # Figure + Agg canvas, not pyplot: no global figure state
    axes = fig.subplots(3, 3).ravel()
    for ax, (name, x_key, value) in zip(axes, PANELS):
        for rows, label in zip(runs, names):
            xs = [_get(r, x_key) for r in rows]
            ys = [value(r) for r in rows]
            points = [(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
            if points:
                ax.plot(*zip(*points), label=label, linewidth=1.2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("agent steps" if x_key == "agent_steps" else "seconds")
        ax.grid(alpha=0.3)
        if name in ("value loss", "approximate KL") and any(
                line.get_ydata().size and min(line.get_ydata()) > 0 for line in ax.get_lines()):
            ax.set_yscale("log")
    handles, legend_labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, legend_labels, loc="outside lower center",
                   ncols=min(len(handles), 6), fontsize=9)
    if title:
        fig.suptitle(title)
    out = out or os.path.join(run_dirs[0], "curves.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``shoal plot``."""
    parser = argparse.ArgumentParser(prog="shoal plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument("-o", "--out", help="output file (default <first RUN_DIR>/curves.png)")
    parser.add_argument("--labels", help="comma-separated legend labels, one per run")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    try:
        path = plot_runs(args.runs, args.out, args.labels.split(",") if args.labels else None,
                         args.title)
    except (PlotError, ValueError) as exc:
        print(f"shoal plot: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
