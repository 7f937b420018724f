"""A minimal W3C WebDriver client (httpx) for Debian's headless Chromium and chromedriver.

Just what the dashboard tests and ``scripts/screenshots.py`` need: open a page, find elements,
type, click, read text, run a script, check for an alert, take a screenshot. No downloads: the
browser and driver come from ``apt-get install chromium chromium-driver``.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOWTO = (
    "the dashboard browser tests need Debian's Chromium: run "
    "`sudo apt-get install -y chromium chromium-driver` (.ci/run installs it when run as root)"
)
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]


def available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


class WebDriverError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Browser:
    """One headless Chromium session; use as a context manager."""

    def __init__(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="modelyard-chromium-")
        port = _free_port()
        self._driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._http.get("/status").json()["value"]["ready"]:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.close()
                raise WebDriverError("chromedriver did not start")
            time.sleep(0.1)
        options = {"binary": CHROMIUM, "args": [*ARGS, f"--user-data-dir={self._profile}"]}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self._session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = self._http.request(method, path, json=body if method == "POST" else None)
        value = response.json().get("value")
        if response.status_code >= 400:
            error = value.get("error") if isinstance(value, dict) else value
            raise WebDriverError(f"{error}: {value.get('message', '') if isinstance(value, dict) else ''}")
        return value

    def _s(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self._session}{path}", {} if body is None else body)

    # -- navigation and elements -----------------------------------------------------------
    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return str(self._s("GET", "/url"))

    def wait_for_url(self, suffix: str = "", *, containing: str = "", timeout_s: float = 10) -> str:
        """The URL once it ends with ``suffix`` and contains ``containing`` (a form submission may
        still be navigating)."""
        deadline = time.monotonic() + timeout_s
        while True:
            url = self.url
            done = url.rstrip("/").endswith(suffix) and containing in url
            if done or time.monotonic() > deadline:
                return url
            time.sleep(0.05)

    def find(self, css: str) -> str:
        return str(self._s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def find_all(self, css: str) -> list[str]:
        return [e[ELEMENT] for e in self._s("POST", "/elements", {"using": "css selector", "value": css})]

    def _retrying(self, css: str, method: str, action: str, body: Any = None) -> Any:
        """Find ``css`` and act on it, again while a navigation replaces the page under us."""
        deadline = time.monotonic() + 10
        while True:
            try:
                return self._s(method, f"/element/{self.find(css)}{action}", body)
            except WebDriverError as exc:
                if time.monotonic() > deadline or not any(
                    e in str(exc) for e in ("stale element", "no such element")
                ):
                    raise
            time.sleep(0.05)

    def text(self, css: str) -> str:
        return str(self._retrying(css, "GET", "/text"))

    def type(self, css: str, text: str) -> None:
        self._retrying(css, "POST", "/value", {"text": text})

    def click(self, css: str) -> None:
        self._retrying(css, "POST", "/click", {})

    def metric(self, name: str) -> str:
        """The text of the element tagged ``data-metric=name``."""
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return self.text(f'[data-metric="{escaped}"]')

    def script(self, source: str, *args: Any) -> Any:
        return self._s("POST", "/execute/sync", {"script": source, "args": list(args)})

    def alert_text(self) -> str | None:
        """The open alert's text, or None when there is none."""
        try:
            return str(self._s("GET", "/alert/text"))
        except WebDriverError as exc:
            if "no such alert" in str(exc):
                return None
            raise

    def cookies(self) -> list[dict[str, Any]]:
        return list(self._s("GET", "/cookie"))

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._s("GET", "/screenshot")))

    def full_page_screenshot(self, path: Path) -> None:
        """Grow the window to the page's height first, so the whole page is in the picture."""
        height = int(self.script("return Math.min(document.documentElement.scrollHeight, 4000)"))
        self._s("POST", "/window/rect", {"width": 1280, "height": max(600, height + 120)})
        self.screenshot(path)
        self._s("POST", "/window/rect", {"width": 1280, "height": 1000})

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        try:
            if getattr(self, "_session", None):
                self._call("DELETE", f"/session/{self._session}")
        except (httpx.HTTPError, WebDriverError):
            pass
        finally:
            self._http.close()
            self._driver.terminate()
            try:
                self._driver.wait(10)
            except subprocess.TimeoutExpired:
                self._driver.kill()
                self._driver.wait()
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
