"""A small OpenAI-protocol HTTP server for the LLM client's failure cases, run as its own process.

The model name in each request picks the behaviour, so one server covers every case:

* ``good``: answers ``{"title": "ok"}`` with honest usage counts.
* ``malformed``: answers text that is not JSON, every time.
* ``malformed-once``: answers text that is not JSON once, then valid JSON.
* ``wrong-shape``: answers JSON that does not match the schema, every time.
* ``no-schema-format``: rejects ``response_format`` of type ``json_schema`` with HTTP 400 the way
  servers without it do, and answers valid JSON to ``json_object``.
* ``context``: HTTP 400 with llama.cpp's context error.
* ``truncating``: reports 16 prompt tokens whatever was sent (a server that cut the prompt).
* ``slow``: sleeps 30 s before answering.
* ``hangup``: closes the connection without an answer.

``--n-ctx N`` makes ``/props`` answer like llama.cpp's (per-slot context N); without it ``/props``
is 404. The port is printed on stdout once the server listens. Requests are logged as JSON lines
to ``--log`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    n_ctx: int | None = None
    log_path: str | None = None
    seen: dict[str, int] = {}

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/props" and self.n_ctx is not None:
            self._send(200, {"default_generation_settings": {"n_ctx": self.n_ctx}})
        else:
            self._send(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.log_path:
            with open(self.log_path, "a") as log:
                log.write(json.dumps({"path": self.path, "body": body, "auth": self.headers.get("Authorization")}) + "\n")
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}})
            return
        model = body.get("model", "")
        count = self.seen[model] = self.seen.get(model, 0) + 1
        sent_bytes = sum(len(str(m.get("content", "")).encode()) for m in body.get("messages", []))
        prompt_tokens = sent_bytes // 4 + 4 * len(body.get("messages", []))
        content = '{"title": "ok"}'
        if model == "malformed" or (model == "malformed-once" and count == 1):
            content = "Sure! Here is the title you asked for: ok"
        elif model == "wrong-shape":
            content = '{"name": 3}'
        elif model == "no-schema-format":
            if (body.get("response_format") or {}).get("type") == "json_schema":
                self._send(400, {"error": {"code": 400, "type": "invalid_request_error",
                                           "message": "response_format type json_schema is not supported"}})
                return
        elif model == "context":
            self._send(400, {"error": {"code": 400, "type": "exceed_context_size_error",
                                       "message": "the request exceeds the available context size, try increasing it",
                                       "n_prompt_tokens": prompt_tokens, "n_ctx": 512}})
            return
        elif model == "truncating":
            prompt_tokens = 16
        elif model == "slow":
            time.sleep(30)
        elif model == "hangup":
            self.close_connection = True
            self.connection.close()
            return
        self._send(200, {
            "id": "stub", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 5,
                      "total_tokens": prompt_tokens + 5},
        })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-ctx", type=int)
    parser.add_argument("--log")
    args = parser.parse_args()
    Handler.n_ctx = args.n_ctx
    Handler.log_path = args.log
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
