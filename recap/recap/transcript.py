"""The transcript every input becomes: timed segments of text (times in seconds)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    """One span of speech. ``start``/``end`` are seconds from the start of the recording, or
    ``None`` for both when the source had no times (plain text)."""

    start: float | None
    end: float | None
    text: str
