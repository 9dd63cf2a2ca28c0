"""Hypothesis: for generated valid specs (random stacks of conv / pool / batchnorm / dropout /
activations / concat branches / residuals / flatten / dense, and deconv / pad / upsample /
groupnorm / maxout / prelu, on random input sizes), the
built tinygrad model's runtime shape equals the static shape at every node, and its runtime
parameter count equals the static count — in 100% of cases.

``verify(net, run=False)`` traces lazily (tinygrad knows shapes before running anything), so
an example costs a build and no compute kernels."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlspec
from dlspec.backends.tinygrad import verify

ACTS = ["relu", "tanh", "sigmoid", "leaky_relu 0.2", "elu", "gelu", "silu", "softplus", "linear"]


def window_out(size, k, s, d, p, ceil=False):
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


@st.composite
def conv_layer(draw, c, h, w):
    kmax = min(3, h, w)
    k = draw(st.integers(1, kmax))
    s = draw(st.integers(1, 2))
    d = draw(st.integers(1, 2)) if 2 * (k - 1) + 1 <= min(h, w) else 1
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))
    filters = groups * draw(st.integers(1, 3))
    if draw(st.booleans()):
        words = f"conv {filters} kernel {k} stride {s} dilation {d} padding same" + (f" groups {groups}" if groups > 1 else "")
        return words, (filters, -(-h // s), -(-w // s))
    p = draw(st.integers(0, k // 2))
    bias = draw(st.booleans())
    words = (
        f"conv {filters} kernel {k} stride {s} padding {p} dilation {d}"
        + (f" groups {groups}" if groups > 1 else "")
        + ("" if bias else ", bias false")
    )
    return words, (filters, window_out(h, k, s, d, p), window_out(w, k, s, d, p))


@st.composite
def pool_layer(draw, c, h, w):
    kind = draw(st.sampled_from(["max", "avg"]))
    k = draw(st.integers(2, min(3, h, w)))
    s = draw(st.integers(1, k))
    p = draw(st.integers(0, k // 2))
    exact_h, exact_w = (h + 2 * p - k) % s == 0, (w + 2 * p - k) % s == 0
    ceil = not (exact_h and exact_w) or draw(st.booleans())  # floor mode must not drop input rows
    out = (window_out(h, k, s, 1, p, ceil), window_out(w, k, s, 1, p, ceil))
    return f"pool {kind} kernel {k} stride {s} padding {p}" + (" ceil" if ceil else ""), (c, *out)


@st.composite
def other_layer(draw, c, h, w):
    """Deconv, pad, upsample, groupnorm, maxout, prelu."""
    kind = draw(st.sampled_from(["deconv", "pad", "upsample", "groupnorm", "maxout", "prelu"]))
    if kind == "deconv" and max(h, w) <= 13:
        k, s = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        p, op = draw(st.integers(0, (k - 1) // 2)), draw(st.integers(0, s - 1))
        f = draw(st.integers(1, 3))
        size = [(n - 1) * s - 2 * p + k + op for n in (h, w)]
        return f"deconv {f} kernel {k} stride {s} padding {p} output_padding {op}", (f, *size)
    if kind == "pad":
        a, b = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        ch = draw(st.integers(0, 1))
        mode = draw(st.sampled_from(["", " replicate"] + ([" reflect"] if max(a, b) < min(h, w) else [])))
        chans = f" channels {ch}" if ch and not mode else ""
        return f"pad [[{a}, {b}], [{b}, {a}]]{chans}{mode}", (c + (2 * ch if chans else 0), h + a + b, w + a + b)
    if kind == "upsample" and max(h, w) <= 10:
        mode = draw(st.sampled_from(["nearest", "linear"]))
        return f"upsample 2 {mode}", (c, 2 * h, 2 * w)
    if kind == "groupnorm":
        return f"groupnorm {draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))}", (c, h, w)
    if kind == "maxout" and c % 2 == 0:
        return "maxout 2", (c // 2, h, w)
    return "prelu" + draw(st.sampled_from(["", " per_channel"])), (c, h, w)


@st.composite
def image_stage(draw, c, h, w):
    """Layer lines on a (C, H, W) map, ending with the map's shape."""
    lines = []
    for _ in range(draw(st.integers(1, 5))):
        choice = draw(st.sampled_from(["conv", "conv", "pool", "bn", "act", "dropout", "residual", "concat", "other"]))
        if choice == "other":
            words, (c, h, w) = draw(other_layer(c, h, w))
            lines.append(words)
        elif choice == "conv":
            words, (c, h, w) = draw(conv_layer(c, h, w))
            lines.append(words)
        elif choice == "pool" and min(h, w) >= 2:
            words, (c, h, w) = draw(pool_layer(c, h, w))
            lines.append(words)
        elif choice == "bn":
            lines.append("batchnorm")
        elif choice == "act":
            lines.append(draw(st.sampled_from(ACTS)))
        elif choice == "dropout":
            lines.append(f"dropout {draw(st.sampled_from([0.1, 0.5]))}")
        elif choice == "residual":
            if draw(st.booleans()) or min(h, w) < 2:
                lines.append(f"residual {{ conv {c} kernel 3 padding 1 -> batchnorm -> relu }}")
            else:  # a projection shortcut with stride 2
                body = f"conv {c + 1} kernel 3 stride 2 padding 1 -> batchnorm"
                lines.append(f"residual {{ {body} }} shortcut {{ conv {c + 1} kernel 1 stride 2 }}")
                c, h, w = c + 1, -(-h // 2), -(-w // 2)
        elif choice == "concat":
            a, b = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            third = draw(st.booleans())
            branches = f"branch {{ conv {a} kernel 1 }} branch {{ conv {b} kernel 3 padding 1 -> relu }}"
            if third:
                branches += " branch { }"
            lines.append(f"concat {{ {branches} }}")
            c = a + b + (c if third else 0)
    return lines, (c, h, w)


@st.composite
def vector_stage(draw, f):
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.sampled_from(["dense", "dense", "act", "bn", "ln", "dropout", "residual", "concat"]))
        if choice == "dense":
            f = draw(st.integers(1, 9))
            lines.append(f"dense {f}" + ("" if draw(st.booleans()) else ", bias false"))
        elif choice == "act":
            lines.append(draw(st.sampled_from(ACTS + ["softmax", "log_softmax"])))
        elif choice == "bn":
            lines.append("batchnorm")
        elif choice == "ln":
            lines.append("layernorm")
        elif choice == "dropout":
            lines.append("dropout 0.3")
        elif choice == "residual":
            lines.append(f"residual {{ dense {f} -> relu -> dense {f} }}")
        else:
            a, b = draw(st.integers(1, 5)), draw(st.integers(1, 5))
            lines.append(f"concat axis -1 {{ branch {{ dense {a} }} branch {{ dense {b} -> tanh }} }}")
            f = a + b
    return lines, f


@st.composite
def specs(draw):
    if draw(st.integers(0, 4)) == 0:
        f = draw(st.integers(1, 12))
        lines, out = draw(vector_stage(f))
        return f"model G {{\n  input x: [{f}]\n" + "".join(f"  {line}\n" for line in lines) + "}\n"
    c, h, w = draw(st.integers(1, 4)), draw(st.integers(3, 13)), draw(st.integers(3, 13))
    lines, (c2, h2, w2) = draw(image_stage(c, h, w))
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["pool global avg -> flatten", "pool global max -> flatten", "flatten"])))
        more, _ = draw(vector_stage(c2 if "global" in lines[-1] else c2 * h2 * w2))
        lines += more
    return f"model G {{\n  input x: [{c}, {h}, {w}]\n" + "".join(f"  {line}\n" for line in lines) + "}\n"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(), st.integers(1, 3))
def test_runtime_shapes_and_params_equal_static(text, batch):
    net = dlspec.load(text).build(device="CPU", seed=0)
    assert verify(net, batch=batch, run=False) == [], text
    static = sum(c.params for c in net.shapes.costs.values()), sum(c.buffers for c in net.shapes.costs.values())
    assert net.num_params() == static, text
