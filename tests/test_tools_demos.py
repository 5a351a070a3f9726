"""The browser demos committed under docs/demos/ (`shoal export --web` of trained runs; the
commands are in docs/demos/README.md): one folder per shipped env with a page and a WebAssembly
module that is whole, imports nothing and exports what the page calls. tests/test_tools_web.py
plays each of them in headless Chromium."""

from __future__ import annotations

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMOS = os.path.join(ROOT, "docs", "demos")
SHIPPED = ["breakout", "drone", "forage", "g2048", "maze", "tetris"]
PAGE_CALLS = ["web_init", "web_step", "web_frame", "web_width", "web_height", "web_return",
              "web_total_return", "web_last_score", "web_episodes", "web_action", "web_value",
              "web_error_message", "memory"]


def _leb128(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def wasm_sections(data: bytes) -> dict[int, bytes]:
    """Section id -> payload of a WebAssembly binary; raises ValueError if it is not one or is
    cut short."""
    if data[:8] != b"\0asm\x01\0\0\0":
        raise ValueError("not a version-1 WebAssembly module (magic and version)")
    sections: dict[int, bytes] = {}
    at = 8
    while at < len(data):
        section_id = data[at]
        size, at = _leb128(data, at + 1)
        if at + size > len(data):
            raise ValueError(f"section {section_id} runs past the end of the file")
        if section_id != 0:                        # custom sections may repeat
            sections[section_id] = data[at:at + size]
        at += size
    return sections


def wasm_exports(data: bytes) -> set[str]:
    payload = wasm_sections(data).get(7, b"")
    names: set[str] = set()
    if not payload:
        return names
    count, at = _leb128(payload, 0)
    for _ in range(count):
        length, at = _leb128(payload, at)
        names.add(payload[at:at + length].decode())
        _, at = _leb128(payload, at + length + 1)   # kind byte, then the index
    return names


def test_every_shipped_env_has_a_demo_listed_in_the_readme():
    assert sorted(d for d in os.listdir(DEMOS) if os.path.isdir(os.path.join(DEMOS, d))) == SHIPPED
    readme = open(os.path.join(DEMOS, "README.md"), encoding="utf-8").read()
    for env in SHIPPED:
        assert f"({env}/)" in readme, f"docs/demos/README.md does not link {env}/"
        assert re.search(rf"shoal export --web runs/\S*{env} -o docs/demos/{env}\b", readme), \
            f"docs/demos/README.md has no command that regenerates {env}"


@pytest.mark.parametrize("env", SHIPPED)
def test_demo_folder_is_complete(env):
    folder = os.path.join(DEMOS, env)
    assert sorted(os.listdir(folder)) == ["index.html", "shoal.wasm"]
    page = open(os.path.join(folder, "index.html"), encoding="utf-8").read()
    assert f"<title>shoal: {env}</title>" in page
    assert 'fetch("shoal.wasm")' in page
    assert "http" not in page.replace("http.server", "")     # nothing fetched from the network
    with open(os.path.join(folder, "shoal.wasm"), "rb") as fh:
        wasm = fh.read()
    assert len(wasm) < 1_000_000
    sections = wasm_sections(wasm)
    imports = sections.get(2, b"\0")
    assert _leb128(imports, 0)[0] == 0                          # the page instantiates with {}
    assert set(PAGE_CALLS) <= wasm_exports(wasm)


def test_wasm_reader_rejects_broken_modules():
    with open(os.path.join(DEMOS, "maze", "shoal.wasm"), "rb") as fh:
        wasm = fh.read()
    with pytest.raises(ValueError, match="magic"):
        wasm_sections(b"\0asm\x02\0\0\0" + wasm[8:])
    with pytest.raises(ValueError, match="past the end"):
        wasm_sections(wasm[:len(wasm) // 2])
