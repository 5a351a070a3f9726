"""Links end to end: real yt-dlp (format selection, subtitle handling, HTTP downloads) against a
local HTTP server; only the page extraction is replaced, by an extractor that serves a
YouTube-shaped info dict from a fixture, or yt-dlp's own generic extractor on a local page."""

import http.server
import json
import tempfile
import threading
from pathlib import Path

import pytest

yt_dlp = pytest.importorskip("yt_dlp")
from yt_dlp.extractor.common import InfoExtractor  # noqa: E402

from recap.home import TEMP_PREFIX  # noqa: E402
from recap.links import choose_captions, downloader_options, fetch_link  # noqa: E402
from recap.transcript import Segment  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
AUDIO = b"\x00\x00\x00\x20ftypM4A " + bytes(range(256)) * 40


class Site:
    """A local web server: the served files and a log of the paths requested."""

    def __init__(self):
        self.files = {
            "/audio.m4a": AUDIO,
            "/audio.webm": b"webm-audio" * 100,
            "/video.mp4": b"video" * 1000,
            "/muxed.mp4": b"muxed" * 1000,
            "/en-orig.json3": (FIXTURES / "auto.json3").read_bytes(),
            "/en-orig.vtt": (FIXTURES / "rolling.vtt").read_bytes(),
            "/en-orig.srv3": (FIXTURES / "manual.srv3").read_bytes(),
            "/de.json3": json.dumps({"events": [{"tStartMs": 0, "dDurationMs": 3000, "segs": [{"utf8": "Hallo zusammen"}]}]}).encode(),
            "/page.html": b"<html><head><title>Garden talk</title></head><body>"
                          b"<video controls><source src='/muxed.mp4' type='video/mp4'>"
                          b"<track kind='captions' src='/en-orig.vtt' srclang='en' label='English'></video></body></html>",
        }
        self.requests = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                site.requests.append(self.path)
                body = site.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "text/html" if self.path.endswith(".html") else "application/octet-stream")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site(monkeypatch, tmp_path):
    monkeypatch.setenv("RECAP_HOME", str(tmp_path / "home"))
    server = Site()
    yield server
    server.close()


def fixture_downloader(site, info_changes=None):
    """A real YoutubeDL whose only extractor returns the fixture info dict (URLs on the local site)."""
    text = (FIXTURES / "youtube_info.json").read_text().replace("{server}", site.url)
    info = json.loads(text)
    info.update(info_changes or {})

    class FixtureIE(InfoExtractor):
        _VALID_URL = r"https?://video\.example/watch\?v=(?P<id>\w+)"

        def _real_extract(self, url):
            return dict(info)

    ydl = yt_dlp.YoutubeDL(downloader_options(), auto_init=False)
    ydl.add_info_extractor(FixtureIE(ydl))
    return ydl


def recap_temp_folders():
    return set(Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"))


URL = "https://video.example/watch?v=strm0000001"


def test_captions_chosen_spoken_language_original_json3(site):
    result = fetch_link(URL, downloader=fixture_downloader(site))
    assert result.title == "Building a bird feeder, live" and result.duration == 14
    assert result.source == "automatic captions (en-orig, json3)"
    assert "/en-orig.json3" in site.requests
    assert not any(path.endswith((".m4a", ".mp4", ".webm", "live_chat.json")) for path in site.requests)
    assert result.segments[0].text == "welcome back everyone today we are"


def test_manual_captions_before_automatic(site):
    result = fetch_link(URL, language="de", downloader=fixture_downloader(site))
    assert result.source == "creator's captions (de, json3)"
    assert result.segments == [Segment(0.0, 3.0, "Hallo zusammen")]


def test_no_captions_downloads_audio_only_and_removes_it(site):
    before = recap_temp_folders()
    seen = {}

    def speech_to_text(path, *, model, language):
        seen["bytes"] = Path(path).read_bytes()
        seen["folder"] = Path(path).parent
        seen["language"] = language
        return [Segment(0.0, 4.0, "welcome to the stream")]

    downloader = fixture_downloader(site, {"subtitles": {"live_chat": [{"ext": "json", "url": site.url + "/live_chat.json"}]},
                                           "automatic_captions": {}})
    result = fetch_link(URL, downloader=downloader, transcribe=speech_to_text)
    # yt-dlp's own ranking picks among the audio-only streams; never the video or the muxed file.
    assert seen["bytes"] in (site.files["/audio.m4a"], site.files["/audio.webm"])
    assert seen["folder"].name.startswith(TEMP_PREFIX) and not seen["folder"].exists()
    assert seen["language"] == "en"
    assert "/video.mp4" not in site.requests and "/muxed.mp4" not in site.requests
    assert result.source == "speech-to-text of the audio stream"
    assert recap_temp_folders() == before


def test_interrupt_during_transcription_still_removes_the_audio(site):
    before = recap_temp_folders()

    def interrupted(path, *, model, language):
        assert Path(path).exists()
        raise KeyboardInterrupt

    downloader = fixture_downloader(site, {"subtitles": {}, "automatic_captions": {}})
    with pytest.raises(KeyboardInterrupt):
        fetch_link(URL, downloader=downloader, transcribe=interrupted)
    assert recap_temp_folders() == before


def test_no_audio_only_stream_is_a_clear_error(site):
    downloader = fixture_downloader(site, {"subtitles": {}, "automatic_captions": {},
                                           "formats": [{"format_id": "18", "url": site.url + "/muxed.mp4", "ext": "mp4",
                                                        "acodec": "mp4a.40.2", "vcodec": "avc1", "protocol": "https"}]})
    before = recap_temp_folders()
    with pytest.raises(RuntimeError, match="no audio-only stream"):
        fetch_link(URL, downloader=downloader, transcribe=lambda *a, **k: [])
    assert recap_temp_folders() == before


def test_generic_page_with_default_downloader(site):
    """No replaced parts at all: yt-dlp's generic extractor reads a local page with a caption track."""
    result = fetch_link(site.url + "/page.html")
    assert result.source.startswith("creator's captions (en, vtt)")
    assert [segment.text for segment in result.segments][:2] == [
        "welcome back everyone today we are", "building a bird feeder out of cedar"]


def test_caption_choice_rules():
    info = {"language": "en", "subtitles": {"live_chat": [{"ext": "json", "url": "x"}]},
            "automatic_captions": {"en": [{"ext": "vtt", "url": "t"}], "en-orig": [{"ext": "srv3", "url": "o"}]}}
    choice = choose_captions(info)
    assert (choice.language, choice.automatic, choice.format, choice.url) == ("en-orig", True, "srv3", "o")
    assert choose_captions({"subtitles": {"live_chat": [{"ext": "json", "url": "x"}]}}) is None
    assert choose_captions({"subtitles": {"es": [{"ext": "srt", "url": "s"}]}}).language == "es"
