"""`dlspec lsp`: the pure analysis on small specs (exact ranges and texts), random texts
replayed through every query, and one end-to-end session over stdio JSON-RPC."""

from __future__ import annotations

import json
import os
import queue
import random
import subprocess
import sys
import threading
from pathlib import Path

import fuzzgen
import pytest

from dlspec.lsp.analysis import Analysis, RenameError, path_to_uri, stale_hints
from dlspec.lsp.text import Lines, Position, Range

ROOT = Path(__file__).resolve().parent.parent
URI = "file:///tmp/dlspec-lsp-test/net.dl"

NET = """block Pair(c, stride = 1) {
  conv c kernel 3 stride stride padding 1 -> relu
}

model Net {
  input x: [3, 8, 8]
  y = Pair(16) -> Pair(32, stride = 2)
  pool global avg -> flatten -> dense 10
}
"""


def P(line: int, ch: int) -> Position:
    return Position(line, ch)


def R(l1: int, c1: int, l2: int, c2: int) -> Range:
    return Range(P(l1, c1), P(l2, c2))


# ---- positions ---------------------------------------------------------------------------------


def test_utf16_columns_count_astral_characters_twice():
    text = 'model M { # é😀\n  input "😀é" x\n}\n'
    ln = Lines(text)
    assert ln.to_lsp(2, 3) == P(1, 2)
    # column 13 follows '  input "😀é"' (12 code points; 😀 is 2 UTF-16 units, 4 UTF-8 bytes; é 1 unit, 2 bytes)
    assert ln.to_lsp(2, 13) == P(1, 13)
    assert ln.from_lsp(P(1, 13)) == (2, 13)
    assert ln.from_lsp(P(1, 11)) == (2, 11)
    assert Lines(text, "utf-8").to_lsp(2, 13) == P(1, 16)
    assert Lines(text, "utf-32").to_lsp(2, 13) == P(1, 12)
    assert Lines(text, "utf-8").from_lsp(P(1, 16)) == (2, 13)


def test_diagnostic_range_after_non_ascii_comment_is_in_utf16_units():
    text = 'model M {  # 😀\n  input x: [4]\n  dense 2\n}\ntrain M {\n  data "😀é" frob 1\n}\n'
    [d] = Analysis(URI, text).diagnostics()
    assert (
        d.message
        == "unknown option 'frob' for 'data'\nhelp: options: augment, classes, dir, features, length, limit, normalize, seed, val_split"
    )
    assert d.range == R(5, 13, 5, 17)  # '  data "😀é" ' is 12 code points, 13 UTF-16 units
    assert Analysis(URI, text, "utf-8").diagnostics()[0].range == R(5, 16, 5, 20)


# ---- diagnostics -------------------------------------------------------------------------------


def test_every_independent_error_with_help_and_notes():
    text = """model A {
  input x: [3, 32, 32]
  conv 16 kernel 3 stride 2.5
  dense 10 foo 3
}

model B {
  input x: [3, 8, 8]
  conv 16 kernel 9
}
"""
    ds = Analysis(URI, text).diagnostics()
    assert [(d.range, d.severity) for d in ds] == [(R(2, 26, 2, 29), "error"), (R(3, 11, 3, 14), "error"), (R(8, 2, 8, 18), "error")]
    assert ds[0].message == "conv 'stride' must be a whole number or a list of whole numbers, got 2.5"
    assert ds[2].message == (
        "conv 'conv1' window of 9 does not fit the input height 8\nhelp: use a smaller kernel, or padding, or remove a downsampling layer before it"
    )


def test_shape_error_in_a_block_has_its_call_as_related_information():
    text = """block B(c) {
  conv c kernel 5
}

model M {
  input x: [3, 4, 4]
  B(8)
}
"""
    [d] = Analysis(URI, text).diagnostics()
    assert d.range == R(1, 2, 1, 17)
    assert d.message.startswith("conv 'b1.conv1' window of 5 does not fit the input height 4")
    [rel] = d.related
    assert rel.location.uri == URI and rel.location.range == R(6, 2, 6, 6)
    assert rel.message.startswith("in B(c=8) called at ")


def test_warnings_are_warnings():
    text = "model M {\n  input x: [3, 8, 8]\n  conv 4 kernel 3 stride 2\n}\n"
    ds = Analysis(URI, text).diagnostics()
    assert [(d.severity, d.range) for d in ds] == [("warning", R(2, 2, 2, 26))] * 2
    assert ds[0].message.startswith("conv 'conv1' output height (8 - 3) / 2 + 1 = 3.5 is rounded down")
    assert ds[1].message.startswith("conv 'conv1' output width") and "\nhelp: pad the input" in ds[1].message


def test_parse_error_range_and_text():
    [d] = Analysis(URI, "model M {\n  input x: [3, 8, 8]\n  conv 16 kernel 3 ->\n}\n").diagnostics()
    assert d.severity == "error" and d.range.start.line in (2, 3)
    assert Analysis(URI, NET).diagnostics() == []


def test_error_in_an_imported_file_is_shown_at_the_import(tmp_path):
    (tmp_path / "lib.dl").write_text("block B {\n  conv 8 kernel 3 ->\n}\n", encoding="utf-8")
    main = tmp_path / "main.dl"
    text = 'import "lib.dl"\nmodel M {\n  input x: [3, 8, 8]\n  B()\n}\n'
    main.write_text(text, encoding="utf-8")
    [d] = Analysis(path_to_uri(main), text).diagnostics()
    assert d.range == R(0, 0, 0, 15)
    assert d.message.startswith("lib.dl:")
    assert d.related[0].location.uri == path_to_uri(tmp_path / "lib.dl")
    assert d.related[0].location.range == R(1, 19, 1, 20)  # after the dangling '->' of lib.dl's line 2


# ---- inlay hints -------------------------------------------------------------------------------


def test_hints_show_shape_and_params_per_line_and_block_call_totals():
    a = Analysis(URI, NET)
    got = [(h.position, h.label) for h in a.hints()]
    assert got == [
        (P(1, 49), "→ N×16×8×8 · 448 (1 of 2)"),  # a block line used by two calls: the first
        (P(5, 20), "→ N×3×8×8"),
        (P(6, 38), "→ N×32×4×4 · 5,088"),  # two block calls: 448 + 4,640
        (P(7, 40), "→ N×10 · 330"),
    ]
    assert [h.label for h in a.hints(R(6, 0, 6, 0))] == ["→ N×32×4×4 · 5,088"]


def test_hints_of_the_last_good_version_stay_on_unchanged_lines():
    good = Analysis(URI, NET)
    broken = Analysis(URI, NET.replace("dense 10", "dense 10 ->"))
    assert broken.hints() == []
    kept = stale_hints(good, broken)
    assert [h.label for h in kept] == ["→ N×16×8×8 · 448 (1 of 2)", "→ N×3×8×8", "→ N×32×4×4 · 5,088"]
    assert all(h.tooltip.startswith("(from the last version without errors)") for h in kept)


def test_resnet_hints_match_the_report():
    path = ROOT / "specs" / "resnet.dl"
    a = Analysis(path_to_uri(path), path.read_text(encoding="utf-8"))
    labels = {h.position.line: h.label for h in a.hints()}
    assert labels[41] == "→ N×1024×14×14 · 40,613,888"  # ResNet-152's `Stage(256, 36, stride = 2) as layer3`
    assert labels[11] == "→ N×64×56×56 · 36,992 (1 of 66)"  # the 3×3 conv + batchnorm line of Bottleneck


# ---- hover -------------------------------------------------------------------------------------


def test_hover_on_a_layer():
    h = Analysis(URI, NET).hover(P(7, 33))  # `dense 10`
    assert h.range == R(7, 32, 7, 40)
    md = h.markdown
    assert md.startswith("**dense** `dense 10` — `dense1` in Net")
    assert "| in | N×32 |" in md and "| out | N×10 |" in md
    assert "| params | 330 |" in md and "| MACs | 320 |" in md
    assert "`units 10`" in md and "`bias true`" in md
    assert "keys: `units`, `bias` = true" in md


def test_hover_on_a_conv_in_a_block_shows_receptive_field_and_contract():
    md = Analysis(URI, NET).hover(P(1, 3)).markdown
    assert md.startswith("**conv** `conv 16 3×3 pad 1` — `pair1.conv1` in Net (first of 2 uses)")
    assert "| receptive field | 3 px, stride 1 |" in md
    assert "Shape: ``(N, C_in, *S) → (N, filters, *S')``" in md  # the op's docstring


def test_hover_on_block_names():
    a = Analysis(URI, NET)
    md = a.hover(P(6, 19)).markdown  # the second call, `Pair(32, stride = 2)`
    assert "```dl\nblock Pair(c, stride = 1)\n```" in md
    assert "this call: `Pair(c=32, stride=2)` as `pair2` in Net" in md
    assert "→ N×32×4×4 · params 4,640 · MACs 73,728" in md
    md = a.hover(P(0, 7)).markdown  # the definition
    assert "first of 2 calls: `Pair(c=16, stride=1)`" in md
    md = a.hover(P(4, 7)).markdown  # the model
    assert "inputs x N×3×8×8; outputs" in md and "params 5,418" in md


def test_resnet152_hover():
    path = ROOT / "specs" / "resnet.dl"
    a = Analysis(path_to_uri(path), path.read_text(encoding="utf-8"))
    md = a.hover(P(41, 4)).markdown
    assert "this call: `Stage(c=256, blocks=36, stride=2)` as `layer3` in ResNet152" in md
    assert "→ N×1024×14×14 · params 40,613,888" in md


# ---- completion --------------------------------------------------------------------------------


def labels(items) -> list[str]:
    return [c.label for c in items]


def test_completion_of_op_keys_with_defaults():
    text = "model M {\n  input x: [3, 8, 8]\n  conv 16 kernel 3 s\n}\n"
    items = Analysis(URI, text).complete(P(2, 20))
    assert labels(items) == ["stride", "same"]
    assert items[0].detail == "stride = 1" and items[1].detail == "padding same"
    full = Analysis(URI, text).complete(P(2, 19))
    assert "kernel" not in labels(full) and {"padding", "dilation", "groups", "bias", "as", "x"} <= set(labels(full))


def test_completion_at_statement_start_has_ops_blocks_and_tensors():
    text = NET.replace("  pool global avg", "  z = y\n  pool global avg")
    items = Analysis(URI, text).complete(P(8, 2))
    got = labels(items)
    assert {"conv", "dense", "lstm", "residual", "repeat", "Pair", "x", "y", "z"} <= set(got)
    pair = next(c for c in items if c.label == "Pair")
    assert pair.kind == "block" and pair.detail == "block Pair(c, stride = 1)"
    after_arrow = labels(Analysis(URI, text).complete(P(6, 18)))  # `y = Pair(16) -> |`: a layer, not a statement word
    assert {"conv", "Pair", "x"} <= set(after_arrow) and "residual" not in after_arrow and "z" not in after_arrow


def test_completion_in_a_block_call_gives_its_parameters():
    text = NET.replace("Pair(32, stride = 2)", "Pair(32, st")
    items = Analysis(URI, text).complete(P(6, 29))
    assert labels(items) == ["stride"] and items[0].detail == "stride = 1"


def test_completion_in_train_sections_and_at_top_level():
    text = "model M {\n  input x: [4]\n  dense 2\n}\n\ntrain M {\n  optimizer sgd \n  lo\n}\n"
    a = Analysis(URI, text)
    assert labels(a.complete(P(7, 4))) == ["loss"]
    opts = labels(a.complete(P(6, 16)))
    assert "lr" in opts and "momentum" in opts
    assert labels(a.complete(P(6, 13))) == ["sgd"]
    assert labels(a.complete(P(6, 12))) == ["sgd", "rmsprop", "adagrad", "ftrl", "adam", "adamw"]
    assert labels(a.complete(P(4, 0))) == ["model", "block", "cell", "train", "import"]


# ---- names: definition, references, rename, symbols ------------------------------------------


def test_definition_and_references_of_a_block():
    a = Analysis(URI, NET)
    assert [x.range for x in a.definition(P(6, 20))] == [R(0, 6, 0, 10)]
    assert [x.range for x in a.references(P(0, 7))] == [R(0, 6, 0, 10), R(6, 6, 6, 10), R(6, 18, 6, 22)]
    assert [x.range for x in a.references(P(0, 7), include_declaration=False)] == [R(6, 6, 6, 10), R(6, 18, 6, 22)]


def test_definition_references_and_rename_of_tensors_and_parameters():
    text = "model M {\n  input x: [4]\n  h = x -> dense 8\n  output y = h -> dense 2\n}\n"
    a = Analysis(URI, text)
    assert [x.range for x in a.definition(P(3, 13))] == [R(2, 2, 2, 3)]
    assert [x.range for x in a.references(P(1, 8))] == [R(1, 8, 1, 9), R(2, 6, 2, 7)]
    edits = a.rename(P(2, 2), "hidden")
    assert [(e.range, e.new_text) for e in edits] == [(R(2, 2, 2, 3), "hidden"), (R(3, 13, 3, 14), "hidden")]
    b = Analysis(URI, NET)
    assert [x.range for x in b.references(P(1, 7))] == [R(0, 11, 0, 12), R(1, 7, 1, 8)]  # the parameter c


def test_rename_a_block_and_refusals():
    a = Analysis(URI, NET)
    edits = a.rename(P(6, 7), "Twice")
    assert [e.range for e in edits] == [R(0, 6, 0, 10), R(6, 6, 6, 10), R(6, 18, 6, 22)]
    with pytest.raises(RenameError, match="already defined"):
        a.rename(P(6, 7), "Net")
    with pytest.raises(RenameError, match="is not a name"):
        a.rename(P(6, 7), "2x")
    with pytest.raises(RenameError, match="no block, cell, model or tensor name here"):
        a.rename(P(7, 4), "x")


def test_definition_of_an_import_is_the_file(tmp_path):
    (tmp_path / "lib.dl").write_text("block B {\n  relu\n}\n", encoding="utf-8")
    main = tmp_path / "main.dl"
    text = 'import "lib.dl"\nmodel M {\n  input x: [4]\n  B()\n}\n'
    a = Analysis(path_to_uri(main), text)
    assert a.diagnostics() == []
    [loc] = a.definition(P(0, 9))
    assert loc.uri == path_to_uri(tmp_path / "lib.dl") and loc.range == R(0, 0, 0, 0)
    [loc] = a.definition(P(3, 2))
    assert loc.uri == path_to_uri(tmp_path / "lib.dl") and loc.range == R(0, 6, 0, 7)
    with pytest.raises(RenameError, match="is defined in lib.dl"):
        a.rename(P(3, 2), "C")


def test_document_symbols():
    text = NET + "\ntrain Net {\n  data shapes\n}\n"
    syms = Analysis(URI, text).symbols()
    assert [(s.name, s.kind, s.selection_range) for s in syms] == [
        ("Pair", "block", R(0, 6, 0, 10)),
        ("Net", "model", R(4, 6, 4, 9)),
        ("train Net", "train", R(10, 0, 12, 1)),
    ]
    assert syms[0].detail == "(c, stride = 1)"
    assert [c.name for c in syms[1].children] == ["x", "y"]


def test_formatting_is_one_edit_of_fmts_text():
    text = "model M {\n    input x: [4]\n  dense   8\n}\n"
    [e] = Analysis(URI, text).format()
    assert e.range == R(0, 0, 4, 0)
    assert e.new_text == "model M {\n  input x: [4]\n  dense 8\n}\n"
    assert Analysis(URI, e.new_text).format() == []
    assert Analysis(URI, "model M {\n").format() == []  # does not parse: no edit


# ---- random texts: nothing escapes -----------------------------------------------------------

EXTRA = ["{", "}", "(", ")", "[", "]", "->", ",", "=", "as", "repeat", "residual", "model", "block", "😀", "é", '"', "\n", "#", "0", "-1"]


def mutations(n: int, seed: int = 17) -> list[str]:
    ch = fuzzgen.RandomChooser(random.Random(seed))
    specs = fuzzgen.zoo_specs()
    return [fuzzgen.mutated(ch, ch.choice(specs), [*fuzzgen.VOCAB, *EXTRA]) for _ in range(n)]


def test_mutated_specs_never_raise():
    rng = random.Random(5)
    for text in mutations(300):
        a = Analysis(URI, text)
        a.diagnostics()
        a.hints()
        a.symbols()
        a.format()
        lines = text.split("\n")
        for _ in range(3):
            line = rng.randrange(len(lines))
            pos = P(line, rng.randint(0, len(lines[line]) + 2))
            a.hover(pos)
            a.complete(pos)
            a.definition(pos)
            a.references(pos)
            try:
                a.rename(pos, "renamed")
            except RenameError:
                pass


# ---- end to end: `dlspec lsp` over stdio -------------------------------------------------------


class Client:
    """A minimal LSP client: Content-Length framed JSON-RPC over a subprocess's pipes."""

    def __init__(self, cwd: Path):
        exe = Path(sys.executable).with_name("dlspec")
        self.proc = subprocess.Popen([str(exe), "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
        self.inbox: queue.Queue = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    self.inbox.put(None)
                    return
                if line in (b"\r\n", b"\n"):
                    break
                k, _, v = line.decode("ascii").partition(":")
                if k.lower() == "content-length":
                    length = int(v)
            self.inbox.put(json.loads(out.read(length)))

    def send(self, msg: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **msg}).encode("utf-8")
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: dict) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: dict) -> dict:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        return self.wait(lambda m: m.get("id") == self.next_id and "method" not in m)

    def wait(self, pred, timeout: float = 30.0) -> dict:
        """The next message that ``pred`` accepts (others are dropped); fails after ``timeout``."""
        while True:
            try:
                m = self.inbox.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no answer from the language server") from None
            assert m is not None, "the language server exited: " + self.proc.stderr.read().decode("utf-8", "replace")[-2000:]
            if pred(m):
                return m


def test_language_server_session_over_stdio(tmp_path):
    spec = tmp_path / "net.dl"
    broken = "model Net {\n  input x: [3, 8, 8]\n  conv 16 kernel 3 foo 2\n}\n"
    spec.write_text(broken, encoding="utf-8")
    uri = path_to_uri(spec)
    c = Client(tmp_path)
    try:
        init = c.request("initialize", {"processId": os.getpid(), "rootUri": path_to_uri(tmp_path), "capabilities": {}})
        caps = init["result"]["capabilities"]
        assert caps["positionEncoding"] == "utf-16"
        assert caps["hoverProvider"] and caps["inlayHintProvider"] and caps["renameProvider"] and caps["documentFormattingProvider"]
        c.notify("initialized", {})
        c.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "dlspec", "version": 1, "text": broken}})
        diags = c.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics")["params"]
        assert diags["uri"] == uri
        [d] = diags["diagnostics"]
        assert d["message"] == "unknown parameter 'foo' for conv" and d["severity"] == 1 and d["source"] == "dlspec"
        assert d["range"] == {"start": {"line": 2, "character": 19}, "end": {"line": 2, "character": 22}}
        change = {"range": {"start": {"line": 2, "character": 19}, "end": {"line": 2, "character": 24}}, "text": "padding 1"}
        c.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [change]})
        diags = c.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics")["params"]
        assert diags["diagnostics"] == [] and diags["version"] == 2
        hov = c.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 2, "character": 3}})["result"]
        assert "| out | N×16×8×8 |" in hov["contents"]["value"]
        hints = c.request(
            "textDocument/inlayHint",
            {"textDocument": {"uri": uri}, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 4, "character": 0}}},
        )["result"]
        assert [h["label"] for h in hints] == ["→ N×3×8×8", "→ N×16×8×8 · 448"]
        fmt = c.request("textDocument/formatting", {"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": True}})
        assert fmt["result"] == []
        assert c.request("shutdown", None)["result"] is None
        c.notify("exit", None)
        assert c.proc.wait(timeout=30) == 0
    finally:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()


def test_lsp_without_pygls_says_how_to_install(tmp_path):
    blocker = tmp_path / "pygls.py"
    blocker.write_text("raise ImportError('blocked for the test')\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "dlspec", "lsp"], capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 2
    assert r.stderr.strip() == "dlspec: error: 'dlspec lsp' needs pygls, which is not installed; install it with: pip install 'dlspec[lsp]'"
