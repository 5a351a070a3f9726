"""Tidying a transcript: caption tags, repeated lines, rolling overlaps, repetition loops.

Each step keeps every surviving segment's own start and end; merged duplicates keep the first
start and the last end.
"""

from __future__ import annotations

import html
import re

from recap.transcript import Segment

# [Music], [Applause], (laughter), ♪ lyrics ♪, speaker-change chevrons, stray markup.
_BRACKET_TAG = re.compile(r"\[[^\]]{0,40}\]|\((?:music|applause|laughter|laughs|inaudible|silence|noise)[^)]{0,20}\)", re.I)
_MUSIC_NOTES = re.compile(r"[♪♫]+[^♪♫]{0,200}[♪♫]+|[♪♫]+")
# A tag may not contain its own opening character: a long run of unclosed "<" (or "{\")
# then costs one pass, not one pass per character.
_MARKUP = re.compile(r"<[^<>]*>|\{\\[^{}]*\}")
_CHEVRONS = re.compile(r"(^|\s)>>+\s*")


def strip_tags(text: str) -> str:
    """Remove caption annotations (``[Music]``, ``(applause)``, ``♪ … ♪``, ``>>``, markup) and
    normalise whitespace."""
    text = html.unescape(text)
    text = _MARKUP.sub(" ", text)
    text = _BRACKET_TAG.sub(" ", text)
    text = _MUSIC_NOTES.sub(" ", text)
    text = _CHEVRONS.sub(" ", text)
    return " ".join(text.split())


def comparison_key(text: str) -> str:
    """``text`` as compared for repeats: lower case, punctuation and extra spaces removed."""
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


def collapse_repetition(text: str, *, min_repeats: int = 3, max_phrase_words: int = 8) -> str:
    """A phrase said ``min_repeats`` or more times in a row (the loop speech-to-text falls into on
    long audio: "thank you. thank you. thank you. ...") is kept once. Single words need one more
    repeat, so "no no" and "very very" survive."""
    words = text.split()
    if len(words) < min_repeats:
        return text
    keys = [comparison_key(word) for word in words]
    out: list[str] = []
    index = 0
    while index < len(words):
        collapsed = False
        for size in range(max_phrase_words, 0, -1):
            needed = min_repeats + (1 if size == 1 else 0)
            if index + size * needed > len(words):
                continue
            phrase = keys[index : index + size]
            if not any(phrase):
                continue
            repeats = 1
            while keys[index + repeats * size : index + (repeats + 1) * size] == phrase:
                repeats += 1
            if repeats >= needed:
                out.extend(words[index : index + size])
                index += repeats * size
                collapsed = True
                break
        if not collapsed:
            out.append(words[index])
            index += 1
    return " ".join(out)


def _overlap_words(previous: list[str], current: list[str], minimum: int) -> int:
    """The number of leading words of ``current`` that repeat the trailing words of ``previous``."""
    for size in range(min(len(previous), len(current)), minimum - 1, -1):
        # The first-word test is cheap and rejects almost every size before the slices are built.
        if previous[-size] == current[0] and previous[-size:] == current[:size]:
            return size
    return 0


def clean_segments(segments: list[Segment], *, min_overlap_words: int = 4) -> list[Segment]:
    """The tidied transcript: tags stripped, repetition loops collapsed, a segment that restates
    the end of the previous one (rolling captions) trimmed to its new words, consecutive
    duplicates merged (first start, last end), empty segments dropped."""
    cleaned: list[Segment] = []
    recent_keys: list[str] = []
    for segment in segments:
        text = collapse_repetition(strip_tags(segment.text))
        if not comparison_key(text):
            continue
        if cleaned:
            previous = cleaned[-1]
            key = comparison_key(text)
            if key in recent_keys:
                # The same line again (a scroll repeat or a loop): extend the earlier one's time.
                if key == recent_keys[-1] and segment.end is not None and previous.end is not None:
                    cleaned[-1] = Segment(previous.start, max(previous.end, segment.end), previous.text)
                continue
            previous_words = [comparison_key(word) for word in previous.text.split()]
            words = text.split()
            current_words = [comparison_key(word) for word in words]
            overlap = _overlap_words(previous_words, current_words, min_overlap_words)
            if overlap:
                words = words[overlap:]
                if not words:
                    continue
                text = " ".join(words)
        cleaned.append(Segment(segment.start, segment.end, text))
        recent_keys = (recent_keys + [comparison_key(text)])[-3:]
    return cleaned
