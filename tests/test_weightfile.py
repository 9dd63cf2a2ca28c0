"""dlspec.weightfile: PyTorch files read through an allow-list (malicious pickles never run),
safetensors headers validated completely (every lie its own error), real files still load.

The malicious files are built here with ``pickle``/``zipfile`` directly; each would write a
marker file if it ever ran, and the tests prove that it would (plain ``pickle`` and tinygrad's
old ``torch_load`` do run it). Where PyTorch is installed, real ``torch.save`` files are
compared value for value with ``torch.load``; a hand-built zip and legacy file test the same
path without it. Nothing here compiles a kernel.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import dlspec
from dlspec import weightfile
from dlspec.cli import main
from dlspec.train import TrainError, check_safetensors
from dlspec.weightfile import WeightsError

SPEC = """\
model T {
  input x: [1, 28, 28]
  flatten
  dense 10 as fc
}

train T {
  data shapes
  batch 20
}
"""
RUNSTRING = "numpy.testing._private.utils.runstring"


@pytest.fixture(scope="module")
def net():
    return dlspec.load(SPEC).build("T", seed=0)


def state(net) -> dict[str, np.ndarray]:
    return {k: t.numpy().copy() for k, t in net.state_dict().items()}


# ---- a tiny pickle writer: the exact opcodes, no Python objects to reduce --------------------------------


def s(text: str) -> bytes:
    """BINUNICODE."""
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def i(n: int) -> bytes:
    """BININT (or LONG1 for big numbers and negatives beyond 32 bits)."""
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def g(module: str, name: str) -> bytes:
    """GLOBAL."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


ODICT = g("collections", "OrderedDict") + b")R"  # OrderedDict()


def storage(key: str, numel: int, kind: str = "FloatStorage", legacy: bool = False) -> bytes:
    """A persistent id ('storage', torch.<kind>, key, 'cpu', numel[, None]) — BINPERSID."""
    return tup(s("storage"), g("torch", kind), s(key), s("cpu"), i(numel), *([b"N"] if legacy else [])) + b"Q"


def tensor(st: bytes, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    return g("torch._utils", "_rebuild_tensor_v2") + tup(st, i(offset), tup(*map(i, size)), tup(*map(i, stride)), b"\x89", ODICT) + b"R"


def odict(items: dict[str, bytes]) -> bytes:
    return ODICT + b"(" + b"".join(s(k) + v for k, v in items.items()) + b"u"


def plain_dict(items: dict[str, bytes]) -> bytes:
    return b"}(" + b"".join(s(k) + v for k, v in items.items()) + b"u"


def pkl(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.prod(shape[k + 1 :]) for k in range(len(shape)))


def write_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes], prefix: str = "archive") -> Path:
    """PyTorch's zip layout: ``<prefix>/data.pkl``, ``<prefix>/data/<key>``, byteorder, version."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", data_pkl)
        z.writestr(f"{prefix}/byteorder", "little")
        for key, raw in storages.items():
            z.writestr(f"{prefix}/data/{key}", raw)
        z.writestr(f"{prefix}/version", "3\n")
    return path


def write_legacy(path: Path, main_pkl: bytes, storages: dict[str, bytes], itemsize: int = 4, counts: dict[str, int] | None = None) -> Path:
    """PyTorch's legacy layout: magic, protocol, sys info, the pickle, its storage keys, then each
    storage as a little-endian int64 element count and its bytes."""
    out = io.BytesIO()
    for obj in (weightfile.TORCH_MAGIC, weightfile.TORCH_PROTOCOL, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(obj, out, protocol=2)
    out.write(main_pkl)
    pickle.dump(list(storages), out, protocol=2)
    for key, raw in storages.items():
        out.write(struct.pack("<q", (counts or {}).get(key, len(raw) // itemsize)))
        out.write(raw)
    path.write_bytes(out.getvalue())
    return path


def state_dict_pickle(arrays: dict[str, np.ndarray], legacy: bool = False) -> tuple[bytes, dict[str, bytes]]:
    """An OrderedDict of contiguous float32/int64 tensors, one storage each."""
    kinds = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}
    items, blobs = {}, {}
    for n, (k, a) in enumerate(arrays.items()):
        st = storage(str(n), a.size, kinds[a.dtype], legacy)
        items[k] = tensor(st, 0, a.shape, contiguous(a.shape))
        blobs[str(n)] = a.astype(a.dtype.newbyteorder("<")).tobytes()
    return pkl(odict(items)), blobs


# ---- malicious files ---------------------------------------------------------------------------------


def evil_call(marker: Path) -> bytes:
    """runstring(code, {}): exec of code that writes ``marker`` — a function reachable under numpy."""
    return g("numpy.testing._private.utils", "runstring") + tup(s(f"open({str(marker)!r}, 'w').write('ran')"), b"}") + b"R"


def dotted(marker: Path) -> bytes:
    """Protocol 4's STACK_GLOBAL 'numpy' 'testing._private.utils.os.system': a dotted name that
    resolves to os.system."""

    def short(t: str) -> bytes:
        b = t.encode()
        return b"\x8c" + bytes([len(b)]) + b

    return b"\x80\x04" + short("numpy") + short("testing._private.utils.os.system") + b"\x93" + short(f"touch {marker}") + b"\x85R."


def make_evil(kind: str, tmp: Path) -> tuple[Path, Path, str]:
    """(file, marker, the global the error must name)."""
    marker = tmp / f"{kind}.ran"
    path = tmp / f"{kind}.pth"
    good, blobs = state_dict_pickle({"fc.weight": np.ones((10, 784), np.float32), "fc.bias": np.zeros(10, np.float32)})
    if kind == "zip":
        write_zip(path, pkl(evil_call(marker)), {})
    elif kind == "legacy":
        write_legacy(path, pkl(evil_call(marker)), {})
    elif kind == "bare":
        path.write_bytes(pkl(evil_call(marker)))
    elif kind == "dotted":
        path.write_bytes(dotted(marker))
        return path, marker, "numpy.testing._private.utils.os.system"
    elif kind == "wrapped":  # a checkpoint dict: a real state dict, and the payload beside it
        body = good[2:-1]  # the OrderedDict's opcodes
        write_zip(path, pkl(plain_dict({"epoch": i(3), "model_state_dict": body, "extra": evil_call(marker)})), blobs)
    return path, marker, RUNSTRING


EVIL = ["zip", "legacy", "bare", "dotted", "wrapped"]


def raw_pickle(path: Path) -> bytes:
    """The pickle a malicious file carries (its data.pkl, or the file after the legacy preamble)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return z.read("archive/data.pkl")
    data = path.read_bytes()
    f = io.BytesIO(data)
    if pickle.load(f) == weightfile.TORCH_MAGIC:
        pickle.load(f), pickle.load(f)
        return data[f.tell() :]
    return data


@pytest.mark.parametrize("kind", EVIL)
def test_the_malicious_files_really_run_code(kind, tmp_path):
    """The files are real attacks: an unrestricted unpickler, and tinygrad's torch_load that dlspec
    used before, both run them."""
    path, marker, _ = make_evil(kind, tmp_path)

    class Loose(pickle.Unpickler):  # resolves every global, as an unrestricted loader does (torch's as no-ops)
        def find_class(self, module, name):
            return (lambda *a: None) if module.startswith("torch") else super().find_class(module, name)

        def persistent_load(self, pid):
            return pid

    with contextlib.suppress(Exception):
        Loose(io.BytesIO(raw_pickle(path))).load()
    assert marker.exists()
    marker.unlink()
    from tinygrad.nn.state import torch_load

    with contextlib.suppress(Exception):
        torch_load(str(path))
    assert marker.exists(), "tinygrad's torch_load ran the payload in the issue's measurement"


@pytest.mark.parametrize("kind", EVIL)
def test_malicious_pth_never_runs(kind, tmp_path, net):
    path, marker, name = make_evil(kind, tmp_path)
    before = state(net)
    with pytest.raises(dlspec.BackendError) as e:
        dlspec.load_weights(net, path)
    assert str(e.value) == f"error: {path}: refusing to load '{name}': not a tensor type"
    with pytest.raises(WeightsError, match="refusing to load"):
        weightfile.read(path)
    assert not marker.exists()
    after = state(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def run_main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("spec") / "t.dl"
    p.write_text(SPEC, encoding="utf-8")
    return p


@pytest.mark.parametrize("kind", EVIL)
def test_eval_refuses_malicious_pth(kind, tmp_path, spec_file):
    path, marker, name = make_evil(kind, tmp_path)
    code, out, err = run_main("eval", str(spec_file), "--weights", str(path), "--limit", "20")
    assert code == 1
    assert err.strip() == f"dlspec: error: {path}: refusing to load '{name}': not a tensor type"
    assert out == "" and not marker.exists()


def test_eval_refuses_malicious_pth_before_reading_data(tmp_path):
    # the weights are read whole before the data set: a missing MNIST is not what the user hears of
    spec = tmp_path / "m.dl"
    spec.write_text(SPEC.replace("data shapes", f'data mnist dir "{tmp_path / "none"}"'), encoding="utf-8")
    path, marker, name = make_evil("wrapped", tmp_path)
    code, out, err = run_main("eval", str(spec), "--weights", str(path))
    assert (code, out) == (1, "")
    assert err.strip() == f"dlspec: error: {path}: refusing to load '{name}': not a tensor type"
    assert not marker.exists()


def test_eval_refuses_malicious_pth_in_a_real_process(tmp_path, spec_file):
    path, marker, name = make_evil("wrapped", tmp_path)  # the variant where eval used to print an accuracy
    env = dict(os.environ, NO_COLOR="1")
    r = subprocess.run(
        [sys.executable, "-m", "dlspec", "eval", str(spec_file), "--weights", str(path), "--limit", "20"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [f"dlspec: error: {path}: refusing to load '{name}': not a tensor type"]
    assert r.stdout == "" and not marker.exists()


PAYLOAD = "touch {marker}"


def refused_pickles(marker: Path) -> dict[str, tuple[bytes, str]]:
    """Pickles that try each other route to code: (bytes, what the error says)."""
    cmd = s(PAYLOAD.format(marker=marker))
    return {
        "os.system": (pkl(g("os", "system") + tup(cmd) + b"R"), "refusing to load 'os.system': not a tensor type"),
        "posix.system": (pkl(g("posix", "system") + tup(cmd) + b"R"), "refusing to load 'posix.system'"),
        "builtins.eval (py2 name)": (pkl(g("__builtin__", "eval") + tup(s("1")) + b"R"), "refusing to load 'builtins.eval'"),
        "protocol 0 INST": (b"(S'x'\nios\nsystem\n.", "refusing to build an object (INST)"),
        "OBJ": (b"\x80\x02(" + g("collections", "OrderedDict") + cmd + b"o.", "refusing to build an object (OBJ)"),
        "EXT1": (b"\x80\x02\x82\x01.", "refusing to load an extension-registry global"),
        "NEWOBJ on a stand-in": (
            pkl(g("torch._utils", "_rebuild_tensor_v2") + b")\x81"),
            "refusing to build",
        ),
        "REDUCE on a non-callable": (pkl(g("torch", "FloatStorage") + b")R"), "refusing to call"),
        "BUILD on a list": (pkl(b"]}b"), "refusing to set the state of a list"),
        "APPEND to a dict": (pkl(b"}" + i(1) + b"a"), "refusing to append to a dict"),
        "SETITEM on a list": (pkl(b"]" + i(0) + i(1) + b"s"), "refusing to set an item of a list"),
        "torch.nn module": (
            pkl(g("torch.nn.modules.linear", "Linear") + b")\x81"),
            "refusing to load 'torch.nn.modules.linear.Linear': not a tensor type (a whole pickled model, torch.save(model), "
            "cannot be read without its code: save model.state_dict() instead)",
        ),
        "a dotted torch name": (pkl(g("torch", "_utils._rebuild_tensor_v2")), "refusing to load 'torch._utils._rebuild_tensor_v2'"),
        "a persistent id in a bare pickle": (pkl(tup(s("storage")) + b"Q"), "a plain pickle does not hold"),
    }


@pytest.mark.parametrize("case", list(refused_pickles(Path("m"))))
def test_every_other_route_to_code_is_refused(case, tmp_path):
    marker = tmp_path / "ran"
    data, msg = refused_pickles(marker)[case]
    path = tmp_path / "x.pth"
    path.write_bytes(data)
    if data.startswith(b"\x80"):  # a bare pickle (torch.save writes protocol 2 or later)
        with pytest.raises(WeightsError) as e:
            weightfile.read(path)
        assert str(e.value).startswith(f"error: {path}: ") and msg in str(e.value), str(e.value)
        assert "\n" not in str(e.value)
    # the same pickle as a zip's data.pkl: refused the same way (any protocol)
    write_zip(tmp_path / "z.pth", data, {})
    with pytest.raises(WeightsError) as e:
        weightfile.read(tmp_path / "z.pth")
    if "persistent id" not in case:
        assert msg in str(e.value), str(e.value)
    else:  # the zip reader does take persistent ids, but only a storage's
        assert "unknown persistent id ('storage',)" in str(e.value), str(e.value)
    assert not marker.exists()


def test_stand_ins_are_dlspecs_own():
    """find_class never hands out a real torch/numpy/collections object: every allowed global
    resolves to a function or marker defined in dlspec.weightfile."""
    for (module, name), obj in weightfile.ALLOWED.items():
        assert "." not in name and not module.startswith("numpy"), (module, name)
        owner = obj.__module__ if callable(obj) else type(obj).__module__
        assert owner == "dlspec.weightfile", (module, name, obj)
    assert ("collections", "OrderedDict") in weightfile.ALLOWED and ("torch._utils", "_rebuild_tensor_v2") in weightfile.ALLOWED


# ---- hand-built PyTorch files (no PyTorch needed) ----------------------------------------------------------


WANT = {
    "fc.weight": np.random.default_rng(1).standard_normal((10, 784)).astype(np.float32),
    "fc.bias": np.arange(10, dtype=np.float32) - 4.5,
}


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_hand_built_pth_loads(layout, tmp_path, net):
    data, blobs = state_dict_pickle(WANT, legacy=layout == "legacy")
    path = (write_zip if layout == "zip" else write_legacy)(tmp_path / "m.pth", data, blobs)
    got = weightfile.read(path)
    assert got.kind == "PyTorch" and list(got.tensors) == list(WANT)
    for k in WANT:
        np.testing.assert_array_equal(got.tensors[k], WANT[k], strict=True)
    dlspec.load_weights(net, path)
    after = state(net)
    for k in WANT:
        np.testing.assert_array_equal(after[k], WANT[k], strict=True)


def test_hand_built_views_strides_and_shared_storage(tmp_path):
    """Tensors over one storage: a transposed view, a slice with a storage offset, a stride-0
    expansion, a scalar — as torch.as_strided would see them (NumPy's as_strided is the reference)."""
    base = np.arange(12, dtype=np.float32)
    st = storage("0", 12)
    again = tup(s("storage"), g("torch", "FloatStorage"), s("0"), s("cpu"), i(12)) + b"Q"
    views = {
        "full": (0, (3, 4), (4, 1)),
        "t": (0, (4, 3), (1, 4)),
        "slice": (5, (2, 2), (4, 1)),
        "expand": (3, (2, 3), (0, 1)),
        "scalar": (7, (), ()),
        "empty": (0, (0, 5), (5, 1)),
    }
    items = {k: tensor(st if n == 0 else again, *v) for n, (k, v) in enumerate(views.items())}
    path = write_zip(tmp_path / "v.pth", pkl(odict(items)), {"0": base.tobytes()})
    got = weightfile.read(path).tensors
    for k, (off, size, stride) in views.items():
        want = (
            np.lib.stride_tricks.as_strided(base[off:], size, tuple(4 * x for x in stride))
            if math.prod(size)
            else np.zeros(size, np.float32)
        )
        np.testing.assert_array_equal(got[k], want, strict=True)
        assert got[k].flags.c_contiguous and got[k].flags.writeable


@pytest.mark.parametrize(
    "case,msg",
    [
        ("negative numel", "storage '0' has -3 elements, not a whole number ≥ 0"),
        ("storage larger than the file", "storage '0' declares 1,000,000,000 × float32 = 4,000,000,000 bytes, more than the whole file"),
        ("view past the storage", "a tensor of size (3, 4), stride (4, 1) at offset 1 needs 13 elements of storage '0', which holds 12"),
        ("negative size", "a tensor's size (-1, 4) has a negative entry"),
        ("absurd expanded shape", "too large to expand"),
        ("record size mismatch", "storage '0' is declared as 12 × float32 = 48 bytes, but its record holds 40"),
        ("missing record", "storage '0' has no record archive/data/0 in the archive"),
        ("two declarations", "storage '0' is declared twice: 12 × float32, then 12 × float64"),
        ("not a state dict", "does not hold a state dict of tensors (found epoch (int), w (tensor))"),
        ("unsupported dtype", "a storage of type torch.ComplexFloatStorage, which dlspec cannot read"),
    ],
)
def test_lying_pth_zip(case, msg, tmp_path):
    raw = np.arange(12, dtype=np.float32).tobytes()
    one = {"w": tensor(storage("0", 12), 0, (3, 4), (4, 1))}
    body, blobs = odict(one), {"0": raw}
    if case == "negative numel":
        body = odict({"w": tensor(storage("0", -3), 0, (3, 4), (4, 1))})
    elif case == "storage larger than the file":
        body = odict({"w": tensor(storage("0", 10**9), 0, (3, 4), (4, 1))})
    elif case == "view past the storage":
        body = odict({"w": tensor(storage("0", 12), 1, (3, 4), (4, 1))})
    elif case == "negative size":
        body = odict({"w": tensor(storage("0", 12), 0, (-1, 4), (4, 1))})
    elif case == "absurd expanded shape":
        body = odict({"w": tensor(storage("0", 12), 0, (10**6, 10**6), (0, 0))})
    elif case == "record size mismatch":
        blobs = {"0": raw[:40]}
    elif case == "missing record":
        blobs = {}
    elif case == "two declarations":
        body = odict({"w": tensor(storage("0", 12), 0, (12,), (1,)), "v": tensor(storage("0", 12, "DoubleStorage"), 0, (12,), (1,))})
    elif case == "not a state dict":
        body = plain_dict({"epoch": i(3), "w": one["w"]})
    elif case == "unsupported dtype":
        body = odict({"w": tensor(storage("0", 12, "ComplexFloatStorage"), 0, (12,), (1,))})
    path = write_zip(tmp_path / "x.pth", pkl(body), blobs)
    with pytest.raises(WeightsError) as e:
        weightfile.read(path)
    assert str(e.value).startswith(f"error: {path}: ") and msg in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "case,msg",
    [
        ("count mismatch", "storage '0' is declared as 12 elements, but its data says 11"),
        ("truncated", "truncated PyTorch file: storage '0' needs bytes up to"),
        ("cut in the pickle", "truncated PyTorch file: a pickle in it ends early"),
        ("undeclared key", "its storage list names '9', which no tensor declares"),
    ],
)
def test_lying_pth_legacy(case, msg, tmp_path):
    raw = np.arange(12, dtype=np.float32).tobytes()
    body = pkl(odict({"w": tensor(storage("0", 12, legacy=True), 0, (3, 4), (4, 1))}))
    path = tmp_path / "x.pth"
    if case == "count mismatch":
        write_legacy(path, body, {"0": raw}, counts={"0": 11})
    elif case == "truncated":
        write_legacy(path, body, {"0": raw})
        path.write_bytes(path.read_bytes()[:-5])
    elif case == "cut in the pickle":
        write_legacy(path, body, {"0": raw})
        path.write_bytes(path.read_bytes()[:150])
    elif case == "undeclared key":
        write_legacy(path, body, {"0": raw, "9": raw})
    with pytest.raises(WeightsError) as e:
        weightfile.read(path)
    assert str(e.value).startswith(f"error: {path}: ") and msg in str(e.value), str(e.value)


# ---- safetensors: every lie its own error ------------------------------------------------------------------


def st_bytes(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def e(dtype: str = "F32", shape: list | None = None, offsets: list | None = None) -> dict:
    return {"dtype": dtype, "shape": [2] if shape is None else shape, "data_offsets": [0, 8] if offsets is None else offsets}


LIES = {
    "negative offset": (st_bytes({"a": e(offsets=[-4, 4])}, bytes(8)), "tensor 'a' has data_offsets [-4, 4]: they must be 0 ≤ begin ≤ end"),
    "begin after end": (st_bytes({"a": e(offsets=[8, 0])}, bytes(8)), "tensor 'a' has data_offsets [8, 0]: they must be 0 ≤ begin ≤ end"),
    "overlapping": (
        st_bytes({"a": e(), "b": e(offsets=[4, 12])}, bytes(12)),
        "tensor 'b' (bytes [4, 12) of the data) overlaps tensor 'a' (bytes [0, 8))",
    ),
    "past the end": (
        st_bytes({"a": e(), "b": e(offsets=[100, 108])}, bytes(16)),
        "tensor 'b' lies at bytes [100, 108) of the data, past its end (16 bytes)",
    ),
    "-1 in a shape": (st_bytes({"a": e(shape=[-1])}, bytes(8)), "tensor 'a' has shape [-1]: a shape is a list of whole numbers ≥ 0"),
    "a bool in a shape": (st_bytes({"a": e(shape=[True, 2])}, bytes(8)), "tensor 'a' has shape [True, 2]"),
    "dtype and bytes disagree": (
        st_bytes({"a": e(dtype="F64")}, bytes(8)),
        "tensor 'a' is F64 [2]: 16 bytes, but its data_offsets [0, 8] span 8 bytes",
    ),
    "shape and bytes disagree": (
        st_bytes({"a": e(shape=[3])}, bytes(8)),
        "tensor 'a' is F32 [3]: 12 bytes, but its data_offsets [0, 8] span 8 bytes",
    ),
    "a hole": (
        st_bytes({"a": e(), "b": e(offsets=[12, 20])}, bytes(20)),
        "bytes [8, 12) of the data belong to no tensor (after tensor 'a'; the next is 'b')",
    ),
    "a hole first": (
        st_bytes({"a": e(offsets=[4, 12])}, bytes(12)),
        "bytes [0, 4) of the data belong to no tensor (before the first tensor",
    ),
    "bytes after the last tensor": (st_bytes({"a": e()}, bytes(12)), "4 bytes after the last tensor's data belong to no tensor"),
    "truncated data": (st_bytes({"a": e(), "b": e(offsets=[8, 16])}, bytes(12)), "truncated safetensors file: its header needs 16 bytes"),
    "truncated header": (st_bytes(json.dumps({"a": e()}).encode()[:10], length=40), "truncated safetensors file: its header is 40 bytes"),
    "truncated length": (b"\x10\x00\x00", "truncated safetensors file (3 bytes: not even the 8-byte header length)"),
    "bad JSON": (st_bytes(b'{"a": {"dtype": "F32",', bytes(8)), "its header is not valid JSON"),
    "duplicate keys": (
        st_bytes(b'{"a": ' + json.dumps(F32x2).encode() + b', "a": ' + json.dumps(F32x2).encode() + b"}", bytes(8)),
        "key 'a' appears twice",
    ),
    "NaN in the header": (st_bytes(b'{"__metadata__": {"x": NaN}}'), "its header holds NaN, which is not JSON"),
    "not an object": (st_bytes(b"[1, 2]"), "its header does not start with '{'"),
    "metadata not strings": (
        st_bytes({"__metadata__": {"epoch": 3}, "a": e()}, bytes(8)),
        "__metadata__ must map strings to strings, but 'epoch' is 3 (int)",
    ),
    "unknown dtype": (st_bytes({"a": e(dtype="F33")}, bytes(8)), "tensor 'a' has unknown dtype F33"),
    "unsupported dtype": (
        st_bytes({"a": e(dtype="F8_E4M3", offsets=[0, 2])}, bytes(2)),
        "tensor 'a' has dtype F8_E4M3, which dlspec cannot read",
    ),
    "offsets not two numbers": (
        st_bytes({"a": e(offsets=[0, 4, 8])}, bytes(8)),
        "tensor 'a' has data_offsets [0, 4, 8]: they are two whole numbers",
    ),
    "no shape": (st_bytes({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, bytes(8)), "tensor 'a' has no shape"),
    "entry not an object": (st_bytes({"a": 5}), "tensor 'a' is 5, not an object"),
    "huge header length": (st_bytes(b"{}", length=200_000_000), "its header length 200,000,000 bytes is over the limit of 100,000,000"),
}


def reference_rejects(raw: bytes, tmp: Path) -> bool:
    """Does the safetensors reference implementation refuse the file's header (``safe_open``
    validates it completely, as dlspec does, before any tensor is read)?"""
    from safetensors import safe_open

    p = tmp / "ref.safetensors"
    p.write_bytes(raw)
    try:
        with safe_open(p, "np") as f:
            list(f.keys())
    except Exception:  # noqa: BLE001 - any refusal
        return True
    return False


@pytest.mark.parametrize("case", list(LIES))
def test_safetensors_lies(case, tmp_path, net):
    raw, msg = LIES[case]
    path = tmp_path / "x.safetensors"
    path.write_bytes(raw)
    # the reference implementation refuses each of these too, except a duplicate key (its JSON
    # parser keeps the last one: dlspec refuses an ambiguous header) and F8 (a valid dtype NumPy lacks)
    assert reference_rejects(raw, tmp_path) == (case not in ("duplicate keys", "unsupported dtype"))
    with pytest.raises(WeightsError) as err:
        weightfile.read(path)
    text = str(err.value)
    assert text.startswith(f"error: {path}: ") and msg in text and "\n" not in text, text
    assert ("truncated safetensors file" in text) == case.startswith("truncated")
    with pytest.raises(TrainError) as err2:  # the checkpoint path: the same validation, the same words
        check_safetensors(path)
    assert msg in str(err2.value)
    before = state(net)
    with pytest.raises(dlspec.BackendError):
        dlspec.load_weights(net, path)
    after = state(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_truncated_real_file_is_called_truncated(tmp_path, net):
    """A file cut anywhere (the last tensor, its header, its length) is a truncated safetensors file
    (not 'not a readable PyTorch file'), whatever the name."""
    net.save(tmp_path / "w.safetensors")
    raw = (tmp_path / "w.safetensors").read_bytes()
    for cut in (len(raw) - 1, len(raw) // 2, 40, 8):
        p = tmp_path / f"cut{cut}.bin"
        p.write_bytes(raw[:cut])
        with pytest.raises(WeightsError, match=rf"^error: {p}: truncated safetensors file"):
            weightfile.read(p)
    assert reference_rejects(raw[: len(raw) - 1], tmp_path)


def bf16_bits(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def test_safetensors_every_dtype_as_the_reference_reads_it(tmp_path):
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f16": rng.standard_normal(5).astype(np.float16),
        "f64": rng.standard_normal((2, 2)),
        "i64": np.array([-(2**40), 7], np.int64),
        "i32": np.array([[1, -2]], np.int32),
        "i16": np.array([-3], np.int16),
        "i8": np.array([-4, 5], np.int8),
        "u8": np.array([0, 255], np.uint8),
        "u16": np.array([65535], np.uint16),
        "u32": np.array([2**32 - 1], np.uint32),
        "u64": np.array([2**64 - 1], np.uint64),
        "bool": np.array([True, False, True]),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }
    save_file(arrays, tmp_path / "all.safetensors", metadata={"epoch": "3"})
    ref = load_file(tmp_path / "all.safetensors")
    got = weightfile.read(tmp_path / "all.safetensors")
    assert got.kind == "safetensors" and got.metadata == {"epoch": "3"} and set(got.tensors) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(got.tensors[k], ref[k], strict=True)
    # bfloat16 (NumPy has none: written by hand) is widened exactly to float32
    vals = np.array([1.0, -2.5, 3.140625, 1e-3, -0.0, np.inf], np.float32)
    vals = (bf16_bits(vals).astype(np.uint32) << 16).view(np.float32)  # exactly representable in bfloat16
    raw = bf16_bits(vals).astype("<u2").tobytes()
    (tmp_path / "bf.safetensors").write_bytes(st_bytes({"b": {"dtype": "BF16", "shape": [6], "data_offsets": [0, 12]}}, raw))
    np.testing.assert_array_equal(weightfile.read(tmp_path / "bf.safetensors").tensors["b"], vals, strict=True)


def test_float64_file_loads_cast_to_the_model(tmp_path, net):
    from safetensors.numpy import save_file

    w = np.random.default_rng(3).standard_normal((10, 784))
    save_file({"fc.weight": w, "fc.bias": np.arange(10.0)}, tmp_path / "f64.safetensors")
    dlspec.load_weights(net, tmp_path / "f64.safetensors")
    np.testing.assert_array_equal(state(net)["fc.weight"], w.astype(np.float32), strict=True)


def test_short_and_unknown_files(tmp_path):
    cases = {
        "empty.pth": (b"", "not a readable PyTorch or safetensors weights file: the file is empty"),
        "short.pth": (b"abc", "not a readable PyTorch or safetensors weights file (3 bytes starting b'abc'"),
        "junk.bin": (b"not a checkpoint", "neither a zip archive or a pickle (torch.save) nor an 8-byte length and a JSON header"),
        "short.safetensors": (b"abc", "truncated safetensors file (3 bytes"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError) as err:
            weightfile.read(tmp_path / name)
        assert msg in str(err.value) and str(tmp_path / name) in str(err.value), str(err.value)
    with pytest.raises(dlspec.UsageError, match="no such weights file"):
        weightfile.read(tmp_path / "none.pth")


# ---- real torch.save files (where PyTorch is installed) --------------------------------------------------------


def torch_reference(torch, path: Path) -> dict[str, np.ndarray]:
    sd = torch.load(path, weights_only=True)
    sd = sd.get("model_state_dict", sd)
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).detach().resolve_neg().numpy() for k, v in sd.items()}


@pytest.mark.parametrize("legacy", [False, True])
def test_real_torch_files_load_as_torch_reads_them(legacy, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    base = torch.randn(3, 4)
    sd = collections.OrderedDict(
        f32=base,
        transposed=base.T,
        sliced=base[1:, 1:3],  # a storage offset and a non-contiguous view of the same storage
        shared=base.view(12)[2:8],  # a third tensor sharing the storage
        f16=torch.randn(2, 3).half(),
        bf16=torch.randn(5, dtype=torch.bfloat16),
        f64=torch.randn(3, dtype=torch.float64),
        i64=torch.tensor(7),
        i32=torch.tensor([1, -2], dtype=torch.int32),
        u8=torch.tensor([0, 255], dtype=torch.uint8),
        b=torch.tensor([True, False]),
        expanded=torch.randn(1).expand(4),
        empty=torch.zeros(0, 3),
        param=torch.nn.Parameter(torch.ones(2)),
        neg=torch.randn(3)._neg_view(),
    )
    path = tmp_path / "real.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    want = torch_reference(torch, path)
    got = weightfile.read(path).tensors
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], strict=True)
    # a checkpoint dict with an optimizer's state beside the model: the model's part loads
    m = torch.nn.Linear(784, 10)
    opt = torch.optim.Adam(m.parameters())
    m(torch.randn(2, 784)).sum().backward()
    opt.step()
    ckpt = {"epoch": 3, "model_state_dict": {"fc." + k: v for k, v in m.state_dict().items()}, "optimizer": opt.state_dict()}
    torch.save(ckpt, tmp_path / "ckpt.pth", _use_new_zipfile_serialization=not legacy)
    got = weightfile.read(tmp_path / "ckpt.pth").tensors
    want = torch_reference(torch, tmp_path / "ckpt.pth")
    assert list(got) == ["fc.weight", "fc.bias"]
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], strict=True)


def test_real_torch_whole_model_and_hand_built_files(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(torch.nn.Linear(2, 3), tmp_path / "whole.pth")
    with pytest.raises(WeightsError, match=r"refusing to load 'torch\.nn\.modules\.linear\.Linear'.*save model\.state_dict\(\) instead"):
        weightfile.read(tmp_path / "whole.pth")
    # PyTorch reads the hand-built files of the tests above as dlspec does
    for layout, write in (("zip", write_zip), ("legacy", write_legacy)):
        data, blobs = state_dict_pickle(WANT, legacy=layout == "legacy")
        path = write(tmp_path / f"{layout}.pth", data, blobs)
        back = torch.load(path, weights_only=True)
        for k in WANT:
            np.testing.assert_array_equal(back[k].numpy(), WANT[k], strict=True)


def test_damaged_files_give_one_line_errors(tmp_path):
    """A seeded campaign of byte flips, cuts and insertions on valid files of each format: every
    result is a loaded state dict or one DlspecError line naming the file — never another exception."""
    import random

    data, blobs = state_dict_pickle(WANT)
    sources = [
        write_zip(tmp_path / "z.pth", data, blobs).read_bytes(),
        write_legacy(tmp_path / "l.pth", *state_dict_pickle(WANT, legacy=True)).read_bytes(),
        data,  # a bare pickle of tensors without their storages
    ]
    from safetensors.numpy import save_file

    save_file(WANT, tmp_path / "s.safetensors")
    sources.append((tmp_path / "s.safetensors").read_bytes()[:2000])  # header and the first tensor's start
    rng = random.Random(12)
    path = tmp_path / "fz.pth"
    for _ in range(400):
        b = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(len(b))
            op = rng.random()
            if op < 0.5:
                b[k] = rng.randrange(256)
            elif op < 0.75:
                del b[k : k + rng.randint(1, 40)]
            else:
                b[k:k] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        path.write_bytes(bytes(b))
        try:
            weightfile.read(path)
        except dlspec.DlspecError as err:
            assert str(err).startswith(f"error: {path}: ") and "\n" not in str(err), str(err)
