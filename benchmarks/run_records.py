"""What several benchmark scripts read and summarise: JSON-lines files (a run's metrics.jsonl,
a benchmark's own log of runs) and medians over seeds where some runs have no value.

Imported by the scripts next to it (``python benchmarks/NAME.py`` puts this folder on the path).
"""

from __future__ import annotations

import json
import os
import statistics

__all__ = ["read_jsonl", "median_known"]


def read_jsonl(path: str, missing_ok: bool = False) -> list[dict]:
    """The records of a JSON-lines file, one per non-blank line. A missing file is
    FileNotFoundError, or no records with ``missing_ok`` (a run that wrote none yet)."""
    if missing_ok and not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def median_known(values: list[float | None]) -> float | None:
    """The median of the values that are not None (None if there are none): e.g. a score that
    some seeds never reached."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None
