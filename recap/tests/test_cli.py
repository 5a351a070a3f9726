import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from recap.describe import youtube_chapter_problems
from recap.embed import minilm_available
from recap.home import TEMP_PREFIX
from synthetic import synthetic_transcript, to_json3, to_srt

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def recap_cli(*args, home, check=True):
    environment = dict(os.environ, RECAP_HOME=str(home))
    environment["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), environment.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-m", "recap", *map(str, args)], capture_output=True, text=True,
                            env=environment, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def temp_folders():
    return set(Path(tempfile.gettempdir()).glob(TEMP_PREFIX + "*"))


@pytest.mark.parametrize("embedder", ["tfidf", "auto"])
def test_caption_file_to_json_and_youtube_description(tmp_path, embedder):
    if embedder == "auto" and not minilm_available():
        pytest.skip("the bundled embedding model is not installed")
    segments, truth, _ = synthetic_transcript(6, seed=3, caption_style=True)
    captions = tmp_path / "stream.json3"
    captions.write_text(to_json3(segments))
    before = temp_folders()
    out = tmp_path / "recap.json"
    recap_cli(captions, "--format", "json", "-o", out, "--embedder", embedder, home=tmp_path / "home")
    document = json.loads(out.read_text())
    starts = [chapter["start"] for chapter in document["chapters"]]
    assert starts[0] == 0 and len(starts) >= 3 and starts == sorted(starts)
    # Every later start is a transcript time (a segment start, shown in whole seconds).
    segment_starts = {math.floor(segment.start) for segment in segments}
    assert all(start in segment_starts for start in starts[1:])
    assert youtube_chapter_problems(document["youtube_description"], document["duration"]) == []
    assert all(chapter["title"] and chapter["summary"] for chapter in document["chapters"])
    assert temp_folders() == before
    assert not (tmp_path / "home").exists()  # nothing written to the app folder for a caption file


def test_youtube_format_on_stdout_and_markdown_file(tmp_path):
    segments, _, _ = synthetic_transcript(4, seed=5)
    captions = tmp_path / "talk.srt"
    captions.write_text(to_srt(segments))
    result = recap_cli(captions, "--embedder", "tfidf", "--chapters", "4", home=tmp_path)
    lines = result.stdout.strip().splitlines()
    chapter_lines = [line for line in lines if line[:1].isdigit()]
    assert len(chapter_lines) == 4 and chapter_lines[0].startswith("0:00 ")
    assert youtube_chapter_problems(result.stdout, segments[-1].end) == []
    out = tmp_path / "talk.md"
    recap_cli(captions, "--embedder", "tfidf", "--format", "markdown", "-o", out, home=tmp_path)
    assert out.read_text().startswith("# talk\n") and "## Chapters" in out.read_text()


def test_plain_text_says_there_are_no_timestamps(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("\n\n".join(f"Paragraph about {topic} number {n}. More on {topic} here." for topic in
                                ("bread", "rockets", "taxes") for n in range(6)))
    result = recap_cli(text, "--embedder", "tfidf", home=tmp_path)
    assert "no timestamps" in result.stdout
    assert "no timestamps" in result.stderr


def test_errors_are_one_line_with_exit_2(tmp_path):
    result = recap_cli(tmp_path / "missing.srt", home=tmp_path, check=False)
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr
    broken = tmp_path / "broken.json3"
    broken.write_text('{"events": [')
    result = recap_cli(broken, home=tmp_path, check=False)
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_doctor_reports_the_app_folder_without_creating_it(tmp_path):
    home = tmp_path / "apphome"
    result = recap_cli("doctor", home=home)
    assert f"app folder: {home}" in result.stdout
    assert "models:" in result.stdout and "no daemons" in result.stdout
    assert not home.exists()
    model = home / "models" / "base"
    model.mkdir(parents=True)
    (model / "model.bin").write_bytes(b"\x00" * 2_000_000)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        (model / name).write_text("{}")
    (home / "models" / "half-copied").mkdir()  # not a model: not listed
    report = recap_cli("doctor", home=home).stdout
    assert f"base: 2.0 MB  {model}" in report and "half-copied" not in report
    assert recap_cli("models", "list", home=home).stdout.startswith("base\t2.0 MB")


def test_llm_settings_and_server_errors_are_one_line(tmp_path):
    captions = tmp_path / "talk.srt"
    captions.write_text(to_srt(synthetic_transcript(3, seed=7)[0]))
    assert "RECAP_TEST_UNSET_KEY" not in os.environ
    for extra, expected in [
        (["--llm-url", "http://127.0.0.1:9/v1"], "cannot reach the LLM server at http://127.0.0.1:9/v1"),  # nothing listens on port 9
        (["--llm-url", "localhost:8080"], "must start with http:// or https://"),
        (["--llm-url", "http://127.0.0.1:9/v1", "--llm-key-env", "RECAP_TEST_UNSET_KEY"],
         "environment variable RECAP_TEST_UNSET_KEY (the API key) is not set"),
    ]:
        result = recap_cli(captions, "--embedder", "tfidf", *extra, home=tmp_path / "home", check=False)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("recap: error: ") and expected in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
