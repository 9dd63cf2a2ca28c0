"""Generators of deeply nested specs, for the nesting-limit tests and the fuzzer.

Each returns ``(text, (line, col))``: a spec and where its deepest construct opens (the place a
nesting error is reported at when the spec is one level past a limit). ``n`` counts what the
limit counts: for blocks, the ``{ … }`` bodies open at the deepest point (the model's own body
is 1); for expressions, the levels of brackets and operators (``dense (1 + 1)`` is 2 deep:
the parenthesis and the ``+``).
"""

from __future__ import annotations

from dlspec.limits import MAX_BLOCK_DEPTH, MAX_EXPR_DEPTH

HEAD = "model M {\n  input x: [4]\n"

#: one level of block nesting: the opening line (``{`` last) and the closing line
BLOCK_KINDS = {
    "group": ("group g{i} {{", "}}"),
    "repeat": ("repeat 1 {{", "}}"),
    "residual": ("residual {{", "}}"),
    "if": ("if true {{", "}}"),
    "shortcut": ("residual {{ relu }} shortcut {{", "}}"),
    "else": ("if false {{ relu }} else {{", "}}"),
}


def nested_blocks(n: int, kind: str = "group", one_line: bool = False) -> tuple[str, tuple[int, int]]:
    """The model's body and ``n - 1`` nested ``kind`` blocks around ``dense 4``: ``n`` deep."""
    opener, closer = BLOCK_KINDS[kind]
    inner = n - 1
    if one_line:
        line = "  " + " ".join(opener.format(i=i) for i in range(inner)) + " dense 4 " + " ".join(closer.format() for _ in range(inner))
        col = 3 + sum(len(opener.format(i=i)) + 1 for i in range(inner - 1))
        return HEAD + line + "\n}\n", (3, col)
    lines = [HEAD.rstrip("\n")]
    for i in range(inner):
        lines.append("  " * (i + 1) + opener.format(i=i))
    lines.append("  " * (inner + 1) + "dense 4")
    for i in reversed(range(inner)):
        lines.append("  " * (i + 1) + closer.format())
    lines.append("}")
    # the deepest opener is on line 2 + inner; its header starts after the indent
    return "\n".join(lines) + "\n", (2 + inner, 2 * inner + 1)


def nested_concat(levels: int) -> tuple[str, tuple[int, int]]:
    """``levels`` nested ``concat { branch { … } }``: ``2 * levels + 1`` bodies deep."""
    text = HEAD + "concat { branch {\n" * levels + "dense 4\n" + "}\n}\n" * levels + "}\n"
    return text, (2 + levels, 10)


def block_chain(n: int) -> tuple[str, tuple[int, int]]:
    """Blocks ``B1`` … ``Bn``, each calling the next, called by the model: the last block's
    body is ``n + 1`` deep (the model's body, then one per block). Where: the last call."""
    parts = [f"block B{i}() {{\n  B{i + 1}()\n}}\n" for i in range(1, n)]
    parts.append(f"block B{n}() {{\n  dense 4\n}}\n")
    text = "".join(parts) + HEAD + "  B1()\n}\n"
    return text, (3 * (n - 1) - 1, 3)  # `B{n}()` inside B{n-1}, 2 lines below its `block` line


def _in_model(line: str) -> str:
    return HEAD + "  " + line + "\n}\n"


def nested_parens(n: int) -> tuple[str, tuple[int, int]]:
    """``dense (((…4…)))`` with ``n`` parentheses."""
    return _in_model("dense " + "(" * n + "4" + ")" * n), (3, 8 + n)


def long_sum(n: int) -> tuple[str, tuple[int, int]]:
    """``dense (1 + 1 + … + 1)``: the parenthesis and ``n - 1`` operators (``n`` operands)."""
    return _in_model("dense (" + " + ".join(["1"] * n) + ")"), (3, 12 + 4 * (n - 2))


def long_product(n: int) -> tuple[str, tuple[int, int]]:
    """``dense (4 * 1 // 1 + 0 - 0 …)``: the parenthesis and ``n - 1`` operators of both kinds."""
    ops = ["*", "//", "+", "-"]
    terms = [f" {ops[i % 4]} {'1' if ops[i % 4] in ('*', '//') else '0'}" for i in range(n - 1)]
    col = 11 + sum(len(t) for t in terms[:-1]) + 1  # the last operator
    return _in_model(f"dense (4{''.join(terms)})"), (3, col)


def nested_lists(n: int) -> tuple[str, tuple[int, int]]:
    """``dense (len([[[…1…]]]) * 4)``: ``(``, the ``*`` (it applies to all that is inside the
    call before it), ``len(``, then ``n - 3`` list brackets. Where: the ``*``."""
    k = n - 3
    return _in_model("dense (len(" + "[" * k + "1" + "]" * k + ") * 4)"), (3, 17 + 2 * k)


def nested_calls(n: int) -> tuple[str, tuple[int, int]]:
    """``dense (max(max(…max(4, 1)…, 1), 1))``: the parenthesis, then ``n - 1`` calls."""
    k = n - 1
    return _in_model("dense (" + "max(" * k + "4" + ", 1)" * k + ")"), (3, 9 + 4 * k)


def nested_not(n: int) -> tuple[str, tuple[int, int]]:
    """``if not not … true { relu }``: ``n`` operators (the ``if`` is one, then ``n - 1`` nots)."""
    return _in_model("if " + "not " * (n - 1) + "true { relu }"), (3, 6 + 4 * (n - 2))


def nested_neg(n: int) -> tuple[str, tuple[int, int]]:
    """``dense (- - … - 4)``: the parenthesis and ``n - 1`` unary minuses (an even count keeps 4)."""
    k = n - 1  # an odd count: one of them is a unary '+'
    return _in_model("dense (" + "- " * (k - k % 2) + "+ " * (k % 2) + "4)"), (3, 10 + 2 * (k - 1))


def power_tower(n: int) -> tuple[str, tuple[int, int]]:
    """``dense (4 ** 1 ** 1 …)``: right-associative, ``n - 1`` operators inside the parenthesis."""
    return _in_model("dense (4" + " ** 1" * (n - 1) + ")"), (3, 12 + 5 * (n - 2))


def ternary_chain(n: int, lines: bool = False) -> tuple[str, tuple[int, int]]:
    """``dense (4 if true else 4 if true else … 4)``: the parenthesis, then 2 operators per
    ``if … else`` (``n`` odd). ``lines``: an ``if`` statement's condition ``true if true else …``
    with each ``else`` on a line of its own (a newline before ``else`` does not end a statement),
    ``n - 1`` deep (the ``if`` counts too)."""
    k = (n - 1) // 2
    if lines:
        text = HEAD + "  if true if true\n" + "    else true if true\n" * (k - 1) + "    else true { relu }\n}\n"
        return text, (3 + k, 5)
    return _in_model("dense (" + "4 if true else " * k + "4)"), (3, 15 * k + 5)


#: expression generators valid at any depth (they give 4 units): name → generator
EXPRESSIONS = {
    "parens": nested_parens,
    "sum": long_sum,
    "product": long_product,
    "lists": nested_lists,
    "calls": nested_calls,
    "not": nested_not,
    "neg": nested_neg,
    "power": power_tower,
    "ternary": ternary_chain,
    "ternary_lines": lambda n: ternary_chain(n, lines=True),
}


def blocks_and_expression(blocks: int = MAX_BLOCK_DEPTH, expr: int = MAX_EXPR_DEPTH) -> str:
    """Both limits at once: the deepest expression allowed inside the deepest block allowed."""
    text, _ = nested_blocks(blocks)
    deepest = "  " * blocks + "dense 4\n"
    assert deepest in text
    return text.replace(deepest, "  " * blocks + "dense " + "(" * expr + "4" + ")" * expr + "\n")


__all__ = [
    "BLOCK_KINDS",
    "EXPRESSIONS",
    "MAX_BLOCK_DEPTH",
    "MAX_EXPR_DEPTH",
    "block_chain",
    "blocks_and_expression",
    "nested_blocks",
    "nested_concat",
]
