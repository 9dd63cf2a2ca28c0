"""``dlspec export`` and ``Program.export``: both targets from the command line, with the seeded
init or a weights file (a run's checkpoint included), fixed or dynamic axes, and bad input —
an unknown target, an unwritable output, weights that do not fit — as one clear line with
exit code 1 or 2 and no output file left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import dlspec
from dlspec import state

ROOT = Path(__file__).resolve().parents[1]

SEQ = """
model Tagger {
  input tokens: [T] int vocab 20
  embedding 8
  gru 6
  dense 3
}
"""


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlspec", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_export_onnx_with_the_seeded_init(tmp_path):
    out = tmp_path / "lenet.onnx"
    r = cli("export", "specs/lenet5.dl", "--to", "onnx", "-o", str(out), "--seed", "4")
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == f"wrote {out}"
    m = onnx.load(out)
    onnx.checker.check_model(m, full_check=True)
    prog = dlspec.load(ROOT / "specs/lenet5.dl")
    init = state.initial(prog.ir(), prog.shapes(), seed=4)
    got = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    for k, v in init.items():
        if k.endswith("num_batches_tracked"):
            continue
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    # the batch axis is dynamic, named N
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [1, 28, 28]


def test_export_pytorch_with_run_weights_loads_strictly(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    prog = dlspec.load(ROOT / "specs/mlp.dl")
    net = prog.build(seed=7)
    w = tmp_path / "w.safetensors"
    net.save(w)
    out = tmp_path / "mlp.py"
    r = cli("export", "specs/mlp.dl", "--to", "pytorch", "-o", str(out), "--weights", str(w))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.py", "mlp.safetensors", "w.safetensors"]
    ns: dict = {}
    exec(compile(out.read_text(), str(out), "exec"), ns)
    model = ns["MLP"]()
    model.load_state_dict(load_file(tmp_path / "mlp.safetensors"), strict=True)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    from tinygrad import Tensor

    want = net.eval()(Tensor(x)).numpy()
    with torch.no_grad():
        got = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fixed_axes_and_the_api(tmp_path):
    prog = dlspec.load(SEQ)
    dyn = prog.export("Tagger", "onnx", tmp_path / "dyn.onnx")
    fixed = prog.export("Tagger", "onnx", tmp_path / "fixed.onnx", fixed={"N": 1, "T": 5})
    assert dyn == tmp_path / "dyn.onnx" and fixed.exists()

    def dims(p):
        d = onnx.load(p).graph.input[0].type.tensor_type.shape.dim
        return [x.dim_param or x.dim_value for x in d]

    assert dims(dyn) == ["N", "T"] and dims(fixed) == [1, 5]
    sess = ort.InferenceSession(str(tmp_path / "fixed.onnx"), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"tokens": np.arange(5, dtype=np.int64).reshape(1, 5)})
    assert y.shape == (1, 5, 3)
    with pytest.raises(dlspec.UsageError, match=r"Tagger has no symbolic size X \(its symbolic sizes: N, T\)"):
        prog.export("Tagger", "onnx", tmp_path / "x.onnx", fixed={"X": 3})


def test_unknown_target_is_a_usage_error(tmp_path):
    r = cli("export", "specs/mlp.dl", "--to", "onxx", "-o", str(tmp_path / "m.onnx"))
    assert r.returncode == 2
    assert (
        r.stderr.strip().splitlines()[-1] == "dlspec: error: unknown export target 'onxx' — did you mean 'onnx'? (targets: onnx, pytorch)"
    )
    assert not list(tmp_path.iterdir())


def test_unwritable_output_leaves_nothing(tmp_path):
    missing = tmp_path / "no" / "such" / "m.onnx"
    r = cli("export", "specs/mlp.dl", "--to", "onnx", "-o", str(missing))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"dlspec: error: {missing}: cannot write ONNX model")
    assert not (tmp_path / "no").exists()
    r = cli("export", "specs/mlp.dl", "--to", "onnx", "-o", str(tmp_path))
    assert r.returncode == 2 and "is a directory" in r.stderr
    assert not list(tmp_path.iterdir())


def test_weights_that_do_not_fit_leave_nothing(tmp_path):
    other = dlspec.load(ROOT / "specs/lenet5.dl").build()
    w = tmp_path / "lenet.safetensors"
    other.save(w)
    for target, name in (("onnx", "m.onnx"), ("pytorch", "m.py")):
        r = cli("export", "specs/mlp.dl", "--to", target, "-o", str(tmp_path / name), "--weights", str(w))
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert f"{w}: weights do not fit model MLP; nothing was loaded" in r.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.safetensors"]
