"""`dlspec serve`: the watcher's states on bad input, the command's errors, and the live page
in a real headless Chromium driven over the DevTools protocol (a tiny websocket client)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from dlspec.serve import Hub

GOOD = "model Net {\n  input x: [3, 8, 8]\n  conv 16 kernel 3 padding 1 -> relu\n  flatten -> dense 10\n}\n"
BROKEN = GOOD.replace("dense 10", "dense 10 frob 2")


def write(path: Path, text: str | bytes) -> None:
    """Replace a file as editors save it (a new inode; the mtime changes even within a tick)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    os.replace(tmp, path)


# ---- the watcher ---------------------------------------------------------------------------------


def test_hub_keeps_the_last_good_program_and_marks_it_stale(tmp_path):
    f = tmp_path / "net.dl"
    write(f, GOOD)
    hub = Hub([f])
    s = hub.specs[0]
    st = s.state(None)
    assert st["errors"] == 0 and not st["stale"] and st["diagnostics"] == []
    assert [r["path"] for r in st["models"][0]["rows"]] == ["x", "conv1", "relu1", "flatten1", "dense1"]
    assert st["models"][0]["params"] == 448 + 10250
    assert s.svg("Net", None).lstrip().startswith(b"<?xml")
    write(f, BROKEN)
    assert hub.poll_once() and hub.version == 1
    st = s.state(None)
    assert st["errors"] == 1 and st["stale"]
    [d] = st["diagnostics"]
    assert d["message"] == "unknown parameter 'frob' for dense" and d["line"] == 4
    assert "4 |   flatten -> dense 10 frob 2" in d["text"]  # the source line under the message
    assert st["models"][0]["params"] == 448 + 10250  # the last good report is still shown
    assert not hub.poll_once()  # nothing changed since


def test_hub_on_non_utf8_removed_files_and_edited_imports(tmp_path):
    lib = tmp_path / "lib.dl"
    write(lib, "block B {\n  dense 4\n}\n")
    f = tmp_path / "net.dl"
    write(f, 'import "lib.dl"\nmodel Net {\n  input x: [8]\n  B()\n}\n')
    hub = Hub([f])
    s = hub.specs[0]
    assert s.errors == 0 and s.state(None)["models"][0]["params"] == 36
    write(lib, "block B {\n  dense 5\n}\n")  # edited elsewhere: the import is watched
    assert hub.poll_once()
    assert s.state(None)["models"][0]["params"] == 45
    write(f, b"model Net {\n  \xff\xfe\n}\n")
    assert hub.poll_once()
    [d] = s.state(None)["diagnostics"]
    assert "0xff" in d["message"] and "UTF-8" in d["message"]  # one clear line, wherever the front end words it
    assert s.stale
    f.unlink()
    assert hub.poll_once()
    [d] = s.state(None)["diagnostics"]
    assert d["message"] == f"no such file: {f}"
    write(f, 'import "lib.dl"\nmodel Net {\n  input x: [8]\n  B()\n}\n')  # back again
    assert hub.poll_once()
    assert s.errors == 0 and not s.stale


# ---- the command -----------------------------------------------------------------------------------


def dlspec_exe() -> str:
    return str(Path(sys.executable).with_name("dlspec"))


def test_port_in_use_is_one_line_and_exit_2(tmp_path):
    f = tmp_path / "net.dl"
    write(f, GOOD)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([dlspec_exe(), "serve", str(f), "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"dlspec: error: port {port} on 127.0.0.1 is in use; choose another with --port (0: any free port)"
    ]


def test_missing_file_is_a_usage_error(tmp_path):
    r = subprocess.run([dlspec_exe(), "serve", str(tmp_path / "nope.dl")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == f"dlspec: error: no such file: {tmp_path / 'nope.dl'}"


# ---- the page in a real browser ---------------------------------------------------------------------


class DevTools:
    """Just enough of a websocket client to call the DevTools protocol's Runtime.evaluate."""

    def __init__(self, url: str):
        host, _, rest = url.removeprefix("ws://").partition("/")
        h, _, p = host.partition(":")
        self.sock = socket.create_connection((h, int(p)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            assert chunk, "the browser closed the websocket"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        self.id = 0

    def _recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            assert chunk, "the browser closed the websocket"
            out += chunk
        return out

    def _frame(self) -> tuple[int, bytes]:
        b0, b1 = self._recv_exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._recv_exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._recv_exact(8))[0]
        return b0 & 0x0F, self._recv_exact(n)

    def _send(self, data: bytes) -> None:
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def evaluate(self, expression: str):
        self.id += 1
        self._send(
            json.dumps({"id": self.id, "method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": True}}).encode()
        )
        buf = b""
        while True:
            op, data = self._frame()
            buf += data
            if op in (1, 0):
                try:
                    msg = json.loads(buf)
                except ValueError:
                    continue  # a fragmented message: more frames follow
                buf = b""
                if msg.get("id") == self.id:
                    return msg["result"]["result"].get("value")

    def close(self) -> None:
        self.sock.close()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def until(probe, what: str, timeout: float = 30.0):
    """Poll ``probe`` until it returns something true; fail naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        v = probe()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"the page never showed {what}; last value {v!r}")
        time.sleep(0.1)


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (make test installs it as root: .ci/sysdeps.sh)")
def test_live_page_in_headless_chromium(tmp_path):
    f = tmp_path / "net.dl"
    write(f, GOOD)
    server = subprocess.Popen([dlspec_exe(), "serve", str(f), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    profile = tempfile.mkdtemp(prefix="dlspec-chromium-")
    browser = None
    tools = None
    try:
        line = server.stdout.readline()
        assert " at http://127.0.0.1:" in line, line + server.stderr.read()
        url = line.split(" at ", 1)[1].split()[0]
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
        ]
        browser = subprocess.Popen([chromium(), *flags, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(profile) / "DevToolsActivePort"
        until(lambda: port_file.is_file() and len(port_file.read_text().split()) >= 2, "the DevTools port", 60)
        port = port_file.read_text().split()[0]

        def page_ws():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page" and t.get("url", "").startswith(url)]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        tools = DevTools(until(page_ws, "a page target", 60))
        js = tools.evaluate
        until(lambda: js("document.querySelectorAll('.diagram svg').length") == 1, "the diagram SVG")
        assert js("document.querySelector('.diagram svg g.node') !== null")
        rows = js("[...document.querySelectorAll('table.report tbody tr')].map(r => r.cells[0].textContent.trim())")
        assert rows == ["x", "conv1", "relu1", "flatten1", "dense1"]
        assert js("document.querySelector('.diagnostics').dataset.count") == "0"
        assert "10,698" in js("document.querySelector('.totals').textContent")

        js("window.__marker = 42")  # a reload would lose it
        write(f, BROKEN)
        text = until(lambda: js("document.querySelector('.diagnostics').textContent"), "the error")
        assert "unknown parameter 'frob' for dense" in text and "flatten -> dense 10 frob 2" in text
        assert js("document.querySelector('section.file').classList.contains('stale')")
        assert "stale" in js("document.querySelector('.stale-banner').textContent")
        assert js("document.querySelectorAll('.diagram svg').length") == 1  # the last good diagram stays

        write(f, GOOD.replace("dense 10", "dense 12"))
        until(lambda: js("document.querySelector('.diagnostics').dataset.count") == "0", "the error gone")
        assert not js("document.querySelector('section.file').classList.contains('stale')")
        until(lambda: "12,748" in js("document.querySelector('.totals').textContent"), "the new totals")
        until(lambda: js("document.querySelectorAll('.diagram svg').length") == 1, "the new diagram")
        assert js("window.__marker") == 42

        js("document.querySelector('#depth').value = '0'; document.querySelector('#depth').onchange()")  # the depth control redraws
        until(lambda: js("document.querySelectorAll('table.report tbody tr').length") == 5, "the table at depth 0")
    finally:
        if tools is not None:
            tools.close()
        for p in (browser, server):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(profile, ignore_errors=True)
