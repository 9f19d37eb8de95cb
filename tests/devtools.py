"""A minimal Chrome DevTools Protocol client for the browser tests, over a pipe.

Chromium started with ``--remote-debugging-pipe`` reads protocol commands from
file descriptor 3 and writes replies and events to descriptor 4, one JSON message
per NUL-terminated chunk. That needs nothing beyond the standard library (no
websocket package), and no port is opened.

    with Browser(chromium) as browser:
        page = browser.open(url, width=390, mobile=True)
        page.evaluate("document.documentElement.scrollWidth")
        page.console_errors()   # console.error/warn calls, uncaught exceptions, failed loads
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

# Headless, no network (every host lookup fails, except this machine's own address,
# where a test may serve the built book over HTTP), nothing fetched in the background.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


class DevToolsError(RuntimeError):
    pass


class Browser:
    """One headless Chromium driven over the DevTools pipe."""

    def __init__(self, chromium: str, timeout: float = 60.0):
        self.chromium, self.timeout = chromium, timeout
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._events: dict[str, list[dict]] = {}  # by session id
        self._cond = threading.Condition()

    def __enter__(self) -> Browser:
        self._profile = tempfile.mkdtemp(prefix="mt-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_pipes():  # in the child, before exec: the protocol's descriptors 3 and 4
            # (copied out of the way first: either pipe end may itself be descriptor 3 or 4)
            read_end, write_end = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(read_end, 3)  # dup2 makes the copies inheritable
            os.dup2(write_end, 4)

        self._proc = subprocess.Popen(
            [self.chromium, *CHROMIUM_ARGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipes,
            close_fds=False,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._to_chrome)
        shutil.rmtree(self._profile, ignore_errors=True)

    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._cond:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self._events.setdefault(message.get("sessionId", ""), []).append(message)
                self._cond.notify_all()
        os.close(self._from_chrome)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=None) -> dict:
        with self._cond:
            self._next_id += 1
            msg_id = self._next_id
        message = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while msg_id not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or getattr(self, "_closed", False):
                    raise DevToolsError(f"no reply to {method}")
                self._cond.wait(left)
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise DevToolsError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def events(self, session: str) -> list[dict]:
        with self._cond:
            return list(self._events.get(session, []))

    def wait_for_event(self, session: str, method: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self._events.get(session, []):
                    if event["method"] == method:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def open(self, url: str, *, width: int = 1280, height: int = 900, mobile: bool = False) -> Page:
        """A new tab of `width` x `height` CSS pixels (a phone's viewport when `mobile`), loaded."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
            session=session,
        )
        self.send("Page.navigate", {"url": url}, session=session)
        if self.wait_for_event(session, "Page.loadEventFired", self.timeout) is None:
            raise DevToolsError(f"{url} did not load in {self.timeout} s")
        return Page(self, session, target)


class Page:
    def __init__(self, browser: Browser, session: str, target: str):
        self.browser, self.session, self.target = browser, session, target

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of a JavaScript expression (a promise is awaited)."""
        result = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 30.0, interval: float = 0.25) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return True
            time.sleep(interval)
        return False

    def console_errors(self) -> list[str]:
        """What the page reported as a problem: console.error/console.warn calls, uncaught
        exceptions and rejections, and the browser's own error/warning log entries."""
        found = []
        for event in self.browser.events(self.session):
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                found.append(f"console.{params['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text", "")
                found.append(f"uncaught: {text.splitlines()[0] if text else details}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                entry = params["entry"]
                found.append(f"{entry['source']} {entry['level']}: {entry['text']} {entry.get('url', '')}")
        return found
