"""The page of `shoal export --web`: one template (shoal.tools.web.INDEX_HTML) filled per env.
Every env's page is well-formed HTML carrying that env's name and take-over keys, and the pages
committed under docs/demos/ are exactly what `python -m shoal.tools.web docs/demos` writes
(no compiler or browser needed; tests/test_tools_web.py plays the pages in Chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser

import pytest

from shoal.envs import list_envs
from shoal.tools import web

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMOS = os.path.join(ROOT, "docs", "demos")
VOID = {"meta", "input", "br", "img", "link", "hr"}


class _Structure(HTMLParser):
    """Checks that every element is closed in order; keeps ids, the title and the h2 text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.ids: list[str] = []
        self.text: dict[str, str] = {}
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.ids += [v for k, v in attrs if k == "id"]
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.open[-1] if self.open else None}>")
        else:
            self.open.pop()

    def handle_data(self, data):
        if self.open:
            self.text[self.open[-1]] = self.text.get(self.open[-1], "") + data


def parse(page: str) -> _Structure:
    parser = _Structure()
    parser.feed(page)
    parser.close()
    return parser


@pytest.mark.parametrize("env", list_envs())
def test_every_env_page_is_well_formed_and_names_its_env(env):
    continuous = web.env_is_continuous(env)
    page = web.index_html(env, continuous)
    assert page.startswith("<!doctype html>")
    structure = parse(page)
    assert structure.errors == [] and structure.open == []
    assert structure.text["title"] == f"shoal: {env}"
    assert structure.text["h2"] == f"{env} played by a trained policy"
    assert sorted(structure.ids) == ["play", "screen", "speed", "speedv", "stats", "takeover"]
    assert not re.search(r"__[A-Z]+__", page)                    # every placeholder filled
    keymap = json.loads(re.search(r"^const KEYMAP = (.*);$", structure.text["script"],
                                  re.M).group(1))
    label = re.search(r"take over agent 0 \((.*)\)", structure.text["label"]).group(1)
    if continuous:
        assert keymap == {} and label == "not available: this policy's actions are continuous"
    elif env in web.KEYMAPS:
        assert keymap == web.KEYMAPS[env]
        assert label == ", ".join(f"{'space' if k == ' ' else k} = {v}" for k, v in keymap.items())
    else:
        assert keymap == {} and label == "digit keys pick the action"
    assert "http" not in page.replace("http.server", "")         # nothing fetched from the net


def test_pages_differ_only_in_their_env_specifics():
    breakout, maze = web.index_html("breakout", False), web.index_html("maze", False)
    changed = [(a, b) for a, b in zip(breakout.splitlines(), maze.splitlines()) if a != b]
    assert len(breakout.splitlines()) == len(maze.splitlines())
    assert len(changed) == 4                          # title, heading, keys line, KEYMAP
    assert all("breakout" in a or "KEYMAP" in a or "take over" in a for a, _ in changed)


def test_committed_demo_pages_are_what_the_generator_writes():
    pages = web.demo_pages(DEMOS)
    assert sorted(os.path.basename(os.path.dirname(p)) for p in pages) == \
        ["breakout", "drone", "forage", "g2048", "maze", "tetris"]
    for path, page in pages.items():
        with open(path, encoding="utf-8") as fh:
            assert fh.read() == page, (f"{os.path.relpath(path, ROOT)} is not the template's page:"
                                       f" run `python -m shoal.tools.web docs/demos`")


def test_regenerate_command_rewrites_pages_and_keeps_modules(tmp_path, capsys):
    for env in ("drone", "maze"):
        shutil.copytree(os.path.join(DEMOS, env), tmp_path / env)
    (tmp_path / "maze" / "index.html").write_text("stale", encoding="utf-8")
    wasm = (tmp_path / "maze" / "shoal.wasm").read_bytes()
    (tmp_path / "notes").mkdir()                                 # no module: left alone
    assert web.main([str(tmp_path)]) == 0
    assert "wrote 2 pages" in capsys.readouterr().out
    assert (tmp_path / "maze" / "index.html").read_text(encoding="utf-8") == \
        web.index_html("maze", False)
    assert "continuous" in (tmp_path / "drone" / "index.html").read_text(encoding="utf-8")
    assert (tmp_path / "maze" / "shoal.wasm").read_bytes() == wasm
    assert os.listdir(tmp_path / "notes") == []


def test_regenerate_command_names_a_folder_that_is_not_an_env(tmp_path, capsys):
    (tmp_path / "mazee").mkdir()
    (tmp_path / "mazee" / "shoal.wasm").write_bytes(b"\0asm\x01\0\0\0")
    assert web.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'mazee' is not a C env" in err and "name the folder after its env" in err
    assert "Did you mean 'maze'" in err
    assert not (tmp_path / "mazee" / "index.html").exists()
    assert web.main([str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
