"""The tinygrad backend as a whole: state-dict names and PyTorch layouts, shared and tied
weights, seeded determinism, PyTorch's default initialisation, train/eval phases, compiled
steps, dtypes, devices, ``dlspec compile --verify``, and weights files (safetensors, name
maps, PyTorch ``.pth`` without PyTorch)."""

from __future__ import annotations

import collections
import pickle
import sys
import types
import zipfile
from functools import cache

import numpy as np
import pytest
from backend_ref import build, close, mha
from conftest import ROOT, run_dlspec
from tinygrad import Tensor

import dlspec
from dlspec.backends.tinygrad import verify

# ---- names and layouts (no kernels run) ---------------------------------------------------------------


def shapes_of(net) -> dict[str, tuple[int, ...]]:
    return {k: tuple(t.shape) for k, t in net.state_dict().items()}


def test_resnet18_keys_are_layer_paths():
    net = dlspec.load(ROOT / "specs/resnet18.dl").build("ResNet18", device="CPU")
    sd = shapes_of(net)
    assert sd["conv1.weight"] == (64, 3, 7, 7)
    assert sd["layer1.0.conv1.weight"] == (64, 64, 3, 3)
    assert sd["layer2.0.conv1.weight"] == (128, 64, 3, 3)
    assert sd["layer2.0.shortcut.conv1.weight"] == (128, 64, 1, 1)
    assert sd["layer4.1.batchnorm2.running_var"] == (512,)
    assert sd["layer4.1.batchnorm2.num_batches_tracked"] == ()
    assert not any("layer1.0.shortcut" in k for k in sd)  # identity shortcut: no weights
    dense = [k for k, s in sd.items() if s == (1000, 512)]
    assert len(dense) == 1 and sd[dense[0].replace("weight", "bias")] == (1000,)
    static = sum(c.params for c in net.shapes.costs.values())
    assert net.num_params()[0] == static == 11_689_512  # torchvision's resnet18
    assert verify(net, run=False) == []


LAYOUTS = """
model Layouts {
  input image: [4, 5, 7]
  input seq: [3, 6]
  input tokens: [3] int vocab 50
  image -> conv 8 kernel 3 groups 2 as conv -> batchnorm as bn -> relu -> pool global avg -> flatten -> dense 64 as fc
  seq -> lstm 16 layers 2 bidirectional as lstm
  seq -> gru 5 as gru
  seq -> attention 2 as att
  seq -> layernorm as ln
  image -> groupnorm 2 as gn
  image -> deconv 6 kernel 3 as up
  tokens -> embedding 40 as emb
  image -> prelu per_channel as act
}
"""


@cache
def layouts():
    return build(LAYOUTS)


def test_pytorch_layouts():
    sd = shapes_of(layouts())
    want = {
        "conv.weight": (8, 2, 3, 3),
        "conv.bias": (8,),
        "bn.weight": (8,),
        "bn.bias": (8,),
        "bn.running_mean": (8,),
        "bn.running_var": (8,),
        "bn.num_batches_tracked": (),
        "fc.weight": (64, 8),
        "fc.bias": (64,),
        "lstm.weight_ih_l0": (64, 6),
        "lstm.weight_hh_l0": (64, 16),
        "lstm.bias_ih_l0": (64,),
        "lstm.bias_hh_l0": (64,),
        "lstm.weight_ih_l0_reverse": (64, 6),
        "lstm.weight_ih_l1": (64, 32),
        "lstm.bias_hh_l1_reverse": (64,),
        "gru.weight_ih_l0": (15, 6),
        "gru.bias_hh_l0": (15,),
        "att.in_proj_weight": (18, 6),
        "att.in_proj_bias": (18,),
        "att.out_proj.weight": (6, 6),
        "att.out_proj.bias": (6,),
        "ln.weight": (6,),
        "ln.bias": (6,),
        "gn.weight": (4,),
        "gn.bias": (4,),
        "up.weight": (4, 6, 3, 3),
        "up.bias": (6,),
        "emb.weight": (50, 40),
        "act.weight": (4,),
    }
    for k, s in want.items():
        assert sd.get(k) == s, (k, sd.get(k), s)
    assert len([k for k in sd if k.startswith("lstm.")]) == 16
    net = layouts()
    assert net.num_params() == (
        sum(c.params for c in net.shapes.costs.values()),
        sum(c.buffers for c in net.shapes.costs.values()),
    )


def test_pytorch_default_init_statistics():
    sd = {k: t.numpy() for k, t in layouts().state_dict().items()}
    for key, fan_in in (("fc.weight", 8), ("fc.bias", 8), ("conv.weight", 18), ("conv.bias", 18), ("up.weight", 54)):
        bound = 1 / np.sqrt(fan_in)
        w = sd[key]
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound, key
    w = sd["fc.weight"]  # 512 draws of U(-b, b): std b/√3
    assert abs(w.std() - (1 / np.sqrt(8)) / np.sqrt(3)) < 0.02
    assert np.all(sd["bn.weight"] == 1) and np.all(sd["bn.bias"] == 0)
    assert np.all(sd["bn.running_mean"] == 0) and np.all(sd["bn.running_var"] == 1) and sd["bn.num_batches_tracked"] == 0
    assert np.all(sd["ln.weight"] == 1) and np.all(sd["ln.bias"] == 0) and np.all(sd["gn.weight"] == 1)
    e = sd["emb.weight"]  # N(0, 1)
    assert abs(e.mean()) < 0.08 and abs(e.std() - 1) < 0.06
    for k in (k for k in sd if k.startswith("lstm.")):
        assert np.abs(sd[k]).max() <= 0.25  # U(±1/√16)
    bound = np.sqrt(6 / (6 + 18))  # xavier_uniform on (3D, D)
    assert np.abs(sd["att.in_proj_weight"]).max() <= bound
    assert np.all(sd["att.in_proj_bias"] == 0) and np.all(sd["att.out_proj.bias"] == 0)
    assert np.all(sd["act.weight"] == 0.25)


SIAMESE = """
block Tower {
  conv 2 kernel 3 -> relu -> flatten -> dense 3
}
model Siamese {
  input left: [1, 5, 7]
  input right: [1, 5, 7]
  tower = Tower()
  d = abs(tower(left) - tower(right))
  output same = d -> dense 1 as head -> sigmoid
}
"""


def test_shared_weights_one_set_of_keys():
    net = build(SIAMESE)
    keys = set(net.state_dict())
    assert keys == {"tower.conv1.weight", "tower.conv1.bias", "tower.dense1.weight", "tower.dense1.bias", "head.weight", "head.bias"}
    assert net.num_params()[0] == sum(c.params for c in net.shapes.costs.values())
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 7)).astype(np.float32)
    y = net(Tensor(x), Tensor(x)).numpy()  # same tower on both: d = 0
    b = net.state_dict()["head.bias"].numpy()
    close(y, np.broadcast_to(1 / (1 + np.exp(-b)), (2, 1)), "both inputs through one tower")


TINY_GPT = """
block Block(d, heads) {
  residual { layernorm -> attention heads causal }
  residual { layernorm -> dense (4 * d) -> gelu tanh -> dense d }
}
model TinyGPT(vocab = 11, context = 4, d = 6, heads = 2) {
  input tokens: [T] int vocab vocab
  embedding d as wte
  posembed context as wpe
  repeat 1 as h { Block(d, heads) }
  layernorm as ln_f
  dense vocab tied wte, bias false as lm_head
}
"""


def test_tied_output_uses_the_embedding_tensor():
    net = build(TINY_GPT)
    sd = net.state_dict()
    assert not any(k.startswith("lm_head") for k in sd)
    assert net.num_params()[0] == sum(c.params for c in net.shapes.costs.values())
    tokens = Tensor(np.array([[1, 4, 10], [0, 0, 7]], np.int32))
    vals = net.trace(tokens)
    h, out = vals["ln_f"].numpy(), vals["lm_head"].numpy()
    close(out, h @ sd["wte.weight"].numpy().T, "head = ln_f · wteᵀ")
    new = np.random.default_rng(3).standard_normal((11, 6)).astype(np.float32)
    sd["wte.weight"].assign(Tensor(new)).realize()
    vals = net.trace(tokens)
    out2 = vals["lm_head"].numpy()
    assert not np.allclose(out2, out)
    close(out2, vals["ln_f"].numpy() @ new.T, "the head follows the embedding")
    # the free length T: verify picks one the positional embedding can encode (4, not 8)
    assert verify(net, run=False) == []
    with pytest.raises(dlspec.UsageError, match="posembed encodes at most 4 positions but the sequence has 6"):
        net(Tensor.zeros(2, 6, dtype="int32"))


# ---- determinism, phases, compiled steps, dtypes, devices ------------------------------------------

SMALL = """
model Small {
  input x: [3, 5, 7]
  conv 4 kernel 3 as conv1 -> batchnorm as bn1 -> relu
  pool global avg -> flatten -> dropout 0.5
  dense 2 as fc
}
"""
X = np.random.default_rng(7).standard_normal((2, 3, 5, 7)).astype(np.float32)


def test_seeded_builds_are_deterministic():
    a, b, c = build(SMALL, seed=0), build(SMALL, seed=0), build(SMALL, seed=1)
    sa, sb, sc = ({k: t.numpy() for k, t in n.state_dict().items()} for n in (a, b, c))
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not np.array_equal(sa["conv1.weight"], sc["conv1.weight"])
    assert np.array_equal(a(Tensor(X)).numpy(), b(Tensor(X)).numpy())
    # dropout masks are seeded too
    assert np.array_equal(build(SMALL, seed=0)(Tensor(X), train=True).numpy(), build(SMALL, seed=0)(Tensor(X), train=True).numpy())


def test_train_and_eval_phases():
    net = build("model D {\n  input x: [40]\n  output d = x -> dropout 0.5\n  output b = x -> batchnorm\n}")
    x = np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32) * 3 + 1
    assert not net.training
    d, b = (o.numpy() for o in net(Tensor(x)))
    assert np.array_equal(d, x)  # eval: dropout is the identity
    close(b, x / np.sqrt(1 + 1e-5), "eval: running statistics (0, 1)")
    d, b = (o.numpy() for o in net(Tensor(x), train=True))
    assert 0.3 < (d == 0).mean() < 0.7 and np.allclose(d[d != 0], 2 * x[d != 0])
    close(b.mean(0), np.zeros(40), "train: batch statistics", atol=1e-5)
    assert net.train() is net and net.training
    d, _ = (o.numpy() for o in net(Tensor(x)))
    assert (d == 0).any()
    d, _ = (o.numpy() for o in net(Tensor(x), train=False))  # per call beats the default
    assert np.array_equal(d, x)
    net.eval()
    assert not net.training and np.array_equal(net(Tensor(x))[0].numpy(), x)
    rm = net.state_dict()["b.running_mean"].numpy()  # two training calls moved it
    close(rm, 0.19 * x.mean(0), "running mean after two train steps", atol=1e-5)


def test_compiled_matches_eager_and_rebuilds_per_batch_size():
    net = build("model J {\n  input x: [5]\n  dense 3 -> relu -> dense 2\n}")
    step = net.compiled()
    rng = np.random.default_rng(0)
    for batch in (4, 2, 4, 2, 4):  # replays included; every batch size has its own compiled step
        x = rng.standard_normal((batch, 5)).astype(np.float32)
        got = step(Tensor(x)).numpy()
        assert got.shape == (batch, 2)
        close(got, net(Tensor(x)).numpy(), f"compiled batch {batch}", atol=1e-6)
    assert len(net._meta.value["jits"]) == 2


def test_compiled_outputs_are_its_own_and_follow_the_phase():
    net = build("model K {\n  input x: [4]\n  dense 4 -> batchnorm -> dropout 0.5\n}")
    step = net.compiled()
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(4)]
    kept = [step(Tensor(x)) for x in xs]  # a later call must not overwrite an earlier result
    for x, y in zip(xs, kept):
        close(y.numpy(), net(Tensor(x)).numpy(), "kept output", atol=1e-6)
    # training phase, from the net's own mode: batch-norm statistics move on every call
    sd = net.state_dict()
    net.train()
    for x in xs:
        step(Tensor(x))
    assert int(sd["batchnorm1.num_batches_tracked"].numpy()) == 4
    want = np.zeros(4)
    w, b = sd["dense1.weight"].numpy().astype(np.float64), sd["dense1.bias"].numpy().astype(np.float64)
    for x in xs:  # running_mean ← 0.9·running_mean + 0.1·batch mean, as torch.nn.BatchNorm1d
        want = 0.9 * want + 0.1 * (x @ w.T + b).mean(0)
    close(sd["batchnorm1.running_mean"].numpy(), want, "running mean after 4 compiled training calls", atol=1e-5)
    assert len([k for k in net._meta.value["jits"] if k[0]]) == 1  # one training step, replayed


def test_phase_follows_tinygrads_context_unless_the_net_sets_one():
    from tinygrad import Context

    net = build("model P {\n  input x: [200]\n  dropout 0.5\n}")
    x = Tensor(np.ones((2, 200), np.float32))
    assert (net(x).numpy() == 1).all()  # evaluation by default (TRAINING is 0)
    with Context(TRAINING=1):
        assert net.training and (net(x).numpy() == 0).any()
        net.eval()
        assert (net(x).numpy() == 1).all()  # the net's own phase wins over the context
    net.train(None)
    with net.phase(True):
        assert (net(x).numpy() == 0).any()
    assert not net.training


def test_compiled_notices_weights_replaced_by_tinygrad():
    from tinygrad.nn.state import load_state_dict

    net = build("model L {\n  input x: [3]\n  dense 2\n}")
    step = net.compiled()
    x = Tensor(np.ones((1, 3), np.float32))
    for _ in range(3):  # captured and replayed
        step(x)
    load_state_dict(net, {"dense1.weight": Tensor(np.full((2, 3), 2, np.float32)), "dense1.bias": Tensor([1.0, -1.0])}, verbose=False)
    assert step(x).numpy().tolist() == [[7.0, 5.0]]  # 2+2+2+1, 2+2+2−1


def test_compiled_recurrent_matches_eager():
    """Recurrent layers run their steps eagerly (dlspec.backends.tinygrad.scan); a compiled step that
    records and replays them must still give the eager numbers."""
    net = build("model R {\n  input x: [3, 4]\n  lstm 3 bidirectional -> layernorm\n}")
    step = net.compiled()
    rng = np.random.default_rng(0)
    for batch in (4, 2, 4, 4):
        x = rng.standard_normal((batch, 3, 4)).astype(np.float32)
        close(step(Tensor(x)).numpy(), net(Tensor(x)).numpy(), f"compiled lstm, batch {batch}", atol=1e-6)


def test_float16_build():
    net = dlspec.load("model H {\n  input x: [5]\n  dense 3 -> relu -> dense 2\n}").build(device="CPU", seed=0, dtype="float16")
    ref = build("model H {\n  input x: [5]\n  dense 3 -> relu -> dense 2\n}")
    assert all(t.dtype.name == "half" for t in net.state_dict().values())
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    y = net(Tensor(x))
    assert y.dtype.name == "half"
    close(y.numpy(), ref(Tensor(x)).numpy(), "float16 vs float32", rtol=1e-2, atol=1e-2)
    with pytest.raises(dlspec.UsageError, match="dtype"):
        dlspec.load("model H {\n  input x: [5]\n  dense 3\n}").build(dtype="int8")


def test_unavailable_device_lists_the_available_ones():
    with pytest.raises(dlspec.UsageError, match=r"device 'NOSUCHDEVICE' is not available here; available: .*CPU"):
        dlspec.load("model H {\n  input x: [5]\n  dense 3\n}").build(device="NOSUCHDEVICE")


def test_wrong_input_shape_is_a_usage_error():
    net = build(SMALL)
    with pytest.raises(dlspec.UsageError, match="dim 2: 4"):
        net(Tensor.empty(2, 3, 4, 7))
    with pytest.raises(dlspec.UsageError, match="no input 'y'"):
        net(y=Tensor.empty(2, 3, 5, 7))
    ids = build("model E {\n  input t: [3] int vocab 5\n  embedding 2\n}")
    with pytest.raises(dlspec.UsageError, match=r"input 't' takes integer ids \(int64\), got a float tensor"):
        ids(Tensor([[1.5, 2.0, 3.0]]))
    assert ids(Tensor([[1, 2, 3]])).shape == (1, 3, 2)


# ---- dlspec compile --verify ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["mlp.dl", "dqn.dl", "linear_autoencoder.dl"])
def test_compile_verify_cli(spec):
    r = run_dlspec("compile", f"specs/{spec}", "--verify", "--device", "CPU")
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stdout and "match the static report" in r.stdout


def test_verify_models_with_bool_inputs_and_a_bad_dev_variable(tmp_path):
    spec = "model A {\n  input x: [T, 8]\n  input m: [T, T] dtype bool\n  x -> attention 2 mask m as att\n}\n"
    net = dlspec.load(spec).build(device="NULL")
    assert verify(net) == []
    with pytest.raises(dlspec.UsageError, match=r"input 'm' is a bool mask \(True = attend/keep\), got a float tensor"):
        net(Tensor.ones(1, 3, 8), Tensor.zeros(1, 3, 3))
    (tmp_path / "a.dl").write_text(spec)
    r = run_dlspec("compile", str(tmp_path / "a.dl"), "--verify", env={"DEV": "FOO"})
    assert r.returncode == 2, r.stderr
    assert "dlspec: error: tinygrad's device setting DEV='FOO' is not available here; available: " in r.stderr


def test_compiled_notices_a_layer_tensor_replaced_by_assignment():
    net = build("model L {\n  input x: [3]\n  dense 2 as fc\n}")
    step = net.compiled()
    x = Tensor(np.ones((1, 3), np.float32))
    for _ in range(3):
        step(x)
    net.fc.weight = Tensor(np.full((2, 3), 2, np.float32))  # PyTorch's habit: a new Parameter
    close(step(x).numpy(), net(x).numpy(), "after replacing fc.weight")
    with pytest.raises(dlspec.UsageError, match=r"net.compiled\(train=True\)"):
        step(x, train=True)


def test_a_dtype_the_device_cannot_run_is_one_clear_line():
    """bfloat16 on a CPU whose clang lacks ``__bf16`` (clang 14 here): a usage error of one line,
    none of the compiler's own output; where the compiler takes it, the model verifies."""
    r = run_dlspec("compile", "specs/mlp.dl", "--verify", "--device", "CPU", "--dtype", "bfloat16")
    if r.returncode == 0:
        assert "verified" in r.stdout
    else:
        assert r.returncode == 2
        assert (
            r.stderr.strip()
            == "dlspec: error: device CPU cannot run bfloat16 kernels here (its compiler rejects them); use float32 or float16"
        )


def test_verify_reports_a_broken_lowering(monkeypatch):
    from dlspec.backends.tinygrad.layers import TRANSFORMS

    net_ok = build(SMALL)
    assert verify(net_ok, run=False) == []
    monkeypatch.setitem(TRANSFORMS, "flatten", lambda node, p, ins, out, low: lambda x: x.reshape(x.shape[0], 2, -1))
    with pytest.raises(Exception):  # noqa: B017 - the dense after it cannot take the wrong shape
        verify(build(SMALL), run=False)
    monkeypatch.setitem(TRANSFORMS, "flatten", lambda node, p, ins, out, low: lambda x: x)
    problems = verify(build("model F {\n  input x: [3, 5]\n  flatten\n}"), run=False)
    assert problems and "flatten1: runtime shape (2, 3, 5) but static (2, 15)" in problems[0]


def test_compile_verify_cli_broken(tmp_path):
    spec = tmp_path / "f.dl"
    spec.write_text("model F {\n  input x: [3, 5]\n  flatten\n}\n")
    code = (
        "import sys; from dlspec.backends.tinygrad.layers import TRANSFORMS; "
        "TRANSFORMS['flatten'] = lambda node, p, ins, out, low: lambda x: x; "
        "from dlspec.cli import main; sys.exit(main(['compile', sys.argv[1], '--verify', '--device', 'CPU']))"
    )
    import subprocess

    r = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "runtime differs from the static report" in r.stderr and "flatten1: runtime shape" in r.stderr


# ---- weights files --------------------------------------------------------------------------------------


def state(net) -> dict[str, np.ndarray]:
    return {k: t.numpy().copy() for k, t in net.state_dict().items()}


def test_save_load_roundtrip(tmp_path):
    a, b = build(SMALL, seed=0), build(SMALL, seed=5)
    a.state_dict()["bn1.running_mean"].assign(Tensor(np.arange(4, dtype=np.float32))).realize()
    a.save(tmp_path / "w.safetensors")
    dlspec.load_weights(b, tmp_path / "w.safetensors")
    sa, sb = state(a), state(b)
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert np.array_equal(a(Tensor(X)).numpy(), b(Tensor(X)).numpy())


def test_load_weights_reports_everything_and_loads_nothing(tmp_path):
    from tinygrad.nn.state import safe_save

    net = build(SMALL)
    before = state(net)
    bad = {k: Tensor(np.full(v.shape, 7, v.dtype)) for k, v in before.items()}
    del bad["fc.bias"]  # missing
    bad["fc.extra"] = Tensor.zeros(3).contiguous()  # unexpected
    bad["conv1.weight"] = Tensor.zeros(4, 3, 2, 2).contiguous()  # wrong shape
    safe_save(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(dlspec.BackendError) as e:
        dlspec.load_weights(net, tmp_path / "bad.safetensors")
    msg = str(e.value)
    assert "nothing was loaded" in msg
    assert "missing" in msg and "fc.bias (2,)" in msg
    assert "unexpected" in msg and "fc.extra (3,)" in msg
    assert "conv1.weight file (4, 3, 2, 2) vs model (4, 3, 3, 3)" in msg
    after = state(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_name_map_dict_and_file(tmp_path):
    from tinygrad.nn.state import safe_save

    src = build(SMALL, seed=3)
    want = state(src)
    prefixed = {
        ("model.features." + k if k.startswith(("conv1", "bn1")) else "model.classifier." + k.split(".", 1)[1]): t
        for k, t in src.state_dict().items()
    }
    safe_save({k: t.contiguous() for k, t in prefixed.items()}, str(tmp_path / "p.safetensors"))
    dst = build(SMALL, seed=0)
    dlspec.load_weights(dst, tmp_path / "p.safetensors", {"model.features": "", "model.classifier": "fc"})
    assert all(np.array_equal(want[k], v) for k, v in state(dst).items())
    dst2 = build(SMALL, seed=0)
    (tmp_path / "map.txt").write_text("# file name   spec name\nmodel.features.conv1 conv1\nmodel.features.bn1 bn1\nmodel.classifier fc\n")
    dlspec.load_weights(dst2, tmp_path / "p.safetensors", tmp_path / "map.txt")
    assert all(np.array_equal(want[k], v) for k, v in state(dst2).items())


def write_pth(path, tensors: dict[str, np.ndarray], wrap: str | None = None) -> None:
    """A PyTorch zip checkpoint written by hand (``torch.save`` of a state dict): ``archive/data.pkl``
    pickles an OrderedDict of ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
    requires_grad, hooks)`` whose storages are persistent ids ``('storage', torch.FloatStorage,
    key, 'cpu', numel)``; ``archive/data/<key>`` holds each storage's little-endian bytes."""
    fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storages = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}
    for name in storages.values():
        setattr(fake_torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    fake_torch._utils = fake_utils

    class Storage:
        def __init__(self, key, arr):
            self.key, self.arr = key, arr

    class Rebuild:
        def __init__(self, storage, shape):
            self.storage, self.shape = storage, shape

        def __reduce__(self):
            stride = tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))
            return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), stride, False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", getattr(fake_torch, storages[obj.arr.dtype]), obj.key, "cpu", obj.arr.size)
            return None

    od = collections.OrderedDict()
    blobs = {}
    for i, (k, v) in enumerate(tensors.items()):
        blobs[str(i)] = v
        od[k] = Rebuild(Storage(str(i), v), v.shape)
    saved = {m: sys.modules.get(m) for m in ("torch", "torch._utils")}
    sys.modules.update({"torch": fake_torch, "torch._utils": fake_utils})
    try:
        import io

        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(od if wrap is None else {"epoch": 3, wrap: od})
    finally:
        for m, mod in saved.items():
            if mod is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = mod
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for key, arr in blobs.items():
            z.writestr(f"archive/data/{key}", np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
        z.writestr("archive/version", "3\n")


def test_load_pytorch_pth_without_pytorch(tmp_path):
    src = build(SMALL, seed=4)
    src.state_dict()["bn1.num_batches_tracked"].assign(Tensor(7, dtype="long")).realize()
    want = state(src)
    tensors = {"module." + k: (v.astype(np.int64) if k.endswith("num_batches_tracked") else v.astype(np.float32)) for k, v in want.items()}
    write_pth(tmp_path / "m.pth", tensors)
    dst = build(SMALL, seed=0)
    dlspec.load_weights(dst, tmp_path / "m.pth", {"module": ""})
    got = state(dst)
    assert all(np.array_equal(want[k], got[k]) for k in want)
    assert got["bn1.num_batches_tracked"] == 7
    assert np.array_equal(src(Tensor(X)).numpy(), dst(Tensor(X)).numpy())


def test_real_pytorch_checkpoints(tmp_path):
    """Where PyTorch is installed: a real ``torch.save`` file loads, and ``torch.load`` reads
    the hand-built one the same way."""
    torch = pytest.importorskip("torch")
    src = build(SMALL, seed=4)
    want = state(src)
    torch.save({k: torch.from_numpy(v) for k, v in want.items()}, tmp_path / "real.pth")
    dst = build(SMALL, seed=0)
    dlspec.load_weights(dst, tmp_path / "real.pth")
    got = state(dst)
    assert all(np.array_equal(want[k], got[k]) for k in want)
    write_pth(tmp_path / "hand.pth", {k: v for k, v in want.items()})
    back = torch.load(tmp_path / "hand.pth", weights_only=True)
    assert list(back) == list(want) and all(np.array_equal(back[k].numpy(), want[k]) for k in want)


def test_checkpoint_wrappers_formats_by_content_and_name_clashes(tmp_path):
    from dlspec.backends.tinygrad import save_state

    src = build(SMALL, seed=4)
    want = state(src)

    def loads(path, name_map=None):
        dst = build(SMALL, seed=0)
        dlspec.load_weights(dst, path, name_map)
        return all(np.array_equal(want[k], v) for k, v in state(dst).items())

    # the PyTorch tutorial's checkpoint: {"epoch": …, "model_state_dict": …}
    write_pth(
        tmp_path / "ckpt.tar", {k: v.astype(np.int64 if k.endswith("tracked") else np.float32) for k, v in want.items()}, "model_state_dict"
    )
    assert loads(tmp_path / "ckpt.tar")  # a PyTorch zip, whatever its suffix
    # a dlspec run's checkpoint (model.* and optim.* keys), and safetensors under a .bin name
    sd = src.state_dict()
    save_state({**{f"model.{k}": v for k, v in sd.items()}, "optim.step": Tensor([3])}, tmp_path / "last.safetensors")
    assert loads(tmp_path / "last.safetensors")
    save_state(sd, tmp_path / "weights.bin")
    assert loads(tmp_path / "weights.bin")
    # two of the file's tensors renamed to one key: an error, not a silent overwrite
    save_state({**sd, "0.weight": sd["conv1.weight"], "0.bias": sd["conv1.bias"]}, tmp_path / "clash.safetensors")
    with pytest.raises(
        dlspec.BackendError, match=r"the name map gives several of the file's tensors the same name \(conv1.weight, 0.weight → conv1.weight"
    ):
        loads(tmp_path / "clash.safetensors", {"0": "conv1"})
    with pytest.raises(dlspec.UsageError, match="name_map must be a dict"):
        loads(tmp_path / "weights.bin", [("0", "conv1")])


def test_save_refuses_pytorch_names_and_missing_folders(tmp_path):
    net = build(SMALL)
    with pytest.raises(dlspec.UsageError, match="net.save writes safetensors, not PyTorch pickles: name the file 'm.safetensors'"):
        net.save(tmp_path / "m.pt")
    with pytest.raises(dlspec.UsageError, match="folder .*nodir does not exist"):
        net.save(tmp_path / "nodir" / "m.safetensors")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(dlspec.UsageError, match="seed must be a whole number ≥ 0, got -1"):
        build(SMALL, seed=-1)


def test_unreadable_weights_file(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(dlspec.BackendError, match="not a readable PyTorch"):
        dlspec.load_weights(build(SMALL), tmp_path / "junk.pth")
    with pytest.raises(dlspec.UsageError, match="no such weights file"):
        dlspec.load_weights(build(SMALL), tmp_path / "none.safetensors")


# ---- optional: the same numbers as PyTorch (skipped where PyTorch is not installed) ------------------


TORCH_SPEC = """
model T {
  input image: [3, 5, 7]
  input seq: [3, 4]
  output c = image -> conv 4 kernel 3 stride 2 padding 1 groups 1 as conv
  output l = seq -> lstm 3 layers 2 bidirectional as lstm
  output a = seq -> attention 2 causal as att
}
"""


def test_same_numbers_as_pytorch():
    torch = pytest.importorskip("torch")
    net = build(TORCH_SPEC)
    sd = {k: torch.tensor(t.numpy()) for k, t in net.state_dict().items()}
    rng = np.random.default_rng(0)
    image, seq = rng.standard_normal((2, 3, 5, 7)).astype(np.float32), rng.standard_normal((2, 3, 4)).astype(np.float32)
    c, lo, a = (o.numpy() for o in net(Tensor(image), Tensor(seq)))
    conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
    conv.load_state_dict({"weight": sd["conv.weight"], "bias": sd["conv.bias"]})
    lstm = torch.nn.LSTM(4, 3, num_layers=2, bidirectional=True, batch_first=True)
    lstm.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("lstm.")})
    att = torch.nn.MultiheadAttention(4, 2, batch_first=True)
    att.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("att.")})
    with torch.no_grad():
        close(c, conv(torch.tensor(image)).numpy(), "conv vs torch")
        close(lo, lstm(torch.tensor(seq))[0].numpy(), "lstm vs torch")
        s = torch.tensor(seq)
        mask = torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)  # True = masked out
        close(a, att(s, s, s, attn_mask=mask, need_weights=False)[0].numpy(), "attention vs torch")
    # and our NumPy reference agrees with torch too
    P = {k: v.numpy().astype(np.float64) for k, v in sd.items()}
    close(mha(seq.astype(np.float64), seq.astype(np.float64), P, "att", 2, np.tril(np.ones((3, 3), bool))), a, "numpy mha")


def test_cell_at_batch_one_runs_as_unrolled():
    """A batch of 1 through a cell that concatenates x and h: tinygrad 0.14 crashed (SIGSEGV) on
    views of size-1 time slices; the scan copies those. Run in a child process so that a crash
    is a failure, not the end of the test session."""
    code = """
import numpy as np
import dlspec
from tinygrad import Tensor
from dlspec.backends.tinygrad import scan
src = '''
cell C(hidden) {
  state h: [hidden]
  h = (x, h) -> dense hidden -> tanh
}
model M {
  input seq: [T, 5]
  C(3) as rnn
}
'''
net = dlspec.load(src).build("M")
x = Tensor(np.random.default_rng(0).standard_normal((1, 3, 5)).astype(np.float32))
a = net(x).numpy()
with scan.unrolled():
    b = net(x).numpy()
np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
print(a.shape)
"""
    import subprocess

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "(1, 3, 3)", (r.returncode, r.stderr[-2000:])
