"""Optional cross-check of convolution and pooling output sizes and parameter counts
against PyTorch (skipped when torch is not installed; not a project dependency).

Known, intended differences are left out: dlspec rejects a transposed convolution whose
output is empty and a floor-mode pool that silently drops input (PyTorch allows both), and
PyTorch's 3-D average pooling refuses an unpadded input smaller than the kernel even in
ceil mode, which its max pooling and the arithmetic allow."""

from __future__ import annotations

import random
import warnings

import pytest

import dlspec
from dlspec.errors import DlspecError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torch without NumPy warns on import
    torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # e.g. 'same' with an even kernel


def lst(v: list[int]) -> str:
    return str(v[0]) if len(set(v)) == 1 else "[" + ", ".join(map(str, v)) + "]"


def dlspec_out(line: str, shape: list[int]):
    text = f"model M {{\n  input x: [{', '.join(map(str, shape))}]\n  {line}\n}}\n"
    try:
        s = dlspec.load(text, name="t.dl").shapes()
    except DlspecError as e:
        return e.diagnostics[0].message, None
    return tuple(s.types[s.graph.outputs[0].node].sample), sum(c.params for c in s.costs.values())


def cases(seed: int = 0, count: int = 250):
    rng = random.Random(seed)
    for _ in range(count):
        nd = rng.choice([1, 2, 3])
        c = rng.randint(1, 4)
        sizes = [rng.randint(1, 12) for _ in range(nd)]
        k = [rng.randint(1, 5) for _ in range(nd)]
        s = [rng.randint(1, 3) for _ in range(nd)]
        d = [rng.randint(1, 2) for _ in range(nd)]
        yield rng, rng.choice(["conv", "deconv", "pool"]), nd, c, sizes, k, s, d


def build(rng, kind, nd, c, sizes, k, s, d):
    """(dlspec line, torch module, input tensor)."""
    x = torch.zeros(1, c, *sizes)
    if kind == "conv":
        g = rng.choice([1, c])
        f = g * rng.randint(1, 3)
        mode = rng.choice(["int", "same", "valid", "pairs"])
        padding = 0
        if mode == "int":
            p = [rng.randint(0, 3) for _ in range(nd)]
            text, padding = lst(p), tuple(p)
        elif mode == "pairs":
            pairs = [(rng.randint(0, 2), rng.randint(0, 2)) for _ in range(nd)]
            text = "[" + ", ".join(f"[{a}, {b}]" for a, b in pairs) + "]"
            flat = [v for a, b in reversed(pairs) for v in (a, b)]  # F.pad order: last dim first
            x = torch.nn.functional.pad(x, flat)
        else:
            text, padding = mode, mode
            if mode == "same":
                s = [1] * nd  # PyTorch has 'same' for stride 1 only
        cls = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)[nd - 1]
        mod = cls(c, f, tuple(k), stride=tuple(s), padding=padding, dilation=tuple(d), groups=g)
        line = f"conv {f} kernel {lst(k)} stride {lst(s)} dilation {lst(d)} padding {text} groups {g}"
    elif kind == "deconv":
        g = rng.choice([1, c])
        f = g * rng.randint(1, 3)
        p = [rng.randint(0, 2) for _ in range(nd)]
        op = [rng.randint(0, max(ss, dd) - 1) for ss, dd in zip(s, d)]
        cls = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)[nd - 1]
        mod = cls(c, f, tuple(k), stride=tuple(s), padding=tuple(p), output_padding=tuple(op), dilation=tuple(d), groups=g)
        line = f"deconv {f} kernel {lst(k)} stride {lst(s)} dilation {lst(d)} padding {lst(p)} output_padding {lst(op)} groups {g}"
    else:
        p = [rng.randint(0, kk // 2) for kk in k]
        ceil = rng.choice([True, False])
        if rng.random() < 0.5:
            cls = (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d)[nd - 1]
            mod = cls(tuple(k), stride=tuple(s), padding=tuple(p), dilation=tuple(d), ceil_mode=ceil)
            line = f"pool max kernel {lst(k)} stride {lst(s)} padding {lst(p)} dilation {lst(d)} ceil {str(ceil).lower()}"
        else:
            cls = (torch.nn.AvgPool1d, torch.nn.AvgPool2d, torch.nn.AvgPool3d)[nd - 1]
            mod = cls(tuple(k), stride=tuple(s), padding=tuple(p), ceil_mode=ceil)
            line = f"pool avg kernel {lst(k)} stride {lst(s)} padding {lst(p)} ceil {str(ceil).lower()}"
    return line, mod, x


def test_conv_and_pool_sizes_match_pytorch():
    checked = 0
    for rng, kind, nd, c, sizes, k, s, d in cases():
        line, mod, x = build(rng, kind, nd, c, sizes, k, s, d)
        try:
            with torch.no_grad():
                want = tuple(mod(x).shape[1:])
        except RuntimeError:
            want = None
        got, params = dlspec_out(line, [c, *sizes])
        if isinstance(got, str):  # dlspec refused
            intended = (
                "not a whole number" in got or (kind == "deconv" and want is not None and 0 in want) or (want is None)  # both refuse
            )
            assert intended, (line, sizes, want, got)
            continue
        if want is None:
            assert kind == "pool" and nd == 3 and "avg" in line, (line, sizes, got)  # AvgPool3d's extra check
            continue
        assert got == want, (line, [c, *sizes])
        assert params == sum(p.numel() for p in mod.parameters()), line
        checked += 1
    assert checked > 120


def test_recurrent_attention_and_norm_params_match_pytorch():
    def n(m):
        return sum(p.numel() for p in m.parameters())

    for word, cls in (("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        for layers, bi, bias in ((1, False, True), (3, True, True), (2, True, False)):
            line = f"{word} 5 layers {layers} bidirectional {str(bi).lower()} bias {str(bias).lower()}"
            assert _seq_params(line) == n(cls(7, 5, num_layers=layers, bidirectional=bi, bias=bias, batch_first=True)), line
    assert _seq_params("attention 4", d=16) == n(torch.nn.MultiheadAttention(16, 4))
    bn = torch.nn.BatchNorm2d(6)
    assert _bn() == (n(bn), sum(b.numel() for b in bn.buffers()))


def _seq_params(line: str, d: int = 7):
    s = dlspec.load(f"model M {{\n  input x: [T, {d}]\n  {line}\n}}\n", name="t.dl").shapes()
    return sum(c.params for c in s.costs.values())


def _bn():
    s = dlspec.load("model M {\n  input x: [6, 4, 4]\n  batchnorm\n}\n", name="t.dl").shapes()
    return sum(c.params for c in s.costs.values()), sum(c.buffers for c in s.costs.values())
