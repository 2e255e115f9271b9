"""Headless Chromium driven by Selenium WebDriver: open a page, type, click, wait for what the page shows, take
a screenshot. The explorer page's browser test and ``devtools.smoke``'s screenshot use it.

    with Browser() as b:
        b.goto("http://127.0.0.1:8000/?user_id=1")
        b.wait_for("document.body.dataset.state === 'ready'")
        b.screenshot("explorer.png")

Clicks and typing are WebDriver's: an element is waited for until it is displayed and enabled, then clicked
where a user would click it (an element hidden or covered is an error, not a silent ``.click()``).
Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` packages, the same version
(``make system`` installs them); ``$Q2REC_CHROMIUM`` and ``$Q2REC_CHROMEDRIVER`` name other binaries. Both
paths are given to Selenium, so it never looks for a driver to download. Chromium runs with
``--no-sandbox``, which running as root requires.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMEDRIVER = ("chromedriver",)


class BrowserError(RuntimeError):
    pass


def _find(env: str, names: tuple[str, ...], package: str) -> str:
    named = os.environ.get(env)
    if named:
        path = shutil.which(named)
        if path is None:
            raise BrowserError(f"{env}={named!r}: not an executable")
        return path
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserError(f"no {names[0]} on the PATH; `make system` installs it (apt-get install -y {package})")


def find_chromium() -> str:
    """The Chromium binary: ``$Q2REC_CHROMIUM``, else the first of ``CHROMIUM`` on the PATH."""
    return _find("Q2REC_CHROMIUM", CHROMIUM, "chromium")


class Browser:
    """One headless Chromium with one page, through its WebDriver."""

    def __init__(self, width: int = 1280, height: int = 1000, timeout: float = 30.0) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.timeout = timeout
        options = webdriver.ChromeOptions()
        options.binary_location = find_chromium()
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                    "--no-default-browser-check", f"--window-size={width},{height}"):  # fmt: skip
            options.add_argument(arg)
        service = Service(executable_path=_find("Q2REC_CHROMEDRIVER", CHROMEDRIVER, "chromium-driver"))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_script_timeout(timeout)

    def _wait(self, timeout: float | None = None):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout or self.timeout, poll_frequency=0.05)

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        from selenium.common.exceptions import JavascriptException

        try:
            return self.driver.execute_script(f"return ({expression});")
        except JavascriptException as exc:
            raise BrowserError(f"{expression[:80]!r} raised in the page: {exc.msg}") from None

    def goto(self, url: str) -> None:
        """Open ``url``; returns once the document has loaded (WebDriver waits for it)."""
        self.driver.get(url)

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Poll ``expression`` until it is truthy; returns that value. On timeout the error shows the page."""
        from selenium.common.exceptions import TimeoutException

        try:
            return self._wait(timeout).until(lambda _: self.eval(expression))
        except TimeoutException:
            text = self.eval("document.body ? document.body.innerText.slice(0, 1500) : ''")
            raise BrowserError(
                f"waited {timeout or self.timeout}s for {expression!r}; the page shows:\n{text}"
            ) from None

    def _clickable(self, selector: str, text: str | None = None):
        """The first element matching ``selector`` (and whose text starts with ``text``) once it is displayed
        and enabled."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By

        def ready(driver):
            for el in driver.find_elements(By.CSS_SELECTOR, selector):
                if (text is None or el.text.startswith(text)) and el.is_displayed() and el.is_enabled():
                    return el
            return False

        try:
            return self._wait().until(ready)
        except TimeoutException:
            what = selector + (f" starting with {text!r}" if text else "")
            raise BrowserError(f"no displayed, enabled {what} within {self.timeout}s") from None

    def type(self, selector: str, text: str) -> None:
        """Clear the field and type ``text`` into it, key by key (the page sees real input events)."""
        field = self._clickable(selector)
        field.clear()
        field.send_keys(text)

    def click(self, selector: str, text: str | None = None) -> None:
        """Click the element (the first one whose text starts with ``text``, if given) as a user would."""
        self._clickable(selector, text).click()

    def screenshot(self, path: str | Path) -> Path:
        """A PNG of the whole page (not only the window)."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        png = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}
        )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(png["data"]))
        return path

    def close(self) -> None:
        self.driver.quit()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
