"""The model report: golden ``dlspec compile --json`` fixtures (hand-checked totals), the
table, ``--emit ir``, errors as JSON, exit codes, and the Python API returning the same data."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from golden import REPORT_DIR, check_report_golden, compile_json, report_cases

import dlspec
from dlspec.cli import main

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> tuple[int, str, str]:
    """Run the command line in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


# ---- golden fixtures ------------------------------------------------------------------------------


@pytest.mark.parametrize("dl", report_cases(), ids=lambda p: p.stem)
def test_golden_report(dl):
    check_report_golden(dl)


def test_every_report_fixture_has_a_reviewed_json():
    names = {p.stem for p in report_cases()}
    assert names >= {"lenet", "resnet_block", "cell", "attention"}
    assert all(p.with_suffix(".json").exists() for p in report_cases())


def model_of(name: str) -> dict:
    (m,) = compile_json(REPORT_DIR / name)["models"]
    return m


def test_lenet_report_totals():
    m = model_of("lenet.dl")
    # 156 + 2416 + 48120 + 10164 + 850
    assert (m["params"], m["trainable_params"], m["buffers"]) == (61706, 61706, 0)
    # c1 6·28·28·25 = 117600; c3 16·10·10·150 = 240000; c5 48000; f6 10080; out 840
    assert m["macs"] == 416520
    assert m["inputs"] == [{"name": "image", "shape": ["N", 1, 28, 28], "dtype": "float32"}]
    assert m["outputs"] == [{"name": "output", "shape": ["N", 10], "dtype": "float32"}]
    rows = {r["path"]: r for r in m["layers"]}
    assert rows["c1"] == {"path": "c1", "op": "conv", "output_shape": ["N", 6, 28, 28], "params": 156, "macs": 117600, "line": 4}
    assert rows["s4"]["output_shape"] == ["N", 16, 5, 5]  # 10/2
    assert sum(r["params"] for r in m["layers"]) == m["params"]
    assert sum(r["macs"] for r in m["layers"]) == m["macs"]


def test_resnet_block_report_collapses_blocks_at_depth_1():
    m = model_of("resnet_block.dl")
    # stem 16·3·9 = 432 + bn 32; layer1 2·(2·16·16·9 + 2·32) = 9344;
    # layer2.0 32·16·9 + 32·32·9 + 32·16 + 3·64 = 14528; fc 10·32 + 10 = 330
    assert m["params"] == 24666
    # 9 batch norms: (16 + 4·16 + 3·32)·2 + 9 = 360
    assert m["buffers"] == 360
    # stem 16·32·32·27 = 442368; layer1 4·16·32·32·144 = 9437184;
    # layer2.0 32·16·16·144 + 32·16·16·288 + 32·16·16·16 = 3670016; fc 320
    assert m["macs"] == 13549888
    blocks = [r for r in m["layers"] if r["op"] == "Basic"]
    assert [(r["path"], r["output_shape"], r["params"]) for r in blocks] == [
        ("layer1.0", ["N", 16, 32, 32], 4672),
        ("layer1.1", ["N", 16, 32, 32], 4672),
        ("layer2.0", ["N", 32, 16, 16], 14528),
    ]
    assert [r["line"] for r in blocks] == [14, 14, 14]  # the repeat's call inside Stage


def test_cell_report_binds_seq():
    m = model_of("cell.dl")
    # cell 2·((16 + 64)·64 + 64) = 10368; head 64·3 + 3 = 195
    assert m["params"] == 10563
    # per step 2·80·64 = 10240, × T = 20, + head 192
    assert m["macs"] == 204992
    assert m["inputs"][0]["shape"] == ["N", "T", 16]
    assert m["outputs"][0]["shape"] == ["N", 3]


def test_attention_report_counts_per_step_when_t_is_unbound():
    m = model_of("attention.dl")
    # emb 1600; posembed 64·16 = 1024; attention 4·256 + 64 = 1088; layernorm 32; dense 272;
    # lstm 2 layers × 2 directions × (4·8·24 + 64) = 3328; logits 100·16 + 100 = 1700
    assert m["params"] == 9044
    # T = 1: attention 1024 + 32; dense 256; lstm 4·768; logits 1600
    assert m["macs"] == 5984
    m20 = compile_json(REPORT_DIR / "attention.dl", "--seq", "T=20")["models"][0]
    # attention 1024·20 + 32·400 = 33280; dense 5120; lstm 61440; logits 1600
    assert m20["macs"] == 101440


def test_window_over_unbound_t_never_counts_negative():
    prog = dlspec.load("model M {\n  input x: [3, T]\n  conv 4 kernel 3\n}\n", name="t.dl")
    # 4·(T − 2)·9 is −36 at T = 1: reported as 0, never negative
    assert prog.report()["macs"] == 0
    assert prog.analyze().activation_bytes() == 12  # x: 3·1 values; conv: none
    # T = 10: 4·8·9 = 288
    assert prog.report(seq={"T": 10})["macs"] == 288


def test_api_report_is_the_cli_json():
    prog = dlspec.load(REPORT_DIR / "resnet_block.dl")
    assert prog.report("TinyResNet", depth=1) == model_of("resnet_block.dl")
    s = prog.shapes("TinyResNet")
    assert s["fc"].json() == ["N", 10]


# ---- the table ------------------------------------------------------------------------------------


def test_table_has_rows_and_a_footer_with_totals():
    code, out, _ = cli("compile", str(REPORT_DIR / "lenet.dl"), "--batch", "32")
    assert code == 0
    assert "LeNet5" in out
    assert "conv 6 5×5 pad 2" in out
    assert "(N, 16, 5, 5)" in out
    assert "Params: 61,706 trainable (61.71K), 0 in buffers (batch-norm statistics)" in out
    assert "MACs per sample: 416,520 (416.52K)" in out
    assert "Memory: params 241.04 KiB" in out  # 61706·4 bytes
    assert "Training estimate (batch 32, adam)" in out
    assert "Receptive field of the last spatial layer: 16 px, effective stride 4" in out


def test_window_words_follow_the_spatial_rank(tmp_path):
    """A kernel written as one number reads as many sizes as the layer has spatial dims."""
    f = tmp_path / "ranks.dl"
    f.write_text(
        "model M1 {\n  input x: [8, 100]\n  conv 16 kernel 3 padding 1\n  pool max kernel 2\n}\n"
        "model M3 {\n  input x: [2, 9, 9, 9]\n  conv 4 kernel 3 stride 2\n  pool avg kernel 2\n}\n"
        "model M2 {\n  input x: [3, 9, 9]\n  conv 4 kernel [3, 1]\n}\n"
    )
    code, out, _ = cli("compile", str(f))
    assert code == 0
    assert "conv 16 3 pad 1" in out and "pool max 2 /2" in out  # 1-D: no 3×3
    assert "conv 4 3×3×3 /2" in out and "pool avg 2×2×2 /2" in out  # 3-D
    assert "conv 4 3×1" in out  # sizes given per dim are shown as written


def test_table_collapses_blocks_below_depth():
    _, full, _ = cli("compile", str(REPORT_DIR / "resnet_block.dl"))
    _, collapsed, _ = cli("compile", str(REPORT_DIR / "resnet_block.dl"), "--depth", "0")
    assert "layer1.0.conv1" in full and "layer1.0.conv1" not in collapsed
    assert "Stage(c=16, blocks=2, stride=1)" in collapsed
    assert "Params: 24,666 trainable" in full and "Params: 24,666 trainable" in collapsed


def test_table_notes_per_step_macs():
    _, out, _ = cli("compile", str(REPORT_DIR / "cell.dl"))
    assert "MACs per sample: 10,432 (10.43K), per step (T=1)" in out  # 10240 + 192
    _, out, _ = cli("compile", str(REPORT_DIR / "cell.dl"), "--seq", "T=20")
    assert "MACs per sample: 204,992 (204.99K), T=20" in out


# ---- --emit ir, errors, exit codes --------------------------------------------------------------


def test_emit_ir_gives_nodes_with_shapes():
    code, out, _ = cli("compile", str(REPORT_DIR / "lenet.dl"), "--emit", "ir")
    assert code == 0
    doc = json.loads(out)
    nodes = {n["path"]: n for n in doc["nodes"]}
    assert nodes["c1"]["shape"] == ["N", 6, 28, 28] and nodes["c1"]["dtype"] == "float32"
    assert nodes["c1"]["params_count"] == 156 and nodes["c1"]["macs"] == 117600
    assert nodes["out"]["shape"] == ["N", 10]
    assert all("shape" in n for n in doc["nodes"])


def test_emit_ir_shapes_cell_steps():
    _, out, _ = cli("compile", str(REPORT_DIR / "cell.dl"), "--emit", "ir")
    nodes = {n["path"]: n for n in json.loads(out)["nodes"]}
    assert nodes["rnn"]["shape"] == ["N", 64]
    assert nodes["rnn.x"]["shape"] == ["N", 16]  # one step of the input


BAD = "model M {\n  input x: [4, 11, 11]\n  pool max kernel 2 stride 2 as pool2\n}\n"


def test_errors_as_json(tmp_path):
    f = tmp_path / "bad.dl"
    f.write_text(BAD)
    code, out, _ = cli("compile", str(f), "--json")
    assert code == 1
    assert json.loads(out) == [
        {
            "file": str(f),
            "line": 3,
            "col": 3,
            "end_line": 3,
            "end_col": 38,
            "severity": "error",
            "message": "pool 'pool2' output height (11 - 2) / 2 + 1 = 5.5 is not a whole number",
            "notes": [],
            "help": "use padding 1, or ceil true",
        }
    ]


def test_errors_rendered_without_json(tmp_path):
    f = tmp_path / "bad.dl"
    f.write_text(BAD)
    code, out, err = cli("compile", str(f))
    assert code == 1 and out == ""
    assert f"{f}:3:3: error: pool 'pool2' output height (11 - 2) / 2 + 1 = 5.5 is not a whole number" in err
    assert "help: use padding 1, or ceil true" in err


def test_usage_errors_exit_2(tmp_path):
    f = tmp_path / "ok.dl"
    f.write_text("model M {\n  input x: [4]\n  dense 2\n}\n")
    code, out, _ = cli("compile", str(f), "--model", "Nope", "--json")
    assert code == 2
    assert json.loads(out)[0]["message"] == f"{f} has no model 'Nope'; models: M"
    code, _, err = cli("compile", str(f), "--model", "Nope")
    assert code == 2 and "has no model 'Nope'" in err
    code, out, _ = cli("compile", str(tmp_path / "missing.dl"), "--json")
    assert code == 2 and json.loads(out)[0]["message"].startswith("no such file")
    with pytest.raises(SystemExit) as e:
        cli("compile", str(f), "--seq", "T")
    assert e.value.code == 2


def test_options_that_would_be_ignored_are_usage_errors(tmp_path):
    f = tmp_path / "seq.dl"
    f.write_text("model S {\n  input x: [T, 4]\n  dense 2\n}\n")
    code, _, err = cli("compile", str(f), "--seq", "L=5")
    assert code == 2 and "--seq L: no input of S has a symbolic size 'L'; symbolic sizes: T" in err
    assert cli("compile", str(f), "--seq", "T=5")[0] == 0
    code, _, err = cli("compile", str(f), "--device", "CPU")
    assert code == 2 and "--device and --dtype apply to --verify" in err
    for opt, bad in (("--batch", "-3"), ("--batch", "0"), ("--depth", "-1")):
        with pytest.raises(SystemExit) as e:
            cli("compile", str(f), opt, bad)
        assert e.value.code == 2
    # a spec file by any name is read as a file
    g = tmp_path / "spec.txt"
    g.write_text(f.read_text())
    assert cli("compile", str(g))[0] == 0


def test_verify_json_and_batch(tmp_path):
    f = tmp_path / "v.dl"
    f.write_text("model V {\n  input x: [4]\n  dense 2\n}\n")
    code, out, _ = cli("compile", str(f), "--verify", "--json", "--batch", "3", "--device", "NULL")
    assert code == 0
    (r,) = json.loads(out)["verified"]
    assert r == {"model": "V", "device": "NULL", "dtype": "float32", "batch": 3, "layers": 2, "params": 10, "buffers": 0, "problems": []}


def test_every_model_of_a_file(tmp_path):
    f = tmp_path / "two.dl"
    f.write_text("model A {\n  input x: [4]\n  dense 2\n}\n\nmodel B {\n  input x: [4]\n  dense 3\n}\n")
    _, out, _ = cli("compile", str(f), "--json")
    assert [(m["name"], m["params"]) for m in json.loads(out)["models"]] == [("A", 10), ("B", 15)]
    _, out, _ = cli("compile", str(f), "--json", "--model", "B")
    assert [m["name"] for m in json.loads(out)["models"]] == ["B"]


def test_published_zoo_counts_through_the_cli():
    _, out, _ = cli("compile", str(ROOT / "specs" / "lenet5.dl"), "--json")
    assert json.loads(out)["models"][0]["params"] == 61706
    _, out, _ = cli("compile", str(ROOT / "specs" / "resnet18.dl"), "--json")
    m = json.loads(out)["models"][0]
    assert (m["params"], m["macs"]) == (11_689_512, 1_814_073_344)
