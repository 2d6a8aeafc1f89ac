"""Headless Chromium (Debian ``chromium``) for the pages the project serves: render a URL
or a file to a PNG, dump its DOM, print it to PDF, and collect what went wrong in it.

Two ways in:

* ``Chromium`` / ``Page``: one browser driven over the DevTools protocol (CDP) on
  loopback, with a minimal stdlib WebSocket client (RFC 6455). This is the one to use
  when the test must know the page had no errors: CDP reports each problem with its kind
  (``console.error``, uncaught exception, failed load, CSP violation, 404 ...) and every
  request the page made, so "self-contained" can be checked too. The stderr route
  (``--enable-logging=stderr``) was tried first: Chromium 156 prints every console
  message as ``INFO:CONSOLE`` whatever its level, and failed loads not at all, so it
  cannot tell ``console.log`` from ``console.error``.
* ``screenshot()`` / ``dump_dom()``: the one-shot command-line modes
  (``--screenshot``, ``--dump-dom``), for a quick look without any error report.

As root Chromium refuses to start without ``--no-sandbox``; it is added then. Every run
gets its own temporary ``--user-data-dir``. The browser is a child in its own process
group, closed over CDP and then signalled by its id, never by name.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.localstack import MissingPrerequisite, Process, find_binary, wait_until

WINDOW = (1240, 1754)  # A4 at 150 dpi: a printed page, pixel for pixel
DEFAULT_TIMEOUT = 30.0
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def chromium_binary() -> str:
    """The Chromium on this machine (Debian: ``chromium``; elsewhere maybe another name)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        try:
            return find_binary(name)
        except MissingPrerequisite:
            continue
    raise MissingPrerequisite("chromium not found (apt-get install chromium fonts-dejavu-core)")


def base_args(user_data_dir: Path, window: tuple[int, int] = WINDOW) -> list[str]:
    """The flags every run takes: headless, no GPU, a private profile, nothing phoning home."""
    args = ["--headless=new", "--disable-gpu", f"--user-data-dir={user_data_dir}",
            f"--window-size={window[0]},{window[1]}", "--force-device-scale-factor=1",
            "--hide-scrollbars", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--disable-component-update", "--disable-default-apps", "--mute-audio",
            "--disable-dev-shm-usage", "--password-store=basic", "--use-mock-keychain"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium will not run its sandbox as root
    return args


def as_url(target: str | Path) -> str:
    """A URL as given, or a local file as ``file://`` (absolute)."""
    text = str(target)
    if "://" in text or text.startswith(("about:", "data:")):
        return text
    return Path(text).resolve().as_uri()


# --- one-shot command-line modes ------------------------------------------------------------

def _one_shot(extra: list[str], url: str, timeout: float, window: tuple[int, int],
              binary: str | None, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryDirectory(prefix="bw-chromium-") as tmp:
        argv = [binary or chromium_binary(), *base_args(Path(tmp) / "profile", window), *extra,
                url]
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=cwd or tmp,
                              check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def screenshot(target: str | Path, png: str | Path, window: tuple[int, int] = WINDOW,
               timeout: float = 60, binary: str | None = None) -> Path:
    """``chromium --headless=new --screenshot=PNG --window-size=W,H URL``: the viewport."""
    out = Path(png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _one_shot([f"--screenshot={out}"], as_url(target), timeout, window, binary)
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out


def dump_dom(target: str | Path, window: tuple[int, int] = WINDOW, timeout: float = 60,
             binary: str | None = None) -> str:
    """``chromium --headless=new --dump-dom URL``: the DOM after load, serialised."""
    proc = _one_shot(["--dump-dom"], as_url(target), timeout, window, binary)
    return proc.stdout.decode("utf-8", errors="replace")


# --- a minimal WebSocket client (RFC 6455), enough for CDP ----------------------------------

class WebSocket:
    """Client side only: text frames out (masked), text/binary in, ping answered."""

    def __init__(self, host: str, port: int, path: str, timeout: float = DEFAULT_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        # No Origin header: Chromium only checks --remote-allow-origins when one is sent.
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        self._buf = b""
        while b"\r\n\r\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            self._buf += chunk
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"websocket handshake refused: {lines[0]}")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise ConnectionError("websocket handshake: wrong Sec-WebSocket-Accept")

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("websocket closed by peer")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        # XOR with the mask repeated, as one big integer: fast without numpy.
        repeated = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
            n, "big") if n else b""
        self.sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self, timeout: float | None = None) -> str:
        """The next whole message (fragments joined); raises TimeoutError when none came."""
        self.sock.settimeout(timeout)
        parts: list[bytes] = []
        try:
            while True:
                b1, b2 = self._read(2)
                fin, opcode, n = b1 & 0x80, b1 & 0x0F, b2 & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", self._read(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", self._read(8))
                mask = self._read(4) if b2 & 0x80 else b""
                payload = self._read(n)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == 0x9:  # ping
                    self._send_frame(0xA, payload)
                    continue
                if opcode == 0xA:  # pong
                    continue
                if opcode == 0x8:
                    raise ConnectionError("websocket closed by peer")
                parts.append(payload)
                if fin:
                    return b"".join(parts).decode("utf-8")
        except TimeoutError:  # socket.timeout is TimeoutError since 3.10
            raise TimeoutError("no websocket message in time") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, struct.pack("!H", 1000))
        self.sock.close()


# --- the DevTools protocol ------------------------------------------------------------------

class CdpError(RuntimeError):
    """A DevTools command answered with an error."""


class _Cdp:
    """Commands and events over one browser-level socket; page sessions are flattened."""

    def __init__(self, ws: WebSocket):
        self.ws = ws
        self.next_id = 1
        self.pending: list[dict[str, Any]] = []  # events read but not yet waited for
        self.listeners: dict[str, Callable[[dict[str, Any]], None]] = {}

    def _dispatch(self, message: dict[str, Any]) -> None:
        listener = self.listeners.get(message.get("sessionId", ""))
        if listener is not None:
            listener(message)
        self.pending.append(message)
        del self.pending[:-1000]  # keep memory bounded on a chatty page

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        msg_id = self.next_id
        self.next_id += 1
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout}s")
            reply = json.loads(self.ws.recv(left))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._dispatch(reply)

    def wait_event(self, match: Callable[[dict[str, Any]], bool], what: str,
                   timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        for i, event in enumerate(self.pending):
            if match(event):
                del self.pending[: i + 1]
                return event
        self.pending.clear()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            message = json.loads(self.ws.recv(left))
            if "method" in message:
                listener = self.listeners.get(message.get("sessionId", ""))
                if listener is not None:
                    listener(message)
                if match(message):
                    return message


def _remote_text(obj: dict[str, Any]) -> str:
    if "value" in obj:
        return str(obj["value"])
    return str(obj.get("description") or obj.get("unserializableValue") or obj.get("type", ""))


class Page:
    """One tab. ``errors`` holds every problem the page reported, each as one line:
    console.error/assert, uncaught exceptions, browser log errors (failed loads, CSP
    violations, 4xx/5xx), failed requests and a crash. ``requests`` is every URL asked for."""

    def __init__(self, cdp: _Cdp, target_id: str, session_id: str,
                 window: tuple[int, int], timeout: float):
        self.cdp = cdp
        self.target_id = target_id
        self.session = session_id
        self.timeout = timeout
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.console: list[tuple[str, str]] = []  # (type, text) of every console call
        self.requests: list[str] = []
        self._urls: dict[str, str] = {}
        cdp.listeners[session_id] = self._on_event
        for domain in ("Runtime", "Log", "Network", "Page"):
            self._call(f"{domain}.enable")
        self._call("Page.setLifecycleEventsEnabled", {"enabled": True})
        self._call("Emulation.setDeviceMetricsOverride", {
            "width": window[0], "height": window[1], "deviceScaleFactor": 1, "mobile": False})

    def _call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.cdp.call(method, params, self.session, self.timeout)

    def _on_event(self, message: dict[str, Any]) -> None:
        method, p = message["method"], message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(a) for a in p.get("args", []))
            self.console.append((p.get("type", ""), text))
            if p.get("type") in ("error", "assert"):
                self.errors.append(f"console.{p['type']}: {text}")
            elif p.get("type") == "warning":
                self.warnings.append(f"console.warn: {text}")
        elif method == "Runtime.exceptionThrown":
            details = p.get("exceptionDetails", {})
            text = _remote_text(details.get("exception", {})) or details.get("text", "")
            self.errors.append(f"exception: {text} ({details.get('url', '')}:"
                               f"{details.get('lineNumber', '?')})")
        elif method == "Log.entryAdded":
            entry = p.get("entry", {})
            line = f"{entry.get('source', 'log')}: {entry.get('text', '')} {entry.get('url', '')}"
            if entry.get("level") == "error":
                self.errors.append(line.strip())
            elif entry.get("level") == "warning":
                self.warnings.append(line.strip())
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            self._urls[p.get("requestId", "")] = url
            self.requests.append(url)
        elif method == "Network.loadingFailed":
            url = self._urls.get(p.get("requestId", ""), "?")
            reason = p.get("blockedReason") or p.get("errorText", "")
            self.errors.append(f"load failed: {reason} {url}")
        elif method in ("Inspector.targetCrashed", "Target.targetCrashed"):
            self.errors.append("renderer crashed")

    def goto(self, target: str | Path, wait_for: str = "load") -> None:
        """Navigate and wait for the lifecycle event ``wait_for`` ("load", "networkIdle")."""
        result = self._call("Page.navigate", {"url": as_url(target)})
        if result.get("errorText"):
            raise RuntimeError(f"navigation to {target} failed: {result['errorText']}")
        loader = result.get("loaderId")
        if loader:
            self.cdp.wait_event(
                lambda m: m.get("sessionId") == self.session
                and m.get("method") == "Page.lifecycleEvent"
                and m["params"].get("name") == wait_for
                and m["params"].get("loaderId") == loader,
                f"{wait_for} of {target}", self.timeout)
        self.settle()

    def settle(self) -> None:
        """Read what the page already sent (late console messages) without waiting for more."""
        self.evaluate("0")

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        """Run ``expression`` in the page (DevTools' own call: works with the page's JS off);
        with ``await_promise`` the value a returned promise resolves to."""
        result = self._call("Runtime.evaluate", {"expression": expression,
                                                 "returnByValue": True,
                                                 "awaitPromise": await_promise})
        if "exceptionDetails" in result:
            raise CdpError(f"evaluate {expression!r}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def emulate_media(self, media: str = "") -> None:
        """Lay the page out for "print" (or "screen"; "" restores the default)."""
        self._call("Emulation.setEmulatedMedia", {"media": media})

    def dom(self) -> str:
        """The DOM now, serialised (what ``--dump-dom`` prints)."""
        return "<!DOCTYPE html>\n" + str(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: str | Path | None = None, full_page: bool = False) -> bytes:
        """A PNG of the viewport, or of the whole page when ``full_page``."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self._call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = base64.b64decode(self._call("Page.captureScreenshot", params)["data"])
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(data)
        return data

    def pdf(self, path: str | Path | None = None, **options: Any) -> bytes:
        """Print as the browser would (print CSS, ``@page`` size); ``options``: CDP's."""
        params = {"preferCSSPageSize": True, "printBackground": False, **options}
        data = base64.b64decode(self._call("Page.printToPDF", params)["data"])
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(data)
        return data

    def close(self) -> None:
        self.cdp.listeners.pop(self.session, None)
        with contextlib.suppress(CdpError, TimeoutError, OSError):
            self.cdp.call("Target.closeTarget", {"targetId": self.target_id},
                          timeout=self.timeout)


class Chromium:
    """One headless browser with DevTools on a loopback port Chromium picks itself.

    ``with Chromium(workdir) as browser: page = browser.open("report.html")``; the
    browser's log is ``workdir/chromium.log``, its profile ``workdir/profile``.
    """

    def __init__(self, workdir: str | Path | None = None, window: tuple[int, int] = WINDOW,
                 timeout: float = DEFAULT_TIMEOUT, binary: str | None = None):
        self._tmp = None if workdir else tempfile.mkdtemp(prefix="bw-chromium-")
        self.workdir = Path(workdir or self._tmp or ".")
        self.window = window
        self.timeout = timeout
        self.binary = binary or chromium_binary()
        self.profile = self.workdir / "profile"
        self.process: Process | None = None
        self._cdp: _Cdp | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        argv = [self.binary, *base_args(self.profile, self.window),
                "--remote-debugging-port=0", "about:blank"]
        self.process = Process(argv, self.workdir / "chromium.log")
        self.process.start()

        def ready() -> list[str] | None:
            if not self.process or not self.process.running:
                raise RuntimeError("chromium exited")
            lines = port_file.read_text().split() if port_file.exists() else []
            return lines if len(lines) >= 2 else None

        try:
            port, path = wait_until(ready, self.timeout, "chromium's DevToolsActivePort")[:2]
        except (RuntimeError, TimeoutError) as err:
            log = self.process.log()[-3000:]
            self.stop()
            raise RuntimeError(f"chromium did not start: {err}\n{log}") from None
        self._cdp = _Cdp(WebSocket("127.0.0.1", int(port), path, self.timeout))

    @property
    def cdp(self) -> _Cdp:
        if self._cdp is None:
            raise RuntimeError("Chromium not started")
        return self._cdp

    def new_page(self) -> Page:
        target = self.cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.cdp.call("Target.attachToTarget",
                                {"targetId": target, "flatten": True})["sessionId"]
        return Page(self.cdp, target, session, self.window, self.timeout)

    def open(self, target: str | Path, wait_for: str = "load") -> Page:
        """A new tab showing ``target`` (URL or file), loaded, its errors being collected."""
        page = self.new_page()
        page.goto(target, wait_for)
        return page

    def version(self) -> str:
        return str(self.cdp.call("Browser.getVersion").get("product", ""))

    def stop(self) -> None:
        """Ask the browser to close, then signal its process group (ours, by id)."""
        if self._cdp is not None:
            with contextlib.suppress(OSError):
                self._cdp.ws.send(json.dumps({"id": 0, "method": "Browser.close"}))
            self._cdp.ws.close()
            self._cdp = None
        proc = self.process.proc if self.process else None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                self.process.stop(timeout=5)  # type: ignore[union-attr]
            # Renderer and zygote children live in the same new session (pgid = pid).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
