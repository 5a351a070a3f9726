import importlib.util
from pathlib import Path

import pytest

from recap.sources import (
    TranscriptFormatError, parse_captions, parse_clock, read_transcript_file, sniff_format,
    transcribe_recording,
)
from recap.transcript import Segment

FIXTURES = Path(__file__).parent / "fixtures"


def texts(segments):
    return [segment.text for segment in segments]


def test_rolling_vtt_reads_each_phrase_once_with_its_cue_start():
    segments = read_transcript_file(FIXTURES / "rolling.vtt")
    assert texts(segments) == [
        "welcome back everyone today we are",
        "building a bird feeder out of cedar",
        "[Music]",
        "first we cut the boards to length",
        "with a japanese pull saw",
    ]
    assert [round(segment.start, 3) for segment in segments] == [0.0, 2.879, 5.759, 8.49, 11.13]


def test_vtt_line_growing_word_by_word_is_one_phrase():
    vtt = ("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhello\n\n00:00:02.000 --> 00:00:03.000\nhello there\n\n"
           "00:00:03.000 --> 00:00:04.000\nhello there friend\n\n00:00:04.000 --> 00:00:06.000\nnext line\n")
    segments = parse_captions(vtt)
    assert segments == [Segment(1.0, 4.0, "hello there friend"), Segment(4.0, 6.0, "next line")]


def test_json3_skips_window_and_newline_events():
    segments = read_transcript_file(FIXTURES / "auto.json3")
    assert texts(segments) == [
        "welcome back everyone today we are", "building a bird feeder out of cedar", "[Music]",
        "first we cut the boards to length", "with a japanese pull saw",
    ]
    assert segments[1].start == pytest.approx(2.879)
    assert segments[1].end == pytest.approx(2.879 + 5.611)


def test_srv3_paragraphs_and_entities():
    segments = read_transcript_file(FIXTURES / "manual.srv3")
    assert texts(segments) == ["Welcome back, everyone.", "[Music]", "First we cut the boards & glue them."]
    assert (segments[0].start, segments[0].end) == (0.5, pytest.approx(3.2))


def test_srt_joins_lines_and_drops_markup():
    segments = read_transcript_file(FIXTURES / "manual.srt")
    assert segments[0] == Segment(0.5, 3.2, "Welcome back, everyone. Today we're building a bird feeder.")
    assert texts(segments)[1:] == ["[Music]", "First we cut the boards to length with a Japanese pull saw.",
                                   "Then we glue & clamp them."]
    assert segments[3].start == 62.0


def test_srt_keeps_a_stray_less_than_sign():
    srt = "1\n00:00:01,000 --> 00:00:02,000\nif a < b then <b>swap</b>\n"
    assert texts(parse_captions(srt, "srt")) == ["if a < b then swap"]


def test_plain_text_has_no_times():
    segments = read_transcript_file(FIXTURES / "plain.txt")
    assert len(segments) == 3
    assert all(segment.start is None and segment.end is None for segment in segments)


def test_text_with_clock_lines_is_timed():
    segments = parse_captions("0:00\nintro words here\n1:05\nsecond part\n[1:02:03] late part\n", "text")
    assert [(segment.start, segment.text) for segment in segments] == [
        (0.0, "intro words here"), (65.0, "second part"), (3723.0, "late part")]


@pytest.mark.parametrize("text,expected", [
    ("WEBVTT\n\n", "vtt"), ('{"events": []}', "json3"), ("<?xml version='1.0'?><timedtext format='3'>", "srv3"),
    ("1\n00:00:01,000 --> 00:00:02,000\nhi\n", "srt"), ("just words", "text"),
])
def test_sniffing(text, expected):
    assert sniff_format(text) == expected


def test_clock():
    assert parse_clock("01:02:03.450") == pytest.approx(3723.45)
    assert parse_clock("02:03,5") == pytest.approx(123.5)
    with pytest.raises(TranscriptFormatError, match="timestamp"):
        parse_clock("soon")


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(TranscriptFormatError, match="not valid JSON"):
        parse_captions('{"events": [', "json3")
    with pytest.raises(TranscriptFormatError, match="'events' list"):
        parse_captions('{"nothing": 1}', "json3")
    with pytest.raises(TranscriptFormatError, match="DOCTYPE"):
        parse_captions('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><timedtext/>', "srv3")
    binary = tmp_path / "clip.bin"
    binary.write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(TranscriptFormatError, match="binary"):
        read_transcript_file(binary)
    latin = tmp_path / "latin.srt"
    latin.write_bytes("1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(TranscriptFormatError, match="UTF-8"):
        read_transcript_file(latin)


@pytest.mark.parametrize("text, fmt, attribute", [
    ('{"events": [{"tStartMs": "soon", "segs": [{"utf8": "hi"}]}]}', "json3", "tStartMs"),
    ('{"events": [{"tStartMs": NaN, "segs": [{"utf8": "hi"}]}]}', "json3", "tStartMs"),
    ('{"events": [{"tStartMs": 0, "dDurationMs": -5, "segs": [{"utf8": "hi"}]}]}', "json3", "dDurationMs"),
    ('<timedtext format="3"><body><p t="abc" d="10">hi</p></body></timedtext>', "srv3", "t"),
    ('<transcript><text start="inf" dur="1">hi</text></transcript>', "srv3", "start"),
])
def test_damaged_caption_times_are_named(text, fmt, attribute):
    with pytest.raises(TranscriptFormatError, match=f"caption time {attribute}=.*download the captions again"):
        parse_captions(text, fmt)


def test_json3_event_whose_segs_is_not_a_list_is_skipped():
    text = '{"events": [{"tStartMs": 0, "segs": 5}, {"tStartMs": 1000, "dDurationMs": 500, "segs": [{"utf8": "hi"}]}]}'
    assert parse_captions(text, "json3") == [Segment(1.0, 1.5, "hi")]


@pytest.mark.skipif(importlib.util.find_spec("faster_whisper") is not None,
                    reason="speech-to-text is installed; its own tests cover recordings")
def test_recording_without_speech_to_text_says_how_to_install(tmp_path):
    recording = tmp_path / "stream.m4a"
    recording.write_bytes(b"\x00" * 64)
    with pytest.raises(RuntimeError, match=r"pip install 'recap\[speech\]'"):
        transcribe_recording(recording, model=None, language=None)
