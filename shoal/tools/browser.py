"""A headless Chromium driven over the DevTools protocol, for the web demo's test and benchmark.

Needs the ``chromium`` executable (Debian: ``apt-get install chromium``) and the
``websocket-client`` package; no browser is downloaded. Also a static file server for a
directory (what ``python -m http.server`` does), on a free local port.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from typing import Any

from .._process import stop_process

__all__ = ["CHROMIUM_FLAGS", "find_chromium", "StaticServer", "Browser"]

#: flags that run Chromium headless with no network of its own and no first-run work
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """Path of a Chromium executable ($SHOAL_CHROMIUM, chromium, chromium-browser), or None."""
    for name in (os.environ.get("SHOAL_CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StaticServer:
    """Serves ``directory`` on 127.0.0.1 from a background thread (a context manager)."""

    def __init__(self, directory: str) -> None:
        handler = functools.partial(_QuietHandler, directory=directory)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "StaticServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm"}

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Browser:
    """One headless Chromium with one page (a context manager): :meth:`goto`,
    :meth:`evaluate`, :meth:`screenshot`, :meth:`key`."""

    def __init__(self, executable: str | None = None, width: int = 900, height: int = 900,
                 timeout: float = 60.0) -> None:
        import websocket  # websocket-client

        exe = executable or find_chromium()
        if exe is None:
            raise RuntimeError("no chromium executable: apt-get install chromium")
        self.profile = tempfile.mkdtemp(prefix="shoal-chromium-")
        port = _free_port()
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             f"--remote-debugging-port={port}", f"--window-size={width},{height}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        ws_url = None
        while ws_url is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [p for p in json.load(r) if p.get("type") == "page"]
                ws_url = pages[0]["webSocketDebuggerUrl"] if pages else None
            except OSError:
                pass
            if ws_url is None:
                time.sleep(0.1)
        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self._id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; returns its result (events in between are skipped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def goto(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Polls a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still false after {timeout} s")
            time.sleep(0.1)

    def key(self, key: str, down: bool = True) -> None:
        """Presses (or releases) a key such as "ArrowLeft"."""
        self.call("Input.dispatchKeyEvent", type="keyDown" if down else "keyUp", key=key,
                  code=key)

    def screenshot(self, path: str) -> str:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))
        return path

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        stop_process(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
