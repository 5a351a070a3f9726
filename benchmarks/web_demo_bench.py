"""Steps per second of the browser demo (``shoal export --web``) in headless Chromium.

    python benchmarks/web_demo_bench.py RUN_DIR [--seconds 5]

Exports RUN_DIR (a breakout run) with --web into a temporary directory, serves it, and measures
in the page: frames/s and env steps/s while drawing every frame (1 step per frame, and 16 steps
per frame), and env + policy steps/s with no drawing (``window.shoal.stepMany``). Headless
Chromium paces requestAnimationFrame itself (60 Hz where it can keep up), so the first figure
is the display-bound rate and the last the WebAssembly compute rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])

from shoal.tools import browser, export  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run directory (breakout)")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as site:
        export.export_run(args.run, site, web=True)
        with browser.StaticServer(site) as server, browser.Browser() as chrome:
            print("| mode | frames/s | env steps/s |")
            print("|---|---:|---:|")
            for speed in (1, 16):
                chrome.goto(server.url + f"index.html?seed=1&speed={speed}")
                chrome.wait_for("window.shoal && window.shoal.ready")
                time.sleep(1.0)          # warm up
                f0, s0, t0 = *chrome.evaluate("[window.shoal.frames, window.shoal.steps]"), \
                    time.perf_counter()
                time.sleep(args.seconds)
                f1, s1 = chrome.evaluate("[window.shoal.frames, window.shoal.steps]")
                dt = time.perf_counter() - t0
                print(f"| drawing every frame, {speed} step(s)/frame | {(f1 - f0) / dt:.1f} | "
                      f"{(s1 - s0) / dt:.0f} |")
            chrome.evaluate("document.getElementById('play').click()")   # pause the loop
            rates = [chrome.evaluate("window.shoal.stepMany(20000)") for _ in range(5)]
            rates.sort()
            print(f"| no drawing (median of 5 x 20k steps) | - | {rates[2]:.0f} |")


if __name__ == "__main__":
    main()
