"""Links (YouTube, Twitch, X, anything yt-dlp supports): metadata first, captions when they exist,
otherwise the audio stream alone, downloaded into a temporary folder that is removed afterwards.

Needs ``pip install 'recap[links]'`` (yt-dlp). Caption choice: the creator's captions before
automatic ones; the language asked for, else the spoken language of the video; json3 first (each
phrase once, with millisecond times), then srv3, WebVTT, SRT. The live-chat replay, which yt-dlp
lists as a caption track, is never used as a transcript.
"""

from __future__ import annotations

import copy
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from recap.home import TEMP_PREFIX, cache_dir
from recap.sources import parse_captions, transcribe_recording
from recap.transcript import Segment

CAPTION_FORMATS = ("json3", "srv3", "vtt", "srt")
NOT_CAPTIONS = frozenset({"live_chat", "rechat", "danmaku", "comments"})

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_link(text: str) -> bool:
    """Whether ``text`` is a URL (rather than a path)."""
    return bool(_SCHEME.match(text))


@dataclass
class CaptionChoice:
    """The caption track picked for a video."""

    language: str
    automatic: bool
    format: str
    url: str


@dataclass
class LinkResult:
    """What a link gave: metadata, the transcript, and where the transcript came from."""

    url: str
    title: str
    duration: float | None
    description: str
    creator_chapters: list[tuple[float, str]]
    language: str | None
    segments: list[Segment]
    source: str
    notes: list[str] = field(default_factory=list)


def _language_matches(key: str, wanted: str) -> int:
    """0 = exact or original-language (``en-orig``) match, 1 = regional variant (``en-GB``), else -1."""
    key, wanted = key.lower(), wanted.lower()
    if key in (wanted, f"{wanted}-orig"):
        return 0
    if key.split("-")[0] == wanted.split("-")[0]:
        return 1
    return -1


def choose_captions(info: dict[str, Any], language: str | None = None) -> CaptionChoice | None:
    """The best caption track in a yt-dlp info dict, or None.

    Order: manual tracks in the wanted language, then automatic ones (the original-language
    ``-orig`` track first, not machine translations); the wanted language is ``language`` or the
    video's spoken ``language``. Without either, a sole manual track is taken."""
    wanted = language or info.get("language")
    for automatic, tracks in ((False, info.get("subtitles") or {}), (True, info.get("automatic_captions") or {})):
        keys = [key for key in tracks if key.lower() not in NOT_CAPTIONS and tracks[key]]
        if wanted:
            ranked = sorted(
                (rank, (0 if key.endswith("-orig") else 1), key)
                for key in keys if (rank := _language_matches(key, wanted)) >= 0
            )
            candidates = [key for _, _, key in ranked]
        else:
            candidates = keys if (len(keys) == 1 and not automatic) else [key for key in keys if key.endswith("-orig")]
        for key in candidates:
            by_format = {entry.get("ext"): entry for entry in tracks[key] if entry.get("url")}
            for fmt in CAPTION_FORMATS:
                if fmt in by_format:
                    return CaptionChoice(key, automatic, fmt, by_format[fmt]["url"])
    return None


def _js_runtimes() -> dict[str, dict[str, str]]:
    """yt-dlp needs a JavaScript runtime for YouTube; find deno also where it was pip-installed
    next to this Python (yt-dlp does not look there on its own)."""
    found = shutil.which("deno") or next(
        (str(path) for path in [Path(sys.executable).parent / "deno"] if path.exists()), None)
    return {"deno": {"path": found}} if found else {"deno": {}}


def downloader_options(**extra: Any) -> dict[str, Any]:
    """yt-dlp options recap uses: quiet, caches inside the app folder, no playlists."""
    options = {
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "cachedir": str(cache_dir() / "yt-dlp"),
        "js_runtimes": _js_runtimes(),
    }
    options.update(extra)
    return options


def make_downloader(**extra: Any) -> Any:
    """A ``yt_dlp.YoutubeDL`` with :func:`downloader_options`."""
    try:
        import yt_dlp
    except ImportError:
        raise RuntimeError("links need yt-dlp: pip install 'recap[links]'") from None
    return yt_dlp.YoutubeDL(downloader_options(**extra))


def _creator_chapters(info: dict[str, Any]) -> list[tuple[float, str]]:
    marks = []
    for entry in info.get("chapters") or []:
        if entry.get("start_time") is not None:
            marks.append((float(entry["start_time"]), str(entry.get("title") or "").strip()))
    return marks


def fetch_link(
    url: str,
    *,
    language: str | None = None,
    model: str | Path | None = None,
    downloader: Any = None,
    transcribe: Callable[..., list[Segment]] = transcribe_recording,
) -> LinkResult:
    """Metadata, then captions, else audio → speech-to-text, for one link.

    ``downloader`` is a ``yt_dlp.YoutubeDL`` to use for metadata and captions (for cookies, a
    proxy, or extra extractors); by default one from :func:`make_downloader`. ``model`` is the
    speech-to-text model (name or folder; default ``base``) used when there are no captions. Audio, when needed, is
    downloaded with the same options into a ``recap-*`` temporary folder that is removed when this
    returns, raises, or is interrupted."""
    ydl = downloader or make_downloader()
    try:
        import yt_dlp.utils
    except ImportError:
        raise RuntimeError("links need yt-dlp: pip install 'recap[links]'") from None
    try:
        info = ydl.extract_info(url, download=False)
    except yt_dlp.utils.YoutubeDLError as error:
        raise RuntimeError(f"could not read {url}: {error}") from None
    if info is None:
        raise RuntimeError(f"{url} gave no video information")
    if info.get("_type") == "playlist" or info.get("entries") is not None:
        raise RuntimeError(f"{url} is a playlist or channel; give the link of one video or stream")
    result = LinkResult(
        url=url,
        title=str(info.get("title") or ""),
        duration=float(info["duration"]) if info.get("duration") else None,
        description=str(info.get("description") or ""),
        creator_chapters=_creator_chapters(info),
        language=info.get("language"),
        segments=[],
        source="",
    )
    choice = choose_captions(info, language)
    if choice is not None:
        try:
            text = ydl.urlopen(choice.url).read().decode("utf-8-sig")
        except Exception as error:  # network errors come in many types; name the track
            raise RuntimeError(f"could not download the {choice.language} captions of {url}: {error}") from None
        result.segments = parse_captions(text, choice.format)
        kind = "automatic" if choice.automatic else "creator's"
        result.source = f"{kind} captions ({choice.language}, {choice.format})"
        return result
    with audio_download(info, ydl.params) as audio:
        result.segments = transcribe(audio, model=model, language=language or result.language)
    result.source = "speech-to-text of the audio stream"
    return result


class audio_download:
    """Context manager: the audio-only stream of an extracted video downloaded into a fresh
    ``recap-*`` temporary folder; yields the file's path and removes the folder on exit, whatever
    the exit (return, error, Ctrl-C)."""

    def __init__(self, info: dict[str, Any], params: dict[str, Any]):
        self.info = info
        self.params = params
        self.folder: Path | None = None

    def __enter__(self) -> Path:
        import yt_dlp

        self.folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        try:
            options = {k: v for k, v in self.params.items() if k not in ("outtmpl", "paths", "format", "postprocessors")}
            options.update(
                format="bestaudio",  # the audio stream alone: never the video
                outtmpl={"default": "audio.%(ext)s"},
                paths={"home": str(self.folder), "temp": str(self.folder)},
                noplaylist=True, quiet=True, noprogress=True, writesubtitles=False, writeautomaticsub=False,
                writeinfojson=False, writethumbnail=False, postprocessors=[],
            )
            with yt_dlp.YoutubeDL(options) as ydl:
                try:
                    ydl.process_ie_result(copy.deepcopy(self.info), download=True)
                except yt_dlp.utils.YoutubeDLError as error:
                    if "Requested format is not available" in str(error):
                        raise RuntimeError(
                            "this link offers no audio-only stream; download the recording yourself and "
                            "give recap the file") from None
                    raise RuntimeError(f"audio download failed: {error}") from None
            files = [path for path in self.folder.iterdir() if path.name.startswith("audio.") and not path.name.endswith(".part")]
            if not files:
                raise RuntimeError("the audio download produced no file")
            return files[0]
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: object) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
