"""The PyTorch lowering of every op: one function per op in :data:`TRANSFORMS`.

A lowering gets a :class:`Site` (the node, its input and output types, markers standing for its
input variables and its module) and returns a :class:`Lowered`: the constructor expression of
the layer's ``nn.Module`` (None for a layer without tensors) and the ``forward`` expression.
Values that are written into the code go through ``site.lit`` so that one class can serve every
call of a block (a value that differs per call becomes a constructor argument).

The numerics are those of dlspec's tinygrad layers (:mod:`dlspec.backends.tinygrad.layers`):
``same`` padding pads the extra element after (as TensorFlow), pooling counts padding as
PyTorch does, a tied dense layer multiplies by its embedding's weight, attention masks are
True where a query may attend and a fully masked query gives 0, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ...errors import BackendError
from .. import unsupported as _unsupported

if TYPE_CHECKING:
    from ...ir import Node

TARGET = "pytorch"


def unsupported(node: Node, why: str | None = None) -> BackendError:
    """The located error for an op (or an op's variant) the PyTorch target cannot lower."""
    return _unsupported("pytorch", node, why)


@dataclass(frozen=True)
class Lowered:
    """A layer in the generated code: ``module`` constructs its ``nn.Module`` (None: no tensors)
    — or, with ``parameter``, its ``nn.Parameter`` (a learned tensor) — and ``call`` is the
    ``forward`` expression (with the site's input, module and device markers)."""

    call: str
    module: str | None = None
    parameter: bool = False


@dataclass
class Site:
    """What a lowering sees of one node. ``x[i]`` stands for input ``i``'s variable, ``m`` for the
    layer's module (``self.conv1``); ``lit(v)`` writes a value, ``size(v)`` one that is the
    input's size (channels, features: a block taking inputs of several sizes gets it as an
    argument, ``in_channels``); ``kw(name, v, default)`` writes
    ``, name=v`` unless ``v`` is the default (and ``explicit(name)`` false); ``helper(name)`` asks for
    one of :data:`HELPERS` and returns its name; ``ref(path)`` is another layer's module."""

    node: Node
    ins: list
    out: Any
    x: list[str]
    m: str
    lit: Callable[..., str]
    size: Callable[[Any], str]
    explicit: Callable[[str], bool]
    ref: Callable[[str], str]
    window: Any = None
    helpers: set[str] = field(default_factory=set)
    #: the device of the forward's first input (``x.device``), for tensors made from no input
    device: str = "\x02d\x02"

    @property
    def p(self) -> Any:
        return self.node.params

    def kw(self, name: str, value: Any, default: Any) -> str:
        at_default = type(value) is type(default) and value == default
        if at_default and not self.explicit(name):
            return ""
        return f", {name}={self.lit(value, name, at_default)}"

    def helper(self, name: str) -> str:
        self.helpers.add(name)
        return name

    def fail(self, why: str) -> BackendError:
        return unsupported(self.node, why)


# ---- helpers written into the generated module when a layer needs them ---------------------------

HELPERS: dict[str, str] = {
    "TiedLinear": '''
class TiedLinear(nn.Module):
    """A dense layer that uses another layer's (units, features) weight, e.g. a language model's
    head tied to its token embedding: only the bias is its own."""

    def __init__(self, units: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(units))

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight, self.bias)
''',
    "PositionalEmbedding": '''
class PositionalEmbedding(nn.Module):
    """A learned vector per position, added to each step: ``x + weight[:T]`` for ``x`` (N, T, D)."""

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(length, dim) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.weight[: x.shape[1]]
''',
    "binary_step": '''
def binary_step(x: Tensor, threshold: float = 0.0) -> Tensor:
    """1 where ``x > threshold``, else 0; trained with a straight-through gradient (the identity's)."""
    return x + ((x > threshold).to(x.dtype) - x).detach()
''',
    "causal_mask": '''
def causal_mask(query: Tensor, memory: Tensor) -> Tensor:
    """``nn.MultiheadAttention``'s ``attn_mask`` (True = masked) letting query i see keys 0..i."""
    ones = torch.ones(query.shape[1], memory.shape[1], dtype=torch.bool, device=query.device)
    return ones.triu(1)
''',
    "masked_attention": '''
def masked_attention(att: nn.MultiheadAttention, query: Tensor, memory: Tensor, keep: Tensor, causal: bool = False) -> Tensor:
    """``att(query, memory, memory)`` where ``keep`` (N, [heads,] [T_q,] T_k) is True where a query
    may attend to a key (and, if ``causal``, only to keys up to its own position); a query that may
    attend to no key gives 0 (not NaN) before the output projection."""
    n, tq, d = query.shape
    tk, h = memory.shape[1], att.num_heads
    wq, wk, wv = att.in_proj_weight.chunk(3)
    bq, bk, bv = att.in_proj_bias.chunk(3) if att.in_proj_bias is not None else (None, None, None)

    def heads(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return F.linear(x, w, b).reshape(n, x.shape[1], h, d // h).transpose(1, 2)

    keep = keep.bool().reshape(keep.shape[0], *[1] * (4 - keep.dim()), *keep.shape[1:])
    if causal:
        keep = keep & torch.ones(tq, tk, dtype=torch.bool, device=query.device).tril()
    seen = keep.any(-1, keepdim=True)
    dropout = att.dropout if att.training else 0.0
    y = F.scaled_dot_product_attention(heads(query, wq, bq), heads(memory, wk, bk), heads(memory, wv, bv), keep | ~seen, dropout)
    y = torch.where(seen, y, 0.0).transpose(1, 2).reshape(n, tq, d)
    return att.out_proj(y)
''',
    "drop_path": '''
def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth, as timm's ``DropPath``: in training each sample is zeroed with
    probability ``rate`` and the others scaled by ``1/(1 − rate)``; the identity in eval."""
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep
''',
    "rotary": '''
def rotary(x: Tensor, base: float = 10000.0) -> Tensor:
    """The rotary position embedding of ``x`` (N, T, *, D), as HuggingFace's LLaMA: positions along
    axis 1, the halves of the last axis rotated, ``x·cos + rotate_half(x)·sin``, angles
    ``t·base^(−2j/D)`` repeated for both halves."""
    t, d = x.shape[1], x.shape[-1]
    freqs = torch.tensor([base ** (-2 * j / d) for j in range(d // 2)], device=x.device)
    angles = torch.arange(t, dtype=torch.float32, device=x.device)[:, None] * freqs
    angles = torch.cat((angles, angles), dim=-1).reshape(1, t, *[1] * (x.dim() - 3), d)
    first, second = x.chunk(2, dim=-1)
    return x * angles.cos().to(x.dtype) + torch.cat((-second, first), dim=-1) * angles.sin().to(x.dtype)
''',
    "add_sinusoids": '''
def add_sinusoids(x: Tensor, base: float = 10000.0) -> Tensor:
    """``x`` (N, T, D) plus the Transformer's position encoding (Vaswani et al., 2017):
    ``sin(t·base^(−2i/D))`` on feature 2i, ``cos`` of the same angle on feature 2i + 1."""
    t, d = x.shape[1], x.shape[2]
    freqs = torch.tensor([base ** (-2 * j / d) for j in range(d // 2)], device=x.device)
    angles = torch.arange(t, dtype=torch.float32, device=x.device)[:, None] * freqs
    return x + torch.stack((angles.sin(), angles.cos()), dim=-1).reshape(t, d).to(x.dtype)
''',
    "GroupedQueryAttention": '''
class GroupedQueryAttention(nn.Module):
    """Multi-head attention with separate projections, as HuggingFace's ``LlamaAttention``:
    ``kv_heads`` key/value heads, head j serving query heads j·r … j·r + r − 1
    (r = heads/kv_heads), and the rotary embedding of the queries and keys when ``rope_base``
    is given. ``keep`` (N, [heads,] [T_q,] T_k) is True where a query may attend to a key; a
    query that may attend to no key gives 0 (not NaN) before the output projection."""

    def __init__(
        self, dim: int, heads: int, kv_heads: int, bias: bool = True, dropout: float = 0.0, rope_base: float | None = None
    ) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.dropout, self.rope_base = heads, kv_heads, dropout, rope_base
        head_dim = dim // heads
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, query: Tensor, memory: Tensor, keep: Tensor | None = None, causal: bool = False) -> Tensor:
        n, tq, d = query.shape
        tk, h, g = memory.shape[1], self.heads, self.kv_heads
        q = self.q_proj(query).reshape(n, tq, h, d // h)
        k = self.k_proj(memory).reshape(n, tk, g, d // h)
        v = self.v_proj(memory).reshape(n, tk, g, d // h).transpose(1, 2)
        if self.rope_base is not None:
            q, k = rotary(q, self.rope_base), rotary(k, self.rope_base)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        k, v = k.repeat_interleave(h // g, dim=1), v.repeat_interleave(h // g, dim=1)
        dropout = self.dropout if self.training else 0.0
        if keep is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
        else:
            keep = keep.bool().reshape(keep.shape[0], *[1] * (4 - keep.dim()), *keep.shape[1:])
            if causal:
                keep = keep & torch.ones(tq, tk, dtype=torch.bool, device=query.device).tril()
            seen = keep.any(-1, keepdim=True)
            y = torch.where(seen, F.scaled_dot_product_attention(q, k, v, keep | ~seen, dropout), 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(n, tq, d))
''',
    "avg_pool_padded": '''
def avg_pool_padded(x: Tensor, kernel: tuple, stride: tuple, pads: tuple, overhang: tuple, count_pad: bool) -> Tensor:
    """Average pooling with (before, after) zero padding per spatial dim (asymmetric allowed) and
    ``overhang`` more after it (ceil mode): each window's sum is divided by its number of input
    values, counting the padding when ``count_pad`` but never the overhang."""
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(pads) - 1]
    flat = [v for (before, after), extra in zip(reversed(pads), reversed(overhang), strict=True) for v in (before, after + extra)]
    total = pool(F.pad(x, flat), kernel, stride)
    ones = torch.ones_like(x[:1, :1])
    if count_pad:
        ones = F.pad(ones, [v for before, after in reversed(pads) for v in (before, after)], value=1.0)
        ones = F.pad(ones, [v for extra in reversed(overhang) for v in (0, extra)])
    else:
        ones = F.pad(ones, flat)
    return total / pool(ones, kernel, stride)
''',
}


# ---- shared arithmetic ---------------------------------------------------------------------------------


def _one(values: tuple) -> Any:
    """An int when every spatial dim has the same value (``3`` for ``(3, 3)``), else the tuple."""
    values = tuple(values)
    return values[0] if len(set(values)) == 1 else values


def _flat(pairs) -> tuple[int, ...]:
    """(before, after) pairs from the first spatial dim on, as ``F.pad``'s flat list (last dim first)."""
    return tuple(v for before, after in reversed(list(pairs)) for v in (before, after))


def _window(s: Site):
    """The layer's geometry, resolved once by the shape pass (``Shapes.windows``)."""
    return s.window


def _symmetric(pads) -> bool:
    return all(before == after for before, after in pads)


def _spatial(s: Site, lo: int = 3, hi: int = 5) -> int:
    rank = s.ins[0].rank
    if not lo <= rank <= hi:
        raise s.fail(f"PyTorch has no {s.node.op} over an input of rank {rank}")
    return rank - 2


# ---- layers with tensors -------------------------------------------------------------------------------


def conv(s: Site) -> Lowered:
    p, x = s.p, s.x[0]
    n = _spatial(s)
    w = _window(s)
    sym = _symmetric(w.pads)
    pad = _one(before for before, _ in w.pads) if sym else 0
    module = (
        f"nn.Conv{n}d({s.size(s.ins[0].shape[1])}, {s.lit(p.filters)}, {s.lit(p.kernel)}"
        f"{s.kw('stride', p.stride, 1)}{s.kw('padding', pad, 0)}{s.kw('dilation', p.dilation, 1)}"
        f"{s.kw('groups', p.groups, 1)}{s.kw('bias', p.bias, True)})"
    )
    if sym:
        return Lowered(f"{s.m}({x})", module)
    return Lowered(f"{s.m}(F.pad({x}, {s.lit(_flat(w.pads))}))", module)  # asymmetric: the extra element after


def deconv(s: Site) -> Lowered:
    p, x = s.p, s.x[0]
    n = _spatial(s)
    w = _window(s)
    sym = _symmetric(w.pads)
    if sym:
        pad, opad = _one(before for before, _ in w.pads), _one(w.output_padding)
        crop = ""
    else:  # no padding in the layer, then the crop: before, and after less the output padding
        pad = 0
        opad = _one(max(0, op - after) for (_, after), op in zip(w.pads, w.output_padding))
        cuts = []
        for (before, after), op in zip(w.pads, w.output_padding):
            end = after - op if op <= after else 0
            cuts.append(f"{s.lit(before) if before else ''}:{'-' + s.lit(end) if end else ''}")
        crop = "[:, :, " + ", ".join(cuts) + "]"
    module = (
        f"nn.ConvTranspose{n}d({s.size(s.ins[0].shape[1])}, {s.lit(p.filters)}, {s.lit(p.kernel)}"
        f"{s.kw('stride', p.stride, 1)}{s.kw('padding', pad, 0)}{s.kw('output_padding', opad, 0)}"
        f"{s.kw('groups', p.groups, 1)}{s.kw('bias', p.bias, True)}{s.kw('dilation', p.dilation, 1)})"
    )
    return Lowered(f"{s.m}({x}){crop}", module)


def dense(s: Site) -> Lowered:
    p, x = s.p, s.x[0]
    f = s.ins[0].shape[-1]
    if p.tied:
        weight = f"{s.ref(p.tied)}.weight"
        if p.bias:
            return Lowered(f"{s.m}({x}, {weight})", f"{s.helper('TiedLinear')}({s.lit(p.units)})")
        return Lowered(f"F.linear({x}, {weight})")
    return Lowered(f"{s.m}({x})", f"nn.Linear({s.size(f)}, {s.lit(p.units)}{s.kw('bias', p.bias, True)})")


def embedding(s: Site) -> Lowered:
    p = s.p
    vocab = p.vocab if p.vocab is not None else s.ins[0].vocab
    return Lowered(f"{s.m}({s.x[0]})", f"nn.Embedding({s.lit(vocab)}, {s.lit(p.dim)}{s.kw('padding_idx', p.padding_idx, None)})")


def posembed(s: Site) -> Lowered:
    return Lowered(f"{s.m}({s.x[0]})", f"{s.helper('PositionalEmbedding')}({s.lit(s.p.length)}, {s.size(s.ins[0].shape[2])})")


def batchnorm(s: Site) -> Lowered:
    p = s.p
    rank = s.ins[0].rank
    if rank not in (2, 3, 4, 5):
        raise s.fail(f"PyTorch's batch norm takes inputs of rank 2 to 5, not {rank}")
    n = {2: 1, 3: 1, 4: 2, 5: 3}[rank]
    module = (
        f"nn.BatchNorm{n}d({s.size(s.ins[0].shape[1])}{s.kw('eps', p.eps, 1e-5)}{s.kw('momentum', p.momentum, 0.1)}"
        f"{s.kw('affine', p.affine, True)})"
    )
    return Lowered(f"{s.m}({s.x[0]})", module)


def layernorm(s: Site) -> Lowered:
    p = s.p
    module = f"nn.LayerNorm({s.size(s.ins[0].shape[-1])}{s.kw('eps', p.eps, 1e-5)}{s.kw('elementwise_affine', p.affine, True)})"
    return Lowered(f"{s.m}({s.x[0]})", module)


def rmsnorm(s: Site) -> Lowered:
    p = s.p  # eps always written: torch.nn.RMSNorm's default is the dtype's machine epsilon
    module = f"nn.RMSNorm({s.size(s.ins[0].shape[-1])}, eps={s.lit(p.eps)}{s.kw('elementwise_affine', p.affine, True)})"
    return Lowered(f"{s.m}({s.x[0]})", module)


def groupnorm(s: Site) -> Lowered:
    p = s.p
    module = f"nn.GroupNorm({s.lit(p.groups)}, {s.size(s.ins[0].shape[1])}{s.kw('eps', p.eps, 1e-5)}{s.kw('affine', p.affine, True)})"
    return Lowered(f"{s.m}({s.x[0]})", module)


def prelu(s: Site) -> Lowered:
    p = s.p
    n = s.ins[0].shape[1] if p.per_channel else 1
    return Lowered(f"{s.m}({s.x[0]})", f"nn.PReLU({s.size(n) if p.per_channel else s.lit(n)}{s.kw('init', p.init, 0.25)})")


def attention(s: Site) -> Lowered:
    p = s.p
    d = s.ins[0].shape[2]
    if p.separate():  # grouped key/value heads or rotary positions: LlamaAttention's layout
        if p.rope:
            s.helper("rotary")
        rope = f", rope_base={s.lit(p.rope_base)}" if p.rope else ""
        module = (
            f"{s.helper('GroupedQueryAttention')}({s.size(d)}, {s.lit(p.heads)}, {s.lit(p.groups())}"
            f"{s.kw('bias', p.bias, True)}{s.kw('dropout', p.dropout, 0.0)}{rope})"
        )
        main = len(s.x) - (1 if p.mask else 0)
        kv = s.x[1] if main == 2 else s.x[0]
        keep = f", {s.x[-1]}" if p.mask else ""
        causal = f", causal={s.lit(True)}" if p.causal else ""
        return Lowered(f"{s.m}({s.x[0]}, {kv}{keep}{causal})", module)
    module = f"nn.MultiheadAttention({s.size(d)}, {s.lit(p.heads)}{s.kw('dropout', p.dropout, 0.0)}{s.kw('bias', p.bias, True)}, batch_first=True)"
    q = s.x[0]
    main = len(s.x) - (1 if p.mask else 0)
    kv = s.x[1] if main == 2 else q
    if p.mask:
        causal = f", causal={s.lit(True)}" if p.causal else ""
        return Lowered(f"{s.helper('masked_attention')}({s.m}, {q}, {kv}, {s.x[-1]}{causal})", module)
    mask = f", attn_mask={s.helper('causal_mask')}({q}, {kv})" if p.causal else ""
    return Lowered(f"{s.m}({q}, {kv}, {kv}{mask}, need_weights=False)[0]", module)


def recurrent(s: Site) -> Lowered:
    p = s.p
    kind = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[s.node.op]
    extra = s.kw("nonlinearity", p.nonlinearity, "tanh") if s.node.op == "rnn" else ""
    module = (
        f"nn.{kind}({s.size(s.ins[0].shape[2])}, {s.lit(p.hidden)}{s.kw('num_layers', p.layers, 1)}{extra}"
        f"{s.kw('bias', p.bias, True)}, batch_first=True{s.kw('dropout', p.dropout, 0.0)}{s.kw('bidirectional', p.bidirectional, False)})"
    )
    x = s.x[0]
    if p.sequences:
        return Lowered(f"{s.m}({x})[0]", module)
    h = f"{s.m}({x})[1]" + ("[0]" if s.node.op == "lstm" else "")  # the last step's state, (layers·directions, N, H)
    if p.bidirectional:  # the last layer's forward (after the last step) and reverse (after the first) states
        return Lowered(f"torch.cat(tuple({h}[-2:]), dim=1)", module)
    return Lowered(f"{h}[-1]", module)


# ---- layers without tensors ------------------------------------------------------------------------------


def pool(s: Site) -> Lowered:
    p, x = s.p, s.x[0]
    n = _spatial(s)
    axes = tuple(range(2, 2 + n))
    if p.scope == "global":
        return Lowered(f"{x}.amax({s.lit(axes)}, keepdim=True)" if p.kind == "max" else f"{x}.mean({s.lit(axes)}, keepdim=True)")
    if p.scope == "adaptive":  # the sizes divide (checked by the shape pass): fixed windows
        return Lowered(f"F.adaptive_{p.kind}_pool{n}d({x}, {s.lit(p.size)})")
    w = _window(s)
    k = _one(w.kernel)
    st = _one(w.stride)
    dil = _one(w.dilation)
    include = p.count_include_pad if p.count_include_pad is not None else p.padding != "same"
    if p.kind == "avg" and any(d != 1 for d in w.dilation):
        raise s.fail("PyTorch's average pooling has no dilation")
    if _symmetric(w.pads):
        pad = _one(before for before, _ in w.pads)
        ceil = s.kw("ceil_mode", p.ceil, False)
        if p.kind == "max":
            return Lowered(f"F.max_pool{n}d({x}, {s.lit(k)}, {s.lit(st)}{s.kw('padding', pad, 0)}{s.kw('dilation', dil, 1)}{ceil})")
        return Lowered(
            f"F.avg_pool{n}d({x}, {s.lit(k)}, {s.lit(st)}{s.kw('padding', pad, 0)}{ceil}{s.kw('count_include_pad', include, True)})"
        )
    # asymmetric padding ('same' with an even window or a stride, or [before, after] pairs)
    overhang = (0,) * n
    if p.ceil:
        sizes = s.ins[0].shape[2:]
        if not all(isinstance(v, int) for v in sizes):
            raise s.fail("ceil mode with asymmetric padding needs known input sizes")
        from ...ops.window import window_out

        overhang = tuple(
            max(0, (window_out(size, kk, ss, dd, pb, pa, True) - 1) * ss + dd * (kk - 1) + 1 - (size + pb + pa))
            for size, kk, ss, dd, (pb, pa) in zip(sizes, w.kernel, w.stride, w.dilation, w.pads)
        )
    if p.kind == "max":
        full = tuple((pb, pa + e) for (pb, pa), e in zip(w.pads, overhang))
        return Lowered(
            f'F.max_pool{n}d(F.pad({x}, {s.lit(_flat(full))}, value=float("-inf")), {s.lit(k)}, {s.lit(st)}{s.kw("dilation", dil, 1)})'
        )
    args = f"{s.lit(w.kernel)}, {s.lit(w.stride)}, {s.lit(tuple(w.pads))}, {s.lit(overhang)}, {s.lit(include)}"
    return Lowered(f"{s.helper('avg_pool_padded')}({x}, {args})")


def pad(s: Site) -> Lowered:
    p, x = s.p, s.x[0]
    n = s.ins[0].rank - 2
    if p.padding == 0:
        spatial = [(0, 0)] * n
    elif isinstance(p.padding, int):
        spatial = [(p.padding, p.padding)] * n
    else:
        spatial = [(q, q) if isinstance(q, int) else (q[0], q[1]) for q in p.padding]
    channels = (p.channels, p.channels) if isinstance(p.channels, int) else tuple(p.channels)
    if p.mode != "constant":
        return Lowered(f"F.pad({x}, {s.lit(_flat(spatial))}, mode={s.lit(p.mode)})")
    flat = _flat(spatial) + (channels if any(channels) else ())
    return Lowered(f"F.pad({x}, {s.lit(flat)}{s.kw('value', p.value, 0.0)})")


def _fn(template: str) -> Callable[[Site], Lowered]:
    """An elementwise function: ``template`` with ``{x}`` for the input."""
    return lambda s: Lowered(template.format(x=s.x[0]))


def step(s: Site) -> Lowered:
    return Lowered(f"{s.helper('binary_step')}({s.x[0]}{s.kw('threshold', s.p.threshold, 0.0)})")


def maxout(s: Site) -> Lowered:
    c, k = s.ins[0].shape[1], s.p.pieces
    return Lowered(f"{s.x[0]}.unflatten(1, ({s.lit(c // k)}, {s.lit(k)})).amax(2)")


def gelu(s: Site) -> Lowered:
    if s.p.approximate == "tanh":
        return Lowered(f'F.gelu({s.x[0]}, approximate="tanh")')
    return Lowered(f"F.gelu({s.x[0]})")


def concat(s: Site) -> Lowered:
    if len(s.x) == 1:
        return Lowered(s.x[0])
    # a learned or constant tensor has a batch of 1: expanded to the others' batch
    full = next((x for x, t in zip(s.x, s.ins) if t.shape[0] != 1), None)
    xs = [
        f"{x}.expand({full}.shape[0], {', '.join(['-1'] * (t.rank - 1))})" if t.shape[0] == 1 and full is not None else x
        for x, t in zip(s.x, s.ins)
    ]
    return Lowered(f"torch.cat([{', '.join(xs)}], dim={s.lit(s.p.axis)})")


def arith(s: Site) -> Lowered:
    p = s.p
    it = iter(s.x)
    a = s.lit(p.left) if p.left is not None else next(it)
    b = s.lit(p.right) if p.right is not None else next(it)
    op = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}[p.fn]
    return Lowered(f"{a} {op} {b}")


def sample(s: Site) -> Lowered:
    mu, logvar = s.x
    return Lowered(f"{mu} + torch.exp(0.5 * {logvar}) * torch.randn_like({mu}) if self.training else {mu}")


def reshape(s: Site) -> Lowered:
    dims = ", ".join(s.lit(d) if isinstance(d, int) else "-1" for d in s.p.shape)
    return Lowered(f"{s.x[0]}.reshape({s.x[0]}.shape[0], {dims})")


def upsample(s: Site) -> Lowered:
    p = s.p
    n = _spatial(s)
    if p.mode == "nearest":  # integer scales: each element repeated, as dlspec
        return Lowered(f'F.interpolate({s.x[0]}, scale_factor={s.lit(p.scale)}, mode="nearest")')
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[n]
    return Lowered(f'F.interpolate({s.x[0]}, scale_factor={s.lit(p.scale)}, mode="{mode}", align_corners={s.lit(p.align_corners)})')


def tile(s: Site) -> Lowered:
    from ...ops.tiling import reps

    return Lowered(f"{s.x[0]}.repeat({', '.join(s.lit(c) for c in reps(s.ins[0], s.out))})")


def roll(s: Site) -> Lowered:
    return Lowered(f"torch.roll({s.x[0]}, {s.lit(s.p.shifts)}, {s.lit(s.p.axis)})")


# ---- tensors: subscripts, pieces, crops, learned and constant tensors, reductions -------------------

TORCH_DTYPES = {"float32": "torch.float32", "float16": "torch.float16", "bfloat16": "torch.bfloat16"}
TORCH_DTYPES |= {"int32": "torch.int32", "int64": "torch.int64", "bool": "torch.bool"}


def _subscript(items) -> str:
    """``[:, 1:5:2, 0]`` from one item per axis (an index or (start, stop, step)); trailing ``:`` dropped."""
    parts = []
    for it in items:
        if isinstance(it, int):
            parts.append(str(it))
            continue
        a, b, c = it
        parts.append(f"{'' if a is None else a}:{'' if b is None else b}" + (f":{c}" if c is not None else ""))
    while len(parts) > 1 and parts[-1] == ":":
        parts.pop()
    return "[" + ", ".join(parts) + "]"


def slice_(s: Site) -> Lowered:
    from ...ops.tensor import resolve_items

    items = resolve_items(s.p.items, s.ins[0].rank, s.node.path)
    return Lowered(f"{s.x[0]}{_subscript(items)}")


def pieces(s: Site) -> Lowered:
    from ... import ops

    x = s.ins[0]
    axis = s.p.axis + x.rank if s.p.axis < 0 else s.p.axis
    a, b = ops.get(s.node.op).bounds(s.p, x.shape[axis])[s.p.piece]
    items = [(None, None, None)] * axis + [(a, b, None)]
    return Lowered(f"{s.x[0]}{_subscript(items)}")


def crop(s: Site) -> Lowered:
    x = s.ins[0]
    want = s.ins[1].shape[2:] if s.p.like is not None else (s.p.size if isinstance(s.p.size, tuple) else (s.p.size,) * (x.rank - 2))
    items: list = [(None, None, None)] * 2
    for d, o in zip(x.shape[2:], want):
        items.append((None, None, None) if d == o else ((d - o) // 2, (d - o) // 2 + o, None))
    return Lowered(f"{s.x[0]}{_subscript(items)}")


def param(s: Site) -> Lowered:
    p = s.p
    shape = s.lit(tuple(p.shape))
    lo, hi = p.range()
    init = {
        "normal": f"torch.randn({shape})" + (f" * {s.lit(p.std)}" if p.std != 1 else "") + (f" + {s.lit(p.mean)}" if p.mean else ""),
        "trunc_normal": f"nn.init.trunc_normal_(torch.empty({shape}), {s.lit(p.mean)}, {s.lit(p.std)}, {s.lit(lo)}, {s.lit(hi)})",
        "uniform": f"torch.empty({shape}).uniform_({s.lit(lo)}, {s.lit(hi)})",
        "zeros": f"torch.zeros({shape})",
        "ones": f"torch.ones({shape})",
        "constant": f"torch.full({shape}, {s.lit(p.value)})",
    }[p.init]
    return Lowered(f"{s.m}.unsqueeze(0)", f"nn.Parameter({init})", parameter=True)


def _dtype_kw(s: Site, dtype: str) -> str:
    return "" if dtype == "float32" else f", dtype={TORCH_DTYPES[dtype]}"


def constant(s: Site) -> Lowered:
    from ... import ops

    p = s.p
    dtype = ops.get(s.node.op).dtype(p)
    shape = ", ".join(s.lit(d) for d in (1, *p.shape))
    if s.node.op == "full":
        return Lowered(f"torch.full(({shape}), {s.lit(p.value)}{_dtype_kw(s, dtype)}, device={s.device})")
    return Lowered(f"torch.{s.node.op}({shape}{_dtype_kw(s, dtype)}, device={s.device})")


def arange(s: Site) -> Lowered:
    from ... import ops

    p = s.p
    dtype = ops.get("arange").dtype(p)
    kind = {"float32": "torch.float32"}.get(dtype, TORCH_DTYPES[dtype])
    return Lowered(f"torch.arange({s.lit(p.start)}, {s.lit(p.stop)}, {s.lit(p.step)}, dtype={kind}, device={s.device}).unsqueeze(0)")


def reduce(s: Site) -> Lowered:
    p = s.p
    rank = s.ins[0].rank
    axes = (
        tuple(range(1, rank))
        if p.axis is None
        else tuple(a + rank if a < 0 else a for a in (p.axis if isinstance(p.axis, tuple) else (p.axis,)))
    )
    fn = {"mean": "mean", "sum": "sum", "max": "amax", "min": "amin"}[s.node.op]
    dims = s.lit(axes[0]) if len(axes) == 1 else s.lit(axes)
    return Lowered(f"{s.x[0]}.{fn}({dims}{s.kw('keepdim', p.keepdim, False)})")


def matmul(s: Site) -> Lowered:
    (a, b), (ta, tb) = s.x, s.ins
    va, vb = ta.rank == 2, tb.rank == 2  # a sample that is a vector: a row on the left, a column on the right
    if va and vb:
        return Lowered(f"({a} * {b}).sum(-1)")
    if va:
        return Lowered(f"({a}.unsqueeze(-2) @ {b}).squeeze(-2)")
    if vb:
        return Lowered(f"({a} @ {b}.unsqueeze(-1)).squeeze(-1)")
    return Lowered(f"{a} @ {b}")


TRANSFORMS: dict[str, Callable[[Site], Lowered]] = {
    "conv": conv,
    "deconv": deconv,
    "dense": dense,
    "embedding": embedding,
    "posembed": posembed,
    "batchnorm": batchnorm,
    "layernorm": layernorm,
    "groupnorm": groupnorm,
    "prelu": prelu,
    "attention": attention,
    "rmsnorm": rmsnorm,
    "posenc": lambda s: Lowered(f"{s.helper('add_sinusoids')}({s.x[0]}{s.kw('base', s.p.base, 10000.0)})"),
    "rope": lambda s: Lowered(f"{s.helper('rotary')}({s.x[0]}{s.kw('base', s.p.base, 10000.0)})"),
    "rnn": recurrent,
    "lstm": recurrent,
    "gru": recurrent,
    "pool": pool,
    "pad": pad,
    "dropout": lambda s: Lowered(f"F.dropout({s.x[0]}, {s.lit(s.p.rate)}, self.training)"),
    "linear": lambda s: Lowered(s.x[0]),
    "identity": lambda s: Lowered(s.x[0]),
    "sigmoid": _fn("torch.sigmoid({x})"),
    "tanh": _fn("torch.tanh({x})"),
    "relu": _fn("F.relu({x})"),
    "silu": _fn("F.silu({x})"),
    "abs": _fn("torch.abs({x})"),
    "exp": _fn("torch.exp({x})"),
    "log": _fn("torch.log({x})"),
    "sqrt": _fn("torch.sqrt({x})"),
    "neg": _fn("-{x}"),
    "step": step,
    "softmax": lambda s: Lowered(f"F.softmax({s.x[0]}, dim={s.lit(s.p.axis)})"),
    "log_softmax": lambda s: Lowered(f"F.log_softmax({s.x[0]}, dim={s.lit(s.p.axis)})"),
    "maxout": maxout,
    "elu": lambda s: Lowered(f"F.elu({s.x[0]}{s.kw('alpha', s.p.alpha, 1.0)})"),
    "leaky_relu": lambda s: Lowered(f"F.leaky_relu({s.x[0]}{s.kw('negative_slope', s.p.slope, 0.01)})"),
    "gelu": gelu,
    "softplus": lambda s: Lowered(f"F.softplus({s.x[0]}{s.kw('beta', s.p.beta, 1.0)})"),
    "concat": concat,
    "add": lambda s: Lowered(" + ".join(s.x)),
    "multiply": lambda s: Lowered(" * ".join(s.x)),
    "arith": arith,
    "sample": sample,
    "flatten": lambda s: Lowered(f"{s.x[0]}.flatten({s.lit(s.p.start)})"),
    "reshape": reshape,
    "permute": lambda s: Lowered(f"{s.x[0]}.permute(0, {', '.join(s.lit(d) for d in s.p.dims)})"),
    "upsample": upsample,
    "slice": slice_,
    "split": pieces,
    "chunk": pieces,
    "crop": crop,
    "param": param,
    "zeros": constant,
    "ones": constant,
    "full": constant,
    "arange": arange,
    "tril": lambda s: Lowered(f"{s.x[0]}.tril({s.lit(s.p.diagonal)})"),
    "triu": lambda s: Lowered(f"{s.x[0]}.triu({s.lit(s.p.diagonal)})"),
    "mean": reduce,
    "sum": reduce,
    "max": reduce,
    "min": reduce,
    "matmul": matmul,
    "transpose": lambda s: Lowered(f"{s.x[0]}.transpose({s.lit(s.p.dim0)}, {s.lit(s.p.dim1)})"),
    "relu6": _fn("F.relu6({x})"),
    "hardswish": _fn("F.hardswish({x})"),
    "hardsigmoid": _fn("F.hardsigmoid({x})"),
    "mish": _fn("F.mish({x})"),
    "sin": _fn("torch.sin({x})"),
    "cos": _fn("torch.cos({x})"),
    "glu": lambda s: Lowered(f"F.glu({s.x[0]}{s.kw('dim', s.p.axis, -1)})"),
    "tile": tile,
    "roll": roll,
    "droppath": lambda s: Lowered(f"{s.helper('drop_path')}({s.x[0]}, {s.lit(s.p.rate)}, self.training)"),
}

#: ops the generator itself writes: model inputs (``forward``'s arguments), a cell's step input
#: and states (its loop), and the cell (a class of its own, called by its parent)
STRUCTURAL = frozenset({"input", "step_in", "cell"})
