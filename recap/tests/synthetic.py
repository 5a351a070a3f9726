"""Synthetic multi-topic transcripts with known chapter boundaries, built offline from the
documentation strings of Python's standard library (one module = one topic).

Speech-like timing: ~150 words a minute in segments of 6-14 words, short gaps, and occasional
longer pauses placed at random (not at topic boundaries, so the benchmark measures the text cue)."""

from __future__ import annotations

import functools
import importlib
import inspect
import random
import re
import warnings

from recap.transcript import Segment

TOPIC_MODULES = """json sqlite3 zipfile tarfile argparse logging decimal fractions statistics random datetime
calendar csv unittest asyncio threading subprocess socket ssl urllib.request pathlib shutil tempfile gzip
hashlib secrets uuid difflib textwrap re struct heapq bisect collections itertools functools inspect ast
pickle queue multiprocessing imaplib smtplib ftplib mailbox mimetypes base64 locale gettext codecs pdb
timeit tracemalloc doctest optparse configparser plistlib lzma bz2 math operator copy pprint enum weakref
contextlib dataclasses warnings traceback platform ctypes selectors signal mmap ipaddress wsgiref
http.cookies http.client xmlrpc.client zoneinfo glob fnmatch filecmp fileinput email.message typing
""".split()

_CODEY = re.compile(r">>>|\.\.\.|[{}\[\]=<>|\\]|^\s*[-*]\s|`|\w+\(.*\)|::")


def _module_text(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _prose(importlib.import_module(name), name)


def _prose(module, name: str) -> str:
    docs = [inspect.getdoc(module) or ""]
    for member_name, member in sorted(vars(module).items()):
        if member_name.startswith("_") or getattr(member, "__module__", name) != module.__name__:
            continue
        docs.append(inspect.getdoc(member) or "")
        if inspect.isclass(member):
            for _, method in sorted(vars(member).items()):
                if callable(method) and not getattr(method, "__name__", "_").startswith("_"):
                    docs.append(inspect.getdoc(method) or "")
    lines = [line.strip() for doc in docs for line in doc.splitlines()]
    prose = [line for line in lines if len(line.split()) >= 4 and not _CODEY.search(line)]
    return " ".join(prose)


@functools.lru_cache(maxsize=None)
def _all_texts() -> dict[str, list[str]]:
    texts = {}
    for name in TOPIC_MODULES:
        try:
            texts[name] = _module_text(name).split()
        except ImportError:
            continue
    return texts


def topic_texts(min_words: int = 400) -> dict[str, list[str]]:
    """Module name → its prose words, for modules with at least ``min_words`` words."""
    return {name: words for name, words in _all_texts().items() if len(words) >= min_words}


def synthetic_transcript(
    topics: int,
    *,
    seed: int,
    words_per_topic: tuple[int, int] = (300, 900),
    caption_style: bool = False,
    texts: dict[str, list[str]] | None = None,
) -> tuple[list[Segment], list[float], list[str]]:
    """(segments, true chapter start times, topic names). ``caption_style`` lower-cases and strips
    punctuation like automatic captions."""
    rng = random.Random(seed)
    texts = texts or topic_texts(min_words=words_per_topic[0])
    names = rng.sample(sorted(texts), topics)
    segments: list[Segment] = []
    starts: list[float] = []
    clock = 0.0
    for name in names:
        words = texts[name]
        length = min(len(words), rng.randint(*words_per_topic))
        offset = rng.randint(0, len(words) - length)
        chosen = words[offset : offset + length]
        starts.append(clock if segments else 0.0)
        position = 0
        while position < len(chosen):
            size = rng.randint(6, 14)
            piece = " ".join(chosen[position : position + size])
            position += size
            if caption_style:
                piece = re.sub(r"[^\w\s'-]", "", piece.lower())
            duration = len(piece.split()) / 2.5
            segments.append(Segment(round(clock, 3), round(clock + duration, 3), piece))
            clock += duration + (rng.uniform(1.0, 3.0) if rng.random() < 0.08 else rng.uniform(0.0, 0.5))
    return segments, starts, names


def to_srt(segments: list[Segment]) -> str:
    """SubRip text for timed segments."""
    def stamp(seconds: float) -> str:
        millis = int(round(seconds * 1000))
        return f"{millis // 3600000:02d}:{millis // 60000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"

    return "\n".join(f"{number}\n{stamp(s.start)} --> {stamp(s.end)}\n{s.text}\n" for number, s in enumerate(segments, 1))


def to_json3(segments: list[Segment]) -> str:
    """YouTube json3 text (auto-caption style: a window event, word pieces, newline events)."""
    import json

    events = [{"tStartMs": 0, "dDurationMs": int(segments[-1].end * 1000), "id": 1, "wpWinPosId": 1, "wsWinStyleId": 1}]
    for segment in segments:
        start = int(segment.start * 1000)
        words = segment.text.split()
        pieces = [{"utf8": words[0], "acAsrConf": 0}] + [
            {"utf8": " " + word, "tOffsetMs": 300 * index, "acAsrConf": 0} for index, word in enumerate(words[1:], 1)]
        events.append({"tStartMs": start, "dDurationMs": int((segment.end - segment.start) * 1000), "wWinId": 1, "segs": pieces})
        events.append({"tStartMs": int(segment.end * 1000), "dDurationMs": 10, "wWinId": 1, "aAppend": 1, "segs": [{"utf8": "\n"}]})
    return json.dumps({"wireMagic": "pb3", "pens": [{}], "events": events})


def boundary_f1(predicted: list[float], reference: list[float], *, collar: float) -> float:
    """F1 of chapter boundaries (the start at 0 excluded: every chaptering has it), each predicted
    boundary matching at most one reference boundary within ``collar`` seconds (greedy, closest
    pairs first)."""
    predicted = sorted(time for time in predicted if time > 0)
    reference = sorted(time for time in reference if time > 0)
    if not predicted and not reference:
        return 1.0
    if not predicted or not reference:
        return 0.0
    pairs = sorted((abs(p - r), i, j) for i, p in enumerate(predicted) for j, r in enumerate(reference) if abs(p - r) <= collar)
    used_p, used_r = set(), set()
    for _, i, j in pairs:
        if i not in used_p and j not in used_r:
            used_p.add(i)
            used_r.add(j)
    hits = len(used_p)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(reference)
    return 2 * precision * recall / (precision + recall)
