"""A client for any OpenAI-compatible chat endpoint: llama.cpp's server (the C++ ``llama-server``
or llama-cpp-python's ``llama_cpp.server``), Ollama, vLLM, LM Studio, hosted APIs.

Standard library HTTP only. What it guards against, each failure a :class:`RecapLLMError` whose
one-line message says what to do:

* **Silent truncation.** Servers cut prompts that do not fit (Ollama from the start, llama.cpp
  per slot). Before sending, the prompt is counted (the server's own tokenizer when it has one,
  else a conservative estimate) and refused if it plus ``max_tokens`` exceeds ``context_size``.
  After the answer, the prompt tokens the server reports (``usage.prompt_tokens``) are compared
  with a lower bound of what was sent; fewer means the server dropped part of the prompt.
  On llama.cpp the server's per-slot context (``/props``) is checked against ``context_size``.
* **Context exceeded** on the server side (HTTP 400 from llama.cpp, vLLM, OpenAI).
* **Malformed JSON.** :meth:`LLMClient.complete_json` asks for schema-constrained output
  (``response_format`` ``json_schema``; servers that reject it get ``json_object`` with the
  schema, then a plain request with the schema in the prompt), parses and validates the answer
  against the schema, retries once with the error shown to the model, then raises.
* **Server down** (connection refused, unknown host) and **timeouts** (``timeout`` seconds per
  request).

The API key is read from the environment variable named by ``api_key_env`` (never passed or
stored as a value), and sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

# Tokens per UTF-8 byte bounds used when the server offers no tokenizer. English BPE text runs
# ~4 bytes/token; 2 bytes/token over-counts it (safe for budgeting), 8 bytes/token under-counts
# it (safe for the truncation check: a server reporting fewer tokens than that dropped text).
_BYTES_PER_TOKEN_UPPER_BOUND = 2.0
_BYTES_PER_TOKEN_LOWER_BOUND = 8.0
# Chat templates add a few tokens per message (role markers); budget for them.
_TEMPLATE_TOKENS_PER_MESSAGE = 8

_CONTEXT_ERROR_MARKERS = (
    "context_length_exceeded",
    "exceed_context_size",
    "exceeds the available context",
    "maximum context length",
    "context length",
    "context size",
    "too many tokens",
)


class RecapLLMError(RuntimeError):
    """A language-model call failed; the message is one line saying what happened and what to do."""


class RecapLLMAnswerError(RecapLLMError):
    """The model's answer was not JSON matching the schema, also after the one retry (the server
    itself worked); callers may fall back to the embedded method."""


@dataclass
class LLMClient:
    """Chat completions from an OpenAI-compatible server.

    ``base_url`` is the API root including its version path, e.g. ``http://127.0.0.1:8080/v1``
    (llama.cpp), ``http://127.0.0.1:11434/v1`` (Ollama) or ``https://api.openai.com/v1``.
    ``context_size`` is the number of tokens the model's context holds on that server; every
    request is kept inside it.
    """

    base_url: str
    model: str
    api_key_env: str | None = None
    context_size: int = 8192
    timeout: float = 300.0
    _tokenizer: str | None = field(default=None, init=False, repr=False)
    _response_format: str = field(default="json_schema", init=False, repr=False)
    _server_checked: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise RecapLLMError(
                f"LLM URL {self.base_url!r} must start with http:// or https:// "
                "(e.g. http://127.0.0.1:8080/v1)"
            )
        if self.context_size < 256:
            raise RecapLLMError(f"context size {self.context_size} is too small: give at least 256 tokens")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise RecapLLMError(
                f"environment variable {self.api_key_env} (the API key) is not set: export it, "
                "or leave the key variable out for a local server"
            )

    # ----------------------------------------------------------------------------------- HTTP

    @property
    def _root_url(self) -> str:
        # llama.cpp's extra endpoints (/tokenize, /props) live beside /v1, not under it.
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def _request(self, url: str, body: dict | None, timeout: float | None = None) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.api_key_env, '')}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
        limit = self.timeout if timeout is None else timeout
        try:
            with urllib.request.urlopen(req, timeout=limit) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            if exc.code == 400 and any(m in detail.lower() for m in _CONTEXT_ERROR_MARKERS):
                raise _ContextExceeded(detail) from exc
            raise _HTTPStatusError(exc.code, detail) from exc
        except (TimeoutError, socket.timeout) as exc:
            raise RecapLLMError(
                f"the LLM server at {self.base_url} did not answer within {limit:g} s: "
                "raise the timeout, use a smaller model, or check the server's load"
            ) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise RecapLLMError(
                    f"the LLM server at {self.base_url} did not answer within {limit:g} s: "
                    "raise the timeout, use a smaller model, or check the server's load"
                ) from exc
            raise RecapLLMError(
                f"cannot reach the LLM server at {self.base_url} ({exc.reason}): start it, "
                "or fix the URL"
            ) from exc
        except (ConnectionError, http.client.HTTPException) as exc:
            raise RecapLLMError(
                f"the LLM server at {self.base_url} dropped the connection ({type(exc).__name__}): "
                "check that it is running and the URL points at it"
            ) from exc
        try:
            parsed = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RecapLLMError(
                f"the server at {url} did not answer with JSON: is the URL an OpenAI-compatible "
                "API root (ending in /v1)?"
            ) from exc
        if not isinstance(parsed, dict):
            raise RecapLLMError(f"the server at {url} answered {type(parsed).__name__}, not a JSON object")
        return parsed

    # ------------------------------------------------------------------------------- tokens

    def _detect_tokenizer(self) -> str:
        if self._tokenizer is not None:
            return self._tokenizer
        probes = (
            ("llama.cpp", f"{self._root_url}/tokenize", {"content": "hello"}),
            ("llama-cpp-python", f"{self._root_url}/extras/tokenize/count", {"input": "hello", "model": self.model}),
        )
        server_answered = False
        for kind, url, body in probes:
            try:
                answer = self._request(url, body, timeout=min(self.timeout, 10.0))
            except (_HTTPStatusError, _ContextExceeded):
                server_answered = True
                continue
            except RecapLLMError:
                continue
            server_answered = True
            if "tokens" in answer or "count" in answer:
                self._tokenizer = kind
                return kind
        # Remember "no tokenizer" only once the server has answered; a server that is down now
        # may be a llama.cpp server started a moment later.
        if server_answered:
            self._tokenizer = "estimate"
        return "estimate"

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``: exact from the server's tokenizer (llama.cpp ``/tokenize``,
        llama-cpp-python ``/extras/tokenize/count``) when it has one, else a conservative
        (high) estimate from the UTF-8 length."""
        kind = self._detect_tokenizer()
        if kind == "llama.cpp":
            answer = self._request(f"{self._root_url}/tokenize", {"content": text, "add_special": False})
            return len(answer.get("tokens", []))
        if kind == "llama-cpp-python":
            answer = self._request(
                f"{self._root_url}/extras/tokenize/count", {"input": text, "model": self.model}
            )
            return int(answer.get("count", 0))
        return math.ceil(len(text.encode("utf-8")) / _BYTES_PER_TOKEN_UPPER_BOUND)

    def count_message_tokens(self, messages: list[dict]) -> int:
        """Tokens the prompt built from ``messages`` takes, template overhead included (an
        upper bound unless the server tokenizes)."""
        return sum(self.count_tokens(str(m.get("content", ""))) + _TEMPLATE_TOKENS_PER_MESSAGE for m in messages)

    def _sent_lower_bound(self, messages: list[dict], counted: int) -> int:
        # The fewest prompt tokens a server that kept the whole prompt can report.
        if self._detect_tokenizer() != "estimate":
            # Messages tokenized apart can differ from the joined prompt by a token at each seam.
            return counted - (_TEMPLATE_TOKENS_PER_MESSAGE + 2) * len(messages)
        nbytes = sum(len(str(m.get("content", "")).encode("utf-8")) for m in messages)
        return int(nbytes / _BYTES_PER_TOKEN_LOWER_BOUND)

    def _props(self) -> dict | None:
        # llama.cpp's server description; None from servers without it. Raises RecapLLMError
        # when the server cannot be reached.
        try:
            return self._request(f"{self._root_url}/props", None, timeout=min(self.timeout, 10.0))
        except (_HTTPStatusError, _ContextExceeded):
            return None
        except RecapLLMError as exc:
            if "did not answer with JSON" in str(exc) or "not a JSON object" in str(exc):
                return None
            raise

    def server_context_size(self) -> int | None:
        """The per-request context the server gives this model, when it says (llama.cpp's
        ``/props``: its ``--ctx-size`` divided among its ``--parallel`` slots); else ``None``."""
        try:
            return _n_ctx(self._props())
        except RecapLLMError:
            return None

    def _check_server_once(self) -> None:
        if self._server_checked:
            return
        try:
            props = self._props()
        except RecapLLMError:
            return  # down or slow: the chat request itself reports that
        self._server_checked = True
        served = _n_ctx(props)
        if served is not None and served < self.context_size:
            raise RecapLLMError(
                f"the server gives each request {served} tokens of context but recap is set to "
                f"{self.context_size}: set the context size to {served}, or restart the server with "
                "a larger --ctx-size (llama.cpp divides it among --parallel slots)"
            )

    # ------------------------------------------------------------------------------ completion

    def _chat(self, messages: list[dict], max_tokens: int, response_format: dict | None) -> str:
        if max_tokens < 1:
            raise RecapLLMError(f"max_tokens must be at least 1, got {max_tokens}")
        self._check_server_once()
        counted = self.count_message_tokens(messages)
        if counted + max_tokens > self.context_size:
            raise RecapLLMError(
                f"context exceeded: the prompt takes ~{counted} tokens plus {max_tokens} for the "
                f"answer, over the context size {self.context_size}: split the input into smaller "
                "parts or raise the context size (and the server's)"
            )
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        if response_format is not None:
            body["response_format"] = response_format
        try:
            answer = self._request(f"{self.base_url}/chat/completions", body)
        except _ContextExceeded as exc:
            raise RecapLLMError(
                f"context exceeded on the server ({_one_line(exc.detail)}): split the input into "
                "smaller parts, or restart the server with a larger context and set the same size here"
            ) from exc
        except _HTTPStatusError as exc:
            if response_format is not None and _mentions_format(exc.detail):  # 400, 422, or 500 (llama-cpp-python)
                raise _FormatRejected(exc.detail) from exc
            hint = {
                401: "check the API key variable",
                403: "check the API key variable",
                404: f"check the URL (an API root such as http://host:port/v1) and the model name {self.model!r}",
            }.get(exc.code, "check the server's log")
            raise RecapLLMError(
                f"the LLM server answered HTTP {exc.code} ({_one_line(exc.detail)}): {hint}"
            ) from exc
        try:
            choice = answer["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise RecapLLMError(
                f"the server's answer has no choices[0].message.content: is {self.base_url} an "
                "OpenAI-compatible chat API?"
            ) from exc
        reported = (answer.get("usage") or {}).get("prompt_tokens")
        if isinstance(reported, int) and reported < self._sent_lower_bound(messages, counted):
            raise RecapLLMError(
                f"the server truncated the prompt: it counted {reported} prompt tokens but at least "
                f"{self._sent_lower_bound(messages, counted)} were sent; raise the server's context "
                "size (Ollama: OLLAMA_CONTEXT_LENGTH / num_ctx; llama.cpp: --ctx-size per --parallel slot)"
            )
        return content if isinstance(content, str) else ""

    def complete(self, messages: list[dict], max_tokens: int) -> str:
        """The model's answer to the chat ``messages`` (``[{"role": ..., "content": ...}]``),
        at most ``max_tokens`` tokens, greedy (temperature 0)."""
        return self._chat(messages, max_tokens, None)

    def complete_json(self, messages: list[dict], max_tokens: int, schema: dict, name: str = "answer") -> Any:
        """The model's answer parsed as JSON and validated against the JSON ``schema``.

        Asks for schema-constrained output where the server supports it. A malformed or
        invalid answer is retried once, with the error shown to the model (when that still fits
        the context); a second failure raises :class:`RecapLLMAnswerError` (callers fall back to
        the embedded method then).
        """
        import jsonschema  # only the JSON path needs it (the `llm` extra)

        jsonschema.Draft202012Validator.check_schema(schema)
        schema_text = json.dumps(schema, separators=(",", ":"))
        prompt = list(messages)
        if self._response_format == "none":
            prompt = _with_schema_instruction(prompt, schema_text)
        problem = ""
        for attempt in range(2):
            while True:
                try:
                    text = self._chat(prompt, max_tokens, _response_format(self._response_format, schema, name))
                    break
                except _FormatRejected:
                    # Step down once per level and remember it for this client's later calls.
                    self._response_format = {"json_schema": "json_object", "json_object": "none"}[self._response_format]
                    if self._response_format == "none":
                        prompt = _with_schema_instruction(prompt, schema_text)
            try:
                value = json.loads(_strip_code_fence(text))
                jsonschema.validate(value, schema)
                return value
            except json.JSONDecodeError as exc:
                problem = f"not valid JSON ({exc.msg} at character {exc.pos})"
            except jsonschema.ValidationError as exc:
                problem = f"JSON that does not match the schema ({_one_line(exc.message)})"
            if attempt == 0:
                retry = [
                    *prompt,
                    {"role": "assistant", "content": text},
                    {
                        "role": "user",
                        "content": f"That answer was {problem}. Answer again with only JSON that "
                        f"matches this schema: {schema_text}",
                    },
                ]
                if self.count_message_tokens(retry) + max_tokens > self.context_size:
                    break  # no room to show the model its answer: the retry would exceed the context
                prompt = retry
        raise RecapLLMAnswerError(
            f"the model answered {problem} twice: use a larger or instruction-tuned model, "
            "or leave out the LLM to use the embedded method"
        )


# ------------------------------------------------------------------------------------ helpers


class _HTTPStatusError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"HTTP {code}: {detail}")
        self.code = code
        self.detail = detail


class _ContextExceeded(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _FormatRejected(Exception):
    pass


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read().decode("utf-8", "replace")
    except OSError:
        return exc.reason if isinstance(exc.reason, str) else str(exc)
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return raw or str(exc.reason)
    err = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    if isinstance(err, dict):
        parts = [str(err.get(k)) for k in ("type", "code", "message") if err.get(k)]
        return ": ".join(parts) if parts else raw
    if isinstance(parsed, dict) and "detail" in parsed:
        return json.dumps(parsed["detail"])
    return str(err)


def _n_ctx(props: dict | None) -> int | None:
    if not props:
        return None
    settings = props.get("default_generation_settings") or {}
    n_ctx = settings.get("n_ctx", props.get("n_ctx"))
    return int(n_ctx) if isinstance(n_ctx, (int, float)) and n_ctx > 0 else None


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _mentions_format(detail: str) -> bool:
    low = detail.lower()
    return "response_format" in low or "json_schema" in low or "json_object" in low


def _response_format(level: str, schema: dict, name: str) -> dict | None:
    if level == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    if level == "json_object":
        # llama-cpp-python and llama.cpp accept a schema beside json_object and constrain to it.
        return {"type": "json_object", "schema": schema}
    return None


def _with_schema_instruction(messages: list[dict], schema_text: str) -> list[dict]:
    note = {"role": "system", "content": f"Answer with only JSON matching this schema: {schema_text}"}
    return [note, *messages]


def _strip_code_fence(text: str) -> str:
    # Unconstrained models often wrap JSON in a ```json fence.
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        if body.rstrip().endswith("```"):
            body = body.rstrip()[:-3]
    return body.strip()
