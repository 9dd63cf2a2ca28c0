"""The command line, run as a user runs it (subprocesses): exit codes, no tracebacks, fmt."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_dlspec

GOOD = "model M {\n  input x: [3]\n  dense 2\n}\n"
BAD = "model M {\n  input x: [3]\n  dens 2\n}\n"
UGLY = "# keep me\nmodel M{input x:[3] # and me\n  dense   2->relu}\n"
UGLY_FORMATTED = "# keep me\nmodel M {\n  input x: [3]  # and me\n  dense 2 -> relu\n}\n"


def test_check_ok_exit_0(write):
    p = write("good.dl", GOOD)
    r = run_dlspec("check", "good.dl", cwd=p.parent)
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok good.dl (M)\n", "")


def test_check_all_zoo_specs_ok():
    specs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.dl"))
    r = run_dlspec("check", *specs)
    assert r.returncode == 0, r.stderr
    assert [line.split()[1] for line in r.stdout.splitlines()] == specs


def test_check_error_exit_1_and_summary(write):
    p = write("bad.dl", BAD)
    r = run_dlspec("check", "bad.dl", cwd=p.parent)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.endswith("bad.dl: 1 error\n")
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["check", "--frobnicate", "x.dl"], "dlspec: error: unrecognized arguments: --frobnicate"),
        (["check"], "dlspec: error: the following arguments are required: FILE"),
        (["check", "missing.dl"], "dlspec: error: no such file: missing.dl"),
        (["fmt", "missing.dl"], "dlspec: error: no such file: missing.dl"),
        (["nosuchcommand"], "dlspec: error: argument COMMAND: invalid choice: 'nosuchcommand'"),
    ],
)
def test_usage_errors_exit_2_without_traceback(tmp_path, args, message):
    r = run_dlspec(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_no_command_prints_help_and_exits_2(tmp_path):
    r = run_dlspec(cwd=tmp_path)
    assert r.returncode == 2
    assert "usage: dlspec" in r.stdout


def test_version():
    r = run_dlspec("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("dlspec 0.")


def test_python_m_dlspec_help():
    r = run_dlspec("--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: dlspec")
    for word in ("check", "fmt", "--version", "--debug"):
        assert word in r.stdout


def test_console_script_is_installed():
    exe = ROOT / ".venv" / "bin" / "dlspec"
    if not exe.exists():  # the tests run from some other environment: the script is beside python
        exe = os.path.join(os.path.dirname(sys.executable), "dlspec")
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("dlspec ")


def test_help_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from dlspec.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('tinygrad', 'lark', 'pydantic', 'graphviz', 'rich') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "HEAVY []" in r.stderr, r.stderr


def test_debug_shows_traceback_only_when_asked(write, tmp_path):
    # an internal error, simulated by a check command whose loader breaks
    code = (
        "import sys, dlspec.api\n"
        "def boom(*a, **k):\n    raise RuntimeError('boom')\n"
        "dlspec.api.load = boom\nimport dlspec\ndlspec.load = boom\n"
        "from dlspec.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    p = write("good.dl", GOOD)
    plain = subprocess.run([sys.executable, "-c", code, "check", str(p)], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 3
    assert "Traceback" not in plain.stderr
    assert "dlspec: internal error: RuntimeError: boom" in plain.stderr
    debug = subprocess.run([sys.executable, "-c", code, "--debug", "check", str(p)], capture_output=True, text=True, timeout=60)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "RuntimeError: boom" in debug.stderr


def test_spec_errors_never_show_a_traceback(write):
    p = write("bad.dl", "model M {\n  input x: [3]\n  conv 6 kernel -1 padding [1, 2, 3, 4, 5]\n  dense (1 / 0)\n}\ntrain M { seed yes }\n")
    for args in (["check", "bad.dl"], ["check", "--json", "bad.dl"], ["--debug", "check", "bad.dl"]):
        r = run_dlspec(*args, cwd=p.parent)
        assert r.returncode == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout


def test_fmt_rewrites_only_changed_files(write):
    ugly = write("ugly.dl", UGLY)
    good = write("good.dl", GOOD)
    old = time.time() - 1000
    os.utime(good, (old, old))
    r = run_dlspec("fmt", "ugly.dl", "good.dl", cwd=ugly.parent)
    assert (r.returncode, r.stdout, r.stderr) == (0, "formatted ugly.dl\n", "")
    assert ugly.read_text() == UGLY_FORMATTED
    assert good.stat().st_mtime == old
    assert good.read_text() == GOOD
    assert sorted(p.name for p in ugly.parent.iterdir()) == ["good.dl", "ugly.dl"]  # no temporary files left


def test_fmt_check_exit_1_and_changes_nothing(write):
    ugly = write("ugly.dl", UGLY)
    write("good.dl", GOOD)
    r = run_dlspec("fmt", "--check", "ugly.dl", "good.dl", cwd=ugly.parent)
    assert r.returncode == 1
    assert r.stderr == "would reformat ugly.dl\n"
    assert ugly.read_text() == UGLY
    r = run_dlspec("fmt", "--check", "good.dl", cwd=ugly.parent)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_fmt_diff(write):
    ugly = write("ugly.dl", UGLY)
    r = run_dlspec("fmt", "--diff", "ugly.dl", cwd=ugly.parent)
    assert r.returncode == 0
    assert "-  dense   2->relu}" in r.stdout and "+  dense 2 -> relu" in r.stdout
    assert ugly.read_text() == UGLY


def test_fmt_keeps_comments(write):
    text = "# head\n\nmodel M {  # trailing on the brace line\n  # before input\n  input x: [3]  # after input\n\n  # before dense\n  dense 2  # after dense\n  # at the end\n}\n# file end\n"
    p = write("c.dl", text)
    run_dlspec("fmt", "c.dl", cwd=p.parent)
    out = p.read_text()
    comments = [line.strip()[line.strip().index("#") :] for line in text.splitlines() if "#" in line]
    for c in comments:
        assert c in out
    assert run_dlspec("fmt", "--check", "c.dl", cwd=p.parent).returncode == 0


def test_fmt_zoo_specs_are_formatted():
    specs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.dl"))
    r = run_dlspec("fmt", "--check", *specs)
    assert r.returncode == 0, r.stderr


def test_fmt_syntax_error_exit_1(write):
    p = write("bad.dl", "model M {\n  dense 2,\n}\n")
    r = run_dlspec("fmt", "bad.dl", cwd=p.parent)
    assert r.returncode == 1
    assert r.stderr.startswith("bad.dl:2:10: error: stray ','")
    assert p.read_text() == "model M {\n  dense 2,\n}\n"


@pytest.mark.parametrize(
    "args",
    [
        ["train", "good.dl", "--data", "mnst"],
        ["eval", "good.dl", "--weights", "w.safetensors", "--data", "mnst"],
        ["sweep", "good.dl", "--param", "lr=0.1,0.2", "--data", "mnst", "--dry-run"],
    ],
    ids=["train", "eval", "sweep"],
)
def test_unknown_data_set_on_the_command_line_is_a_usage_error(write, args):
    """``--data`` is checked as the command line is read (not once a run or a sweep's trial started):
    exit code 2, one line with a did-you-mean, nothing made."""
    p = write("good.dl", GOOD)
    r = run_dlspec(*args, cwd=p.parent)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1] == "dlspec: error: argument --data: unknown data set 'mnst' — did you mean 'mnist'?"
    assert sorted(x.name for x in p.parent.iterdir()) == ["good.dl"]
