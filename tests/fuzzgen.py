"""Random spec generators for the fuzzer: the in-suite hypothesis properties
(tests/test_properties.py) and the seeded campaign (bench/fuzz.py) share them.

A generator takes a :class:`Chooser` — hypothesis's ``draw`` (:class:`DrawChooser`) or a
seeded :class:`random.Random` (:class:`RandomChooser`) — and returns spec text. The families:

- :func:`grammar_spec`: every construct of grammar/dlspec.lark (imports; models, blocks and
  cells with parameters; input/state/output/gate/assign statements; chains, tuples, calls,
  keyword arguments, ``as``; if/elif/else; residual/shortcut ``when``, concat/add/multiply
  branches, repeat ``as``/``index``, group; every operator, ternaries; subscripts and slices,
  ``a, b = …`` destructuring, bound ``repeat``/``group``, ``param`` statements, numeric locals,
  shape queries, tables, split/chunk/crop, constants, reductions, ``@``/matmul/transpose; train
  sections of every objective), with values drawn from :func:`number` (huge ones included);
- :func:`huge_spec`: a valid spec with a huge or odd number in one position (a size, a kernel,
  an lr, a scale, a repeat count, a recurrent ``layers``, an input dim, a train setting);
- :func:`deep_spec`: nesting from tests/deepspecs.py around and past the limits;
- :func:`chain_spec`: long chains of block calls (with parameters, through instances);
- :func:`token_soup` and :func:`mutated`: random tokens, and specs with tokens deleted,
  duplicated, swapped or inserted.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import deepspecs as D

ROOT = Path(__file__).resolve().parents[1]


class Chooser(Protocol):
    def choice(self, seq: Sequence[Any]) -> Any: ...
    def integer(self, lo: int, hi: int) -> int: ...
    def chance(self, p: float) -> bool: ...


class RandomChooser:
    """Choices from a seeded :class:`random.Random`."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.rng.randrange(len(seq))]

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


class DrawChooser:
    """Choices from hypothesis's ``draw`` (so that hypothesis can shrink them)."""

    def __init__(self, draw: Callable):
        from hypothesis import strategies as st

        self.draw, self.st = draw, st

    def choice(self, seq: Sequence[Any]) -> Any:
        return self.draw(self.st.sampled_from(list(seq)))

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(self.st.integers(lo, hi))

    def chance(self, p: float) -> bool:
        return self.draw(self.st.integers(0, 999)) < int(p * 1000)


# ---- numbers -----------------------------------------------------------------------------

#: huge, tiny and odd numbers and expressions (every one an atom: parenthesised when needed)
HUGE = [
    "(2 ** 64)",
    "(2 ** 63)",
    "(2 ** 63 - 1)",
    "(-(2 ** 63))",
    "((2 ** 64) ** 64)",
    "(1e308 * 10)",
    "(1e308 + 1e308)",
    "1e308",
    "1e400",
    "1e-400",
    "(2 ** 2 ** 2 ** 2 ** 2 ** 2)",
    "(2 ** 2 ** 2 ** 2 ** 2)",
    "(10 ** 400)",
    "(10 ** 19)",
    "(2 ** -2000)",
    "(0 ** -1)",
    "((0 - 1) ** 0.5)",
    "(1 / 0)",
    "(5 // 0)",
    "(5 % 0)",
    "(int(1e300))",
    "(float(10 ** 300))",
    "(round(1e308 * 10))",
    "(ceil(1e308))",
    "(max(2 ** 62, 3) * 4)",
    "(len([1, 2]) ** 5000)",
    "(9223372036854775807 + 1)",
    "9223372036854775808",
    "(-9223372036854775808)",
    "0",
    "-1",
    "(0.5)",
    "(-0.0)",
    "(1 if true else 2 ** 64)",
    "(2 ** 64 if false else 3)",
]


def huge_number(ch: Chooser) -> str:
    """A huge (or zero, negative, fractional, non-finite) number as an atom."""
    k = ch.integer(0, 9)
    if k == 0:
        return "9" * ch.choice([19, 20, 309, 4300, 4301, 5000])  # long literals, 10**5000 included
    if k == 1:
        return "1" + "0" * ch.choice([18, 19, 400, 5000]) + ch.choice(["", ".0", "e10"])
    if k == 2:
        n = ch.integer(2, 8)
        return "(" + " ** ".join([ch.choice(["2", "3", "10", "2.0"])] * n) + ")"  # power towers
    if k == 3:
        return f"({ch.choice(HUGE)} {ch.choice(['*', '+', '-', '**', '//', '/', '%'])} {ch.choice(HUGE)})"
    return ch.choice(HUGE)


def number(ch: Chooser, huge: float = 0.02) -> str:
    """A number (an atom): mostly a small one, sometimes a huge or odd one."""
    if ch.chance(huge):
        return huge_number(ch)
    return ch.choice(["1", "2", "3", "4", "8", "16", "0.5", "0.1", "1e-3", ".5", "2.", "0", "64", "5"])


# ---- expressions -------------------------------------------------------------------------

FUNCS = ["min", "max", "int", "float", "round", "ceil", "floor", "len", "abs", "size", "channels", "sum", "mean"]
CMP = ["==", "!=", "<", "<=", ">", ">="]
ARITH = ["+", "-", "*", "/", "//", "%", "**", "@"]


def subscript(ch: Chooser, names: Sequence[str] = ("w", "i")) -> str:
    """``[:, 0]``, ``[..., 1:5:2]``, ``[i][0]``: a subscript (not necessarily a valid one)."""
    one = lambda: ch.choice([":", "0", "-1", "1:", ":2", "::2", "1:5:2", "...", "w", "i", "-1:", "0:0", "::-1", "99"])  # noqa: E731
    if ch.chance(0.3):
        return "[" + ch.choice(["0", "i", "-1", "5", "w"]) + "]" + ch.choice(["", "[0]", "[1]"])
    return "[" + ", ".join(one() for _ in range(ch.integer(1, 4))) + "]"


def expr(ch: Chooser, depth: int = 0, names: Sequence[str] = ("w", "i", "x")) -> str:
    """An expression of any kind (not necessarily well typed)."""
    k = ch.integer(0, 14 if depth < 3 else 2)
    if k == 0:
        return number(ch)
    if k == 1:
        return ch.choice([*names, "true", "false", "T", '"s"'])
    if k == 2:
        return f"({expr(ch, depth + 1, names)})"
    if k == 3:
        return f"{sub(ch, depth, names)} {ch.choice(ARITH)} {sub(ch, depth, names)}"
    if k == 4:
        return f"{ch.choice(['-', '+', '- '])}{sub(ch, depth, names)}"
    if k == 5:
        return f"{sub(ch, depth, names)} {ch.choice(CMP)} {sub(ch, depth, names)}"
    if k == 6:
        return f"{sub(ch, depth, names)} {ch.choice(['and', 'or'])} {sub(ch, depth, names)}"
    if k == 7:
        return f"not {sub(ch, depth, names)}"
    if k == 8:
        return f"{sub(ch, depth, names)} if {sub(ch, depth, names)} else {expr(ch, depth + 1, names)}"
    if k == 9:
        items = [expr(ch, depth + 1, names) for _ in range(ch.integer(0, 3))]
        return "[" + ", ".join(items) + (", " if items and ch.chance(0.2) else "") + "]"
    if k == 10:
        items = [expr(ch, depth + 1, names) for _ in range(ch.integer(1, 3))]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if k == 11:
        f = ch.choice(FUNCS)
        args = [expr(ch, depth + 1, names) for _ in range(ch.integer(0, 3))]
        return f"{f}({', '.join(args)})"
    if k == 12:
        return f"{sub(ch, depth, names)} ** {sub(ch, depth, names)}"
    if k == 13:
        return f"B({expr(ch, depth + 1, names)}, c = {expr(ch, depth + 1, names)})"
    if k == 14 and ch.chance(0.5):
        return ch.choice(["x", "h", "cfg", "t"]) + subscript(ch, names)
    return number(ch, huge=0.1)


def sub(ch: Chooser, depth: int, names: Sequence[str]) -> str:
    """An operand: parenthesised when compound, mostly (so that most expressions parse)."""
    e = expr(ch, depth + 1, names)
    return f"({e})" if " " in e and ch.chance(0.9) else e


def atom(ch: Chooser, names: Sequence[str] = ("w", "i")) -> str:
    """An argument: a number, a name or a parenthesised expression."""
    k = ch.integer(0, 5)
    if k <= 2:
        return number(ch)
    if k == 3:
        return ch.choice(names)
    return f"({expr(ch, 1, names)})"


# ---- layers and statements ---------------------------------------------------------------

ACTS = ["relu", "tanh", "sigmoid", "silu", "identity", "linear", "softmax", "log_softmax", "abs", "exp", "log", "sqrt", "neg"]
ACTS += ["relu6", "hardswish", "hardsigmoid", "mish", "sin", "cos", "glu"]


def layer(ch: Chooser, names: Sequence[str] = ("w", "i")) -> str:
    """One layer statement's application (an op word and its arguments)."""
    a = lambda: atom(ch, names)  # noqa: E731
    k = ch.integer(0, 26)
    out = {
        0: lambda: f"dense {a()}" + ch.choice(["", " bias false", ", bias true", " units 4"]),
        1: lambda: (
            f"conv {a()} kernel {a()}"
            + ch.choice(["", f" stride {a()}", f" padding {a()}", " same", " padding valid", f" groups {a()}", f" dilation {a()}"])
        ),
        2: lambda: f"deconv {a()} kernel {a()}" + ch.choice(["", f" stride {a()} output_padding {a()}"]),
        3: lambda: "pool " + ch.choice(["max", "avg"]) + f" kernel {a()}" + ch.choice(["", f" stride {a()}", " ceil", " same"]),
        4: lambda: ch.choice(["pool global avg", "pool global max", f"pool adaptive avg size {a()}"]),
        5: lambda: ch.choice(["flatten", f"flatten start {a()}"]),
        6: lambda: f"reshape [{a()}, -1]" if ch.chance(0.5) else f"reshape [{a()}, {a()}]",
        7: lambda: f"permute [{ch.choice(['2, 1', '1, 2', '3, 2, 1', a()])}]",
        8: lambda: f"upsample {a()}" + ch.choice(["", " linear", " nearest", f" scale {a()}"]),
        9: lambda: ch.choice(
            ["batchnorm", "layernorm", f"groupnorm {a()}", f"batchnorm eps {a()} momentum {a()}", "rmsnorm", f"rmsnorm eps {a()}"]
        ),
        10: lambda: f"dropout {a()}",
        11: lambda: f"embedding {a()}" + ch.choice(["", f" vocab {a()}"]),
        12: lambda: ch.choice(
            [f"posembed {a()}", "posenc", f"posenc base {a()}", "rope", f"reshape [-1, {a()}, {a()}] -> rope base {a()}"]
        ),
        13: lambda: (
            f"attention {a()}"
            + ch.choice(["", " causal", f" dropout {a()}", " mask m", f" kv_heads {a()}", " rope", f" kv_heads {a()} causal rope"])
        ),
        14: lambda: (
            ch.choice(["rnn", "lstm", "gru"])
            + f" {a()}"
            + ch.choice(["", f" layers {a()}", " bidirectional", " sequences false", " relu", f" dropout {a()}"])
        ),
        15: lambda: ch.choice(ACTS),
        16: lambda: ch.choice(
            [f"leaky_relu {a()}", f"elu alpha {a()}", "gelu tanh", f"softmax axis {a()}", "prelu per_channel", f"softplus beta {a()}"]
            + [f"glu axis {a()}", f"glu({a()})", f"tile [{a()}, {a()}]", f"tile to [-1, {a()}]", f"roll {a()} axis {a()}"]
            + [f"roll([{a()}, 1], axis = [1, {a()}])", f"droppath {a()}", f"embedding {a()} padding_idx {a()}"]
            + [f"upsample {a()} bilinear", "upsample 2 bilinear align_corners", f"upsample {a()} linear align_corners false"]
        ),
        17: lambda: f"pad {a()}" + ch.choice(["", " reflect", f" channels [{a()}, {a()}]", f" value {a()}"]),
        18: lambda: f"maxout {a()}",
        19: lambda: f"step threshold {a()}",
        20: lambda: ch.choice(
            ["concat axis -1", "add", "multiply", "sample", f"concat({a()}, x)", "matmul", f"concat(p, x, axis = {a()})"]
        ),
        21: lambda: ch.choice(["B(4)", f"B({a()}, c = {a()})", "B(4) as b", "C(8)", "C(4, sequences = false)", "Enc()"]),
        22: lambda: f"{ch.choice(['dense', 'conv', 'frob', 'B', 'x'])} {' '.join(a() for _ in range(ch.integer(0, 3)))}",
        23: lambda: ch.choice([f"split {a()}", f"split [{a()}, {a()}] axis {a()}", f"chunk {a()} axis -1", f"split {a()} piece {a()}"]),
        24: lambda: ch.choice([f"crop {a()}", f"crop [{a()}, {a()}]", "crop like x", "crop like h", f"crop({a()})"]),
        25: lambda: (
            ch.choice(["mean", "sum", "max", "min"])
            + ch.choice(["", f" axis {a()}", f" {a()} keepdim", f" axis [{a()}, {a()}]", " keepdim true", " axis 0"])
        ),
        26: lambda: ch.choice(["transpose", f"transpose {a()} {a()}", f"tril {a()}", "triu", f"transpose dim0 {a()}"]),
    }[k]()
    if ch.chance(0.1):
        out += f" as {ch.choice(['n1', 'n2', 'fc', 'x'])}"
    return out


def chain(ch: Chooser, names: Sequence[str] = ("w", "i")) -> str:
    first = ch.choice(
        [
            "",
            "",
            "",
            "x -> ",
            "(x, h) -> ",
            "h -> ",
            "t(x) -> ",
            "x + h -> ",
            "x * 2 -> ",
            "x[:, 0] -> ",
            "x @ h -> ",
            "split(x, 2) -> ",
            "p + x -> ",
        ]
    )
    return first + " -> ".join(layer(ch, names) for _ in range(ch.integer(1, 3)))


def statements(ch: Chooser, depth: int, names: Sequence[str], cell: bool = False) -> list[str]:
    """A body's statements, as lines (with an indent of two spaces per level)."""
    out: list[str] = []
    for _ in range(ch.integer(1, 4)):
        out.extend(statement(ch, depth, names, cell))
    return out


def body(ch: Chooser, depth: int, names: Sequence[str], cell: bool = False) -> str:
    """``{ … }`` on one line or over several."""
    if depth > 3 or ch.chance(0.4):
        return "{ " + chain(ch, names) + " }"
    inner = statements(ch, depth + 1, names, cell)
    return "{\n" + "\n".join("  " + line for line in inner) + "\n}"


def statement(ch: Chooser, depth: int, names: Sequence[str], cell: bool = False) -> list[str]:
    k = ch.integer(0, 16)
    b = lambda: body(ch, depth, names, cell)  # noqa: E731
    text: str
    if k <= 3:
        text = chain(ch, names)
    elif k == 4:
        text = f"{ch.choice(['h', 'g', 'y', 'x'])} = {chain(ch, names)}"
    elif k == 5:
        text = ch.choice(["output h", "output h, g", f"output y = {chain(ch, names)}", "output x"])
    elif k == 6:
        text = f"input {ch.choice(['x', 'm', 'tok'])}: [{', '.join(atom(ch, names) for _ in range(ch.integer(0, 3)))}]" + ch.choice(
            ["", " int vocab 100", " bool", " float16", " dtype int32", f" vocab {atom(ch, names)}"]
        )
    elif k == 7:
        text = f"if {expr(ch, 1, names)} {b()}" + ch.choice(
            ["", f" elif {expr(ch, 1, names)} {b()}", f" else {b()}", f" elif w > 1 {b()} else {b()}"]
        )
    elif k == 8:
        text = f"residual {b()}" + ch.choice(["", f" shortcut {b()}", f" shortcut when {expr(ch, 1, names)} {b()}"])
    elif k == 9:
        word = ch.choice(["concat", "add", "multiply", "concat axis -1"])
        text = f"{word} {{ " + " ".join(f"branch {b()}" for _ in range(ch.integer(0, 3))) + " }"
    elif k == 10:
        text = f"repeat {atom(ch, names)}" + ch.choice(["", " as r", " index j", " as r index j"]) + f" {b()}"
    elif k == 11:
        text = f"group {ch.choice(['g1', 'g2', 'g3'])} {b()}"
    elif k == 12:
        text = ch.choice(
            [
                "gate z = (x, h) -> dense 4 -> sigmoid",
                "state h: [4]",
                f"state s: [{atom(ch, names)}]",
                "h = (1 - z) * h + z * x",
                # cells with a context: read whole at every step, a state started from one
                "context m",
                "context m, e",
                f"state s: [{atom(ch, names)}] init m",
                "h = (x, h, mean(m, axis = 1)) -> dense 4",
            ]
        )
    elif k == 13:
        text = ch.choice(
            [
                "t = B(4)",
                "t = Enc()",
                "y = t(x)",
                "y = t(x) + t(x)",
                "u = C(4)",
                f"{ch.choice(['frob', 'branch', 'shortcut'])} {b()}",
                "(x, h) -> C(4)",
                "(x, x, h) -> C(4)",
                "C(4, m = x)",
                "C(4, m = x, sequences = false)",
            ]
        )
    elif k == 14:
        text = f"{ch.choice(['h', 'y'])} = {expr(ch, 0, [*names, 'x', 'h'])}"
    elif k == 15 and ch.chance(0.7):
        text = new_construct(ch, depth, names, cell)
    else:
        text = chain(ch, names) + ch.choice([";", "; relu", " # a comment", ""])
    return text.split("\n")


def new_construct(ch: Chooser, depth: int, names: Sequence[str], cell: bool = False) -> str:
    """A statement of the tensor language: destructuring, bound compounds, ``param``, numeric
    locals, shape queries, tables, constants, subscripts, reductions, ``@``."""
    a = lambda: atom(ch, names)  # noqa: E731
    dims = lambda: ", ".join(a() for _ in range(ch.integer(0, 3)))  # noqa: E731
    return ch.choice(
        [
            f"a, b = split(x, {a()})",
            f"a, b, c = split(x, [{a()}, {a()}, {a()}], axis = {a()})",
            f"a, b = chunk(x, {a()}, axis = -1)",
            "mu, logvar = B(4)",
            "mu, logvar = Enc()",
            "a, b = x",
            "c, s = cfg[i]",
            f"h = repeat {a()} {{ dense 4 }}",
            f"g = group g4 {{ {chain(ch, names)} }}",
            f"p = residual {{ {chain(ch, names)} }}",
            f"param p: [{dims()}]"
            + ch.choice(
                [
                    "",
                    " init zeros",
                    f" init normal std {a()}",
                    f" init trunc_normal std {a()}",
                    f" init uniform low {a()} high {a()}",
                    " ones",
                    f" init constant value {a()}",
                ]
            ),
            f"w = int(w * ({a()} / 64)) * {a()}",
            f"w = channels(x) // {a()}",
            f"w = size({ch.choice(['x', 'h', 'w'])}, {a()})",
            f"cfg = [[{a()}, {a()}], [{a()}, {a()}]]",
            f"dense cfg{subscript(ch, names)}",
            f"y = x{subscript(ch, names)}",
            f"m = {ch.choice(['zeros', 'ones'])}([{dims()}]" + ch.choice(["", ", dtype = bool", ", dtype = int"]) + ")",
            f"m = full([{dims()}], {a()})",
            f"m = arange({', '.join(a() for _ in range(ch.integer(1, 3)))})",
            f"m = tril(ones([{a()}, {a()}], dtype = bool), {a()})",
            f"y = {ch.choice(['mean', 'sum', 'max', 'min'])}(x, {a()}"
            + ch.choice(["", ", keepdim = true", f", axis = [{a()}, {a()}]"])
            + ")",
            f"y = x @ {ch.choice(['x', 'h', 'transpose(x)', 'transpose(x, 1, 2)', 'p'])}",
            f"y = matmul(x, {ch.choice(['x', 'h'])})",
            f"y = crop(x, like = {ch.choice(['h', 'x', 'p'])})",
            "output y, y",
            "gate = dense 4",
            f"conv 4 kernel 3 stride {a()}, ok drop_border",
            ch.choice(["dense 4, ok [tuple_concat, pad_nothing]", "dense 4, ok frob", "dense 4, ok", "pad 0, ok pad_nothing"]),
            f"{ch.choice(['input', 'state', 'output', 'param'])}, b = split(x, 2)",
        ]
    )


def params(ch: Chooser) -> str:
    ps = ch.choice(
        [[], ["w = 4"], ["w = 4", "i = 2"], ["w = 8", "c = w * 2"], ["w = 4", "i = 1", "c = 2"], [f"w = {number(ch, huge=0.3)}"], ["w"]]
    )
    if ch.chance(0.02):
        ps = ["w = 4", "w = 5"]
    return "(" + ", ".join(ps) + ")"


def definition(ch: Chooser) -> str:
    kind = ch.choice(["model", "model", "block", "cell"])
    name = {"model": ch.choice(["M", "N", "Q"]), "block": ch.choice(["B", "Enc"]), "cell": "C"}[kind]
    head = f"{kind} {name}" + (params(ch) if kind != "model" or ch.chance(0.5) else "")
    lines: list[str] = []
    if kind == "model":
        dims = [ch.choice(["4", "8", "3", "16", "w"]) if ch.chance(0.9) else atom(ch) for _ in range(ch.integer(1, 3))]
        lines.append(f"input x: [{', '.join(dims)}]" if ch.chance(0.9) else "input x: [T, 4]")
        if ch.chance(0.2):
            lines.append(ch.choice(["input h: [4]", "input m: [T, T] bool", "input tok: [T] int vocab 50"]))
    elif kind == "cell":
        lines.append("state h: [" + atom(ch) + "]")
    lines += statements(ch, 1, ("w", "i", "c"), cell=kind == "cell")
    return head + " {\n" + "\n".join("  " + line for line in lines) + "\n}"


TRAIN_HEADS = [
    "train M",
    "train N",
    "train autoencoder M",
    "train vae M",
    "train dqn Q",
    "train gan generator M, discriminator N",
    "train",
    "train X",
]


def train(ch: Chooser) -> str:
    n = lambda: number(ch, huge=0.3)  # noqa: E731
    DIR = '"dir/x"'  # noqa: N806 - a string literal of the language
    settings = [
        lambda: (
            f"data {ch.choice(['mnist', 'shapes', 'sequences', 'cifar10', DIR])}"
            + ch.choice(["", f" val_split {n()}", " augment false", f" limit {n()}", f" length {n()} classes {n()}"])
        ),
        lambda: (
            f"loss {ch.choice(['cross_entropy', 'mse', 'bce', 'bce_logits', 'huber delta 1.0', 'l1', 'nll', 'frob'])}"
            + ch.choice(["", f" label_smoothing {n()}"])
        ),
        lambda: (
            f"optimizer {ch.choice(['sgd', 'adam', 'adamw', 'rmsprop', 'adagrad', 'ftrl'])} lr {n()}"
            + ch.choice(["", f" momentum {n()}", " nesterov true", f" beta1 {n()} beta2 {n()}", f" eps {n()}", f" lr_power {n()}"])
        ),
        lambda: (
            f"schedule {ch.choice(['step step 2', 'multistep milestones [5, 8]', 'cosine', 'exponential', 'warmup warmup 2', 'poly power 2.0'])}"
            + ch.choice(["", f" gamma {n()}", f" min_lr {n()}"])
        ),
        lambda: f"{ch.choice(['batch', 'epochs', 'steps', 'seed', 'latent', 'buffer', 'target_update', 'episodes', 'warmup'])} {n()}",
        lambda: f"{ch.choice(['weight_decay', 'l2', 'clip', 'gamma', 'beta', 'label_smoothing'])} {n()}" + ch.choice(["", f" norm {n()}"]),
        lambda: f"noise {n()} dim {n()}",
        lambda: f"epsilon {n()} end {n()} decay {n()}",
        lambda: ch.choice(
            [
                "metrics accuracy, top5",
                "env cartpole",
                'device "cpu"',
                "metrics frob",
                f"{ch.choice(['d_optimizer', 'g_optimizer'])} adam lr {n()} beta1 {n()}",
            ]
        ),
    ]
    lines = [ch.choice(settings)() for _ in range(ch.integer(0, 5))]
    return ch.choice(TRAIN_HEADS) + " {\n" + "\n".join("  " + line for line in lines) + "\n}"


IMPORTS = ['"missing.dl"', '"/dev/null"', '"lib\\\\b.dl"', '"a.txt"', '"sub/../x.dl"', '"\\u00e9.dl"', '""', '"\\q.dl"']


def grammar_spec(ch: Chooser) -> str:
    """A spec of random definitions, train sections and imports, in a random layout."""
    items = []
    if ch.chance(0.1):
        items.append("import " + ch.choice(IMPORTS))
    seen: set[str] = set()
    for _ in range(ch.integer(1, 4)):
        if ch.chance(0.8):
            d = definition(ch)
            name = re.match(r"\w+ (\w+)", d).group(1)
            if name in seen and ch.chance(0.9):  # a name defined twice, now and then
                continue
            seen.add(name)
            items.append(d)
        else:
            items.append(train(ch))
    text = "\n\n".join(items) + "\n"
    return relayout(ch, text)


def relayout(ch: Chooser, text: str) -> str:
    """The same spec with another indent, blank lines, comments, `;` joins or CRLF."""
    k = ch.integer(0, 6)
    if k == 0:
        return text.replace("\n  ", "\n\t")
    if k == 1:
        return text.replace("\n", "  # c\n", ch.integer(1, 5))
    if k == 2:
        return re.sub(r"\n\s+", "; ", text, count=ch.integer(1, 3))
    if k == 3:
        return text.replace("\n", "\r\n")
    if k == 4:
        return "# header\n\n" + text.replace("\n}", "\n\n}", 1)
    return text


# ---- huge numbers in every position ------------------------------------------------------

#: valid spec templates with one `@` where a number goes
HUGE_TEMPLATES = [
    "model M {\n  input x: [8]\n  dense @\n}\n",
    "model M {\n  input x: [@]\n  dense 4\n}\n",
    "model M {\n  input x: [3, 8, 8]\n  conv 4 kernel @\n}\n",
    "model M {\n  input x: [3, 8, 8]\n  conv 4 kernel 3 stride @ padding 1\n}\n",
    "model M {\n  input x: [3, 8, 8]\n  conv @ kernel 3 padding @\n}\n",
    "model M {\n  input x: [3, 8, 8]\n  pool max kernel @\n}\n",
    "model M {\n  input x: [3, 8, 8]\n  upsample @\n}\n",
    "model M {\n  input x: [3, 8, 8]\n  upsample scale @ linear\n}\n",
    "model M {\n  input x: [3, 8, 8]\n  deconv 4 kernel 3 stride @\n}\n",
    "model M {\n  input x: [3, 8, 8]\n  pad @\n}\n",
    "model M {\n  input x: [8]\n  repeat @ { dense 4 }\n}\n",
    "model M {\n  input x: [8]\n  repeat 2 { repeat @ { dense 4 } }\n}\n",
    "model M {\n  input x: [T, 8]\n  lstm 8 layers @\n}\n",
    "model M {\n  input x: [T, 8]\n  gru @ layers 2\n}\n",
    "model M {\n  input x: [T, 8]\n  rnn 8 layers @ bidirectional\n}\n",
    "model M {\n  input x: [T] int vocab @\n  embedding 4\n}\n",
    "model M {\n  input x: [T, 8]\n  posembed @\n}\n",
    "model M {\n  input x: [T, 8]\n  attention @\n}\n",
    "model M {\n  input x: [T, 8]\n  attention 4 kv_heads @ rope\n}\n",
    "model M {\n  input x: [T, 8]\n  posenc base @ -> rope base @ -> rmsnorm eps @\n}\n",
    "model M {\n  input x: [8]\n  dropout @\n}\n",
    "model M {\n  input x: [8]\n  leaky_relu @\n}\n",
    "model M {\n  input x: [8]\n  h = x * @\n  h -> dense 2\n}\n",
    "model M {\n  input x: [8]\n  h = x + @ - x\n  dense 2\n}\n",
    "model M {\n  input x: [8]\n  reshape [@, -1]\n}\n",
    "model M {\n  input x: [8]\n  reshape [2, @]\n}\n",
    "model M(w = @) {\n  input x: [8]\n  dense w\n}\n",
    "model M(w = @) {\n  input x: [8]\n  dense (w * w)\n}\n",
    "block B(c) {\n  dense c\n}\n\nmodel M {\n  input x: [8]\n  B(@)\n}\n",
    "model M {\n  input x: [8]\n  if @ > 3 { relu }\n  dense 2\n}\n",
    "model M {\n  input x: [8]\n  dense (max(@, 4))\n}\n",
    "model M {\n  input x: [8]\n  dense (@ // 2 ** 60)\n}\n",
    "model M {\n  input x: [8]\n  dense 2\n}\n\ntrain M {\n  optimizer sgd lr @\n}\n",
    "model M {\n  input x: [8]\n  dense 2\n}\n\ntrain M {\n  batch @\n  epochs @\n}\n",
    "model M {\n  input x: [8]\n  dense 2\n}\n\ntrain M {\n  optimizer adam lr 0.1 beta1 @ eps @\n}\n",
    "model M {\n  input x: [8]\n  dense 2\n}\n\ntrain M {\n  schedule multistep milestones [@, 8] gamma @\n}\n",
    "model M {\n  input x: [8]\n  dense 2\n}\n\ntrain M {\n  clip @ norm @\n  weight_decay @\n}\n",
    "model M {\n  input x: [8]\n  dense 2\n}\n\ntrain dqn M {\n  gamma @\n  buffer @\n  epsilon 1.0 end 0.05 decay @\n}\n",
    "model M {\n  input x: [8]\n  dense 2\n}\n\ntrain vae M {\n  latent @\n  beta @\n  noise @ dim @\n}\n",
]


def huge_spec(ch: Chooser) -> str:
    """A valid spec with huge or odd numbers in its number positions."""
    t = ch.choice(HUGE_TEMPLATES)
    while "@" in t:
        t = t.replace("@", huge_number(ch) if ch.chance(0.8) else number(ch), 1)
    return t


# ---- deep nesting and chains of calls ----------------------------------------------------


def _near(ch: Chooser, limit: int) -> int:
    """A depth: small, anywhere up to the limit, or just around it."""
    k = ch.integer(0, 3)
    if k == 0:
        return ch.integer(1, 20)
    if k == 1:
        return ch.integer(1, limit + 10)
    return limit + ch.integer(-2, 2)


def deep_spec(ch: Chooser) -> str:
    """Nested blocks, branches or expressions, up to and past the limits, sometimes mutated."""
    k = ch.integer(0, 4)
    if k == 0:
        text, _ = D.nested_blocks(max(1, _near(ch, D.MAX_BLOCK_DEPTH)), ch.choice(list(D.BLOCK_KINDS)), one_line=ch.chance(0.3))
    elif k == 1:
        text, _ = D.nested_concat(max(0, _near(ch, D.MAX_BLOCK_DEPTH) // 2))
    elif k == 2:
        text, _ = D.block_chain(max(1, _near(ch, D.MAX_BLOCK_DEPTH)))
    elif k == 3:
        name = ch.choice(list(D.EXPRESSIONS))
        text, _ = D.EXPRESSIONS[name](max(5, _near(ch, D.MAX_EXPR_DEPTH)))
    else:
        blocks = ch.choice([1, 10, D.MAX_BLOCK_DEPTH - 1, D.MAX_BLOCK_DEPTH])
        text = D.blocks_and_expression(blocks, ch.choice([10, D.MAX_EXPR_DEPTH - 1, D.MAX_EXPR_DEPTH, D.MAX_EXPR_DEPTH + 1]))
    return mutated(ch, text) if ch.chance(0.15) else text


def chain_spec(ch: Chooser) -> str:
    """A chain of blocks each calling the next: by name, with parameters, or through an instance."""
    n = _near(ch, D.MAX_BLOCK_DEPTH) if ch.chance(0.5) else ch.integer(1, 60)
    style = ch.integer(0, 3)
    parts = []
    for i in range(1, n):
        call = {0: f"B{i + 1}()", 1: f"B{i + 1}(c + 1)", 2: f"t = B{i + 1}(c)\n  y = t(x) + x", 3: f"B{i + 1}(c) -> relu"}[style]
        parts.append(f"block B{i}(c = 1) {{\n  {call}\n}}\n")
    last = ch.choice(["dense 4", "dense c", "B1()", "relu"])  # `B1()` closes a cycle
    parts.append(f"block B{n}(c = 1) {{\n  {last}\n}}\n")
    return "".join(parts) + "model M {\n  input x: [4]\n  B1()\n}\n"


# ---- token soup and mutations ------------------------------------------------------------

TOKEN_RE = re.compile(r'"[^"\n]*"|\d+\.?\d*(?:e-?\d+)?|[A-Za-z_]\w*|->|==|!=|<=|>=|//|\*\*|#[^\n]*|\n|\S')

VOCAB = [
    *"model block cell train import input output state gate if elif else when and or not true false as index".split(),
    *"residual shortcut concat add multiply branch repeat group".split(),
    *"dense conv deconv pool max avg global adaptive flatten reshape permute upsample pad relu tanh sigmoid softmax".split(),
    *"dropout batchnorm layernorm groupnorm attention embedding posembed rnn lstm gru maxout leaky_relu elu gelu".split(),
    *"relu6 hardswish hardsigmoid mish glu sin cos tile to roll droppath padding_idx bilinear align_corners sin( roll(".split(),
    *"rmsnorm posenc rope kv_heads rope_base base eps num_key_value_heads rope_theta".split(),
    *"kernel stride padding bias units heads mask same valid sequences layers hidden vocab dtype int float16 bool".split(),
    *"data loss optimizer sgd adam lr batch epochs schedule milestones gan generator discriminator autoencoder vae dqn".split(),
    *"x h T w B C M N B( M( C( max( len( int(".split(),
    *"param split chunk crop zeros ones full arange tril triu mean sum min matmul transpose like keepdim init std".split(),
    *"normal trunc_normal uniform piece sections size( channels( split( zeros( arange( x[ cfg[ ... x[:, 0] a, b =".split(),
    *"context ok drop_border tuple_concat pad_nothing dropout_unused".split(),
    *"{ } ( ) [ ] , ; : = -> + - * / // % ** @ == != < <= > >=".split(),
    *"0 1 3 -1 0.5 1e-3 1e308 1e400 2**64 9223372036854775808".split(),
    "9" * 5000,
    '"a.dl"',
    '"\\x"',
    '"lib\\\\b.dl"',
    "# c",
    "\n",
    "\n",
    "\n",
    "\t",
    "\f",
    "\r\n",
    "\u2028",
]


def token_soup(ch: Chooser) -> str:
    return ch.choice([" ", "", "\n"]).join(ch.choice(VOCAB) for _ in range(ch.integer(0, 60)))


def mutated(ch: Chooser, text: str, vocab: Sequence[str] = VOCAB) -> str:
    """``text`` with 1–4 tokens (or characters) deleted, duplicated, swapped or inserted (from ``vocab``)."""
    if ch.chance(0.5):
        units, joiner = TOKEN_RE.findall(text), " "
    else:
        units, joiner = list(text), ""
    if not units:
        return text
    for _ in range(ch.integer(1, 4)):
        i = ch.integer(0, max(0, len(units) - 1))
        j = ch.integer(0, max(0, len(units) - 1))
        kind = ch.choice(["delete", "duplicate", "swap", "insert"])
        if not units:
            break
        if kind == "delete":
            del units[i]
        elif kind == "duplicate":
            units.insert(i, units[j])
        elif kind == "swap":
            units[i], units[j] = units[j], units[i]
        else:
            units.insert(i, ch.choice(vocab))
    return joiner.join(units)


def zoo_specs() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.dl"))]


#: family → (generator, share of the campaign)
FAMILIES: dict[str, tuple[Callable[[Chooser], str], float]] = {
    "grammar": (grammar_spec, 0.34),
    "grammar_mutated": (lambda ch: mutated(ch, grammar_spec(ch)), 0.14),
    "huge": (huge_spec, 0.2),
    "huge_mutated": (lambda ch: mutated(ch, huge_spec(ch)), 0.04),
    "zoo_mutated": (lambda ch: mutated(ch, ch.choice(_ZOO)), 0.12),
    "tokens": (token_soup, 0.1),
    "chain": (chain_spec, 0.03),
    "deep": (deep_spec, 0.03),
}
_ZOO = zoo_specs()


def only_dlspec_errors(text: str) -> None:
    """The fuzz property: check, fmt and (when the check finds no error) each model's report as
    JSON raise nothing but DlspecError."""
    import json

    import dlspec
    from dlspec.fmt import format_text

    try:
        prog = dlspec.load(text)
        if not any(d.severity == "error" for d in prog.check()):
            for m in prog.models:
                json.dumps(prog.report(m))
    except dlspec.DlspecError:
        pass
    try:
        format_text(text)
    except dlspec.DlspecError:
        pass
