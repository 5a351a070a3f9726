"""The LLM client's failure cases against a real HTTP server process speaking the OpenAI protocol
(tests/openai_stub_server.py): server down, timeouts, context exceeded (client side, server side,
and a server that truncates silently), malformed JSON with its one retry, schema-format fallback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recap.llm import LLMClient, RecapLLMError

STUB = Path(__file__).with_name("openai_stub_server.py")
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}},
    "required": ["title"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Give this stream a title."}]


def _start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(STUB), *args], stdout=subprocess.PIPE, text=True)
    port = proc.stdout.readline().strip()
    assert port.isdigit(), "stub server did not start"
    return proc, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("stub") / "requests.jsonl"
    proc, url = _start("--log", str(log))
    yield url, log
    proc.terminate()
    proc.wait(timeout=10)


def _requests(log: Path, model: str) -> list[dict]:
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in rows if r["path"] == "/v1/chat/completions" and r["body"].get("model") == model]


def test_happy_path_sends_schema_format_and_parses(server):
    url, log = server
    client = LLMClient(url, "good", context_size=4096)
    assert client.complete_json(ASK, 64, SCHEMA) == {"title": "ok"}
    [sent] = _requests(log, "good")
    fmt = sent["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == SCHEMA
    assert sent["body"]["max_tokens"] == 64 and sent["auth"] is None
    assert client.complete(ASK, 16) == '{"title": "ok"}'


def test_api_key_comes_from_the_named_variable(server, monkeypatch):
    url, log = server
    with pytest.raises(RecapLLMError, match="RECAP_TEST_KEY .* is not set"):
        LLMClient(url, "good", api_key_env="RECAP_TEST_KEY")
    monkeypatch.setenv("RECAP_TEST_KEY", "sk-test-123")
    LLMClient(url, "good", api_key_env="RECAP_TEST_KEY").complete(ASK, 8)
    assert _requests(log, "good")[-1]["auth"] == "Bearer sk-test-123"


def test_server_down():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = LLMClient(f"http://127.0.0.1:{port}/v1", "any")
    with pytest.raises(RecapLLMError, match=r"cannot reach the LLM server .*: start it, or fix the URL"):
        client.complete(ASK, 8)


def test_timeout(server):
    url, _ = server
    client = LLMClient(url, "slow", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(RecapLLMError, match=r"did not answer within 1 s: raise the timeout"):
        client.complete(ASK, 8)
    assert time.monotonic() - started < 20  # gave up, did not wait the 30 s out


def test_connection_dropped(server):
    url, _ = server
    with pytest.raises(RecapLLMError, match="dropped the connection|cannot reach"):
        LLMClient(url, "hangup").complete(ASK, 8)


def test_context_exceeded_before_sending(server):
    url, log = server
    client = LLMClient(url, "good-big", context_size=512)
    long = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(RecapLLMError, match=r"context exceeded: the prompt takes ~\d+ tokens plus 64"):
        client.complete(long, 64)
    assert _requests(log, "good-big") == []  # refused before sending


def test_context_exceeded_on_the_server(server):
    url, _ = server
    with pytest.raises(RecapLLMError, match=r"context exceeded on the server \(exceed_context_size_error"):
        LLMClient(url, "context").complete(ASK, 8)


def test_silent_truncation_is_detected(server):
    url, _ = server
    client = LLMClient(url, "truncating", context_size=8192)
    with pytest.raises(RecapLLMError, match=r"truncated the prompt: it counted 16 prompt tokens"):
        client.complete([{"role": "user", "content": "a sentence of text. " * 200}], 8)


def test_server_context_smaller_than_configured():
    proc, url = _start("--n-ctx", "2048")
    try:
        client = LLMClient(url, "good", context_size=8192)
        assert client.server_context_size() == 2048
        with pytest.raises(RecapLLMError, match=r"gives each request 2048 tokens .* set to 8192"):
            client.complete(ASK, 8)
        assert LLMClient(url, "good", context_size=2048).complete(ASK, 8) == '{"title": "ok"}'
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_malformed_json_is_retried_once_then_fixed(server):
    url, log = server
    assert LLMClient(url, "malformed-once").complete_json(ASK, 64, SCHEMA) == {"title": "ok"}
    first, second = _requests(log, "malformed-once")
    # The retry shows the model its bad answer and what was wrong with it.
    assert second["body"]["messages"][-2]["content"].startswith("Sure!")
    assert "not valid JSON" in second["body"]["messages"][-1]["content"]


def test_malformed_json_twice_is_a_clear_error(server):
    url, log = server
    with pytest.raises(RecapLLMError, match=r"answered not valid JSON .* twice: use a larger"):
        LLMClient(url, "malformed").complete_json(ASK, 64, SCHEMA)
    assert len(_requests(log, "malformed")) == 2
    with pytest.raises(RecapLLMError, match=r"does not match the schema .* twice"):
        LLMClient(url, "wrong-shape").complete_json(ASK, 64, SCHEMA)


def test_servers_without_json_schema_get_json_object(server):
    url, log = server
    client = LLMClient(url, "no-schema-format")
    assert client.complete_json(ASK, 64, SCHEMA) == {"title": "ok"}
    assert client.complete_json(ASK, 64, SCHEMA) == {"title": "ok"}
    types = [r["body"]["response_format"]["type"] for r in _requests(log, "no-schema-format")]
    assert types == ["json_schema", "json_object", "json_object"]  # remembered after one refusal


def test_bad_configuration_is_refused():
    with pytest.raises(RecapLLMError, match="must start with http"):
        LLMClient("localhost:8080/v1", "m")
    with pytest.raises(RecapLLMError, match="too small"):
        LLMClient("http://127.0.0.1:1/v1", "m", context_size=10)


def test_not_an_api_root(server):
    url, _ = server
    with pytest.raises(RecapLLMError, match=r"HTTP 404 .*check the URL"):
        LLMClient(url.removesuffix("/v1") + "/wrong", "good").complete(ASK, 8)


def test_summaries_keep_the_embedded_text_when_answers_stay_malformed(server):
    from recap.chapters import Chapter
    from recap.llm import RecapLLMAnswerError
    from recap.summarise import summarise_with_llm
    from recap.transcript import Segment

    url, _ = server
    segments = [Segment(5.0 * i, 5.0 * i + 4, f"line {i} about the garden and the weather") for i in range(6)]
    chapters = [Chapter(0, 3, 0.0, 15.0, "Garden", "We talk about the garden."),
                Chapter(3, 6, 15.0, 30.0, "Weather", "Then the weather.")]
    with pytest.raises(RecapLLMAnswerError):
        LLMClient(url, "malformed").complete_json(ASK, 64, SCHEMA)
    assert summarise_with_llm(LLMClient(url, "malformed"), segments, chapters) == ""
    assert [(c.title, c.summary, c.start) for c in chapters] == [
        ("Garden", "We talk about the garden.", 0.0), ("Weather", "Then the weather.", 15.0)]
    # Any other failure (here the server's context error) is not papered over.
    with pytest.raises(RecapLLMError, match="context exceeded on the server"):
        summarise_with_llm(LLMClient(url, "context"), segments, chapters)
