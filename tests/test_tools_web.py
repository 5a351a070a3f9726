"""shoal export --web: breakout and a trained policy compiled to WebAssembly, played by the
static page in a real headless Chromium: it loads, frames advance, the score rises, pause and
take-over work, and a screenshot shows the game. The demos committed under docs/demos/ (every
shipped env) load and play too."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from shoal.tools import browser, export, web

pytestmark = [
    pytest.mark.skipif(not web.zig_available(), reason="needs the zig compiler: pip install ziglang"),
    pytest.mark.skipif(browser.find_chromium() is None, reason="needs chromium (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("websocket") is None,
                       reason="needs websocket-client (pip install websocket-client)"),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A breakout policy trained for a few seconds, exported with --web."""
    from shoal.trainer.cli import main as train_main

    root = tmp_path_factory.mktemp("web")
    run = str(root / "run")
    assert train_main(["breakout", "--train.total-steps", "150000", "--env.num-envs", "64",
                       "--log.dashboard", "off", "--run-dir", run]) == 0
    out = str(root / "site")
    assert export.main(["--web", run, "-o", out]) == 0
    return out


def test_page_plays_the_trained_policy_in_a_headless_browser(site, tmp_path):
    assert {"index.html", "shoal.wasm"} <= set(os.listdir(site))
    page = open(os.path.join(site, "index.html")).read()
    assert "http" not in page.replace("http.server", "")        # nothing fetched from the net
    with browser.StaticServer(site) as server, browser.Browser() as chrome:
        chrome.goto(server.url + "index.html?seed=3&speed=4")
        assert chrome.wait_for("window.shoal && (window.shoal.ready || window.shoal.error)")
        assert chrome.evaluate("window.shoal.error") is None
        first = chrome.evaluate("[window.shoal.frames, window.shoal.steps]")
        chrome.wait_for("window.shoal.steps >= 800", timeout=120)
        frames, steps, total = chrome.evaluate(
            "[window.shoal.frames, window.shoal.steps, window.shoal.total]")
        assert frames > first[0] and steps >= 800
        assert total > 0                                    # bricks broken: the score rose
        stats = chrome.evaluate("document.getElementById('stats').textContent")
        assert "steps/s" in stats and "score" in stats
        shot = chrome.screenshot(str(tmp_path / "page.png"))
        # pause stops the env; take-over puts the key's action on agent 0
        chrome.evaluate("document.getElementById('play').click()")
        paused = chrome.evaluate("window.shoal.steps")
        chrome.wait_for(f"window.shoal.frames > {frames} + 5")
        assert chrome.evaluate("window.shoal.steps") == paused
        chrome.evaluate("document.getElementById('play').click()")
        chrome.evaluate("document.getElementById('takeover').click()")
        chrome.key("ArrowLeft")
        chrome.wait_for(f"window.shoal.steps > {paused} + 20")
        assert chrome.evaluate("window.shoal.action") == 1       # breakout: left
        chrome.key("ArrowLeft", down=False)
    from PIL import Image

    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10                                 # not blank
    # breakout's bricks are on the canvas: some strongly red pixels
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 100) & (pixels[..., 2] < 100)
    assert red.sum() > 500


DEMOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "demos")


@pytest.fixture(scope="module")
def chrome():
    with browser.Browser() as instance:
        yield instance


@pytest.mark.parametrize("env", sorted(d for d in os.listdir(DEMOS)
                                        if os.path.isdir(os.path.join(DEMOS, d))))
def test_committed_demo_plays_in_a_headless_browser(chrome, env):
    site = os.path.join(DEMOS, env)
    with browser.StaticServer(site) as server:
        chrome.goto(server.url + "index.html?seed=3&speed=8")
        assert chrome.wait_for("window.shoal && (window.shoal.ready || window.shoal.error)")
        assert chrome.evaluate("window.shoal.error") is None
        first = chrome.evaluate("[window.shoal.frames, window.shoal.steps]")
        chrome.wait_for(f"window.shoal.frames > {first[0]} + 20 && window.shoal.steps >= 400",
                        timeout=120)
        width, height = chrome.evaluate("[document.getElementById('screen').width, "
                                        "document.getElementById('screen').height]")
        assert width > 0 and height > 0
        assert f"{env} played by a trained policy" in chrome.evaluate("document.body.textContent")


def test_web_export_refuses_python_envs_and_builds_errors_clearly(tmp_path):
    from tools_runs import write_run

    run = write_run(str(tmp_path / "run"), "gym:CartPole-v1", hidden=8)
    assert export.main(["--web", run, "-o", str(tmp_path / "o")]) == 2
