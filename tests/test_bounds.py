"""The bounds of dlspec.bounds (docs/language.md, "Limits"): huge numbers, sizes that would
hang, imports of things that are not specs, and text the lexer and the snippets must agree on.

Every case is a located error with exit code 1 (never 3), through ``check``, ``compile``,
``compile --json`` (the JSON encoder) and the train section; at a limit passes, one past fails.
The cases that would hang without the bound run in a subprocess with a timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT

import dlspec
from dlspec import bounds, expand
from dlspec.cli import main

MODEL = "model M {{\n  input x: [8]\n  {body}\n}}\n"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command line in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def spec(write, body: str, name: str = "t.dl", text: str | None = None):
    return write(name, text if text is not None else MODEL.format(body=body))


def first_error(err: str) -> str:
    return err.splitlines()[0]


# ---- huge numbers -------------------------------------------------------------------------

HUGE = [
    # (body line, line:col of the error, message)
    ("dense ((2 ** 64) ** 64)", "3:11", "2 ** 64 is too large (at least 2**64; the limit for a number is 2**63 − 1)"),
    ("dense (2 ** 2 ** 2 ** 2 ** 2 ** 2)", "3:15", "2 ** 65536 is too large (at least 2**65536"),
    ("dense (9223372036854775807 + 1)", "3:10", "9223372036854775807 + 1 is too large (about 2**63;"),
    ("dense (3037000500 * 3037000500)", "3:10", "3037000500 * 3037000500 is too large"),
    ("dense (-9223372036854775807 - 2)", "3:10", "-9223372036854775807 - 2 is too large"),
    ("dense (int(1e300))", "3:10", "int(1e+300) is too large (about 2**996;"),
    ("dense (10.0 ** 400)", "3:10", "10.0 ** 400 is too large (about 2**1328;"),
    ("dense (1e308 * 10)", "3:10", "1e+308 * 10 is too large (not a finite number;"),
    ("dense 9223372036854775808", "3:9", "the number 9223372036854775808 is too large (about 2**63;"),
    ("dense 1e400", "3:9", "the number 1e400 is too large (not a finite number;"),
    ("dense 1" + "0" * 5000, "3:9", "the number 100000000000…000000 is too large (5,001 digits;"),
    ("h = dense 8\n  h * ((2 ** 64) ** 64)", "4:9", "2 ** 64 is too large"),  # arithmetic on tensors
    # a finite decimal where a whole number belongs: no int beyond the bound is made of it
    ("dense 9.3e18", "3:9", "dense 'units' must be a whole number, got 9.3e+18"),
    ("conv 4 kernel [1e300, 1]", "3:17", "conv 'kernel' must be a whole number or a list of whole numbers, got [1e+300, 1]"),
    ("pool max kernel 2 stride (2 ** 64)", "3:29", "2 ** 64 is too large"),
    ("reshape [(2 ** 63), 1]", "3:13", "2 ** 63 is too large"),
]


@pytest.mark.parametrize("body, where, message", HUGE, ids=[h[2][:28] for h in HUGE])
@pytest.mark.parametrize("command", [("check",), ("compile",), ("compile", "--json")])
def test_huge_numbers_are_located_errors(write, capsys, command, body, where, message):
    p = spec(write, body)
    code, out, err = cli(capsys, *command, str(p))
    assert code == 1, err
    if "--json" in command:
        (d,) = json.loads(out)
        assert f"{d['line']}:{d['col']}" == where
        assert message in d["message"]
    else:
        assert first_error(err).startswith(f"{p}:{where}: error: ")
        assert message in first_error(err)
        assert "internal error" not in err


def test_the_limit_itself_is_a_number(write, capsys):
    # 2**63 − 1 is allowed where a size is; the layer's parameters are then what is too large
    p = spec(write, "dense (2 ** 62 + (2 ** 62 - 1))")
    code, _, err = cli(capsys, "check", str(p))
    assert code == 1
    assert first_error(err) == f"{p}:3:3: error: dense 'dense1' has too many parameters (about 2**66; the limit is 2**63 − 1)"
    # the largest legal values compute; one step past them does not
    for expr, value in [
        ("2 ** 62 + (2 ** 62 - 1)", 2**63 - 1),
        ("-(2 ** 62 - 1) * 2 - 1", -(2**63 - 1)),
        ("9223372036854775806 + 1", 2**63 - 1),
        ("(2 ** 31) ** 2 - 1", 2**62 - 1),
        ("3037000499 * 3037000499", 3037000499**2),
        ("-2 ** 63 + 1", None),  # `-` binds looser than `**`: -(2 ** 63) + 1, and 2 ** 63 is too large
        ("-(2 ** 62) * 2 + 1", None),  # -(2**63) on the way
        ("9223372036854775807 + 1", None),
    ]:
        assert arg_value(expr) == value, expr
    for text in ("9223372036854775807", "-9223372036854775807", "1.7e308"):
        assert bounds.literal_problem(text) is None
    for text in ("9223372036854775808", "-9223372036854775808", "1.8e308"):
        assert bounds.literal_problem(text) is not None


def arg_value(expr: str):
    """The value of ``expr`` as a model parameter's default, or None if it is refused."""
    try:
        return dlspec.load(f"model M(v = {expr}) {{\n  input x: [8]\n}}\n").ir().args["v"]
    except dlspec.DlspecError as e:
        assert "is too large" in e.diagnostics[0].message
        return None


def test_a_power_tower_is_refused_at_once(write):
    # ~50 s and 3.4 GB, then MemoryError, before the bound: now judged from the operands' sizes
    p = spec(write, "dense (2 ** 2 ** 2 ** 2 ** 2 ** 2 ** 2)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "dlspec", "check", str(p)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert time.perf_counter() - t0 < 30
    assert r.returncode == 1
    assert "2 ** 65536 is too large" in r.stderr


def test_huge_sizes_from_layers_are_located(write, capsys):
    cases = [
        # each value fits, the layer's parameters (2**40 · 2**40 + 2**40) do not
        (
            "  input x: [(2 ** 40)]\n  dense (2 ** 40)",
            "3:3",
            "dense 'dense1' has too many parameters (about 2**80; the limit is 2**63 − 1)",
        ),
        # each dim fits, their product does not
        ("  input x: [3037000499, 3037000499, 4096]\n  flatten", "2:3", "input 'x' has too many elements per sample (about 2**74;"),
        # a symbolic size whose coefficient (its size at T = 1) is too large
        (
            "  input x: [1, T]\n  upsample (2 ** 62) -> upsample (2 ** 62)",
            "3:25",
            "upsample 'upsample2': output dim 2 is too large (about 2**124; the limit for a size is 2**63 − 1)",
        ),
    ]
    for body, where, message in cases:
        p = write("s.dl", "model M {\n" + body + "\n}\n")
        for command in (("check",), ("compile",), ("compile", "--json")):
            code, out, err = cli(capsys, *command, str(p))
            assert code == 1, err
            got = first_error(err) if "--json" not in command else "{file}:{line}:{col}: error: {message}".format(**json.loads(out)[0])
            assert got.startswith(f"{p}:{where}: error: {message}"), got


def test_seq_binding_keeps_the_rule(write, capsys):
    p = write("s.dl", "model M {\n  input x: [T, T, T, 4]\n  dense 4\n}\n")
    code, out, err = cli(capsys, "compile", str(p), "--json", "--seq", "T=9000000000000000000")
    assert code == 1
    d = json.loads(out)[0]
    assert (d["line"], d["col"]) == (2, 3)
    assert d["message"].startswith("input 'x' has too many elements per sample at T=9000000000000000000 (about 2**190;")
    code, out, _ = cli(capsys, "compile", str(p), "--json", "--seq", "T=1000")
    assert code == 0 and json.loads(out)["models"][0]["macs"] == 1000**3 * 16
    with pytest.raises(SystemExit) as e:  # past 2**63 − 1: a usage error
        cli(capsys, "compile", str(p), "--seq", "T=9223372036854775808")
    assert e.value.code == 2
    assert "LENGTH at most 2**63 − 1" in capsys.readouterr().err


def test_the_report_of_large_legal_models_renders(write, capsys):
    # every figure of the human-readable report and the JSON at sizes near the bound
    text = "model M {\n  input x: [3037000499]\n  dense 3037000499\n  dense 3037000499\n}\n"
    p = write("s.dl", text)
    code, out, err = cli(capsys, "compile", str(p), "--batch", "9223372036854775807")
    assert code == 0, err
    params = 2 * (3037000499**2 + 3037000499)  # more than 2**63 in all: totals are not bounded, each layer is
    assert f"Params: {params:,} trainable ({params / 10**9:.2f}G)" in out
    assert "Training estimate (batch 9223372036854775807, adam): " in out
    code, out, _ = cli(capsys, "compile", str(p), "--json")
    assert code == 0 and json.loads(out)["models"][0]["params"] == params


def test_train_section_values(write, capsys):
    text = "model M {{\n  input x: [8]\n  dense 2\n}}\ntrain M {{\n  {line}\n}}\n"
    for line, where, message in [
        ("optimizer sgd lr ((2 ** 64) ** 64)", "6:22", "2 ** 64 is too large"),
        ("optimizer sgd lr 1e400", "6:20", "the number 1e400 is too large"),
        ("batch (2 ** 63)", "6:10", "2 ** 63 is too large"),
        ("epochs (4 ** 32)", "6:11", "4 ** 32 is too large (at least 2**64;"),
    ]:
        p = write("t.dl", text.format(line=line))
        code, _, err = cli(capsys, "check", str(p))
        assert code == 1, err
        assert first_error(err).startswith(f"{p}:{where}: error: {message}"), first_error(err)
    p = write("t.dl", text.format(line="optimizer sgd lr 9223372036854775807 momentum 1.7e308"))
    (t,) = dlspec.load(p).trains()
    assert t.settings["optimizer"].options == {"lr": 9223372036854775807.0, "momentum": 1.7e308}


def test_python_arguments_keep_the_rule():
    prog = dlspec.load("model M(c = 4) {\n  input x: [8]\n  dense c\n}\n")
    with pytest.raises(dlspec.UsageError, match=r"argument c of model 'M' is too large \(about 2\*\*16609;"):
        prog.ir("M", c=10**5000)
    assert prog.report("M", c=5)["params"] == 45


def test_no_op_parameter_crashes_on_extreme_values():
    """Every op and field with the extreme legal values: located errors or a report, never a crash."""
    from dlspec import ops

    values = ["9223372036854775807", "-9223372036854775807", "1.7e308", "4611686018427387904"]
    inputs = ["[3, 9223372036854775807]", "[3037000499, 4, 4]", "[T, 8]", "[2, 4, 4, 4]"]
    n = 0
    for name in ops.USER_OPS:
        op = ops.get(name)
        for f in [f for f in op.Params.model_fields if f != "op"]:
            for inp in inputs:
                for v in values:
                    src = f"model M {{\n  input x: {inp}\n  {name} {f} {v}\n}}\n"
                    try:
                        prog = dlspec.load(src)
                        if not prog.check():
                            json.dumps(prog.report("M", seq={"T": bounds.MAX_INT}))
                    except dlspec.DlspecError as e:
                        assert e.diagnostics and e.diagnostics[0].span is not None
                    n += 1
    assert n > 1000


# ---- sizes that would hang ------------------------------------------------------------------

HANG = [
    ("lstm 8 layers 1000000000000", "[T, 8]", "3:17", "lstm 'layers' must be ≤ 100000, got 1000000000000"),
    ("gru 8 layers 1000000000000", "[T, 8]", "3:16", "gru 'layers' must be ≤ 100000"),
    ("rnn 8 layers 1000000000000", "[T, 8]", "3:16", "rnn 'layers' must be ≤ 100000"),
    (
        "repeat 1000 { repeat 1000 { dense 4 } }",
        "[8]",
        "3:10",
        "repeat 1000 would make about 1,000,001 layers in the model (1,000 iterations × 1,000 each), more than the limit of 100,000",
    ),
    (
        "repeat 100000 { repeat 100000 { repeat 100000 { } } }",
        "[8]",
        "3:26",
        "repeat 100000 is too many iterations: the model's repeats would run 200,000 in all, more than the limit of 100,000",
    ),
]


@pytest.mark.parametrize("body, shape, where, message", HANG, ids=[h[0][:24] for h in HANG])
def test_sizes_that_would_hang_fail_fast(write, body, shape, where, message):
    p = write("h.dl", f"model M {{\n  input x: {shape}\n  {body}\n}}\n")
    for command in (("check",), ("compile", "--json")):
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "dlspec", *command, str(p)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env=dict(os.environ, NO_COLOR="1"),
        )
        assert time.perf_counter() - t0 < 20, "the limit must be checked before the work"
        assert r.returncode == 1, r.stderr
        if "--json" in command:
            d = json.loads(r.stdout)[0]
            assert (f"{d['line']}:{d['col']}", d["message"][: len(message)]) == (where, message)
        else:
            assert r.stderr.startswith(f"{p}:{where}: error: {message}")


def test_exponential_block_calls_stop_at_the_call_limit(write):
    lines = ["block B0 { }"] + [f"block B{i} {{ B{i - 1}() -> B{i - 1}() }}" for i in range(1, 40)]
    p = write("c.dl", "\n".join(lines) + "\nmodel M {\n  input x: [8]\n  B39()\n}\n")  # 2**40 calls
    r = subprocess.run([sys.executable, "-m", "dlspec", "check", str(p)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 1
    assert "error: the model makes more than 100,000 block calls, the limit" in r.stderr.splitlines()[0]


def counts(text: str) -> str | None:
    try:
        dlspec.load(text).ir()
    except dlspec.DlspecError as e:
        return e.diagnostics[0].message
    return None


def test_layer_limit_at_and_past(monkeypatch):
    monkeypatch.setattr(expand, "MAX_LAYERS", 50)
    assert counts(MODEL.format(body="repeat 49 { relu }")) is None  # the input and 49 layers: 50
    assert counts(MODEL.format(body="repeat 50 { relu }")).startswith("repeat 50 would make about 51 layers")
    assert counts(MODEL.format(body="relu\n  repeat 24 { dense 2 -> relu }")) is None
    assert counts(MODEL.format(body="relu\n  relu\n  repeat 24 { dense 2 -> relu }")).startswith("repeat 24 would make about 51 layers")
    # a chain without repeat stops at the layer that passes it
    assert counts(MODEL.format(body=" -> ".join(["relu"] * 50))) == "the model has more than 50 layers, the limit"
    # a recurrent op counts its stacked layers
    seq = "model M {{\n  input x: [T, 8]\n  {body}\n}}\n"
    assert counts(seq.format(body="lstm 4 layers 49")) is None
    assert counts(seq.format(body="lstm 4 layers 50")) == "the model has more than 50 layers, the limit"


def test_recurrent_layers_at_the_real_limit():
    seq = "model M {{\n  input x: [T, 8]\n  {body}\n}}\n"
    assert counts(seq.format(body="gru 4 layers 99999")) is None  # with the input: 100,000
    assert counts(seq.format(body="gru 4 layers 100000")) == "the model has more than 100,000 layers, the limit"
    assert counts(seq.format(body="gru 4 layers 100001")) == "gru 'layers' must be ≤ 100000, got 100001"


def test_iteration_and_call_limits_at_and_past(monkeypatch):
    assert counts(MODEL.format(body="repeat 100000 { }")) is None  # the real limit, nothing inside
    assert counts(MODEL.format(body="repeat 100001 { }")).startswith("repeat 100001 is too many iterations")
    monkeypatch.setattr(expand, "MAX_ITERATIONS", 110)
    assert counts(MODEL.format(body="repeat 10 { repeat 10 { } }")) is None  # 10 + 10 × 10
    assert counts(MODEL.format(body="repeat 10 { repeat 11 { } }")).startswith("repeat 10 would make about 120 repeat iterations")
    assert counts(MODEL.format(body="repeat 10 { repeat 10 { } }\n  repeat 1 { }")).startswith("repeat 1 is too many iterations")
    monkeypatch.setattr(expand, "MAX_CALLS", 3)
    blocks = "block U {\n  relu\n}\n"
    assert counts(blocks + MODEL.format(body="U() -> U() -> U()")) is None
    assert counts(blocks + MODEL.format(body="U() -> U() -> U() -> U()")) == "the model makes more than 3 block calls, the limit"


# ---- imports and spec files -----------------------------------------------------------------


def importing(write, target: str):
    return write("main.dl", f'import "{target}"\nmodel M {{\n  input x: [8]\n}}\n')


@pytest.mark.parametrize(
    "target, message",
    [
        ("/etc/passwd", "cannot import '/etc/passwd': an imported spec's name must end in '.dl'"),
        ("/dev/stdin", "cannot import '/dev/stdin': an imported spec's name must end in '.dl'"),
        ("/dev/zero", "cannot import '/dev/zero': an imported spec's name must end in '.dl'"),
        ("zero.dl", "cannot import 'zero.dl': a character device, not a regular file"),
        ("passwd.dl", "cannot import 'passwd.dl': it leads to '/etc/passwd', whose name does not end in '.dl'"),
        ("fifo.dl", "cannot import 'fifo.dl': a pipe, not a regular file"),
        ("dir.dl", "cannot import 'dir.dl': a directory, not a regular file"),
        ("big.dl", "cannot import 'big.dl': the file is 1,048,577 bytes; a spec file may have at most 1,048,576 bytes (1 MiB)"),
        ("missing.dl", "cannot import 'missing.dl': no such file"),
    ],
)
def test_imports_read_only_specs(write, capsys, target, message):
    main_dl = importing(write, target)
    d = main_dl.parent
    os.symlink("/dev/zero", d / "zero.dl")
    os.symlink("/etc/passwd", d / "passwd.dl")
    os.mkfifo(d / "fifo.dl")
    (d / "dir.dl").mkdir()
    (d / "big.dl").write_bytes(b"#" * bounds.MAX_SOURCE_BYTES + b"\n")
    code, _, err = cli(capsys, "check", str(main_dl))
    assert code == 1
    assert err.splitlines()[0] == f"{main_dl}:1:1: error: {message}"
    assert "root:" not in err  # nothing of another file shows


def test_import_at_the_size_limit_is_read(write, capsys):
    lib = "block Unit {\n  relu\n}\n"
    q = write("lib.dl", lib + "#" * (bounds.MAX_SOURCE_BYTES - len(lib) - 1) + "\n")
    assert q.stat().st_size == bounds.MAX_SOURCE_BYTES
    p = write("main.dl", 'import "lib.dl"\nmodel M {\n  input x: [8]\n  Unit()\n}\n')
    assert cli(capsys, "check", str(p))[0] == 0


def test_command_line_file_must_be_a_regular_small_file(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo.dl")
    for path, message in [
        ("/dev/zero", "dlspec: error: cannot read /dev/zero: a character device, not a regular file"),
        (str(tmp_path / "fifo.dl"), f"dlspec: error: cannot read {tmp_path / 'fifo.dl'}: a pipe, not a regular file"),
    ]:
        for command in ("check", "compile", "fmt"):
            code, _, err = cli(capsys, command, path)
            assert (code, err.splitlines()[0]) == (2, message)
    big = tmp_path / "big.dl"
    big.write_bytes(b"#" * (bounds.MAX_SOURCE_BYTES + 1))
    code, _, err = cli(capsys, "check", str(big))
    assert code == 1
    assert err.splitlines()[0] == f"{big}:1:1: error: the file is 1,048,577 bytes; a spec file may have at most 1,048,576 bytes (1 MiB)"


def test_stdin_as_file_does_not_block(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "dlspec", "check", "/dev/stdin"], stdin=subprocess.PIPE, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert r.returncode == 2
    assert "not a regular file" in r.stderr


# ---- text ----------------------------------------------------------------------------------


def test_invalid_utf8_is_located(write, capsys):
    p = write("u.dl", "")
    p.write_bytes(b"model M {\n  input x: [8]\n  dense 8 \xc3\xa9\xff\n}\n")  # an \xc3\xa9 before it: columns count characters
    for command in ("check", "compile", "fmt"):
        code, _, err = cli(capsys, command, str(p))
        assert code == 1, err
        assert err.splitlines()[:4] == [
            f"{p}:3:12: error: byte 0xff is not valid UTF-8",
            "  |",
            "3 |   dense 8 é\ufffd",
            "  | " + " " * 11 + "^",
        ]
    code, out, _ = cli(capsys, "compile", "--json", str(p))
    assert code == 1 and (json.loads(out)[0]["line"], json.loads(out)[0]["col"]) == (3, 12)
    # in an import: at the byte, in the imported file
    q = write("main.dl", 'import "u.dl"\nmodel N {\n  input x: [8]\n}\n')
    code, _, err = cli(capsys, "check", str(q))
    assert code == 1 and err.splitlines()[0] == "u.dl:3:12: error: byte 0xff is not valid UTF-8"


@pytest.mark.parametrize("ch", ["\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"])
def test_snippet_line_is_the_lexers_line(write, capsys, ch):
    """A character that str.splitlines() breaks at, before an error: the caret's line is right."""
    p = write("f.dl", f"model M {{\n  input x: [8]\n  relu{ch}\n  dense q\n}}\n")
    code, _, err = cli(capsys, "check", str(p))
    assert code == 1
    lines = err.splitlines()
    if ch in "\f\r":  # whitespace: the error is the one after it, on its own line
        assert lines[:4] == [f"{p}:4:9: error: unknown parameter 'q' for dense", "  |", "4 |   dense q", "  |         ^"]
    else:  # not whitespace and not a line end: an error at the character, shown as a space
        assert lines[:4] == [f"{p}:3:7: error: unexpected character {ch!r}", "  |", "3 |   relu ", "  |       ^"]
        assert lines[4] == "help: a line ends only at a newline; remove this character"


def test_crlf_and_end_of_file_positions(write, capsys):
    p = write("c.dl", "")
    p.write_bytes(b"model M {\r\n  input x: [8]\r\n  dense q\r\n}\r\n")
    code, _, err = cli(capsys, "check", str(p))
    assert code == 1 and err.splitlines()[:3] == [f"{p}:3:9: error: unknown parameter 'q' for dense", "  |", "3 |   dense q"]
    p = write("e.dl", "model M {\n  input x: [8]\f\n")
    code, _, err = cli(capsys, "check", str(p))
    assert code == 1
    assert err.splitlines()[0] == f"{p}:1:9: error: '{{' is never closed"
    assert f"{p}:2:16: note: the file ends here" in err.splitlines()


@pytest.mark.parametrize("command", ["check", "compile", "draw", "fmt"])
def test_a_missing_file_is_a_usage_error_whatever_its_name(tmp_path, capsys, monkeypatch, command):
    # a name without '.dl' used to be taken as spec text (a parse error, exit 1)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, command, "nosuch")
    assert code == 2
    assert err.strip().splitlines()[-1] == "dlspec: error: no such file: nosuch"


def test_a_byte_order_mark_is_not_part_of_the_text(write, capsys):
    p = write("bom.dl", "")
    p.write_bytes(b"\xef\xbb\xbf" + MODEL.format(body="dense 2 as d\n  relu").encode())
    code, out, _ = cli(capsys, "check", str(p))
    assert code == 0 and out.startswith(f"ok {p}")
    # positions on the first line are counted without it
    p.write_bytes(b"\xef\xbb\xbfmodel M { input x: [8]\n  dense q\n}\n")
    code, _, err = cli(capsys, "check", str(p))
    assert code == 1 and f"{p}:2:9: error:" in err


@pytest.mark.parametrize("option", ["--lr", "--weight-decay", "--clip", "--val-split"])
def test_train_overrides_are_finite(capsys, option):
    with pytest.raises(SystemExit) as e:  # argparse's usage errors exit from the parser
        main(["train", str(ROOT / "specs" / "mlp.dl"), option, "1e400"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"dlspec: error: argument {option}: expected a finite number, got '1e400'"
