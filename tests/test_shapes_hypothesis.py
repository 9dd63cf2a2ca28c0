"""Random valid layer stacks: dlspec's static output shape and parameter count against an
independent re-derivation in plain integer arithmetic (PyTorch's formulas, written here
again on purpose — nothing is imported from dlspec's window helpers).

Stacks are generated legal by construction: the shape is tracked while drawing, so every
kernel fits, groups divide, and a floor-mode pool never drops input (it uses ``ceil true``
where it would)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlspec


def out_size(size: int, k: int, s: int, d: int, pb: int, pa: int, ceil: bool = False) -> int:
    span = size + pb + pa - d * (k - 1) - 1
    if not ceil:
        return span // s + 1
    o = -(-span // s) + 1
    if (o - 1) * s >= size + pb:  # PyTorch: the last window must start inside the input or left padding
        o -= 1
    return o


def render(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(render(x) for x in v) + "]"
    return str(v)


def per_dim(draw, n: int, lo: int, hi: int):
    """One int for every dim, or (sometimes) one per dim."""
    if n > 1 and draw(st.booleans()):
        return [draw(st.integers(lo, hi)) for _ in range(n)]
    return [draw(st.integers(lo, hi))] * n


def written(vals: list[int]):
    return vals[0] if len(set(vals)) == 1 else vals


@st.composite
def stacks(draw):
    n = draw(st.integers(1, 2))  # spatial dims
    c = draw(st.integers(1, 6))
    sizes = [draw(st.integers(3, 24)) for _ in range(n)]
    lines = [f"input x: {render([c, *sizes])}"]
    params = 0
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "conv", "pool", "batchnorm", "act", "dropout"]))
        if kind == "conv":
            g = draw(st.sampled_from([x for x in range(1, c + 1) if c % x == 0]))
            f = g * draw(st.integers(1, 4))
            d = per_dim(draw, n, 1, 2)
            s = per_dim(draw, n, 1, 3)
            mode = draw(st.sampled_from(["int", "pairs", "same", "valid"]))
            if mode == "int":
                p = per_dim(draw, n, 0, 2)
                pads, ptext = [(x, x) for x in p], render(written(p))
            elif mode == "pairs":
                pads = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(n)]
                ptext = render([list(pp) for pp in pads])
            else:
                pads, ptext = None, mode
            # kernels that fit the padded input
            k = []
            for i in range(n):
                room = sizes[i] + (sum(pads[i]) if pads else (0 if mode == "valid" else sizes[i]))
                kmax = max(1, min(5, (room - 1) // d[i] + 1))
                k.append(draw(st.integers(1, kmax)))
            new = []
            for i in range(n):
                if mode == "same":
                    if s[i] == 1:
                        o = sizes[i]
                    else:
                        o = -(-sizes[i] // s[i])
                elif mode == "valid":
                    o = out_size(sizes[i], k[i], s[i], d[i], 0, 0)
                else:
                    o = out_size(sizes[i], k[i], s[i], d[i], *pads[i])
                new.append(o)
            if min(new) < 1:
                continue
            bias = draw(st.booleans())
            kprod = 1
            for kk in k:
                kprod *= kk
            params += f * (c // g) * kprod + (f if bias else 0)
            lines.append(
                f"conv {f} kernel {render(written(k))} stride {render(written(s))} padding {ptext} "
                f"dilation {render(written(d))} groups {g}" + ("" if bias else ", bias false")
            )
            c, sizes = f, new
        elif kind == "pool":
            k = per_dim(draw, n, 1, 4)
            if any(kk > sz for kk, sz in zip(k, sizes)):
                continue
            s = per_dim(draw, n, 1, 3)
            p = [draw(st.integers(0, kk // 2)) for kk in k]
            ceil = draw(st.booleans())
            floor_drops = any(
                (out_size(sz, kk, ss, 1, pp, pp) - 1) * ss + kk < pp + sz and kk >= ss for sz, kk, ss, pp in zip(sizes, k, s, p)
            )
            ceil = ceil or floor_drops
            kind_word = draw(st.sampled_from(["max", "avg"]))
            lines.append(
                f"pool {kind_word} kernel {render(written(k))} stride {render(written(s))} padding {render(written(p))}"
                + (" ceil true" if ceil else "")
            )
            sizes = [out_size(sz, kk, ss, 1, pp, pp, ceil) for sz, kk, ss, pp in zip(sizes, k, s, p)]
        elif kind == "batchnorm":
            lines.append("batchnorm")
            params += 2 * c
        elif kind == "act":
            lines.append(draw(st.sampled_from(["relu", "tanh", "sigmoid", "gelu", "elu", "leaky_relu 0.1"])))
        else:
            lines.append(f"dropout {draw(st.sampled_from(['0.1', '0.5']))}")
    shape: tuple[int, ...] = (c, *sizes)
    if draw(st.booleans()):
        if draw(st.booleans()):
            lines.append("pool global avg")
            shape = (c,) + (1,) * n
        lines.append("flatten")
        features = 1
        for x in shape:
            features *= x
        for _ in range(draw(st.integers(0, 3))):
            units = draw(st.integers(1, 32))
            lines.append(f"dense {units}")
            params += units * features + units
            features = units
            extra = draw(st.sampled_from(["", "relu", "dropout 0.2", "batchnorm"]))
            if extra:
                lines.append(extra)
                if extra == "batchnorm":
                    params += 2 * features
        shape = (features,)
    return "\n".join(lines), shape, params


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stacks())
def test_random_stack_matches_independent_arithmetic(case):
    body, shape, params = case
    text = "model R {\n" + "\n".join("  " + line for line in body.splitlines()) + "\n}\n"
    s = dlspec.load(text, name="r.dl").shapes()
    ((_, t),) = s.output_types()
    assert t.sample == shape, text
    assert sum(c.params for c in s.costs.values()) == params, text
