"""Headless Debian ``chromium`` driven over the DevTools protocol (aiohttp's websocket client),
for browser tests of the web UI: navigate, evaluate JavaScript, move the mouse, screenshot."""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One browser tab; ``call`` sends a DevTools command and waits for its answer."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            fut = self._waiting.pop(data.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(data)

    async def call(self, method: str, timeout: float = 30, **params) -> dict:
        i = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[i] = fut
        await self.ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
        data = await asyncio.wait_for(fut, timeout)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return data["result"]

    async def eval(self, expression: str):
        """The value of a JavaScript expression (promises awaited); raises on an exception."""
        r = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                            returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def wait_for(self, expression: str, timeout: float = 20):
        """Polls until the expression is truthy; returns its value (TimeoutError if never)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                v = await self.eval(expression)
            except RuntimeError:
                v = None
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true: {expression}")
            await asyncio.sleep(0.1)

    async def mouse(self, kind: str, x: float, y: float, **extra) -> None:
        await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    async def hover_until(self, point: str, expression: str, timeout: float = 20):
        """Moves the mouse to ``point`` (an expression giving [x, y]) until ``expression`` is
        truthy; returns its value. The point is worked out again on every try: on a loaded
        machine the page may still lay out (or re-render the element) after one move, and a
        single mouse event on a stale spot is lost."""
        deadline = time.monotonic() + timeout
        while True:
            await self.mouse("mouseMoved", *await self.eval(point))
            try:
                return await self.wait_for(expression, timeout=1)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    async def click(self, selector: str) -> None:
        await self.wait_for(f"!!document.querySelector({json.dumps(selector)})")
        box = await self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                              " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
                              " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        await self.mouse("mousePressed", *box, button="left", clickCount=1)
        await self.mouse("mouseReleased", *box, button="left", clickCount=1)

    async def type(self, text: str) -> None:
        await self.call("Input.insertText", text=text)

    async def key(self, key: str, code: str, keycode: int) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call("Input.dispatchKeyEvent", type=kind, key=key, code=code,
                            windowsVirtualKeyCode=keycode)

    async def screenshot(self, path: Path) -> None:
        w, h = await self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        r = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                            clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
        path.write_bytes(base64.b64decode(r["data"]))


class Browser:
    """``async with Browser() as page:`` a headless chromium with one tab, killed on exit."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None

    async def __aenter__(self) -> Page:
        assert CHROMIUM, "chromium is not installed (scripts/test.sh installs it)"
        self.profile = tempfile.TemporaryDirectory(prefix="promring-chromium-",
                                                   ignore_cleanup_errors=True)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--mute-audio", "--hide-scrollbars",
             f"--user-data-dir={self.profile.name}", "--remote-debugging-port=0",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools server")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self.http = aiohttp.ClientSession()
        async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.ws = await self.http.ws_connect(url, max_msg_size=64 << 20)
        page = Page(self.ws)
        await page.call("Page.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=self.size[0],
                        height=self.size[1], deviceScaleFactor=1, mobile=False)
        self.page = page
        return page

    async def __aexit__(self, *exc) -> None:
        try:
            await self.page.call("Browser.close", timeout=5)  # lets its helpers exit too
        except Exception:  # noqa: BLE001 -- killed below anyway
            pass
        self.page._reader.cancel()
        await self.ws.close()
        await self.http.close()
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.profile.name, ignore_errors=True)
        self.profile.cleanup()
