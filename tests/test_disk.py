"""Disks and permissions while training (issue 12, section 4).

Every file a run writes goes through :mod:`dlspec.runfiles`: a full disk, a read-only folder or
any other ``OSError`` is one clear line and exit 1 (never a SIGBUS, never a traceback), the
temporary file is removed and the previous file — the last checkpoint above all — is byte-identical.

Failures are made two ways: a real tiny tmpfs (``mount -t tmpfs -o size=…``; skipped where
mounting is not permitted), with ``dlspec train`` as a subprocess, and in-process by replacing
:func:`dlspec.runfiles._write` (the one place bytes reach a file) with one that writes part of
the data of a chosen file, then raises ``OSError(ENOSPC)``. Tests run as root, where ``chmod``
does not stop writes: unwritable ``--out`` folders are paths under a regular file and read-only
mounts. One tiny model (pool + dense, 500 parameters), 1 epoch of 5 steps: the kernels compile
once and are shared by every run here.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import read_safetensors

from dlspec import runfiles
from dlspec.backends.tinygrad import save_safetensors
from dlspec.cli import main
from dlspec.runfiles import WriteError

SPEC = """\
model Tiny {
  input x: [1, 28, 28]
  pool avg kernel 4
  flatten
  dense 10
}

train Tiny {
  data shapes limit 100
  optimizer adam lr 0.01
  batch 20
  epochs 1
  seed 1
}
"""
ENOSPC = os.strerror(errno.ENOSPC)  # "No space left on device"
needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names a written file by /proc/self/fd")


# ---- helpers ----------------------------------------------------------------------------------------


def run_main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "dlspec", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def error_lines(err: str) -> list[str]:
    """The error lines of a run's stderr (the rest are its log lines)."""
    assert "Traceback" not in err and "internal error" not in err, err
    return [line for line in err.splitlines() if line.startswith("dlspec: error:")]


def tensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    """Every tensor of a safetensors file as (dtype, shape, raw bytes), parsed independently."""
    return read_safetensors(path)[0]


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file of a folder (hidden ones included) and its bytes."""
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def temps(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob(".*") if p.is_file())


def dead_pid() -> int:
    """The pid of a process that has exited."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def fail_writes(monkeypatch, name: str, after: int = 0) -> list[str]:
    """From the ``after + 1``-th ``write()`` into a file whose name contains ``name`` on, the disk is
    full: that call writes half its bytes (a short write, as a filling disk gives), the next raises
    ``OSError(ENOSPC)``. Returns the names of the files it failed."""
    real = runfiles._write
    state = {"calls": 0, "short": False}
    failed: list[str] = []

    def write(fd: int, data: memoryview) -> int:
        target = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name not in target:
            return real(fd, data)
        state["calls"] += 1
        if state["calls"] <= after:
            return real(fd, data)
        if not state["short"] and len(data) > 1:
            state["short"] = True
            return real(fd, data[: len(data) // 2])
        failed.append(target)
        raise OSError(errno.ENOSPC, ENOSPC)

    monkeypatch.setattr(runfiles, "_write", write)
    return failed


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *options: str):
    """A tmpfs of ``size`` mounted on ``where`` (skips the test where mounting is not permitted)."""
    where.mkdir(parents=True, exist_ok=True)
    opts = ",".join((f"size={size}", *options))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` up, then give back ``leave`` bytes."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    os.close(fd)
    return filler


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("disk")
    (d / "tiny.dl").write_text(SPEC, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def base(work) -> Path:
    """One finished 1-epoch run (under umask 022)."""
    old = os.umask(0o022)
    try:
        code, out, err = run_main("train", str(work / "tiny.dl"), "--out", str(work / "runs"), "--quiet", "--json")
    finally:
        os.umask(old)
    assert code == 0, err
    return Path(json.loads(out)["run_dir"])


@pytest.fixture
def run_copy(base, tmp_path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "run"))


# ---- the safetensors writer ---------------------------------------------------------------------------


def sample_tensors() -> dict:
    from tinygrad import Tensor, dtypes

    return {
        "w": Tensor.randn(3, 4).realize(),
        "t": Tensor.randn(4, 5).T,  # not contiguous
        "slice": Tensor.arange(12, dtype=dtypes.int32).reshape(3, 4)[:, 1:3],
        "i64": Tensor([1, -2, 3], dtype=dtypes.int64),
        "half": Tensor([0.5, -1.25, 3.0]).half(),
        "mask": Tensor([True, False, True]),
        "scalar": Tensor(3.0, dtype=dtypes.float32).contiguous(),
        "u8": Tensor([0, 7, 255], dtype=dtypes.uint8),
    }


def test_safetensors_writer_is_byte_identical_to_tinygrad_safe_save(tmp_path):
    from tinygrad.nn.state import safe_save

    sd = sample_tensors()
    meta = {"format": "dlspec-checkpoint-1", "history": json.dumps([{"loss": 1.5}]), "note": "ünïcode"}
    safe_save({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "ref.safetensors"), meta)
    save_safetensors(tmp_path / "new.safetensors", sd, meta)
    assert (tmp_path / "new.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["new.safetensors", "ref.safetensors"]


def test_safetensors_writer_output_loads_with_the_reader(tmp_path):
    from dlspec.weightfile import read

    sd = sample_tensors()
    save_safetensors(tmp_path / "x.safetensors", sd, {"k": "v"})
    got = read(tmp_path / "x.safetensors").tensors
    assert set(got) == set(sd)
    for k, t in sd.items():
        np.testing.assert_array_equal(got[k], t.numpy(), err_msg=k)
    # the header by hand: 8-byte little-endian length, JSON padded with spaces to a multiple of 8
    raw = (tmp_path / "x.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and json.loads(raw[8 : 8 + n])["__metadata__"] == {"k": "v"}
    assert json.loads(raw[8 : 8 + n])["t"] == {"dtype": "F32", "shape": [5, 4], "data_offsets": [48, 128]}
    assert raw[8 + n + 48 : 8 + n + 128] == np.ascontiguousarray(sd["t"].numpy()).astype("<f4").tobytes()
    assert len(raw) == 8 + n + sum(t.nbytes() for t in sd.values())


# ---- atomic writes, appends, modes --------------------------------------------------------------------


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_are_created_as_open_creates_them(tmp_path, mask, mode):
    (tmp_path / "old.json").write_text("{}")
    os.chmod(tmp_path / "old.json", 0o755)
    old = os.umask(mask)
    try:
        runfiles.atomic_write(tmp_path / "a.txt", "text")
        runfiles.atomic_write(tmp_path / "old.json", "{}\n")  # replaced by a new file: not 0755
        runfiles.append_line(tmp_path / "metrics.jsonl", '{"epoch": 1}')
        save_safetensors(tmp_path / "c.safetensors", sample_tensors())
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["a.txt", "old.json", "metrics.jsonl", "c.safetensors"], mode)


@needs_proc
@pytest.mark.parametrize("kind", ["bytes", "text", "writer", "safetensors"])
def test_a_full_disk_mid_file_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, kind):
    target = tmp_path / "last.safetensors"
    target.write_bytes(b"previous checkpoint")
    before = snapshot(tmp_path)
    failed = fail_writes(monkeypatch, "last.safetensors")
    big = b"x" * (3 << 20)  # more than one write() call
    with pytest.raises(WriteError) as e:
        if kind == "bytes":
            runfiles.atomic_write(target, big)
        elif kind == "text":
            runfiles.atomic_write(target, "é" * (2 << 20))
        elif kind == "writer":
            runfiles.atomic_write(target, lambda fh: [fh.write(big[:1000]) for _ in range(5000)])
        else:
            from tinygrad import Tensor

            save_safetensors(target, {"w": Tensor.ones(600, 1000).contiguous()}, {"epoch": "2"})
    assert str(e.value) == f"error: {target}: cannot write checkpoint: {ENOSPC}"
    assert e.value.path == target and failed and failed[0].startswith(".last.safetensors.")
    assert snapshot(tmp_path) == before  # the old file byte-identical, the temporary file gone


def test_unwritable_folders_are_write_errors(tmp_path):
    (tmp_path / "plain").write_text("a file")
    missing = tmp_path / "missing"
    with pytest.raises(WriteError) as e:
        runfiles.atomic_write(missing / "metrics.jsonl", "")
    assert str(e.value) == f"error: {missing}/metrics.jsonl: cannot write metrics: folder {missing} does not exist"
    with pytest.raises(WriteError, match=r"plain/x/config\.json: cannot write run configuration: Not a directory"):
        runfiles.atomic_write(tmp_path / "plain" / "x" / "config.json", "{}")
    with pytest.raises(WriteError, match=r"plain/loss\.svg: cannot write plot: Not a directory"):
        runfiles.atomic_write(tmp_path / "plain" / "loss.svg", "<svg/>")
    with pytest.raises(WriteError, match=r"plain/metrics\.jsonl: cannot write metrics: Not a directory"):
        runfiles.append_line(tmp_path / "plain" / "metrics.jsonl", "{}")


@needs_proc
def test_a_failed_append_leaves_no_half_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    runfiles.append_line(path, json.dumps({"epoch": 1, "loss": 2.0}))
    before = path.read_bytes()
    fail_writes(monkeypatch, "metrics.jsonl")
    with pytest.raises(WriteError, match=f"metrics.jsonl: cannot write metrics: {ENOSPC}"):
        runfiles.append_line(path, json.dumps({"epoch": 2, "pad": "y" * 5000}))
    assert path.read_bytes() == before
    monkeypatch.undo()
    runfiles.append_line(path, json.dumps({"epoch": 2}))
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 2]


def test_stale_temporary_files(tmp_path):
    dead, live = dead_pid(), os.getppid()
    names = {
        "dead": f".last.safetensors.{dead}.0123abcd.tmp",
        "live": f".last.safetensors.{live}.0123abcd.tmp",
        "other": f".best.safetensors.{dead}.89abcdef.tmp",
        "mkstemp": ".last.safetensors.k3_9xq2a.tmp",  # earlier versions (no pid)
        "legacy_png": f".recon.png.tmp{dead}.png",
        "user": ".hidden.tmp",  # not a dlspec temporary file
    }
    for n in names.values():
        (tmp_path / n).write_bytes(b"partial")
    # a write of last.safetensors removes that file's dead temporaries only
    runfiles.atomic_write(tmp_path / "last.safetensors", b"new")
    left = set(os.listdir(tmp_path))
    assert names["dead"] not in left and {names["live"], names["other"], names["mkstemp"], names["legacy_png"]} <= left
    # the whole folder: dead ones of every file; with legacy (a resumed run's folder) the old names too
    assert {p.name for p in runfiles.remove_stale_temps(tmp_path)} == {names["other"]}
    assert {p.name for p in runfiles.remove_stale_temps(tmp_path, legacy=True)} == {names["mkstemp"], names["legacy_png"]}
    assert set(os.listdir(tmp_path)) == {"last.safetensors", names["live"], names["user"]}


def test_objective_metrics_with_a_cut_line_are_rewritten_whole(tmp_path):
    from dlspec.objectives.common import Record

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "loss": 3}\n{"epoch": 2, "loss": 2}\n{"epoch": 3, "lo')  # killed mid-line
    rec = Record(tmp_path)
    rec.keep(1)  # resumed from the epoch-1 checkpoint
    rec.add({"epoch": 2, "loss": 2.5})
    assert path.read_text() == '{"epoch": 1, "loss": 3}\n{"epoch": 2, "loss": 2.5}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@needs_proc
def test_net_save_on_a_full_disk(tmp_path, monkeypatch, work):
    import dlspec

    net = dlspec.load(work / "tiny.dl").build("Tiny", seed=0)
    target = tmp_path / "tiny.safetensors"
    net.save(target)
    before = snapshot(tmp_path)
    fail_writes(monkeypatch, "tiny.safetensors")
    with pytest.raises(WriteError) as e:
        net.save(target)
    assert str(e.value) == f"error: {target}: cannot write weights: {ENOSPC}"
    assert snapshot(tmp_path) == before


# ---- dlspec train: unwritable places ------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["", "sub/dir"])
def test_out_under_a_regular_file_fails_before_training(work, tmp_path, sub):
    plain = tmp_path / "plain"
    plain.write_text("not a folder")
    out = plain / sub if sub else plain
    code, _, err = run_main("train", str(work / "tiny.dl"), "--out", str(out), "--quiet")
    assert code == 1
    assert error_lines(err) == [f"dlspec: error: {out}: cannot create a run directory: {plain} is a file, not a folder"]
    assert "device" not in err and "epoch" not in err  # before the data, the model, the first step


def test_read_only_out_and_read_only_resume(work, base, tmp_path):
    ro = tmp_path / "ro"
    with tmpfs(ro, "1m"):
        shutil.copytree(base, ro / "run")
        before = snapshot(ro / "run")
        r = subprocess.run(["mount", "-o", "remount,ro", str(ro)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot remount read-only: {r.stderr.strip()}")
        code, _, err = run_main("train", str(work / "tiny.dl"), "--out", str(ro / "runs"), "--quiet")
        assert code == 1
        assert error_lines(err) == [f"dlspec: error: {ro / 'runs'}: cannot create a run directory: Read-only file system"]
        code, _, err = run_main("train", "--resume", str(ro / "run"), "--epochs", "2", "--quiet")
        assert code == 1
        assert error_lines(err) == [f"dlspec: error: {ro / 'run' / 'config.json'}: cannot write run configuration: Read-only file system"]
        assert "resumed" not in err and "device" not in err
        assert snapshot(ro / "run") == before


# ---- dlspec train: a real full disk -------------------------------------------------------------------


def test_disk_full_at_the_first_checkpoint_real_tmpfs(work, tmp_path):
    """Room for spec.dl and config.json (a page each), not for a 7 KB checkpoint: exit 1 (not
    SIGBUS's 135), one line naming the file, nothing left behind on the tmpfs."""
    with tmpfs(tmp_path / "full", "12k") as full:
        r = run_cli("train", str(work / "tiny.dl"), "--out", str(full / "runs"), "--quiet", cwd=tmp_path)
        assert r.returncode == 1, (r.returncode, r.stderr)
        (line,) = error_lines(r.stderr)
        run_dir = r.stderr.split("run directory ", 1)[1].split("\n", 1)[0]
        assert line == (
            f"dlspec: error: {run_dir}/best.safetensors: cannot write checkpoint: {ENOSPC}; "
            "training stopped before its first checkpoint (the run directory was removed)"
        )
        assert [p.name for p in full.rglob("*")] == ["runs"]  # no run directory, no temporary file


def test_disk_full_after_an_epoch_then_freed_and_resumed(work, tmp_path):
    """A finished epoch on a 64 KB tmpfs, the disk filled to one free page: the resumed run stops at
    epoch 2's checkpoint with the epoch-1 files intact; freed, it resumes to the same weights as an
    uninterrupted 2-epoch run."""
    code, out, err = run_main("train", str(work / "tiny.dl"), "--epochs", "2", "--out", str(tmp_path / "ref"), "--quiet", "--json")
    assert code == 0, err
    want = tensors(Path(json.loads(out)["run_dir"]) / "last.safetensors")
    with tmpfs(tmp_path / "full", "64k") as full:
        code, out, err = run_main("train", str(work / "tiny.dl"), "--out", str(full / "runs"), "--quiet", "--json")
        assert code == 0, err
        run_dir = Path(json.loads(out)["run_dir"])
        filler = fill(full, leave=4096)  # config.json and metrics.jsonl fit in it, a checkpoint does not
        before = snapshot(run_dir)
        r = run_cli("train", "--resume", str(run_dir), "--epochs", "2", "--quiet", cwd=tmp_path)
        assert r.returncode == 1, (r.returncode, r.stderr)
        (line,) = error_lines(r.stderr)
        assert line.startswith(f"dlspec: error: {run_dir}/") and f".safetensors: cannot write checkpoint: {ENOSPC}" in line
        assert line.endswith(f"keeps epoch 1: free some space, then dlspec train --resume {run_dir}")
        after = snapshot(run_dir)
        assert set(after) == set(before) and temps(run_dir) == []
        assert {k: v for k, v in after.items() if k != "config.json"} == {k: v for k, v in before.items() if k != "config.json"}
        filler.unlink()
        code, _, err = run_main("train", "--resume", str(run_dir), "--quiet")
        assert code == 0, err
        assert "resumed after epoch 1" in err
        assert tensors(run_dir / "last.safetensors") == want
        assert [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# ---- dlspec train: in-process failures of each file --------------------------------------------------


@needs_proc
@pytest.mark.parametrize(
    "name, what, after",
    [
        ("last.safetensors", "checkpoint", 0),
        ("metrics.jsonl", "metrics", 1),  # the first write: resuming rewrites it from the checkpoint's history
        ("loss.svg", "plot", 1),  # the same
        ("summary.json", "run summary", 0),
    ],
)
def test_a_full_disk_while_writing_each_run_file(run_copy, monkeypatch, name, what, after):
    before = snapshot(run_copy)
    fail_writes(monkeypatch, name, after)
    code, _, err = run_main("train", "--resume", str(run_copy), "--epochs", "2", "--quiet")
    assert code == 1
    (line,) = error_lines(err)
    assert line.startswith(f"dlspec: error: {run_copy / name}: cannot write {what}: {ENOSPC}; training stopped; ")
    after = snapshot(run_copy)
    assert temps(run_copy) == [] and after[name] == before[name]
    if name == "last.safetensors":
        assert "keeps epoch 1" in line
    else:  # written after epoch 2's checkpoint
        assert after["last.safetensors"] != before["last.safetensors"] and "keeps epoch 2" in line
    monkeypatch.undo()
    code, _, err = run_main("train", "--resume", str(run_copy), "--quiet")  # with room again: it completes
    assert code == 0, err
    assert [json.loads(x)["epoch"] for x in (run_copy / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert temps(run_copy) == []


def test_run_files_are_mode_0644(base):
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in base.iterdir()}
    assert modes == dict.fromkeys(
        ["spec.dl", "config.json", "metrics.jsonl", "last.safetensors", "best.safetensors", "loss.svg", "summary.json"], "0o644"
    )


def test_resume_removes_stale_temporary_files(run_copy):
    stale = [f".last.safetensors.{dead_pid()}.0badc0de.tmp", ".best.safetensors.a1b2c3d4.tmp", f".loss.svg.tmp{dead_pid()}"]
    for n in stale:
        (run_copy / n).write_bytes(b"\0" * 100)
    code, _, err = run_main("train", "--resume", str(run_copy), "--quiet")
    assert code == 0, err
    assert "already complete" in err and temps(run_copy) == []


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(base, tmp_path):
    """Only spec.dl, config.json and a half-written checkpoint: --resume says it trains from the
    start, and ends with the weights of the uninterrupted run."""
    run = tmp_path / "killed"
    run.mkdir()
    for f in ("spec.dl", "config.json"):
        shutil.copy(base / f, run / f)
    (run / f".last.safetensors.{dead_pid()}.0123abcd.tmp").write_bytes(b"\0" * 4096)
    code, _, err = run_main("train", "--resume", str(run), "--quiet")
    assert code == 0, err
    assert f"{run} has no checkpoint yet (it stopped before its first epoch ended): training it from the start" in err
    assert tensors(run / "last.safetensors") == tensors(base / "last.safetensors")
    assert temps(run) == [] and set(snapshot(run)) == set(snapshot(base))


# ---- objectives --------------------------------------------------------------------------------------

AE = """
model AE {
  input image: [1, 28, 28]
  flatten
  dense 8 -> relu
  dense 784 -> sigmoid
  reshape [1, 28, 28]
}
train autoencoder AE {
  data shapes limit 128
  optimizer adam lr 3e-3
  batch 64
  epochs 1
  seed 0
}
"""


@needs_proc
def test_autoencoder_image_grid_on_a_full_disk(tmp_path, monkeypatch):
    (tmp_path / "ae.dl").write_text(AE)
    fail_writes(monkeypatch, "recon.png")
    code, _, err = run_main("train", str(tmp_path / "ae.dl"), "--out", str(tmp_path / "runs"), "--quiet")
    assert code == 1
    (line,) = error_lines(err)
    assert line.startswith(f"dlspec: error: {tmp_path / 'runs'}/AE-") and line.endswith(
        f"/recon.png: cannot write image: {ENOSPC}; training stopped before its first checkpoint (the run directory was removed)"
    )
    assert list((tmp_path / "runs").iterdir()) == []


def test_objective_run_killed_before_its_first_checkpoint_resumes_from_the_start(tmp_path):
    (tmp_path / "ae.dl").write_text(AE)
    code, out, err = run_main("train", str(tmp_path / "ae.dl"), "--out", str(tmp_path / "runs"), "--quiet", "--json")
    assert code == 0, err
    done = Path(json.loads(out)["run_dir"])
    run = tmp_path / "killed"
    run.mkdir()
    for f in ("spec.dl", "config.json"):
        shutil.copy(done / f, run / f)
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_lo')  # cut by the kill
    code, _, err = run_main("train", "--resume", str(run), "--quiet")
    assert code == 0, err
    assert "training it from the start" in err
    assert tensors(run / "last.safetensors") == tensors(done / "last.safetensors")
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]
