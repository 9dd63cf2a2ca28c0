"""The wheel ships the grammar and works installed in a fresh venv; the editable install finds it too."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile

from conftest import ROOT


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kw)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    return r


def test_wheel_ships_the_grammar_and_runs_in_a_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, ROOT])
    (wheel,) = dist.glob("dlspec-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "dlspec/grammar/dlspec.lark" in names
        assert z.read("dlspec/grammar/dlspec.lark") == (ROOT / "grammar" / "dlspec.lark").read_bytes()
        assert "dlspec/cli.py" in names and "dlspec/ops/base.py" in names
        assert any(n.endswith("entry_points.txt") and b"dlspec = dlspec.cli:main" in z.read(n) for n in names)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    run([bin_dir / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel])
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    spec = outside / "lenet5.dl"
    spec.write_text((ROOT / "specs" / "lenet5.dl").read_text(encoding="utf-8"), encoding="utf-8")
    r = run([bin_dir / "dlspec", "check", "lenet5.dl"], cwd=outside)
    assert r.stdout == "ok lenet5.dl (LeNet5)\n"
    # the installed package, not the source tree, was used, and its grammar is the packaged one
    r = run([bin_dir / "python", "-c", "import dlspec.parse as p; print(p.__file__); print(p.grammar_path())"], cwd=outside)
    mod, grammar = r.stdout.split()
    assert str(env_dir) in mod and str(ROOT) not in mod
    assert grammar.startswith(str(env_dir)) and grammar.endswith("dlspec/grammar/dlspec.lark")


def test_editable_install_finds_the_grammar(tmp_path):
    code = "import dlspec, dlspec.parse as p; print(p.grammar_path()); print(dlspec.load('specs/lenet5.dl').models)"
    r = run([sys.executable, "-c", code], cwd=ROOT)
    grammar, models = r.stdout.splitlines()
    assert grammar == str(ROOT / "grammar" / "dlspec.lark")
    assert models == "['LeNet5']"
    r = run([sys.executable, "-m", "dlspec", "check", ROOT / "specs" / "lenet5.dl"], cwd=tmp_path)
    assert r.stdout.startswith("ok ")
