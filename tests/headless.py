"""Open a report in headless Chromium over the DevTools protocol: wait for it to render,
evaluate JavaScript, click, take a screenshot. Test code (the report test and bench/report.py),
not part of the package."""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from trainer.fsutil import atomic_write

log = logging.getLogger(__name__)

# Without the background-networking flags Chromium tries to reach the internet (closed here).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", "--window-size=1400,1000")


class BrowserError(RuntimeError):
    """Chromium could not be started or did not answer as expected."""


def find_chromium() -> str | None:
    """The Chromium binary to use: $CHROMIUM, else chromium / chromium-browser on PATH."""
    for c in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if c and shutil.which(c):
            return shutil.which(c)
    return None


class Browser:
    """One private headless Chromium (own profile dir, own process group), one page."""

    def __init__(self, binary: str | None = None, timeout: float = 30.0):
        import websocket  # websocket-client

        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("chromium not found (apt-get install chromium, or set $CHROMIUM)")
        self.profile = tempfile.mkdtemp(prefix="swarm-chromium-")
        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self._id = 0
        try:
            port = self._devtools_port(timeout)
            url = self._page_ws(port, timeout)
            self.ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode(errors="replace")
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line.strip())
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                # keep draining stderr, or a chatty Chromium blocks on a full pipe
                threading.Thread(target=self._drain, daemon=True).start()
                return int(m.group(1))
        raise BrowserError(f"chromium gave no DevTools port: {' | '.join(seen[-3:])}")

    def _drain(self) -> None:
        try:
            for _ in iter(self.proc.stderr.readline, b""):
                pass
        except (OSError, ValueError):
            pass

    def _page_ws(self, port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise BrowserError("chromium opened no page")

    def call(self, method: str, **params) -> dict:
        """Send one DevTools command and return its result (events in between are dropped)."""
        self._id += 1
        my = self._id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error'].get('message')}")
                return msg.get("result", {})

    def eval(self, expr: str):
        """Evaluate a JS expression in the page (promises awaited) and return its JSON value."""
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise BrowserError(f"JS error: {d.get('exception', {}).get('description') or d.get('text')}")
        return res.get("result", {}).get("value")

    def open(self, path: Path, ready: str = "window.__reportReady === true",
             timeout: float = 60.0) -> float:
        """Navigate to a local file and wait until `ready` is true; return seconds taken."""
        t0 = time.perf_counter()
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.eval(f"!!({ready})"):
                    return time.perf_counter() - t0
            except BrowserError:
                pass  # the new document may not exist yet
            time.sleep(0.02)
        raise BrowserError(f"page not ready after {timeout:.0f}s: {path}")

    def click(self, x: float, y: float) -> None:
        """A real left click at viewport coordinates (x, y)."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for t in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=t, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """Save a PNG of the page (written via a temp file)."""
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
        return atomic_write(path, data)

    def close(self) -> None:
        """Stop this browser's process group (only ours) and remove its profile."""
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# JS: viewport coordinates of DAG node i (as drawn by page.js), for a real click.
NODE_XY_JS = """(function(i){
  var gd = document.getElementById('dag'), fl = gd._fullLayout, n = window.__reportData.nodes[i];
  var r = gd.getBoundingClientRect();
  return [r.left + fl.xaxis._offset + fl.xaxis.l2p(n.x), r.top + fl.yaxis._offset + fl.yaxis.l2p(n.y)];
})(%d)"""

# JS: how many DAG nodes plotly drew (node traces only, overlays and edges excluded).
NODE_COUNT_JS = """(function(){
  var gd = document.getElementById('dag');
  return gd._fullData.filter(function(t){return t.meta === 'node';})
    .reduce(function(s, t){return s + t.x.length;}, 0);
})()"""
