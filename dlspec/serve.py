"""``dlspec serve FILE… [--port P]``: a live preview page on 127.0.0.1.

The page shows each model's diagram (SVG from :func:`dlspec.draw.draw` rendered by Graphviz,
zoomable, blocks collapsed to a chosen depth), the report table and the diagnostics with their
source lines. A watcher thread polls the files and everything they import (mtime, size, inode)
every 200 ms; a change rebuilds that file and tells the page through server-sent events, and the
page updates itself without a reload. While a file is broken the page keeps its last good
diagram and table and marks them stale. Standard library only (http.server in threads).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POLL_S = 0.2


# ---- the state of one watched spec --------------------------------------------------------------


@dataclass
class Spec:
    """One spec file as last built: its diagnostics, and its last good program."""

    path: Path
    generation: int = 0
    diagnostics: list[dict] = field(default_factory=list)
    errors: int = 0
    good: Any = None  # the last Program without errors
    good_at: float | None = None
    stale: bool = False
    stamp: tuple = ()
    cache: dict = field(default_factory=dict)  # (generation, model, depth) → svg / report

    def watched(self) -> list[Path]:
        """The file and everything it imports (read lexically, so a broken file still has them)."""
        from .lsp.analysis import import_closure

        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        return [self.path, *sorted(set(import_closure(self.path, text).values()))]

    def current_stamp(self) -> tuple:
        out = []
        for p in self.watched():
            try:
                st = p.stat()
                out.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((str(p), None))
        return tuple(out)

    def build(self) -> None:
        """Check the file again; keep the last good program when it now fails."""
        from . import load
        from .errors import Diagnostic, DlspecError, Sources, render

        self.stamp = self.current_stamp()
        sources = Sources()
        for p in self.watched():
            try:
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            sources.add(str(self.path) if p == self.path else p.name, text)
            sources.add(str(p), text)
        diags: list[Diagnostic] = []
        prog = None
        try:
            prog = load(self.path, name=str(self.path))
            diags = prog.check()
        except DlspecError as e:
            diags = e.diagnostics
        except Exception as e:  # noqa: BLE001 - a bug in dlspec: shown on the page, the server stays up
            diags = [Diagnostic(f"internal error: {type(e).__name__}: {e}", None)]
        for d in diags:  # spans of imported files carry the import path as written
            if d.span and d.span.file not in sources.text:
                cand = (self.path.parent / d.span.file).resolve()
                if cand.is_file():
                    try:
                        sources.add(d.span.file, cand.read_text(encoding="utf-8"))
                    except (OSError, UnicodeDecodeError):
                        pass
        self.errors = sum(d.severity == "error" for d in diags)
        self.diagnostics = [{**d.to_json(), "text": render(d, sources)} for d in diags]
        if prog is not None and self.errors == 0:
            self.good, self.good_at, self.stale = prog, time.time(), False
            self.cache = {}
        else:
            self.stale = self.good is not None
        self.generation += 1

    def report(self, model: str, depth: int | None) -> dict:
        key = ("report", model, depth)
        if key not in self.cache:
            from .shapes import macs_value

            rep = self.good.analyze(model, depth=depth)
            f = rep.field()
            self.cache[key] = {
                "rows": [
                    {
                        "path": r.path,
                        "op": r.summary,
                        "shape": "×".join(str(d) for d in r.shape.shape),
                        "params": r.params,
                        "macs": macs_value(r.macs, {}),
                        "rf": f"{r.rf[0]} /{r.rf[1]}" if r.rf else "",
                        "depth": r.depth,
                        "line": r.line,
                        "collapsed": r.collapsed,
                    }
                    for r in rep.rows
                ],
                "params": rep.params,
                "buffers": rep.buffers,
                "macs": rep.macs(),
                "field": list(f) if f else None,
            }
        return self.cache[key]

    def svg(self, model: str, depth: int | None) -> bytes:
        key = ("svg", model, depth)
        if key not in self.cache:
            from .draw import render

            self.cache[key] = render(self.good.draw(model, depth=depth), "svg")
        return self.cache[key]

    def state(self, depth: int | None) -> dict:
        models = []
        if self.good is not None:
            for m in self.good.models:
                try:
                    models.append({"name": m, **self.report(m, depth)})
                except Exception as e:  # noqa: BLE001 - one model's report failing leaves the others
                    models.append({"name": m, "rows": [], "error": f"{type(e).__name__}: {e}"})
        return {
            "file": str(self.path),
            "generation": self.generation,
            "errors": self.errors,
            "diagnostics": self.diagnostics,
            "stale": self.stale,
            "good_at": self.good_at,
            "models": models,
        }


class Hub:
    """Every watched spec, a version number that grows on each change, and the watcher."""

    def __init__(self, files: list[Path]):
        self.specs = [Spec(p) for p in files]
        self.version = 0
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.lock = threading.Lock()  # builds and reads of the specs
        for s in self.specs:
            s.build()

    def poll_once(self) -> bool:
        changed = False
        for s in self.specs:
            if s.current_stamp() != s.stamp:
                with self.lock:
                    s.build()
                changed = True
        if changed:
            with self.cond:
                self.version += 1
                self.cond.notify_all()
        return changed

    def watch(self) -> None:
        while not self.stop.wait(POLL_S):
            try:
                self.poll_once()
            except Exception as e:  # noqa: BLE001 - the watcher must keep watching
                print(f"dlspec serve: internal error while watching: {type(e).__name__}: {e}", file=sys.stderr)

    def wait(self, seen: int, timeout: float) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.version != seen or self.stop.is_set(), timeout)
            return self.version


# ---- HTTP ---------------------------------------------------------------------------------------


def _handler(hub: Hub):
    from http.server import BaseHTTPRequestHandler
    from urllib.parse import parse_qs, urlparse

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request is noise
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            try:
                self._get()
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as e:  # noqa: BLE001 - one bad request never stops the server
                try:
                    self._send(500, f"internal error: {type(e).__name__}: {e}".encode(), "text/plain; charset=utf-8")
                except OSError:
                    pass

        def _get(self) -> None:
            u = urlparse(self.path)
            q = {k: v[-1] for k, v in parse_qs(u.query).items()}
            depth = int(q["depth"]) if q.get("depth", "").isdigit() else None
            if u.path == "/":
                self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8")
            elif u.path == "/state":
                with hub.lock:
                    doc = {"version": hub.version, "files": [s.state(depth) for s in hub.specs]}
                self._send(200, json.dumps(doc).encode("utf-8"), "application/json")
            elif u.path == "/svg":
                i = int(q.get("file", "0")) if q.get("file", "0").isdigit() else -1
                if not 0 <= i < len(hub.specs) or hub.specs[i].good is None or q.get("model") not in hub.specs[i].good.models:
                    self._send(404, b"no such diagram", "text/plain; charset=utf-8")
                    return
                from .errors import DlspecError

                try:
                    with hub.lock:
                        body = hub.specs[i].svg(q["model"], depth)
                except DlspecError as e:  # no Graphviz, say: the page shows why
                    msg = "; ".join(d.message + (f" ({d.help})" if d.help else "") for d in e.diagnostics)
                    self._send(503, msg.encode("utf-8"), "text/plain; charset=utf-8")
                    return
                self._send(200, body, "image/svg+xml")
            elif u.path == "/events":
                self._events()
            else:
                self._send(404, b"not found", "text/plain; charset=utf-8")

        def _events(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            seen = hub.version
            self.wfile.write(f"retry: 500\ndata: {json.dumps({'version': seen})}\n\n".encode())
            self.wfile.flush()
            while not hub.stop.is_set():
                now = hub.wait(seen, 15.0)
                if now != seen:
                    seen = now
                    self.wfile.write(f"data: {json.dumps({'version': seen})}\n\n".encode())
                else:
                    self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()

    return Handler


def run(args) -> int:
    """Serve the page until interrupted."""
    import errno
    from http.server import ThreadingHTTPServer

    from .errors import UsageError

    files = []
    for f in args.files:
        p = Path(f)
        if not p.is_file():
            raise UsageError(f"no such file: {f}" if not p.exists() else f"not a file: {f}")
        files.append(p)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, got {args.port}")
    hub = Hub(files)
    try:
        httpd = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(hub))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"port {args.port} on 127.0.0.1 is in use; choose another with --port (0: any free port)") from None
        raise UsageError(f"cannot listen on 127.0.0.1:{args.port}: {e.strerror or e}") from None
    httpd.daemon_threads = True
    watcher = threading.Thread(target=hub.watch, name="dlspec-watch", daemon=True)
    watcher.start()
    port = httpd.server_address[1]
    print(f"serving {', '.join(map(str, files))} at http://127.0.0.1:{port}/ (Ctrl-C stops)", flush=True)
    for s in hub.specs:
        if s.errors:
            print(f"{s.path}: {s.errors} error{'s' * (s.errors != 1)} (shown on the page)", file=sys.stderr, flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop.set()
        with hub.cond:
            hub.cond.notify_all()
        httpd.server_close()
    return 0


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dlspec serve</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 0; color: #222; }
header { position: sticky; top: 0; background: #f6f6f6; border-bottom: 1px solid #ddd; padding: 6px 12px; display: flex; gap: 12px; align-items: center; z-index: 2; }
header .status { margin-left: auto; color: #666; }
main { padding: 12px; }
section.file { margin-bottom: 24px; }
h2 { font-size: 16px; margin: 8px 0; }
#diagnostics pre, .diag pre { background: #fff4f4; border-left: 3px solid #c33; padding: 6px 8px; margin: 6px 0; overflow-x: auto; }
.diag.warning pre { background: #fffbe8; border-left-color: #c90; }
.stale-banner { background: #fff1c2; border: 1px solid #e0c060; padding: 4px 8px; margin: 6px 0; }
.stale .diagram, .stale table { opacity: .55; }
.diagram { border: 1px solid #ddd; overflow: auto; max-height: 75vh; background: #fff; cursor: grab; }
.diagram svg { transform-origin: 0 0; }
table { border-collapse: collapse; margin-top: 8px; font-variant-numeric: tabular-nums; }
th, td { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
td.num { text-align: right; }
tr.collapsed td { font-weight: 600; }
.totals { color: #444; margin: 6px 0; }
</style></head>
<body>
<header><strong>dlspec</strong>
<label>depth <select id="depth"><option value="">all</option><option>0</option><option>1</option><option>2</option><option>3</option></select></label>
<button id="zin" title="zoom in">+</button><button id="zout" title="zoom out">−</button><button id="zfit" title="actual size">1:1</button>
<span class="status" id="status">connecting…</span></header>
<main id="main"></main>
<script>
"use strict";
let zoom = 1, current = null;
const $ = (s, el) => (el || document).querySelector(s);
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const fmt = n => n ? Number(n).toLocaleString("en-US") : "–";
function depth() { return $("#depth").value; }
function applyZoom() { document.querySelectorAll(".diagram svg").forEach(s => { s.style.transform = "scale(" + zoom + ")"; }); }
async function refresh() {
  const r = await fetch("/state?depth=" + depth(), {cache: "no-store"});
  const st = await r.json();
  current = st;
  const main = $("#main");
  st.files.forEach((f, i) => {
    let sec = document.getElementById("file-" + i);
    if (!sec) { sec = document.createElement("section"); sec.className = "file"; sec.id = "file-" + i; main.appendChild(sec); }
    sec.classList.toggle("stale", f.stale);
    sec.dataset.generation = f.generation;
    const diags = f.diagnostics.map(d => '<div class="diag ' + esc(d.severity) + '"><pre>' + esc(d.text) + "</pre></div>").join("");
    let head = "<h2>" + esc(f.file) + "</h2>";
    head += '<div id="diagnostics" class="diagnostics" data-count="' + f.diagnostics.length + '">' + diags + "</div>";
    if (f.stale) head += '<div class="stale-banner">stale: the file has errors; showing the last version without errors' + (f.good_at ? " (" + new Date(f.good_at * 1000).toLocaleTimeString() + ")" : "") + "</div>";
    const models = f.models.map(m => {
      const rows = m.rows.map(r => '<tr class="' + (r.collapsed ? "collapsed" : "") + '"><td>' + "&nbsp;&nbsp;".repeat(r.depth) + esc(r.path) + "</td><td>" + esc(r.op) + "</td><td>" + esc(r.shape) + '</td><td class="num">' + fmt(r.params) + '</td><td class="num">' + fmt(r.macs) + '</td><td class="num">' + esc(r.rf) + "</td></tr>").join("");
      const totals = m.error ? esc(m.error) : "Params: " + fmt(m.params) + " · MACs per sample: " + fmt(m.macs) + (m.field ? " · receptive field " + m.field[0] + " px, stride " + m.field[1] : "");
      return '<div class="model" data-model="' + esc(m.name) + '"><h2>' + esc(m.name) + '</h2><div class="diagram" id="diagram-' + i + "-" + esc(m.name) + '"></div><div class="totals">' + totals + '</div><table class="report"><thead><tr><th>Layer</th><th>Op</th><th>Output shape</th><th>Params</th><th>MACs</th><th>RF /stride</th></tr></thead><tbody>' + rows + "</tbody></table></div>";
    }).join("");
    const kept = {};  // the diagrams shown now stay until their new SVG has arrived: no flicker, none lost while broken
    sec.querySelectorAll(".diagram").forEach(d => { kept[d.id] = d.innerHTML; });
    sec.innerHTML = head + models;
    sec.querySelectorAll(".diagram").forEach(d => { if (kept[d.id]) { d.innerHTML = kept[d.id]; } });
    applyZoom();
    f.models.forEach(m => loadSvg(i, m.name, f.generation));
  });
  $("#status").textContent = "up to date · " + new Date().toLocaleTimeString();
  document.body.dataset.version = st.version;
}
async function loadSvg(i, model, gen) {
  const el = document.getElementById("diagram-" + i + "-" + model);
  const r = await fetch("/svg?file=" + i + "&model=" + encodeURIComponent(model) + "&depth=" + depth() + "&g=" + gen, {cache: "no-store"});
  const text = await r.text();
  if (!el) return;
  if (r.ok) { el.innerHTML = text.slice(text.indexOf("<svg")); applyZoom(); } else { el.textContent = text; }
}
$("#depth").onchange = refresh;
$("#zin").onclick = () => { zoom *= 1.25; applyZoom(); };
$("#zout").onclick = () => { zoom /= 1.25; applyZoom(); };
$("#zfit").onclick = () => { zoom = 1; applyZoom(); };
document.addEventListener("wheel", e => { if (e.ctrlKey && e.target.closest(".diagram")) { e.preventDefault(); zoom *= e.deltaY < 0 ? 1.1 : 1 / 1.1; applyZoom(); } }, {passive: false});
const es = new EventSource("/events");
es.onmessage = () => refresh().catch(e => { $("#status").textContent = "update failed: " + e; });
es.onerror = () => { $("#status").textContent = "disconnected; retrying…"; };
refresh();
</script></body></html>
"""
