"""``dlspec draw`` / ``Program.draw``: the DOT checked structurally (nodes, labels, edges,
clusters), real renders with Graphviz's ``dot``, and the command line."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, run_dlspec

import dlspec

SPECS = ROOT / "specs"
HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz 'dot' is not installed")


# ---- a small DOT reader (enough for the graphviz package's output) ------------------------

_TOKEN = re.compile(r'\s*(?:(->|--)|([{}\[\];,=])|"((?:[^"\\]|\\.)*)"|([^\s{}\[\];,="<>-][^\s{}\[\];,="<>]*|-?\d[\w.]*))', re.S)


def _tokens(src: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(src):
        if src[i].isspace():
            i += 1
            continue
        if src[i] == "<":  # an HTML label: balanced angle brackets
            depth, j = 0, i
            while True:
                if src[j] == "<":
                    depth += 1
                elif src[j] == ">":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            out.append(("html", src[i + 1 : j]))
            i = j + 1
            continue
        m = _TOKEN.match(src, i)
        assert m, f"cannot read DOT at {src[i : i + 40]!r}"
        if m.group(1):
            out.append(("op", m.group(1)))
        elif m.group(2):
            out.append(("op", m.group(2)))
        elif m.group(3) is not None:
            out.append(("id", m.group(3).replace('\\"', '"')))
        else:
            out.append(("id", m.group(4)))
        i = m.end()
    return out


def text(label: str) -> str:
    """An HTML label as plain text (tags dropped, entities decoded, spaces collapsed)."""
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", label)).split())


@dataclass
class Dot:
    attrs: dict = field(default_factory=dict)
    nodes: dict = field(default_factory=dict)  # id → attrs
    where: dict = field(default_factory=dict)  # id → tuple of cluster names, outermost first
    edges: list = field(default_factory=list)  # (src, dst, attrs)
    clusters: dict = field(default_factory=dict)  # name → attrs

    def label(self, node: str) -> str:
        return text(self.nodes[node].get("label", node))

    def edge(self, src: str, dst: str) -> dict:
        found = [a for s, d, a in self.edges if (s, d) == (src, dst)]
        assert found, f"no edge {src} -> {dst}; edges from {src}: {[d for s, d, _ in self.edges if s == src]}"
        return found[0]

    def edge_label(self, src: str, dst: str) -> str:
        return text(self.edge(src, dst).get("label", ""))

    def into(self, dst: str) -> list[str]:
        return [s for s, d, a in self.edges if d == dst and a.get("style") != "dashed"]

    def cluster_label(self, name: str) -> str:
        return text(self.clusters[f"cluster_{name}"].get("label", ""))

    def dashed(self) -> set[tuple[str, str]]:
        return {(s, d) for s, d, a in self.edges if a.get("style") == "dashed"}


def parse_dot(src: str) -> Dot:
    toks = _tokens(src)
    dot = Dot()
    pos = 0

    def attrs_list() -> dict:
        nonlocal pos
        out = {}
        assert toks[pos] == ("op", "[")
        pos += 1
        while toks[pos] != ("op", "]"):
            if toks[pos][1] in (",", ";"):
                pos += 1
                continue
            k, _, v = toks[pos], toks[pos + 1], toks[pos + 2]
            out[k[1]] = v[1]
            pos += 3
        pos += 1
        return out

    def block(chain: tuple[str, ...], target: dict) -> None:
        nonlocal pos
        assert toks[pos] == ("op", "{"), toks[pos]
        pos += 1
        while toks[pos] != ("op", "}"):
            kind, val = toks[pos]
            if val in (";",):
                pos += 1
            elif kind == "id" and val == "subgraph":
                name = toks[pos + 1][1] if toks[pos + 1][0] == "id" else ""
                pos += 2 if name else 1
                sub: dict = {}
                if name.startswith("cluster"):
                    dot.clusters[name] = sub
                block(chain + ((name,) if name.startswith("cluster") else ()), sub)
            elif (kind, val) == ("op", "{"):
                block(chain, {})
            elif kind == "id" and val in ("graph", "node", "edge") and toks[pos + 1] == ("op", "["):
                pos += 1
                a = attrs_list()
                if val == "graph":
                    target.update(a)
            elif kind == "id" and toks[pos + 1] == ("op", "="):
                target[val] = toks[pos + 2][1]
                pos += 3
            elif kind == "id" and toks[pos + 1] == ("op", "->"):
                src, dst = val, toks[pos + 2][1]
                pos += 3
                a = attrs_list() if toks[pos] == ("op", "[") else {}
                dot.edges.append((src, dst, a))
                for n in (src, dst):
                    dot.nodes.setdefault(n, {})
                    dot.where.setdefault(n, chain)
            elif kind == "id":
                pos += 1
                a = attrs_list() if toks[pos] == ("op", "[") else {}
                if a or val not in dot.nodes:
                    dot.nodes.setdefault(val, {}).update(a)
                if a:
                    dot.where[val] = chain
                else:
                    dot.where.setdefault(val, chain)
            else:  # pragma: no cover - a DOT construct the drawer does not write
                raise AssertionError(f"unexpected {toks[pos]}")
        pos += 1

    assert toks[0] == ("id", "digraph")
    pos = 2 if toks[1][0] == "id" else 1
    block((), dot.attrs)
    return dot


def draw(source, model=None, **opts) -> Dot:
    prog = dlspec.load(source) if isinstance(source, Path) else dlspec.load(source, name="t.dl")
    return parse_dot(prog.draw(model, **opts).source)


# ---- specs ------------------------------------------------------------------------------------


def test_lenet5_layers_summaries_and_shapes():
    d = draw(SPECS / "lenet5.dl")
    assert {"image", "c1", "s2", "c3", "s4", "flatten1", "c5", "f6", "out", "output"} <= set(d.nodes)
    c1 = d.label("c1")
    assert "conv 6 · 5×5 · pad 2 + tanh" in c1 and "156 params" in c1
    assert "dense 120 + tanh" in d.label("c5") and "48,120 params" in d.label("c5")
    assert not any(n.startswith("tanh") for n in d.nodes)  # merged into the layer they follow
    assert d.edge_label("image", "c1") == "N×1×28×28"
    assert d.edge_label("c1", "s2") == "N×6×28×28"
    assert d.edge_label("s4", "flatten1") == "N×16×5×5"
    assert d.edge_label("flatten1", "c5") == "N×400"
    assert d.edge_label("out", "output") == "N×10"
    # colours by category: both convolutions share one fill, the dense layers another
    assert d.nodes["c1"]["fillcolor"] == d.nodes["c3"]["fillcolor"] != d.nodes["c5"]["fillcolor"]
    title = text(d.attrs["label"])
    assert "LeNet5" in title and "61,706 params" in title and "MACs" in title
    assert "convolution" in title and "pooling" in title and "dense" in title  # the legend


def test_activations_get_their_own_nodes_on_request():
    d = draw(SPECS / "lenet5.dl", activations=True)
    assert {"tanh1", "tanh2", "tanh3", "tanh4"} <= set(d.nodes)
    assert "tanh" in d.label("tanh1") and "+ tanh" not in d.label("c1")
    assert d.edge_label("c1", "tanh1") == "N×6×28×28"
    assert d.edge_label("tanh1", "s2") == "N×6×28×28"


def test_resnet18_blocks_are_clusters_with_call_labels():
    d = draw(SPECS / "resnet18.dl")
    assert d.cluster_label("layer2").startswith("Stage(128, 2, stride=2)")
    assert d.cluster_label("layer2.0").startswith("Basic(128, stride=2)")
    assert d.cluster_label("layer2.1").startswith("Basic(128, stride=1)")
    assert d.where["layer2.0.conv1"] == ("cluster_layer2", "cluster_layer2.0")
    assert d.where["conv1"] == ()
    assert "conv 128 · 3×3 · /2 · pad 1 · no bias" in d.label("layer2.0.conv1")
    assert "73,728 params" in d.label("layer2.0.conv1")
    assert d.edge_label("layer2.0.conv1", "layer2.0.batchnorm1") == "N×128×28×28"
    # the residual add with its relu; projection and identity shortcuts drawn as shortcuts
    assert "add (residual) + relu" in d.label("layer2.0.add1")
    proj = d.edge("layer2.0.shortcut.batchnorm1", "layer2.0.add1")
    assert "shortcut" in text(proj["label"]) and "N×128×28×28" in text(proj["label"])
    ident = d.edge("layer2.0.add1", "layer2.1.add1")
    assert "shortcut" in text(ident["label"]) and ident["color"] == proj["color"]
    assert "shortcut" not in d.edge_label("layer2.0.batchnorm2", "layer2.0.add1")
    assert sorted(d.into("layer2.0.add1")) == ["layer2.0.batchnorm2", "layer2.0.shortcut.batchnorm1"]
    assert d.edge_label("pool2", "flatten1") == "N×512×1×1"
    assert "11,689,512 params" in text(d.attrs["label"])


def test_resnet18_depth_collapses_blocks_into_nodes():
    prog = dlspec.load(SPECS / "resnet18.dl")
    d = parse_dot(prog.draw(depth=1).source)
    assert not any(n.startswith("layer2.0.") for n in d.nodes)
    label = d.label("layer2.0")
    assert "Basic(128, stride=2)" in label and "N×128×28×28" in label
    costs = prog.shapes().costs
    params = sum(c.params for p, c in costs.items() if p.startswith("layer2.0."))
    assert f"{params:,} params" in label
    assert d.where["layer2.0"] == ("cluster_layer2",)
    assert d.edge_label("layer2.0", "layer2.1") == "N×128×28×28"
    assert d.edge_label("pool1", "layer1.0") == "N×64×56×56"
    assert len([e for e in d.edges if e[:2] == ("pool1", "layer1.0")]) == 1
    d0 = draw(SPECS / "resnet18.dl", depth=0)
    assert "Stage(128, 2, stride=2)" in d0.label("layer2") and not d0.clusters
    assert d0.edge_label("layer1", "layer2") == "N×64×56×56"


def test_fold_repeats_shows_identical_iterations_once():
    d = draw(SPECS / "resnet18.dl", depth=1, fold_repeats=True)
    assert "layer1.1" not in d.nodes and "×2" in d.label("layer1.0")
    assert {"layer2.0", "layer2.1"} <= set(d.nodes)  # stride 2 then 1: not identical
    assert d.edge_label("layer1.0", "layer2.0") == "N×64×56×56"
    full = draw(SPECS / "resnet18.dl", fold_repeats=True)
    assert "×2" in full.cluster_label("layer1.0") and "cluster_layer1.1" not in full.clusters
    assert not any(n.startswith("layer1.1.") for n in full.nodes)
    assert full.edge_label("layer1.0.add1", "layer2.0.conv1") == "N×64×56×56"
    assert ("layer1.0.add1", "layer1.0.conv1") not in {e[:2] for e in full.edges}  # no loop back


def test_fold_repeats_of_a_plain_repeat(write):
    spec = write(
        "rep.dl",
        "model Rep {\n  input x: [16]\n  repeat 3 { dense 16 -> relu }\n  repeat 2 as grow { dense (8 * (i + 1)) }\n  dense 4\n}\n",
    )
    d = draw(spec, fold_repeats=True)
    assert "repeat1.0.dense1" in d.nodes and "repeat1.1.dense1" not in d.nodes
    (badge,) = [c for c in d.clusters if "repeat1.0" in c]
    assert text(d.clusters[badge]["label"]).startswith("×3")
    assert d.edge_label("repeat1.0.dense1", "grow.0.dense1") == "N×16"
    assert {"grow.0.dense1", "grow.1.dense1"} <= set(d.nodes)  # 8 then 16 units: both drawn
    plain = draw(spec)
    assert {"repeat1.0.dense1", "repeat1.1.dense1", "repeat1.2.dense1"} <= set(plain.nodes)


def test_inception_concat_branches():
    d = draw(SPECS / "inception.dl")
    assert d.cluster_label("inception3a").startswith("Inception(64, 96, 128, 16, 32, 32)")
    concat = "inception3a.concat1"
    ins = {s: d.edge_label(s, concat) for s in d.into(concat)}
    assert ins == {
        "inception3a.branch1.conv1": "N×64×28×28",
        "inception3a.branch2.conv2": "N×128×28×28",
        "inception3a.branch3.conv2": "N×32×28×28",
        "inception3a.branch4.conv1": "N×32×28×28",
    }
    assert len([e for e in d.edges if e[0] == "features"]) == 4
    assert "concat" in d.label(concat)
    assert d.edge_label(concat, "output") == "N×256×28×28"
    assert "pool max · 3×3 · pad 1" in d.label("inception3a.branch4.pool1")


def test_siamese_shared_weights_are_dashed_edges():
    d = draw(SPECS / "siamese.dl")
    assert {("tower@2.conv1", "tower.conv1"), ("tower@2.conv2", "tower.conv2"), ("tower@2.dense1", "tower.dense1")} == d.dashed()
    assert "shares tower.conv1" in d.label("tower@2.conv1")
    assert "shares" in d.cluster_label("tower@2")
    assert d.edge_label("tower@2.dense1", "arith1") == "N×64"
    assert "−" in d.label("arith1")
    collapsed = draw(SPECS / "siamese.dl", depth=0)
    assert collapsed.dashed() == {("tower@2", "tower")}


def test_user_cell_with_cells_draws_gates_and_state_updates():
    plain = draw(SPECS / "gru_cell.dl")
    assert "cell MinimalGRU" in plain.label("rnn") and "rnn.dense1" not in plain.nodes
    assert plain.edge_label("seq", "rnn") == "N×T×16"
    d = draw(SPECS / "gru_cell.dl", cells=True)
    assert "rnn" not in d.nodes and d.cluster_label("rnn").startswith("MinimalGRU(64)")
    gate = d.label("rnn.dense1")
    assert "gate z" in gate and "dense 64 + sigmoid" in gate
    assert "gate" not in d.label("rnn.dense2") and "dense 64 + tanh" in d.label("rnn.dense2")
    assert d.nodes["rnn.dense1"]["penwidth"] != d.nodes["rnn.dense2"].get("penwidth")
    assert d.where["rnn.dense1"] == ("cluster_rnn",)
    state = d.edge("rnn.arith5", "rnn.h_prev")
    assert state["style"] == "dashed" and "next step" in text(state["label"])
    assert d.edge_label("rnn.concat1", "rnn.dense1") == "N×80"
    assert d.edge_label("seq", "rnn.x").startswith("N×T×16")
    assert d.edge_label("rnn.arith5", "head") == "N×64"


LSTM = """
model Seq {
  input x: [T, 8]
  lstm 16 as enc
  dense 4
}
"""


def test_lstm_with_cells_draws_gates_state_and_equations():
    d = draw(LSTM, cells=True)
    parts = {n.split("/", 1)[1] for n in d.nodes if n.startswith("enc/")}
    assert parts == {"x", "h", "c", "xh", "i", "f", "g", "o", "c'", "h'"}
    for g in "ifo":
        assert f"gate {g}" in d.label(f"enc/{g}")
    assert "gate" not in d.label("enc/g") and "tanh" in d.label("enc/g")
    assert "c' = f⊙c + i⊙g" in d.label("enc/c'")
    assert "h' = o⊙tanh(c')" in d.label("enc/h'")
    assert "forget gate" in d.label("enc/f")
    assert {("enc/h'", "enc/h"), ("enc/c'", "enc/c")} <= d.dashed()
    assert d.edge_label("enc/xh", "enc/i") == "N×24"
    assert d.edge_label("enc/f", "enc/c'") == "N×16"
    assert d.edge_label("x", "enc/x").startswith("N×T×8")
    assert d.edge_label("enc/h'", "dense1") == "N×T×16"
    assert d.cluster_label("enc").startswith("LSTM cell")
    plain = draw(LSTM)
    assert "lstm 16" in plain.label("enc") and not plain.clusters


def test_gru_and_rnn_with_cells():
    d = draw(LSTM.replace("lstm 16", "gru 16 bidirectional"), cells=True)
    assert {"enc/r", "enc/z", "enc/n", "enc/h'"} <= set(d.nodes) and "enc/c" not in d.nodes
    assert "gate r" in d.label("enc/r") and "gate z" in d.label("enc/z")
    assert "h' = (1 − z)⊙n + z⊙h" in d.label("enc/h'")
    assert "both directions" in d.edge_label("enc/h'", "dense1") and "N×T×32" in d.edge_label("enc/h'", "dense1")
    r = draw(LSTM.replace("lstm 16", "rnn 16"), cells=True)
    assert "h' = tanh(W·[x, h] + b)" in r.label("enc/h'")
    assert ("enc/h'", "enc/h") in r.dashed()


def test_attention_tied_and_symbolic_shapes():
    spec = """
model LM(vocab = 100, d = 32) {
  input tokens: [T] int vocab vocab
  embedding d as emb
  posembed 64 as pos
  residual { layernorm -> attention 4 causal -> dropout 0.1 }
  layernorm
  dense vocab tied emb, bias false as head
}
"""
    d = draw(spec)
    assert d.edge_label("tokens", "emb") == "N×T int64"
    (att,) = [n for n in d.nodes if "attention" in n]
    assert "attention 4 heads · causal" in d.label(att) and "params" in d.label(att)
    assert d.nodes[att]["fillcolor"] != d.nodes["head"]["fillcolor"]
    tied = d.edge("head", "emb")
    assert tied["style"] == "dashed" and "tied" in text(tied["label"])
    assert "tied emb" in d.label("head")
    assert any(d.edge_label(s, t) == "N×T×32" for s, t, _ in d.edges)
    assert "per step (T=1)" in text(d.attrs["label"])
    # eval hides dropout: its input feeds its consumer directly
    drops = [n for n in d.nodes if "dropout" in n]
    assert drops
    ev = draw(spec, phase="eval")
    assert not [n for n in ev.nodes if "dropout" in n]
    (add,) = [n for n in ev.nodes if n.endswith("add1")]
    assert any("attention" in s for s in ev.into(add))


def test_rankdir_and_bad_options():
    d = draw(SPECS / "lenet5.dl", rankdir="LR")
    assert d.attrs["rankdir"] == "LR"
    prog = dlspec.load(SPECS / "lenet5.dl")
    with pytest.raises(dlspec.UsageError):
        prog.draw(rankdir="XY")
    with pytest.raises(dlspec.UsageError):
        prog.draw(phase="test")
    with pytest.raises(dlspec.UsageError):
        prog.draw("NoSuchModel")


def test_program_draw_returns_a_digraph():
    import graphviz

    g = dlspec.load(SPECS / "lenet5.dl").draw()
    assert isinstance(g, graphviz.Digraph) and g.source.startswith("digraph LeNet5")


# ---- rendering with the real dot ---------------------------------------------------------------


@needs_dot
def test_svg_and_png_render_with_dot():
    from dlspec.draw import render

    g = dlspec.load(SPECS / "resnet18.dl").draw(depth=1)
    svg = render(g, "svg")
    assert b"<svg" in svg[:400] and b"layer2.0" in svg
    png = render(dlspec.load(SPECS / "gru_cell.dl").draw(cells=True), "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pdf = render(g, "pdf")
    assert pdf.startswith(b"%PDF")


# ---- the command line -----------------------------------------------------------------------


def test_cli_dot_to_stdout_and_default_svg_beside_the_spec(tmp_path):
    spec = tmp_path / "net.dl"
    shutil.copy(SPECS / "lenet5.dl", spec)
    r = run_dlspec("draw", str(spec), "--format", "dot", "--depth", "0")
    assert r.returncode == 0, r.stderr
    d = parse_dot(r.stdout)
    assert "c1" in d.nodes and not (tmp_path / "net.dot").exists()
    if HAVE_DOT:
        r = run_dlspec("draw", str(spec))
        assert r.returncode == 0, r.stderr
        out = tmp_path / "net.svg"
        assert out.exists() and b"<svg" in out.read_bytes()[:400]
        r = run_dlspec("draw", str(spec), "-o", str(tmp_path / "fig.png"), "--rankdir", "LR", "--activations")
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "fig.png").read_bytes().startswith(b"\x89PNG")


def test_cli_missing_dot_is_a_clear_error(tmp_path):
    spec = tmp_path / "net.dl"
    shutil.copy(SPECS / "lenet5.dl", spec)
    empty = tmp_path / "bin"
    empty.mkdir()
    r = run_dlspec("draw", str(spec), env={"PATH": str(empty)})
    assert r.returncode == 1
    assert "dlspec: error:" in r.stderr and "dot" in r.stderr
    assert "apt-get install graphviz" in r.stderr and "brew install graphviz" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "net.svg").exists()
    r = run_dlspec("draw", str(spec), "-o", str(tmp_path / "net.gv"), env={"PATH": str(empty)})
    assert r.returncode == 0, r.stderr  # DOT needs no Graphviz
    assert (tmp_path / "net.gv").read_text(encoding="utf-8").startswith("digraph")
    r = run_dlspec("draw", str(spec), "--model", "Nope", "--format", "dot")
    assert r.returncode == 2 and "no model 'Nope'" in r.stderr


def test_help_and_check_do_not_import_graphviz():
    code = (
        "import sys, dlspec.cli as c\n"
        "c.build_parser()\n"
        "assert c.main(['check', sys.argv[1]]) == 0\n"
        "bad = [m for m in ('graphviz', 'tinygrad', 'dlspec.draw') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(SPECS / "lenet5.dl")], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
