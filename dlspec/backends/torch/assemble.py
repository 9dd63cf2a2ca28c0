"""Classes from scopes, and the module's text.

The calls of one block (or cell) are rendered each (:mod:`.codegen`); calls with the same
skeleton share a class when every slot that differs between them is one of the block's
arguments (``c``), an input's channel or feature count (``in_channels``, a constructor argument
added for it), or an argument times or divided by a whole number (``c // 4``). Otherwise the
calls are split by the values of the slots that do not resolve, and each part is its own class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .codegen import COMMENT, SLOT, Context, Render, Renderer, Scope, attr_ok, identifier, py, same, span_words, walk
from .lowerings import HELPERS

#: the order helpers appear in the module
HELPER_ORDER = ("TiedLinear", "PositionalEmbedding", "binary_step", "causal_mask", "masked_attention", "avg_pool_padded")
HELPER_ORDER += ("rotary", "add_sinusoids", "GroupedQueryAttention")
HELPER_ORDER += ("drop_path",)


@dataclass
class ClassDef:
    name: str
    scopes: list[Scope]
    render: Render
    params: list[tuple[str, str | None]]  # (name, annotation)
    stored: list[tuple[str, str]]  # (attribute, parameter) set in __init__ for forward
    text: dict[int, str]  # slot id (of the first render) → expression
    comments: dict[int, str]  # comment id → text
    helpers: set[str]


# ---- slot resolution -----------------------------------------------------------------------------------


def param(name: str) -> str:
    """A block parameter's name in Python (``in`` → ``in_``)."""
    return name if identifier(name) and name not in ("self", "nn", "F", "torch", "Tensor", "math", "super") else name + "_"


def block_args(scope: Scope) -> dict[str, Any]:
    """The block call's arguments by their Python names."""
    return {param(k): v for k, v in scope.frame.args.items()} if scope.frame is not None else {}


def derived(scope: Scope, ctx: Context) -> dict[str, Any]:
    """Constructor arguments a block may take besides its own: its inputs' channel and feature counts."""
    taken = set(block_args(scope))
    out: dict[str, Any] = {}
    for k, path in enumerate(scope.inputs):
        t = ctx.type_of(path)
        if t is None:
            continue
        sfx = "" if k == 0 else f"_{k + 1}"
        for j, d in enumerate(t.shape[1:], start=1):
            if not isinstance(d, int):
                continue
            if t.rank == 2:
                name = "in_features"
            elif j == 1:
                name = "in_channels"
            elif j == t.rank - 1 and t.rank == 3:
                name = "in_features"
            else:
                name = f"in_dim{j}"
            name += sfx
            while name in taken:
                name += "_"
            out.setdefault(name, d)
    return out


def candidates(
    values: list[Any], args: list[dict[str, Any]], extra: list[dict[str, Any]], words: set[str] = frozenset(), size: bool = False
) -> tuple[str, set[str]] | None:
    """An expression giving ``values[c]`` in every call ``c``: a literal, an argument, a derived
    argument, or an argument times/divided by a whole number. ``words``: the names written where
    the value comes from (the layer's or call's spec text); arguments named there come first, and
    a value the same in every call is read as an argument only if it is named there. ``size``: the
    value is the size of the block's input, which a derived argument (``in_channels``) names best
    after an argument named in the text; otherwise derived arguments come last."""
    v0 = values[0]
    if all(same(v, v0) for v in values):
        if _telling(v0):
            match = [a for a in args[0] if all(a in ac and same(v0, ac[a]) for ac in args)]
            if len(match) == 1 and match[0] in words:
                return match[0], {match[0]}
        return py(v0), set()
    named = [a for a in args[0] if a in words]
    others = [a for a in args[0] if a not in words]

    def exact(names: list[str]) -> tuple[str, set[str]] | None:
        for a in names:
            if all(a in ac and same(v, ac[a]) for v, ac in zip(values, args)):
                return a, {a}
        return None

    def scaled(names: list[str]) -> tuple[str, set[str]] | None:
        if not all(type(v) is int for v in values):
            return None
        for a in names:
            vals = [ac.get(a) for ac in args]
            if not all(type(v) is int and v > 0 for v in vals):
                continue
            a0 = vals[0]
            if v0 % a0 == 0 and v0 // a0 > 1 and all(v == av * (v0 // a0) for v, av in zip(values, vals)):
                return f"{a} * {v0 // a0}", {a}
            if v0 > 0 and a0 % v0 == 0 and a0 // v0 > 1 and all(v == av // (a0 // v0) for v, av in zip(values, vals)):
                return f"{a} // {a0 // v0}", {a}
        return None

    def derived_exact() -> tuple[str, set[str]] | None:
        for d in extra[0]:
            if all(d in ec and same(v, ec[d]) for v, ec in zip(values, extra)):
                return d, {d}
        return None

    order = (
        (exact(named), derived_exact(), scaled(named), exact(others), scaled(others))
        if size
        else (exact(named), scaled(named), exact(others), scaled(others), derived_exact())
    )
    for found in order:
        if found is not None:
            return found
    if all(isinstance(v, tuple) and len(v) == len(v0) for v in values):  # element by element
        parts = [candidates([v[k] for v in values], args, extra, words, size) for k in range(len(v0))]
        if all(q is not None for q in parts):
            inner = ", ".join(q[0] for q in parts)
            return (f"({inner},)" if len(parts) == 1 else f"({inner})"), set().union(*(q[1] for q in parts))
    return None


def _telling(v: Any) -> bool:
    """Whether a value is distinctive enough to be read as the argument it equals."""
    if isinstance(v, bool) or v is None:
        return False
    if isinstance(v, int):
        return abs(v) >= 2
    if isinstance(v, float):
        return v not in (0.0, 1.0)
    if isinstance(v, tuple):
        return any(_telling(e) for e in v)
    return isinstance(v, str)


def positions(r: Render) -> list[tuple[int, str]]:
    """(slot id, section) in text order; section 'init' (constructor) or 'forward'."""
    out = [(int(m.group(1)), "init") for m in SLOT.finditer("\n".join(r.init))]
    out += [(int(m.group(1)), "forward") for m in SLOT.finditer("\n".join(r.forward))]
    out += [(int(m.group(1)), "init") for m in SLOT.finditer("\n".join(r.sequential or []))]
    return out


def resolve(scopes: list[Scope], renders: list[Render], ctx: Context) -> list[tuple[list[int], dict[int, str], set[str], set[str]]]:
    """Partition the calls (indices) into classes: per class, the slot expressions (by the first
    call's slot ids), the parameters used in the constructor and in forward."""
    idx = list(range(len(scopes)))
    args = [block_args(s) for s in scopes]
    extra = [derived(s, ctx) for s in scopes]
    pos = [positions(r) for r in renders]
    exprs: dict[int, str] = {}
    used_init: set[str] = set()
    used_fwd: set[str] = set()
    failing: list[int] = []
    for j, (slot0, section) in enumerate(pos[0]):
        values = [renders[c].slots[pos[c][j][0]] for c in idx]
        words = {param(w) for w in span_words(renders[0].spans.get(slot0))}
        found = candidates(values, args, extra, words, slot0 in renders[0].sizes)
        if found is None:
            failing.append(j)
            continue
        expr, names = found
        if section == "forward" and names:
            for n in names:
                expr = re.sub(rf"\b{re.escape(n)}\b", f"self.\x04{n}\x04", expr)  # the attribute's name is set with the class
            used_fwd |= names
        else:
            used_init |= names
        exprs[slot0] = expr
    if not failing:
        return [(idx, exprs, used_init, used_fwd)]
    # split by the values of the slots that do not resolve; each part resolves them as literals
    parts: dict[str, list[int]] = {}
    for c in idx:
        key = repr([renders[c].slots[pos[c][j][0]] for j in failing])
        parts.setdefault(key, []).append(c)
    out = []
    for members in parts.values():
        for sub_idx, e, ui, uf in resolve([scopes[c] for c in members], [renders[c] for c in members], ctx):
            out.append(([members[c] for c in sub_idx], e, ui, uf))
    return out


def stored_name(param: str) -> str:
    return param if attr_ok(param) else f"_{param}"


def unify(texts: list[str], args: list[dict[str, Any]], extra: list[dict[str, Any]]) -> str:
    """One comment for the calls of a class: equal texts as they are; numbers that differ named by
    the argument they equal (``conv c 3×3``), else their values (``56|28``)."""
    if all(t == texts[0] for t in texts):
        return texts[0]
    split = [re.split(r"(\d+)", t) for t in texts]
    if any(len(s) != len(split[0]) for s in split) or any(
        s[k] != split[0][k] for s in split for k in range(0, len(s), 2)
    ):  # the words differ: the first call's
        return texts[0] + " (first call)"
    out = []
    for k, tok in enumerate(split[0]):
        if k % 2 == 0:
            out.append(tok)
            continue
        vals = [int(s[k]) for s in split]
        if all(v == vals[0] for v in vals):
            out.append(tok)
            continue
        name = next((a for a in args[0] if all(same(v, ac.get(a)) for v, ac in zip(vals, args))), None)
        name = name or next((d for d in extra[0] if all(same(v, ec.get(d)) for v, ec in zip(vals, extra))), None)
        out.append(name or "|".join(str(v) for v in dict.fromkeys(vals)))
    return "".join(out)


# ---- planning --------------------------------------------------------------------------------------------


def block_order(root: Scope) -> list[tuple[str, str]]:
    """(kind, block) keys, each after every block called inside its calls."""
    keys: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for s in walk(root):
        if s.owner is not None or s.kind == "model":
            continue
        key = (s.kind, s.block)
        inner = keys.setdefault(key, set())
        for d in walk(s):
            if d is not s and d.owner is None:
                inner.add((d.kind, d.block))
    order: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def visit(k: tuple[str, str]) -> None:
        if k in seen:
            return
        seen.add(k)
        for d in sorted(keys.get(k, ()), key=lambda x: list(keys).index(x) if x in keys else 0):
            visit(d)
        order.append(k)

    for k in keys:
        visit(k)
    return order


def annotation(values: list[Any]) -> str | None:
    kinds = {type(v) for v in values}
    if kinds == {int, float}:
        return "float"
    if len(kinds) != 1:
        return None
    t = kinds.pop()
    return {int: "int", float: "float", bool: "bool", str: "str", tuple: "tuple"}.get(t)


def plan(root: Scope, ctx: Context, names_taken: set[str]) -> list[ClassDef]:
    """Every class of the module, children before parents, the model last."""
    classes: list[ClassDef] = []
    calls: dict[tuple[str, str], list[Scope]] = {}
    for s in walk(root):
        if s.owner is None and s.kind != "model":
            calls.setdefault((s.kind, s.block), []).append(s)
    for key in block_order(root):
        scopes = calls[key]
        renders = [Renderer(ctx, s, False).render() for s in scopes]
        parts = _partition(renders)
        if len(parts) > 1:  # keywords written out even at their defaults may let more calls share a class
            explicit = [Renderer(ctx, s, True).render() for s in scopes]
            alt = _partition(explicit)
            if len(alt) < len(parts):
                renders = list(explicit)
                for part in alt:  # but only those not at their default in every call of the class
                    omit = _at_default(explicit, part)
                    for c in part:
                        renders[c] = Renderer(ctx, scopes[c], True, omit).render()
                parts = _partition(renders)
        resolved = []
        for part in parts:
            for sub, exprs, used_init, used_fwd in resolve([scopes[c] for c in part], [renders[c] for c in part], ctx):
                resolved.append(([part[c] for c in sub], exprs, used_init, used_fwd))
        resolved.sort(key=lambda r: min(r[0]))
        for k, (members, exprs, used_init, used_fwd) in enumerate(resolved):
            base = _class_name(key[1])
            name = base if k == 0 else f"{base}_{k + 1}"
            while name in names_taken:
                name += "_"
            names_taken.add(name)
            first = scopes[members[0]]
            frame_args = list(block_args(first))
            extra_names = [d for d in derived(first, ctx) if d in used_init | used_fwd]
            params = []
            for a in frame_args + extra_names:
                vals = [(block_args(scopes[c]).get(a) if a in frame_args else derived(scopes[c], ctx).get(a)) for c in members]
                params.append((a, annotation(vals)))
            ms = [scopes[c] for c in members]
            rs = [renders[c] for c in members]
            comments = _comments(ms, rs, ctx, extra_names)
            members_at_root = {m.group(1) for line in rs[0].init for m in [re.match(r"self\.(\w+) = ", line)] if m}
            stored = [
                (stored_name(a) if stored_name(a) not in members_at_root else f"_{a}", a) for a in frame_args + extra_names if a in used_fwd
            ]
            classes.append(ClassDef(name, ms, rs[0], params, stored, exprs, comments, set().union(*(r.helpers for r in rs))))
            for s in ms:
                dv = derived(s, ctx)
                ctx.classes[s] = (name, [(a, block_args(s)[a]) for a in frame_args] + [(d, dv[d]) for d in extra_names])
    r = Renderer(ctx, root, False).render()
    exprs = {sid: py(v) for sid, v in r.slots.items()}
    name = _class_name(root.block)
    classes.append(ClassDef(name, [root], r, [], [], exprs, dict(r.comments), set(r.helpers)))
    return classes


def _at_default(renders: list[Render], part: list[int]) -> frozenset:
    """(layer, keyword) of the keywords at their default value in every call of ``part``."""
    pos = [positions(renders[c]) for c in part]
    out = set()
    for j, (sid, _) in enumerate(pos[0]):
        meta = renders[part[0]].kws.get(sid)
        if meta is not None and all(renders[c].kws.get(p[j][0], ("", "", False))[2] for c, p in zip(part, pos)):
            out.add(meta[:2])
    return frozenset(out)


def _partition(renders: list[Render]) -> list[list[int]]:
    parts: dict[str, list[int]] = {}
    for k, r in enumerate(renders):
        parts.setdefault(r.skeleton(), []).append(k)
    return list(parts.values())


def _comments(scopes: list[Scope], renders: list[Render], ctx: Context, extra_names: list[str]) -> dict[int, str]:
    args = [block_args(s) for s in scopes]
    extra = [{k: v for k, v in derived(s, ctx).items() if k in extra_names} for s in scopes]
    ids = [[int(m.group(1)) for m in COMMENT.finditer(r.text())] for r in renders]
    out = {}
    for j, cid in enumerate(ids[0]):
        out[cid] = unify([r.comments[i[j]] for r, i in zip(renders, ids)], args, extra)
    return out


def _class_name(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    if not identifier(name) or name in ("nn", "F", "torch", "Tensor", "math") or name in HELPERS:
        name = name + "_"
    return name


# ---- the module's text ----------------------------------------------------------------------------------


def class_text(c: ClassDef, doc: str) -> str:
    r = c.render

    attrs = {param: attr for attr, param in c.stored}

    def fill(line: str) -> str:
        line = SLOT.sub(lambda m: re.sub("\x04(\\w+)\x04", lambda a: attrs[a.group(1)], c.text[int(m.group(1))]), line)
        return COMMENT.sub(lambda m: "# " + c.comments[int(m.group(1))], line)

    params = "".join(f", {n}: {a}" if a else f", {n}" for n, a in c.params)
    base = "nn.Sequential" if r.sequential is not None else "nn.Module"
    lines = [f"class {c.name}({base}):", f'    """{doc}"""', "", f"    def __init__(self{params}) -> None:"]
    if r.sequential is not None:
        lines.append("        super().__init__(")
        lines += ["            " + fill(ln) for ln in r.sequential]
        lines.append("        )")
        return "\n".join(lines)
    lines.append("        super().__init__()")
    lines += [f"        self.{attr} = {param}" for attr, param in c.stored]
    lines += ["        " + fill(ln) for ln in r.init]
    lines.append("")
    lines += ["    " + fill(ln) for ln in r.forward]
    return "\n".join(lines)


def docstring_for(c: ClassDef, ctx: Context, prog: Any, is_model: bool) -> str:
    s = c.scopes[0]
    if is_model:
        g = ctx.graph
        args = ", ".join(f"{k}={v}" for k, v in g.args.items())
        ins = "; ".join(f"{i} {ctx.type_of(i).show(True)} {ctx.type_of(i).dtype}" for i in g.inputs)
        outs = "; ".join(f"{o.name} {ctx.type_of(o.node).show(True)}" for o in g.outputs)
        head = f"model {g.name}" + (f"({args})" if args else "") + f" of {Path(g.file).name}"
        return f"{head}.\n\n    Inputs: {ins}.\n    Outputs: {outs}.\n    "
    kind = s.kind
    where = ""
    if prog is not None and getattr(prog, "defs", None) and s.block in prog.defs:
        where = f" of {short(prog.defs[s.block].span)}"
    params = ", ".join(block_args(s))
    paths = [x.path for x in c.scopes]
    shown = ", ".join(paths[:4]) + (f", … ({len(paths)} calls)" if len(paths) > 4 else "")
    return f"{kind} {s.block}({params}){where}, as {shown}."


def short(span: Any) -> str:
    return f"{Path(span.file).name}:{span.line}" if span is not None else "?"


def module_text(classes: list[ClassDef], ctx: Context, prog: Any, header: str) -> str:
    helpers = set().union(*(c.helpers for c in classes))
    parts = [header]
    body = []
    for h in HELPER_ORDER:
        if h in helpers:
            body.append(HELPERS[h].strip("\n"))
    for k, c in enumerate(classes):
        body.append(class_text(c, docstring_for(c, ctx, prog, is_model=k == len(classes) - 1)))
    code = "\n\n\n".join(body)
    imports = []
    if re.search(r"\bmath\.", code):
        imports += ["import math", ""]
    if re.search(r"\btorch\.", code):
        imports.append("import torch")
    if re.search(r"\bF\.", code):
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import Tensor, nn")
    parts.append("\n".join(imports))
    parts.append(code)
    return "\n\n".join(parts[:2]) + "\n\n\n" + parts[2] + "\n"
