import sys
from pathlib import Path

import pytest

# The synthetic-transcript builder and the test servers live beside the tests (the benchmarks use them too).
sys.path.insert(0, str(Path(__file__).parent))

from llama_server import NEEDS, gguf_path, llama_server  # noqa: E402


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory):
    """API root of a llama.cpp server running SmolLM2-135M (started once for the whole run)."""
    gguf = gguf_path()
    if gguf is None:
        pytest.skip(f"needs {NEEDS}")
    try:
        with llama_server(gguf, tmp_path_factory.mktemp("llama") / "server.log") as url:
            yield url
    except RuntimeError as error:
        pytest.fail(str(error))
