"""The PyTorch target (:mod:`dlspec.backends.torch`): generated modules are standalone (only
``torch``), pass ``ruff check``, have dlspec's state-dict keys and shapes, load dlspec's weights
with ``strict=True`` and compute what dlspec's tinygrad runtime computes — outputs in eval and
training, gradients, two sequence lengths — for small models covering every op and for the zoo;
the big zoo models are checked structurally on the ``meta`` device."""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from backend_ref import randomize
from conftest import ROOT

import dlspec
from dlspec import state
from dlspec.backends import torch as torch_target
from dlspec.backends.torch import TRANSFORMS, export, generate

torch = pytest.importorskip("torch")
from tinygrad import Tensor  # noqa: E402

RTOL = 1e-4  # outputs: max |torch − tinygrad| ≤ RTOL · max(1, max |tinygrad|)
GRAD_RTOL = 1e-3

_count = itertools.count()


# ---- helpers ----------------------------------------------------------------------------------------


def load_module(source: str, folder: Path):
    """Import generated source from a fresh file (a unique module name per call)."""
    name = f"generated_{next(_count)}"
    path = folder / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, path


class Pair:
    """One spec model built twice: dlspec's tinygrad net (random weights, seeded) and the
    generated PyTorch module with the same state dict loaded ``strict=True``."""

    def __init__(self, text: str | Path, folder: Path, model: str | None = None, seed: int = 0, **args):
        self.prog = dlspec.load(text)
        self.graph = self.prog.ir(model, **args)
        self.shapes = self.prog.shapes(model, **args)
        self.source = generate(self.graph, self.shapes, self.prog)
        self.mod, self.path = load_module(self.source, folder)
        lint = ruff("check", "--isolated", "--select", "E,F,W,I,B", "--ignore", "E501", str(self.path))
        assert lint.returncode == 0, lint.stdout
        self.net = self.prog.build(model, device="CPU", seed=seed, **args)
        randomize(self.net, seed=seed + 1)
        self.model = getattr(self.mod, self.graph.name)()
        self.model.load_state_dict(self.weights(), strict=True)

    def weights(self) -> dict:
        return {k: torch.from_numpy(t.numpy().copy()) for k, t in self.net.state_dict().items()}

    def run(self, inputs: dict[str, np.ndarray], train: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(tinygrad outputs, torch outputs) on the same batch, in the phase ``train``."""
        feeds = {k: Tensor(v.astype(np.int32) if v.dtype.kind in "iu" else v) for k, v in inputs.items()}
        outs = self.net(**feeds, train=train)
        outs = [o.numpy() for o in (outs if isinstance(outs, tuple) else (outs,))]
        self.model.train(train)
        with torch.no_grad():
            got = self.model(*(torch.from_numpy(inputs[i]) for i in self.graph.inputs))
        got = [t.numpy() for t in (got if isinstance(got, tuple) else (got,))]
        return outs, got

    def check(self, inputs: dict[str, np.ndarray], train: bool = False) -> None:
        want, got = self.run(inputs, train)
        assert len(want) == len(got) == len(self.graph.outputs)
        for o, w, g in zip(self.graph.outputs, want, got):
            close(g, w, f"{self.graph.name} output {o.name} ({'train' if train else 'eval'})")
        if train:  # batch statistics moved the running ones alike
            mine = self.model.state_dict()
            for k, t in self.net.state_dict().items():
                if k.endswith(("running_mean", "running_var")):
                    close(mine[k].numpy(), t.numpy(), f"{self.graph.name} {k} after a training step")


def close(got: np.ndarray, want: np.ndarray, what: str, rtol: float = RTOL) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    got, want = got.astype(np.float64), want.astype(np.float64)
    assert np.isfinite(want).all(), f"{what}: the reference is not finite"
    err = float(np.abs(got - want).max()) if got.size else 0.0
    assert err <= rtol * max(1.0, float(np.abs(want).max()) if want.size else 0.0), f"{what}: max error {err:.3g}"


def random_inputs(graph, shapes, rng: np.random.Generator, batch: int = 2, **sizes: int) -> dict[str, np.ndarray]:
    env = {"N": batch, **sizes}
    out = {}
    for name in graph.inputs:
        t = shapes.types[name]
        dims = tuple(d if isinstance(d, int) else env[str(d)] for d in t.shape)
        if t.is_float():
            out[name] = rng.standard_normal(dims).astype(np.float32)
        elif t.dtype == "bool":
            out[name] = rng.random(dims) < 0.6
        else:
            out[name] = rng.integers(0, t.vocab or 2, dims).astype(np.int64)
    return out


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True, timeout=120)


# ---- every op, in a few small models ---------------------------------------------------------------------

IMAGE_OPS = """
model ImageOps {
  input image: [4, 9, 11]
  output c1 = image -> conv 6 kernel 4 stride 2 padding same -> batchnorm -> relu
  output c2 = image -> conv 4 kernel [3, 2] padding [[1, 0], [0, 1]] dilation [1, 2] groups 2, bias false -> elu 0.7
  output c3 = image -> conv 8 kernel 1 -> maxout 2 -> groupnorm 2 -> prelu per_channel
  output d1 = image -> deconv 3 kernel 3 stride 2 padding 1 output_padding 1 -> leaky_relu 0.2
  output d2 = image -> deconv 2 kernel 4 stride 2 padding [[1, 0], [2, 1]] output_padding [1, 0] -> tanh
  output p1 = image -> pool max kernel 3 stride 2 ceil true
  output p2 = image -> pool avg kernel 3 stride 2 padding 1 ceil true
  output p3 = image -> pool avg kernel 2 stride 1 padding same
  output p4 = image -> pool max kernel 2 stride 2 padding same
  output p5 = image -> pool avg kernel 3 stride 2 padding [[1, 0], [0, 1]] ceil true
  output p6 = image -> pool avg kernel 3 stride 2 padding 1 count_include_pad false
  output g = image -> pool global max -> flatten
  output ad = image -> pool adaptive avg size [3, 1]
  output pd1 = image -> pad [1, 2] reflect
  output pd2 = image -> pad [[0, 1], [2, 0]] replicate
  output pd3 = image -> pad 1 channels [0, 2] value 0.5
  output u1 = image -> upsample 2
  output u2 = image -> upsample [2, 3] linear
  output bn = image -> batchnorm momentum 0.3 eps 0.001
}
"""

VECTOR_OPS = """
model VectorOps {
  input v: [6]
  input w: [6]
  a = v -> dense 6 as fc
  s = (a, w) -> add
  m = (a, w) -> multiply
  output acts = concat(sigmoid(s), tanh(s), relu(s), silu(s), gelu(s), gelu(s, approximate = tanh), softplus(s, beta = 2), axis = -1)
  output more = concat(abs(m), exp(tanh(m)), log(abs(m) + 1), sqrt(abs(m)), -m, step(m, threshold = 0.1), identity(m), linear(m), axis = -1)
  output ar = (1 - v) * w / (abs(v) + 2) + v ** 2
  output sm = s -> softmax
  output lsm = m -> log_softmax
  output sh = (v, w) -> dense 12 -> reshape [3, -1] -> permute [2, 1] -> flatten -> dropout 0.3 -> prelu
  output mu = (v, w) -> sample
  output ln = (v, w) -> layernorm eps 0.001 -> dense 4, bias false
}
"""

SEQUENCE_OPS = """
model SeqOps {
  input seq: [T, 8]
  input tokens: [T] int vocab 11
  input mask: [T, T] dtype bool
  e = tokens -> embedding 8 as emb -> posembed 6 as pos -> layernorm
  a1 = e -> attention 2 causal as att1
  a2 = (seq, e) -> attention 2 mask mask as att2
  a3 = (seq, e) -> attention 4 causal mask mask, bias false as att3
  output head = (a1 + a2 + a3) -> dense 11 tied emb
  output head2 = e -> dense 11 tied emb, bias false
  output l = seq -> lstm 5 layers 2 bidirectional
  output g = seq -> gru 4 sequences false
  output r = seq -> rnn 3 nonlinearity relu bidirectional sequences false
  output b = seq -> permute [2, 1] -> batchnorm -> permute [2, 1]
  output c1 = seq -> permute [2, 1] -> conv 3 kernel 2 padding same -> pool avg kernel 2 stride 1 padding same -> pool max kernel 3 stride 1 padding 1 ceil true
}
"""

STRUCTURE = """
block Basic(c, stride = 1) {
  residual {
    conv c kernel 3 stride stride padding 1, bias false -> batchnorm -> relu
    conv c kernel 3 padding 1, bias false -> batchnorm
  } shortcut when stride != 1 {
    conv c kernel 1 stride stride, bias false -> batchnorm
  }
  relu
}

block Mixer(d) {
  repeat 2 { dense d -> relu }
  residual { layernorm -> dense d }
}

block Tower(f = 4) {
  conv 3 kernel 3 padding 1 -> relu -> flatten -> dense f
}

cell Gated(hidden) {
  state h: [hidden]
  state c: [hidden]
  gate z = (x, h) -> dense hidden -> sigmoid
  n = (x, h) -> dense hidden -> tanh
  c = z * c + (1 - z) * n
  h = tanh(c) * z
  output c
}

model Structure {
  input image: [4, 6, 6]
  input seq: [T, 5]
  image -> Basic(4) as b1
  Basic(8, stride = 2) as b2
  Basic(8) as b3
  Basic(16, stride = 2) as b4
  output img = pool global avg -> flatten
  tower = Tower()
  left = image -> tower
  right = image -> pool max kernel 1 -> tower
  output diff = abs(left - right)
  seq -> identity
  repeat 3 as mixers { Mixer(5) }
  output mix = identity
  output cells = seq -> Gated(6) as gated
  output last = seq -> Gated(6, sequences = false) as gated_last
}
"""


TENSOR_OPS = """
block Up(c) {
  input low: [8, 4, 4]
  input skip: [4, 10, 10]
  up = low -> deconv c kernel 2 stride 2
  concat(crop(skip, like = up), up) -> conv c kernel 3 -> relu
}
block Scale(d) {
  param gamma: [d] init constant value 0.5
  x * gamma
}
model TensorOps(d = 8, patches = 4) {
  input image: [3, 8, 8]
  input seq: [T, 6]
  input low: [8, 4, 4]
  input skip: [4, 10, 10]
  param class_token: [1, d] init zeros
  param pos_embedding: [patches + 1, d] init trunc_normal std 0.02
  param w: [6, 6]
  x = image -> conv d kernel 4 stride 4 -> flatten start 2 -> transpose(1, 2)
  x = concat(class_token, x, axis = 1) + pos_embedding
  att = x -> attention 2
  x = x + att
  output cls = x[:, 0] -> layernorm -> dense 3
  output sc = x -> Scale(d) as scale
  left, right = split(image, [1, 2])
  a, b = chunk(seq, 2, axis = 2)
  rc = right -> conv 1 kernel 1
  output pieces = concat(left * 2, rc, axis = 1)
  output ab = a - b
  q = seq[:, -1]
  alpha = seq @ q -> softmax
  output context = alpha @ seq
  output scores = seq @ transpose(seq)
  output proj = seq @ w
  mn = min(seq, axis = [1, 2], keepdim = true) -> flatten
  output red = concat(mean(seq, axis = 1), max(seq, 1), mn, axis = -1)
  output total = sum(seq)
  output every = seq[:, ::2, 1:5:2]
  output ell = image[..., 0]
  mask = tril(ones([5, 5], dtype = bool))
  pos = arange(5) -> embedding 6
  sp = seq[:, :5] + pos
  output causal = sp -> attention 2 causal
  output tmask = mask
  output tri = triu(seq[:, :4, :4], 1) + full([4, 4], 0.5) + zeros([4, 4])
  output unet = (low, skip) -> Up(4) as up
  output fl = arange(0.5, 3.0, 0.5) + seq[:, 0, :5]
}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("generated")


@pytest.mark.parametrize("text", [IMAGE_OPS, VECTOR_OPS], ids=["image", "vector"])
def test_every_op_matches_tinygrad_in_eval_and_training(text, folder):
    pair = Pair(text, folder)
    rng = np.random.default_rng(3)
    inputs = random_inputs(pair.graph, pair.shapes, rng)
    pair.check(inputs, train=False)
    if text is IMAGE_OPS:  # the vector model's dropout and sampling draw random numbers in training
        pair.check(inputs, train=True)
        return
    # training: dropout keeps 1 − rate of the values, scaled; the sample is mu + exp(logvar / 2)·ε, ε ~ N(0, 1)
    model = pair.model.train()
    v, w = (torch.from_numpy(rng.standard_normal((4000, 6)).astype(np.float32)) for _ in range(2))
    outs = dict(zip((o.name for o in pair.graph.outputs), model(v, w)))
    eps = ((outs["mu"] - v) / torch.exp(w / 2)).numpy()
    assert abs(eps.mean()) < 0.03 and abs(eps.std() - 1) < 0.03


def test_tensor_ops_at_two_lengths(folder):
    """Learned and constant tensors (batch 1, broadcast and expanded), subscripts, split, chunk,
    crop, reductions, matmul with vectors, transpose, triangles, on T = 6 and 7."""
    pair = Pair(TENSOR_OPS, folder)
    rng = np.random.default_rng(8)
    for t in (6, 7):
        inputs = random_inputs(pair.graph, pair.shapes, rng, T=t)
        pair.check(inputs, train=False)
        pair.check(inputs, train=True)
    assert "self.class_token = nn.Parameter(torch.zeros((1, 8)))" in pair.source
    assert set(pair.model.state_dict()) >= {"class_token", "pos_embedding", "w", "scale.gamma"}


def test_sequence_ops_at_two_lengths(folder):
    """Attention (causal, a boolean mask with a fully masked query, cross, no bias), tied heads,
    recurrent layers (stacked, bidirectional, last step), on a symbolic length T at T = 5 and 3."""
    pair = Pair(SEQUENCE_OPS, folder)
    rng = np.random.default_rng(4)
    for t in (5, 3):
        inputs = random_inputs(pair.graph, pair.shapes, rng, T=t)
        inputs["mask"][0, 1] = False  # query 1 of sample 0 sees nothing: 0, not NaN
        pair.check(inputs, train=False)
        pair.check(inputs, train=True)
    assert "masked_attention(self.att3, seq, e, mask, causal=True)" in pair.source
    assert "self.head(x, self.emb.weight)" in pair.source and "F.linear(e, self.emb.weight)" in pair.source


NEW_OPS = """
model NewOps {
  input x: [4, 5, 6]
  input seq: [T, 6]
  input tok: [T] int vocab 9
  output acts = concat(relu6(x * 4), hardswish(x * 4), hardsigmoid(x * 4), mish(x * 4), sin(x), cos(x), axis = 1)
  output g = x -> conv 4 kernel 3 padding 1 -> glu axis 1
  output g2 = seq -> dense 8 -> glu
  output t = x -> tile [1, 2, 1]
  output t2 = seq -> tile to [-1, 12]
  output r = x -> roll [1, -3] axis [2, -1]
  output r2 = seq -> roll 7 axis 1
  output e = tok -> embedding 3 padding_idx 0 as emb
  output e2 = tok -> embedding 2 padding_idx -1
  output u = x -> upsample 2 bilinear align_corners
  output u2 = x -> upsample [2, 3] bilinear
  output u3 = seq -> permute [2, 1] -> upsample 2 linear align_corners
}

model DropPath {
  input x: [3, 2]
  residual { dense 2 -> droppath 0.25 }
}
"""


def test_new_ops_at_two_lengths(folder):
    """Issue 14's activations, glu, tile, roll (also on a symbolic axis), embedding padding_idx,
    upsample bilinear/linear with align_corners: eval and training, T = 5 and 3."""
    pair = Pair(NEW_OPS, folder, "NewOps")
    rng = np.random.default_rng(14)
    for t in (5, 3):
        inputs = random_inputs(pair.graph, pair.shapes, rng, T=t)
        inputs["tok"][:, 0] = 0  # the padding id: its (randomised) row is read as it is
        pair.check(inputs, train=False)
        pair.check(inputs, train=True)
    assert "nn.Embedding(9, 3, padding_idx=0)" in pair.source and "nn.Embedding(9, 2, padding_idx=-1)" in pair.source
    assert 'mode="bilinear", align_corners=True' in pair.source and "F.glu(" in pair.source


def test_droppath_module_drops_whole_samples(folder):
    """The generated ``drop_path`` is timm's: samples zeroed with probability 0.25, the rest scaled by 4/3."""
    pair = Pair(NEW_OPS, folder, "DropPath")
    x = torch.ones(4000, 3, 2)
    inputs = random_inputs(pair.graph, pair.shapes, np.random.default_rng(2))
    pair.check(inputs, train=False)  # the identity in eval
    with torch.no_grad():
        branch = pair.model.train()(x) - x  # the residual branch after drop_path
    per_sample = branch.reshape(4000, -1)
    kept = (per_sample != 0).any(1)
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    with torch.no_grad():
        full = pair.model.eval()(x) - x
    torch.testing.assert_close(per_sample[kept], full.reshape(4000, -1)[kept] / 0.75)


def test_blocks_instances_repeats_and_cells(folder):
    """One class per block where the calls differ only in arguments, shared instances calling one
    submodule, a repeat of blocks as a loop over a ModuleList, a two-state cell as a loop over T."""
    pair = Pair(STRUCTURE, folder)
    src = pair.source
    rng = np.random.default_rng(5)
    for t in (4, 2):
        inputs = random_inputs(pair.graph, pair.shapes, rng, T=t)
        pair.check(inputs, train=False)
        pair.check(inputs, train=True)
    classes = [line.split("(")[0].removeprefix("class ") for line in src.splitlines() if line.startswith("class ")]
    assert classes == ["Basic", "Basic_2", "Tower", "Mixer", "Gated", "Gated_2", "Structure"]
    assert "self.b2 = Basic_2(8, stride=2, in_channels=4)" in src and "self.b4 = Basic_2(16, stride=2, in_channels=8)" in src
    assert "self.conv1 = nn.Conv2d(in_channels, c, 3, stride=stride, padding=1, bias=False)" in src
    assert "self.mixers = nn.ModuleList([Mixer(5) for _ in range(3)])" in src
    assert "for block in self.mixers:" in src
    assert src.count("= self.tower(") == 2  # the second call uses the first's weights
    assert "for t in range(seq.shape[1]):" in src
    model = pair.model
    assert not any(k.startswith("tower@") for k in model.state_dict())


# ---- gradients ------------------------------------------------------------------------------------------

GRAD_SPECS = {
    "basic": """
block Basic(c, stride = 1) {
  residual {
    conv c kernel 3 stride stride padding 1, bias false -> batchnorm -> relu
    conv c kernel 3 padding 1, bias false -> batchnorm
  } shortcut when stride != 1 {
    conv c kernel 1 stride stride, bias false -> batchnorm
  }
  relu
}
model Block {
  input x: [3, 6, 6]
  Basic(4, stride = 2) as unit
}
""",
    "lstm": """
model Lstm {
  input seq: [4, 3]
  lstm 5 layers 2 as lstm
}
""",
}


@pytest.mark.parametrize("name", list(GRAD_SPECS))
def test_gradients_match_tinygrad(name, folder):
    """Training phase, loss = Σ output · R (R fixed random): every parameter's gradient."""
    pair = Pair(GRAD_SPECS[name], folder)
    rng = np.random.default_rng(6)
    inputs = random_inputs(pair.graph, pair.shapes, rng, batch=3)
    out_shape = tuple(d if isinstance(d, int) else 3 for d in pair.shapes.types[pair.graph.outputs[0].node].shape)
    r = rng.standard_normal(out_shape).astype(np.float32)
    # tinygrad
    trainable = {k: t for k, t in pair.net.state_dict().items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    (x_name,) = pair.graph.inputs
    y = pair.net(Tensor(inputs[x_name]), train=True)
    (y * Tensor(r)).sum().backward()
    want = {k: t.grad.numpy() for k, t in trainable.items()}
    # torch
    model = pair.model.train()
    (model(torch.from_numpy(inputs[x_name])) * torch.from_numpy(r)).sum().backward()
    got = {k: p.grad.numpy() for k, p in model.named_parameters()}
    assert set(got) == set(want)
    for k in want:
        close(got[k], want[k], f"{name}: d loss / d {k}", rtol=GRAD_RTOL)


# ---- the zoo ----------------------------------------------------------------------------------------------

#: (spec, model, model arguments to keep it small, sizes of symbolic dims, whether training is deterministic)
ZOO_RUNS = [
    ("mlp.dl", "MLP", {}, {}, True),
    ("lenet5.dl", "LeNet5", {}, {}, True),
    ("char_lstm.dl", "CharLSTM", {"dim": 8, "hidden": 12}, {"T": 5}, False),
    ("gru.dl", "GRU", {"hidden": 8}, {}, True),
    ("rnn.dl", "RNN", {"hidden": 8}, {}, True),
    ("lstm.dl", "LSTM", {"hidden": 8}, {}, True),
    ("gru_cell.dl", "SeqClassifier", {"hidden": 8}, {"T": 4}, True),
    ("autoencoder.dl", "Autoencoder", {}, {}, True),
    ("linear_autoencoder.dl", "LinearAutoencoder", {}, {}, True),
    ("vae.dl", "VAE", {"hidden": 16, "latent": 4}, {}, False),
    ("vae.dl", "Generator", {"hidden": 16, "latent": 4}, {}, True),
    ("maxout.dl", "Maxout", {"units": 8, "pieces": 3}, {}, False),
    ("elu.dl", "ELUNet", {"hidden": 16, "depth": 2}, {}, True),
    ("prelu.dl", "PReLUNet", {}, {}, True),
    ("siamese.dl", "Siamese", {}, {}, True),
    ("resnet20_cifar.dl", "ResNet20", {"n": 1}, {}, True),
    ("transformer.dl", "TransformerEncoderLayer", {"d": 8, "heads": 2, "ff": 16}, {"T": 4}, False),
    ("transformer.dl", "TransformerEncoder", {"vocab": 20, "d": 8, "heads": 2, "ff": 16, "layers": 2}, {"T": 5}, False),
    ("dcgan.dl", "Generator", {"latent": 8}, {}, True),
    ("dcgan.dl", "Discriminator", {}, {}, True),
    ("dqn.dl", "CartPoleQ", {}, {}, True),
    ("dqn.dl", "DQN", {}, {}, True),
    # issue 14's zoo: params (class token, layer scale), token 0, crop-and-concat, two inputs, tables
    ("vit.dl", "ViTB16", {"image_size": 16, "patch": 4, "d": 8, "layers": 1, "heads": 2, "mlp": 16, "classes": 3}, {}, False),
    ("bert.dl", "BertBase", {"vocab": 20, "positions": 8, "d": 8, "layers": 1, "heads": 2, "ff": 16}, {"T": 5}, False),
    ("unet.dl", "UNet", {"size": 188, "width": 2}, {}, False),
    ("convnext.dl", "ConvNeXtTiny", {"dims": [4, 8, 8, 8], "depths": [1, 1, 1, 1], "classes": 3, "size": 32}, {}, False),
]


@pytest.mark.parametrize("spec, model, args, sizes, train", ZOO_RUNS, ids=[f"{r[0][:-3]}-{r[1]}" for r in ZOO_RUNS])
def test_zoo_models_match_tinygrad(spec, model, args, sizes, train, folder):
    pair = Pair(ROOT / "specs" / spec, folder, model, **args)
    inputs = random_inputs(pair.graph, pair.shapes, np.random.default_rng(7), **sizes)
    pair.check(inputs, train=False)
    if train:
        pair.check(inputs, train=True)


def zoo_models() -> list[tuple[str, str]]:
    return [(p.name, m) for p in sorted((ROOT / "specs").glob("*.dl")) for m in dlspec.load(p).models]


@pytest.fixture(scope="module")
def zoo_sources(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Every zoo model's generated module, written to one folder (checked by ruff in one run)."""
    out = tmp_path_factory.mktemp("zoo")
    paths = {}
    for spec, model in zoo_models():
        prog = dlspec.load(ROOT / "specs" / spec)
        src = generate(prog.ir(model), prog.shapes(model), prog)
        path = out / f"{Path(spec).stem}_{model.lower()}.py"
        path.write_text(src, encoding="utf-8")
        paths[(spec, model)] = path
    return paths


def test_zoo_modules_pass_ruff(zoo_sources):
    folder = next(iter(zoo_sources.values())).parent
    r = ruff("check", "--isolated", "--select", "E,F,W,I,B", "--ignore", "E501", str(folder))
    assert r.returncode == 0, r.stdout + r.stderr
    r = ruff("format", "--isolated", "--line-length", str(torch_target.LINE_LENGTH), "--check", str(folder))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("spec, model", zoo_models(), ids=[f"{s[:-3]}-{m}" for s, m in zoo_models()])
def test_zoo_module_structure(spec, model, zoo_sources):
    """Instantiated on the meta device (nothing allocated): parameter and buffer names and shapes
    are dlspec's state-dict contract, and the module imports nothing of dlspec."""
    prog = dlspec.load(ROOT / "specs" / spec)
    graph, shapes = prog.ir(model), prog.shapes(model)
    source = zoo_sources[(spec, model)].read_text(encoding="utf-8")
    assert "dlspec" not in "\n".join(line for line in source.splitlines() if line.startswith(("import ", "from ")))
    mod, _ = load_module(source, zoo_sources[(spec, model)].parent)
    with torch.device("meta"):
        module = getattr(mod, graph.name)()
    got = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    want = {k: tuple(e.slot.shape) for k, e in state.entries(graph, shapes).items()}
    assert got == want


def test_resnet18_keys_equal_the_tinygrad_build(folder):
    """The contract is what the runtime builds: ResNet-18's keys and shapes from a NULL-device build."""
    prog = dlspec.load(ROOT / "specs/resnet18.dl")
    net = prog.build(device="NULL")
    mod, _ = load_module(generate(prog.ir(), prog.shapes(), prog), folder)
    with torch.device("meta"):
        module = mod.ResNet18()
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {k: tuple(t.shape) for k, t in net.state_dict().items()}


def test_generated_module_runs_without_dlspec(folder):
    prog = dlspec.load(ROOT / "specs/lenet5.dl")
    _, path = load_module(generate(prog.ir(), prog.shapes(), prog), folder)
    code = (
        "import sys, runpy; sys.modules['dlspec'] = None; ns = runpy.run_path(sys.argv[1]); import torch; "
        "m = ns['LeNet5']().eval(); print(tuple(m(torch.zeros(2, 1, 28, 28)).shape))"
    )
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2, 10)"


# ---- export, errors -------------------------------------------------------------------------------------------


def test_export_writes_the_module_and_its_weights(tmp_path):
    from safetensors.torch import load_file

    prog = dlspec.load(ROOT / "specs/mlp.dl")
    graph, shapes = prog.ir(), prog.shapes()
    weights = state.initial(graph, shapes, seed=3)
    export(graph, shapes, tmp_path / "mlp.py", weights=weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.py", "mlp.safetensors"]
    mod, _ = load_module((tmp_path / "mlp.py").read_text(), tmp_path)
    model = mod.MLP()
    model.load_state_dict(load_file(tmp_path / "mlp.safetensors"), strict=True)
    assert all(np.array_equal(model.state_dict()[k].numpy(), v) for k, v in weights.items())
    # without weights only the source
    export(graph, shapes, tmp_path / "bare.py")
    assert not (tmp_path / "bare.safetensors").exists()
    bad = dict(weights)
    bad.pop(next(iter(bad)))
    with pytest.raises(dlspec.BackendError, match="missing"):
        export(graph, shapes, tmp_path / "bad.py", weights=bad)
    assert not (tmp_path / "bad.py").exists()


def test_an_op_without_a_lowering_is_a_located_error():
    text = "model M {\n  input x: [3, 8, 8]\n  conv 4 kernel 3 -> relu\n  upsample 2\n}\n"
    prog = dlspec.load(text, name="m.dl")
    table = {k: v for k, v in TRANSFORMS.items() if k != "upsample"}
    with pytest.raises(dlspec.BackendError) as e:
        generate(prog.ir(), prog.shapes(), transforms=table)
    (d,) = e.value.diagnostics
    assert d.message == "export to pytorch: op 'upsample' at m.dl:4:3 has no PyTorch lowering yet"
    assert (d.span.line, d.span.col) == (4, 3)
    assert "upsample" in TRANSFORMS  # the module's table is untouched
    assert "F.interpolate" in generate(prog.ir(), prog.shapes())


def test_an_unsupported_variant_is_a_located_error():
    prog = dlspec.load("model M {\n  input x: [3, 8, 8]\n  pool avg kernel 3 dilation 2\n}\n", name="m.dl")
    with pytest.raises(
        dlspec.BackendError, match=r"export to pytorch: pool 'pool1' at m.dl:3:3: PyTorch's average pooling has no dilation"
    ):
        generate(prog.ir(), prog.shapes())


def test_layer_names_python_cannot_use_as_attributes(folder):
    """Layers named like nn.Module's methods or Python keywords keep their keys (through ``_modules``)."""
    text = "model Names {\n  input x: [4]\n  dense 3 as forward -> dense 2 as cuda -> dense 2 as lambda\n}\n"
    pair = Pair(text, folder)
    assert set(pair.model.state_dict()) == set(pair.net.state_dict())
    pair.check({"x": np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)})
    assert 'self._modules["forward"]' in pair.source and 'self._modules["cuda"]' in pair.source


def test_module_attribute_names_are_known():
    """Every public attribute of nn.Module is in the generator's list (a layer of that name goes through ``_modules``)."""
    from dlspec.backends.torch.codegen import MODULE_ATTRS

    public = {n for n in dir(torch.nn.Module) if not n.startswith("_")} | set(vars(torch.nn.Module()))
    assert {n for n in public if not n.startswith("_")} <= MODULE_ATTRS
