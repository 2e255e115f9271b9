"""Headless Chromium driven over the DevTools protocol: open a page, type, click, wait for what the page
shows, take a screenshot. The explorer page's browser test and ``serve.smoke``'s screenshot use it.

    with Browser() as b:
        b.goto("http://127.0.0.1:8000/?user_id=1")
        b.wait_for("document.body.dataset.state === 'ready'")
        b.screenshot("explorer.png")

Chromium is Debian's ``chromium`` package (``make setup`` installs it); ``$Q2REC_CHROMIUM`` names another
binary. It runs with ``--no-sandbox``, which running as root requires.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str:
    """The Chromium binary: ``$Q2REC_CHROMIUM``, else the first of ``CANDIDATES`` on the PATH."""
    named = os.environ.get("Q2REC_CHROMIUM")
    if named:
        if shutil.which(named) is None:
            raise BrowserError(f"Q2REC_CHROMIUM={named!r}: not an executable")
        return named
    for name in CANDIDATES:
        if shutil.which(name):
            return name
    raise BrowserError("no Chromium on the PATH; `make setup` installs it (apt-get install -y chromium)")


class Browser:
    """One headless Chromium with one page, its own profile directory and a DevTools socket."""

    def __init__(self, width: int = 1280, height: int = 1000, timeout: float = 30.0) -> None:
        from websockets.sync.client import connect

        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="q2rec-chromium-")
        args = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"]  # fmt: skip
        self.log = Path(self.profile) / "chromium.log"  # a file, not a pipe: a full pipe would stall it
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        self._id = 0
        self._stack = contextlib.ExitStack()  # the DevTools socket
        try:
            port = self._devtools_port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if not pages:
                raise BrowserError("Chromium started without a page")
            self.ws = self._stack.enter_context(
                connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
            )
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        """The port Chromium chose, from the ``DevToolsActivePort`` file it writes into its profile."""
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.log.read_text(errors="replace")[-2000:]
                raise BrowserError(f"Chromium exited with {self.proc.returncode}: {err}")
            if marker.is_file() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.05)
        raise BrowserError(f"Chromium opened no DevTools port within {self.timeout}s")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that arrive meanwhile are dropped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer within {self.timeout}s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            detail = res["exceptionDetails"]
            text = detail.get("exception", {}).get("description") or detail.get("text")
            raise BrowserError(f"{expression[:80]!r} raised in the page: {text}")
        return res.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        """Open ``url`` and wait until the document has loaded."""
        self.send("Page.navigate", url=url)
        self.wait_for(
            f"location.href.startsWith({json.dumps(url.split('?')[0])}) && document.readyState === 'complete'"
        )

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Poll ``expression`` until it is truthy; returns that value. On timeout the error shows the page."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.eval("document.body ? document.body.innerText.slice(0, 1500) : ''")
                raise BrowserError(
                    f"waited {timeout or self.timeout}s for {expression!r}; the page shows:\n{text}"
                )
            time.sleep(0.05)

    def type(self, selector: str, text: str) -> None:
        """Focus the element and type ``text`` as keyboard input (the page sees real input events)."""
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")

    def screenshot(self, path: str | Path) -> Path:
        """A PNG of the whole page (not only the window)."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        png = self.send("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(png["data"]))
        return path

    def close(self) -> None:
        self._stack.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
