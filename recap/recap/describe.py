"""Writing a recap out: a YouTube description, Markdown, or JSON.

YouTube reads chapters from description lines ``M:SS Title``: the first at 0:00, at least three,
each at least 10 seconds long, in ascending order; the description holds at most 5,000 bytes.
:func:`youtube_description` always meets those rules (shortening titles and the summary, and
merging the shortest chapters when there are too many to fit), and
:func:`youtube_chapter_problems` checks a description against them.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Sequence

from recap.chapters import Chapter, Recap

#: YouTube's limit is 5,000 bytes; stay strictly below it.
DESCRIPTION_BYTES = 4999
MIN_CHAPTERS = 3
MIN_CHAPTER_SECONDS = 10


def clock(seconds: float) -> str:
    """Seconds as YouTube writes them: ``M:SS`` below an hour, ``H:MM:SS`` from there (whole seconds,
    rounded down)."""
    total = int(math.floor(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _fit_bytes(text: str, limit: int) -> str:
    """``text`` cut at a word boundary so its UTF-8 form has at most ``limit`` bytes."""
    if len(text.encode("utf-8")) <= limit:
        return text
    if limit < 4:
        return ""
    cut = text.encode("utf-8")[: limit - 3].decode("utf-8", "ignore")
    cut = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return cut.rstrip(" ,;:.") + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _title(text: str, limit: int) -> str:
    text = _one_line(text) or "Part"
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def youtube_ready(chapters: Sequence[Chapter], duration: float | None) -> bool:
    """Whether these chapters can be YouTube chapters at all (timed, ≥3, each ≥10 s)."""
    if duration is None or len(chapters) < MIN_CHAPTERS or any(chapter.start is None for chapter in chapters):
        return False
    starts = [math.floor(chapter.start) for chapter in chapters]
    ends = starts[1:] + [duration]
    return starts[0] == 0 and all(end - start >= MIN_CHAPTER_SECONDS for start, end in zip(starts, ends))


def _merge_shortest(chapters: list[Chapter], duration: float) -> list[Chapter]:
    """The chapter list with its shortest chapter (never the first) merged into its predecessor."""
    starts = [chapter.start for chapter in chapters]
    lengths = [(ends - start) for start, ends in zip(starts, starts[1:] + [duration])]
    victim = min(range(1, len(chapters)), key=lambda index: lengths[index])
    merged = chapters[: victim - 1] + [copy.copy(chapters[victim - 1])] + chapters[victim + 1 :]
    merged[victim - 1].end = chapters[victim].end
    merged[victim - 1].stop = chapters[victim].stop
    return merged


def youtube_description(recap: Recap, *, byte_budget: int = DESCRIPTION_BYTES, title_chars: int = 60) -> str:
    """The description: the summary, a blank line, then one ``M:SS Title`` line per chapter (or,
    without times, a plainly labelled topic outline). Always within ``byte_budget`` bytes."""
    summary = _one_line(recap.summary)
    if not recap.timed:
        header = "Topics (the source had no timestamps, so this outline has none):"
        lines = [header] + [f"- {_title(chapter.title, title_chars)}" for chapter in recap.chapters]
        return _assemble(summary, lines, byte_budget)
    chapters = list(recap.chapters)
    if not youtube_ready(chapters, recap.duration):
        note = "(No chapters: YouTube needs at least three chapters of 10 seconds or more.)"
        return _assemble(summary, [note], byte_budget)
    limits = [title_chars, 40, 25, 12]
    while True:
        for limit in limits:
            lines = [f"{clock(chapter.start)} {_title(chapter.title, limit)}" for chapter in chapters]
            # Keep room for at least a short summary when one exists.
            reserve = min(len(summary.encode("utf-8")), 200) + 2 if summary else 0
            if len("\n".join(lines).encode("utf-8")) + reserve <= byte_budget:
                return _assemble(summary, lines, byte_budget)
        if len(chapters) <= MIN_CHAPTERS:
            return _assemble("", lines, byte_budget)
        chapters = _merge_shortest(chapters, recap.duration)


def _assemble(summary: str, lines: list[str], byte_budget: int) -> str:
    body = "\n".join(lines)
    room = byte_budget - len(body.encode("utf-8")) - 2
    summary = _fit_bytes(summary, room) if summary and room > 0 else ""
    text = f"{summary}\n\n{body}" if summary else body
    return text if len(text.encode("utf-8")) <= byte_budget else _fit_bytes(text, byte_budget)


_CHAPTER_LINE = re.compile(r"^\s*((?:\d+:)?\d{1,2}:\d{2})\s+\S")


def youtube_chapter_problems(description: str, duration: float) -> list[str]:
    """What keeps ``description`` from giving YouTube chapters (empty when it is fine): the first
    run of timestamp lines must start at 0:00, hold ≥3 entries, ascend, and space them ≥10 s apart
    (the last until ``duration``); the description must stay under 5,000 bytes."""
    problems = []
    if len(description.encode("utf-8")) >= 5000:
        problems.append(f"description is {len(description.encode('utf-8'))} bytes (YouTube allows < 5000)")
    times = []
    for line in description.splitlines():
        match = _CHAPTER_LINE.match(line)
        if match:
            parts = [int(part) for part in match.group(1).split(":")]
            times.append(sum(value * 60 ** power for power, value in enumerate(reversed(parts))))
        elif times:
            break
    if len(times) < MIN_CHAPTERS:
        problems.append(f"{len(times)} chapter lines (YouTube needs at least {MIN_CHAPTERS})")
        return problems
    if times[0] != 0:
        problems.append("first chapter is not at 0:00")
    for before, after in zip(times, times[1:] + [duration]):
        if after - before < MIN_CHAPTER_SECONDS:
            problems.append(f"chapter at {clock(before)} lasts {after - before:.0f} s (< {MIN_CHAPTER_SECONDS} s)")
    return problems


def markdown(recap: Recap) -> str:
    """A Markdown report: title, summary, then chapters with their summaries."""
    out = [f"# {recap.title or 'Recap'}", ""]
    for note in recap.notes:
        out += [f"> {note}", ""]
    if recap.summary:
        out += ["## Summary", "", recap.summary, ""]
    if recap.timed:
        out += ["## Chapters", ""]
        for chapter in recap.chapters:
            out += [f"### {clock(chapter.start)} {_one_line(chapter.title)}", "", chapter.summary, ""]
    else:
        out += ["## Topics (no timestamps: the source had none)", ""]
        for number, chapter in enumerate(recap.chapters, 1):
            out.append(f"{number}. **{_one_line(chapter.title)}** — {chapter.summary}")
        out.append("")
    out += [f"*Made by recap, {recap.method}.*", ""]
    return "\n".join(out)


def as_json(recap: Recap) -> str:
    """The recap as JSON: times in seconds (null without times) and as displayed, plus the YouTube
    description."""
    document = {
        "title": recap.title,
        "timed": recap.timed,
        "duration": recap.duration,
        "method": recap.method,
        "summary": recap.summary,
        "notes": recap.notes,
        "chapters": [
            {
                "start": chapter.start,
                "end": chapter.end,
                "start_text": clock(chapter.start) if chapter.start is not None else None,
                "title": chapter.title,
                "summary": chapter.summary,
            }
            for chapter in recap.chapters
        ],
        "youtube_description": youtube_description(recap),
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


FORMATTERS = {"youtube": youtube_description, "markdown": markdown, "json": as_json}
