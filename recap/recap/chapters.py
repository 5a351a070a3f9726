"""Chapters by code: topic boundaries from embedding similarity and pauses, extractive titles and
summaries.

How boundaries are found, coarse to fine:

1. the transcript's segments are grouped into blocks of roughly equal word count (a block closes
   early at a pause), sized so that even a 6-hour transcript has at most a few hundred blocks;
2. every block is embedded (:mod:`recap.embed`), and the blocks are split into ``k`` contiguous
   chapters by dynamic programming that minimises the spread of the embeddings inside chapters
   (the squared distance to each chapter's mean), rewards boundaries at pauses, and rejects
   chapters shorter than a minimum duration;
3. each boundary then moves to the longest pause among the segments next to it.

Timestamps are always segment start times from the transcript.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from recap.embed import Embedder, default_embedder
from recap.keywords import key_phrases, title_from_phrases
from recap.transcript import Segment


@dataclass(frozen=True)
class Block:
    """Consecutive segments ``segments[first:stop]`` treated as one unit of topic."""

    first: int
    stop: int
    start: float | None
    end: float | None
    text: str
    pause_before: float


@dataclass
class Chapter:
    """One chapter: ``segments[first:stop]`` of the transcript, its start (seconds, None without
    times), a title and a short summary."""

    first: int
    stop: int
    start: float | None
    end: float | None
    title: str = ""
    summary: str = ""


@dataclass
class Recap:
    """What a run produces: chapters, an overall summary, and how they were made."""

    chapters: list[Chapter]
    summary: str
    timed: bool
    duration: float | None
    title: str = ""
    method: str = ""
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------- blocks


def count_words(text: str) -> int:
    return len(text.split())


def block_words_for(total_words: int) -> int:
    """Words per block: small blocks for short input (finer boundaries), larger ones for long
    input so the number of blocks, and the cost of embedding them, stays bounded (~250 blocks;
    a 6-hour stream gets blocks of ~200 words, about 80 seconds of speech)."""
    return int(min(200, max(20, round(total_words / 250))))


def make_blocks(segments: Sequence[Segment], *, target_words: int, pause_seconds: float = 1.5) -> list[Block]:
    """Group segments into blocks of about ``target_words`` words; a block may close early (at half
    the target) where the next segment follows a pause of ``pause_seconds`` or more."""
    blocks: list[Block] = []
    first = 0
    words = 0
    for index, segment in enumerate(segments):
        words += count_words(segment.text)
        following = segments[index + 1] if index + 1 < len(segments) else None
        gap = _gap(segment, following) if following is not None else 0.0
        if following is None or words >= target_words or (words >= target_words / 2 and gap >= pause_seconds):
            chunk = segments[first : index + 1]
            pause_before = _gap(segments[first - 1], segments[first]) if first > 0 else 0.0
            blocks.append(Block(first, index + 1, chunk[0].start, chunk[-1].end,
                                " ".join(piece.text for piece in chunk), pause_before))
            first, words = index + 1, 0
    return blocks


def _gap(previous: Segment, following: Segment) -> float:
    if previous.end is None or following.start is None:
        return 0.0
    return max(0.0, following.start - previous.end)


# ------------------------------------------------------------------------------- chapter count


def chapter_count_for(duration_seconds: float | None, words: int, *, chapter_minutes: float | None = None) -> int:
    """How many chapters suit the length: one per ``chapter_minutes`` when given, else one per
    duration/6, clamped to 2..15 minutes per chapter (a 10-minute video gets 5, an hour 6, six
    hours 24). Without times the length is estimated at 150 words a minute."""
    minutes = (duration_seconds / 60) if duration_seconds else words / 150
    if chapter_minutes is None:
        chapter_minutes = min(15.0, max(2.0, minutes / 6))
    return max(3, int(round(minutes / chapter_minutes)))


# ------------------------------------------------------------------------------ segmentation


def split_blocks(
    embeddings: np.ndarray,
    count: int,
    *,
    starts: Sequence[float] | None = None,
    total_end: float | None = None,
    min_seconds: float = 0.0,
    min_blocks: int = 1,
    pause_bonus: Sequence[float] | None = None,
) -> list[int]:
    """Split ``n`` embedded blocks into ``count`` contiguous groups; returns the first block of every
    group (0 first). Minimises the sum over groups of squared distances to the group mean, minus
    ``pause_bonus[i]`` for a group starting at block ``i``. With ``starts``/``total_end`` (seconds)
    every group must last ``min_seconds``; every group holds ``min_blocks`` blocks. Asks for fewer
    groups when ``count`` cannot satisfy the constraints."""
    n = len(embeddings)
    if n == 0:
        return []
    count = max(1, min(count, n))
    vectors = np.asarray(embeddings, dtype=np.float64)
    prefix = np.vstack([np.zeros((1, vectors.shape[1])), np.cumsum(vectors, axis=0)])
    squares = np.concatenate([[0.0], np.cumsum(np.einsum("ij,ij->i", vectors, vectors))])
    gram = prefix @ prefix.T
    diagonal = np.diag(gram)
    lengths = np.arange(n + 1)[None, :] - np.arange(n + 1)[:, None]  # j - i
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = (squares[None, :] - squares[:, None]) - (diagonal[:, None] + diagonal[None, :] - 2 * gram) / lengths
    cost = np.where(lengths >= min_blocks, spread, np.inf)
    if starts is not None:
        times = np.asarray(list(starts) + [total_end if total_end is not None else starts[-1]], dtype=np.float64)
        times[0] = 0.0
        cost = np.where(times[None, :] - times[:, None] >= min_seconds, cost, np.inf)
    if pause_bonus is not None:
        bonus = np.concatenate([[0.0], np.asarray(pause_bonus[1:], dtype=np.float64), [0.0]])
        cost = cost - bonus[:, None]
    while count > 1:
        best = np.full(n + 1, np.inf)
        best[1:] = cost[0, 1:]
        choices = []
        for _ in range(count - 1):
            totals = best[:, None] + cost
            choice = np.argmin(totals, axis=0)
            best = totals[choice, np.arange(n + 1)]
            choices.append(choice)
        if np.isfinite(best[n]):
            firsts = [n]
            for choice in reversed(choices):
                firsts.append(int(choice[firsts[-1]]))
            return [0] + sorted(set(firsts[1:]))
        count -= 1
    return [0]


def _refine_at_pauses(segments: Sequence[Segment], blocks: Sequence[Block], firsts: Sequence[int], reach: int = 3) -> list[int]:
    """Segment indices of chapter starts: each block boundary moved to the segment within ``reach``
    segments whose preceding pause is longest (by at least a second; otherwise it stays)."""
    starts = []
    for position, block_index in enumerate(firsts):
        index = blocks[block_index].first
        if position == 0:
            starts.append(0)
            continue
        low = max(starts[-1] + 1, index - reach)
        high = blocks[firsts[position + 1]].first - 1 if position + 1 < len(firsts) else len(segments) - 1
        high = min(high, index + reach)
        best, best_gap = index, _gap(segments[index - 1], segments[index])
        for candidate in range(low, high + 1):
            gap = _gap(segments[candidate - 1], segments[candidate])
            if gap >= best_gap + 1.0:
                best, best_gap = candidate, gap
        starts.append(best)
    return starts


# ------------------------------------------------------------------------------- summaries

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=[^\s])")


def sentences_of(text: str, *, max_words: int = 30) -> list[str]:
    """Sentences (at . ! ? …); unpunctuated stretches, as in auto-captions, in pieces of at most
    ``max_words`` words."""
    pieces = []
    for sentence in _SENTENCE_END.split(text):
        words = sentence.split()
        for start in range(0, len(words), max_words):
            pieces.append(" ".join(words[start : start + max_words]))
    return [piece for piece in pieces if piece]


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def pick_central(candidates: Sequence[str], vectors: np.ndarray, centre: np.ndarray, *, count: int, diversity: float = 0.5) -> list[int]:
    """Maximal marginal relevance: ``count`` candidates close to ``centre`` and unlike each other;
    very short candidates are discounted. Returns indices in reading order."""
    if not len(candidates):
        return []
    relevance = vectors @ centre
    lengths = np.array([count_words(text) for text in candidates], dtype=np.float64)
    relevance = relevance * np.clip(lengths / 8.0, 0.2, 1.0)
    chosen: list[int] = []
    while len(chosen) < min(count, len(candidates)):
        if chosen:
            redundancy = (vectors @ vectors[chosen].T).max(axis=1)
            score = (1 - diversity) * relevance - diversity * redundancy
        else:
            score = relevance.copy()
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
    return sorted(chosen)


def _shorten(text: str, limit: int) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


def _sentence_case(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] if text else text


def describe_chapters(
    segments: Sequence[Segment],
    chapters: list[Chapter],
    embedder: Embedder,
    *,
    block_vectors: np.ndarray | None = None,
    blocks: Sequence[Block] | None = None,
    keep_titles: bool = False,
    summary_chars: int = 220,
) -> str:
    """Fill each chapter's title (key phrases) and summary (its most central sentence or two), and
    return an overall summary (the most central, mutually different chapter sentences)."""
    texts = [" ".join(segment.text for segment in segments[chapter.first : chapter.stop]) for chapter in chapters]
    phrases = key_phrases(texts, top=6)
    all_candidates: list[str] = []
    all_vectors = []
    for number, chapter in enumerate(chapters):
        # Candidate sentences come from the chapter's most central blocks (or all of it when short).
        if blocks is not None and block_vectors is not None:
            inside = [index for index, block in enumerate(blocks) if chapter.first <= block.first < chapter.stop]
        else:
            inside = []
        if inside:
            centre = _unit(block_vectors[inside].mean(axis=0))
            ranked = sorted(inside, key=lambda index: -float(block_vectors[index] @ centre))[: 2 if len(blocks) < 100 else 1]
            source = " ".join(blocks[index].text for index in sorted(ranked))
        else:
            source = texts[number]
            centre = None
        candidates = sentences_of(source)[:60]
        if not candidates:
            continue
        vectors = embedder.encode(candidates)
        if centre is None or centre.shape[0] != vectors.shape[1]:
            centre = _unit(embedder.encode([texts[number][:4000]])[0])
        picked = pick_central(candidates, vectors, centre, count=2)
        summary = " ".join(_sentence_case(candidates[index]) for index in picked)
        chapter.summary = _shorten(summary, summary_chars)
        best = picked[int(np.argmax([vectors[index] @ centre for index in picked]))]
        all_candidates.append(candidates[best])
        all_vectors.append(vectors[best])
        if not (keep_titles and chapter.title):
            chapter.title = title_from_phrases(phrases[number]) if phrases[number] else _shorten(candidates[best], 50)
    _make_titles_unique(chapters, phrases)
    if not all_candidates:
        return ""
    matrix = np.vstack(all_vectors)
    picked = pick_central(all_candidates, matrix, _unit(matrix.mean(axis=0)), count=3, diversity=0.6)
    return " ".join(_sentence_case(all_candidates[index]).rstrip(".") + "." for index in picked)


def _make_titles_unique(chapters: list[Chapter], phrases: list[list[str]]) -> None:
    seen: dict[str, int] = {}
    for number, chapter in enumerate(chapters):
        key = chapter.title.lower()
        if key in seen:
            extra = [phrase for phrase in phrases[number] if phrase.lower() not in key]
            chapter.title = f"{chapter.title} ({extra[0]})" if extra else f"{chapter.title} ({seen[key] + 1})"
        seen[key] = seen.get(key, 0) + 1


# ----------------------------------------------------------------------------------- pipeline


def build_recap(
    segments: Sequence[Segment],
    *,
    chapters: int | None = None,
    chapter_minutes: float | None = None,
    duration: float | None = None,
    creator_chapters: Sequence[tuple[float, str]] | None = None,
    embedder: Embedder | str = "auto",
    min_chapter_seconds: float = 10.0,
    pause_weight: float = 0.3,
    title: str = "",
) -> Recap:
    """Chapters, titles and summaries for a cleaned transcript.

    ``chapters`` fixes the count (else :func:`chapter_count_for`); ``creator_chapters`` (start
    seconds, title), when given, are used as the boundaries instead of searching. ``embedder`` is an
    :class:`~recap.embed.Embedder` or ``"auto"``/``"minilm"``/``"tfidf"``."""
    segments = [segment for segment in segments if segment.text.strip()]
    if not segments:
        raise ValueError("the transcript is empty: nothing to summarise")
    timed = all(segment.start is not None for segment in segments)
    notes: list[str] = []
    if timed:
        duration = max(duration or 0.0, max(segment.end or segment.start for segment in segments))
    else:
        duration = None
        notes.append("The input has no timestamps: the outline below has no times.")
    words = sum(count_words(segment.text) for segment in segments)
    blocks = make_blocks(segments, target_words=block_words_for(words))
    block_texts = [block.text for block in blocks]
    if not isinstance(embedder, str):
        model = embedder
    else:
        model = default_embedder(block_texts, kind=embedder)
    vectors = model.encode(block_texts)

    if creator_chapters and timed:
        found = _chapters_from_times(segments, creator_chapters)
        notes.append("Chapter boundaries are the ones the creator wrote.")
    else:
        wanted = chapters or chapter_count_for(duration, words, chapter_minutes=chapter_minutes)
        if timed:
            min_seconds = max(min_chapter_seconds, 0.25 * duration / wanted)
            pauses = [min(block.pause_before, 4.0) / 4.0 * pause_weight for block in blocks]
            firsts = split_blocks(vectors, wanted, starts=[math.floor(block.start) for block in blocks],
                                  total_end=duration, min_seconds=min_seconds, pause_bonus=pauses)
            # A constraint too tight for the wanted count (short input): relax to YouTube's minimum.
            if len(firsts) < min(wanted, 3) and min_seconds > min_chapter_seconds:
                firsts = split_blocks(vectors, wanted, starts=[math.floor(block.start) for block in blocks],
                                      total_end=duration, min_seconds=min_chapter_seconds, pause_bonus=pauses)
            starts = _refine_at_pauses(segments, blocks, firsts)
            starts = _enforce_min_length(segments, starts, duration, min_chapter_seconds)
        else:
            firsts = split_blocks(vectors, wanted, min_blocks=max(1, len(blocks) // (4 * wanted)))
            starts = [blocks[index].first for index in firsts]
        found = _chapters_from_starts(segments, starts, duration)
    summary = describe_chapters(segments, found, model, block_vectors=vectors, blocks=blocks,
                                keep_titles=bool(creator_chapters and timed))
    return Recap(found, summary, timed, duration, title=title, method=f"extractive ({model.name})", notes=notes)


def _chapters_from_starts(segments: Sequence[Segment], starts: Sequence[int], duration: float | None) -> list[Chapter]:
    found = []
    for position, first in enumerate(starts):
        stop = starts[position + 1] if position + 1 < len(starts) else len(segments)
        start = 0.0 if position == 0 and segments[0].start is not None else segments[first].start
        if start is not None and position > 0:
            start = float(math.floor(start))
        end = segments[stop - 1].end if segments[stop - 1].end is not None else None
        if position + 1 == len(starts) and duration is not None:
            end = duration
        found.append(Chapter(first, stop, start, end))
    for position in range(len(found) - 1):
        if found[position + 1].start is not None:
            found[position].end = found[position + 1].start
    return found


def _enforce_min_length(segments: Sequence[Segment], starts: list[int], duration: float, minimum: float) -> list[int]:
    """Drop chapter starts that would leave a chapter shorter than ``minimum`` seconds (times as
    displayed: whole seconds, the first at 0)."""
    kept = [0]
    for index in starts[1:]:
        if math.floor(segments[index].start) - _shown(segments, kept[-1], len(kept) == 1) >= minimum:
            kept.append(index)
    while len(kept) > 1 and duration - _shown(segments, kept[-1], False) < minimum:
        kept.pop()
    return kept


def _shown(segments: Sequence[Segment], index: int, first: bool) -> float:
    return 0.0 if first else float(math.floor(segments[index].start))


def _chapters_from_times(segments: Sequence[Segment], marks: Sequence[tuple[float, str]]) -> list[Chapter]:
    """Chapters at the creator's (seconds, title) marks; each holds the segments from the first
    one starting at or after its mark. Marks with no speech of their own are dropped."""
    kept: list[tuple[int, float, str]] = []
    for seconds, name in sorted(marks):
        index = next((i for i, segment in enumerate(segments) if (segment.start or 0.0) >= seconds - 0.5), None)
        if index is None or (kept and index <= kept[-1][0]):
            continue
        kept.append((index, float(seconds), name))
    if not kept:
        kept = [(0, 0.0, "")]
    kept[0] = (0, 0.0, kept[0][2])
    found = []
    for position, (first, seconds, name) in enumerate(kept):
        stop = kept[position + 1][0] if position + 1 < len(kept) else len(segments)
        end = kept[position + 1][1] if position + 1 < len(kept) else segments[-1].end
        found.append(Chapter(first, stop, seconds, end, title=name))
    return found
