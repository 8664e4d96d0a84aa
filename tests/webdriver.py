"""A small W3C WebDriver client for Debian's chromium and chromedriver (no browser download, no selenium).

``Browser()`` starts ``/usr/bin/chromedriver`` on a free port and a headless chromium session;
``get``, ``find``/``finds`` (CSS), ``click``, ``type``, ``text``, ``wait_for`` and ``screenshot``
speak the W3C protocol over plain HTTP.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sensorium.evaluation.ports import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def available() -> bool:
    return Path(CHROMIUM).exists() and shutil.which(CHROMEDRIVER) is not None


class WebDriverError(RuntimeError):
    pass


class Browser:
    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except (OSError, WebDriverError):
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise
                time.sleep(0.1)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            f"--window-size={width},{height}",
                        ],
                    },
                }
            }
        }
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                out = json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise WebDriverError(f"{method} {path}: {exc.read()[:500]!r}") from None
        return out.get("value", out) if isinstance(out, dict) else out

    def _s(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._s("POST", "/url", {"url": url})

    def finds(self, css: str) -> list[str]:
        return [e[ELEMENT] for e in self._s("POST", "/elements", {"using": "css selector", "value": css})]

    def find(self, css: str) -> str:
        found = self.finds(css)
        if not found:
            raise WebDriverError(f"no element matches {css!r}")
        return found[0]

    def click(self, css: str) -> None:
        self._s("POST", f"/element/{self.find(css)}/click")

    def type(self, css: str, text: str) -> None:
        self._s("POST", f"/element/{self.find(css)}/value", {"text": text})

    def text(self, css: str = "body") -> str:
        """The element's rendered text, read in one step (live pages replace elements under a find-then-read)."""
        got = self.script("const e = document.querySelector(arguments[0]); return e ? e.innerText : null", css)
        if got is None:
            raise WebDriverError(f"no element matches {css!r}")
        return str(got)

    def accept_alert(self) -> None:
        """Press OK on the page's ``confirm()``."""
        self._s("POST", "/alert/accept")

    def script(self, js: str, *args: Any) -> Any:
        return self._s("POST", "/execute/sync", {"script": js, "args": list(args)})

    def wait_for(self, test: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                got = test()
                if got:
                    return got
            except WebDriverError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what or test}: {last or ''}\npage: {self.text()[:2000]}")

    def screenshot(self, path: str | Path) -> None:
        Path(path).write_bytes(base64.b64decode(self._s("GET", "/screenshot")))

    def close(self) -> None:
        try:
            self._s("DELETE", "")
        except (OSError, WebDriverError):
            pass
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
