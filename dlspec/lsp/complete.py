"""Completion from the text before the cursor, read lexically (the text need not parse):
op words, the keys and words of the op being written (with defaults), block and cell names
with their parameters, tensor names in scope, and train-section settings."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..parse import code_chars
from .analysis import Completion, op_fields
from .text import Position

if TYPE_CHECKING:
    from .analysis import Analysis

KEYWORDS_TOP = ("model", "block", "cell", "train", "import")
#: statement words inside a definition that are not ops
STATEMENT_WORDS = (
    "input",
    "output",
    "state",
    "gate",
    "residual",
    "shortcut",
    "concat",
    "add",
    "multiply",
    "branch",
    "repeat",
    "group",
    "if",
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER = re.compile(r"^[ \t]*(model|block|cell)[ \t]+([A-Za-z_][A-Za-z0-9_]*)(?:\(([^)]*)\))?", re.M)


def _scan(text: str) -> tuple[str | None, int, str]:
    """(the top-level header enclosing the end of ``text`` or None, where its body starts,
    the statement being written: text since the last statement boundary)."""
    depth = 0
    nest = 0  # () and []
    header: str | None = None
    body = 0
    stmt = 0
    for i, c in code_chars(text):
        if c in "([":
            nest += 1
        elif c in ")]":
            nest = max(nest - 1, 0)
        elif c == "{":
            if depth == 0:
                header, body = text[stmt:i].strip(), i + 1
            depth += 1
            nest = 0
            stmt = i + 1
        elif c == "}":
            depth = max(depth - 1, 0)
            if depth == 0:
                header = None
            stmt = i + 1
        elif c == ";" or (c == "\n" and nest == 0 and not text[stmt:i].rstrip().endswith(("->", ","))):
            stmt = i + 1
    return header, body, text[stmt:]


def complete(an: "Analysis", pos: Position, good: "Analysis | None" = None) -> list[Completion]:
    """Completions at ``pos`` of the analysed document."""
    upto = an.text[: an.lines.offset(pos)]
    header, body, stmt = _scan(upto)
    m = re.search(r"[A-Za-z_][A-Za-z0-9_]*$", stmt)
    prefix = m.group(0) if m else ""
    before = stmt[: len(stmt) - len(prefix)]
    if header is None:
        out = [Completion(k, "keyword") for k in KEYWORDS_TOP] if not before.strip() else []
    elif header.split()[:1] == ["train"]:
        out = _train(before)
    else:
        out = _in_def(an, upto, header, body, before, good)
    seen: set[str] = set()
    res = []
    for c in out:
        if c.label.startswith(prefix) and c.label not in seen:
            seen.add(c.label)
            res.append(c)
    return res


def _train(before: str) -> list[Completion]:
    from ..trainspec import SETTINGS

    words = before.split()
    if not words:
        return [Completion(k, "setting", _setting_detail(k)) for k in SETTINGS]
    key = words[0]
    if key not in SETTINGS:
        return []
    _, choices, opts = SETTINGS[key]
    if key in ("d_optimizer", "g_optimizer"):
        choices, opts = SETTINGS["optimizer"][1], SETTINGS["optimizer"][2]
    if len(words) == 1 and choices:
        return [Completion(c, "choice", f"{key} {c}") for c in choices]
    return [Completion(o, "option", f"{o}: {getattr(t, '__name__', t)}") for o, t in opts.items()]


def _setting_detail(key: str) -> str:
    from ..trainspec import SETTINGS

    typ, choices, _ = SETTINGS[key]
    if choices:
        return " | ".join(choices)
    return getattr(typ, "__name__", str(typ))


def _defs(an: "Analysis", text: str) -> dict[str, tuple[str, str | None]]:
    """Definitions known: name → (kind, parameters as written or None)."""
    out: dict[str, tuple[str, str | None]] = {}
    for name, d in an._defs().items():
        from .analysis import _params_text

        out[name] = (d.kind, _params_text(d.params, an.source) if d.params is not None else None)
    for m in _HEADER.finditer(text):
        out.setdefault(m.group(2), (m.group(1), " ".join(m.group(3).split()) if m.group(3) is not None else None))
    return out


def _scope_names(header: str, region: str) -> list[tuple[str, str]]:
    """Names visible in a definition's body: (name, what) for parameters, inputs, tensors, ``as`` names."""
    out: list[tuple[str, str]] = []
    m = _HEADER.match(header)
    if m and m.group(3):
        for p in m.group(3).split(","):
            w = _WORD.match(p.strip())
            if w:
                out.append((w.group(0), "parameter"))
    for m in re.finditer(r"^[ \t]*(?:input|state)[ \t]+([A-Za-z_]\w*)[ \t]*:", region, re.M):
        out.append((m.group(1), "input"))
    for m in re.finditer(r"^[ \t]*(?:gate[ \t]+|output[ \t]+)?([A-Za-z_]\w*)[ \t]*=(?!=)", region, re.M):
        out.append((m.group(1), "tensor"))
    for m in re.finditer(r"\bas[ \t]+([A-Za-z_]\w*)", region):
        out.append((m.group(1), "layer"))
    return out


def _in_def(an: "Analysis", upto: str, header: str, body: int, before: str, good: "Analysis | None") -> list[Completion]:
    from .. import ops

    stage = re.split(r"->", before)[-1]
    if "=" in stage and not re.search(r"[=!<>]=", stage):
        stage = stage.split("=")[-1]
    words = _WORD.findall(stage)
    defs = _defs(an, an.text)
    if good is not None:
        for k, v in _defs(good, "").items():
            defs.setdefault(k, v)
    names = _scope_names(header, upto[body:])
    tensors = [Completion(n, "tensor", what) for n, what in names]
    blocks = [
        Completion(n, kind, f"{kind} {n}" + (f"({ps})" if ps is not None else ""), insert_text=f"{n}(" if ps is not None else None)
        for n, (kind, ps) in defs.items()
        if kind in ("block", "cell")
    ]
    call = re.search(r"([A-Za-z_]\w*)\([^()]*$", stage)  # inside an unclosed call: its parameters
    if call and call.group(1) in defs:
        ps = [p.strip() for p in (defs[call.group(1)][1] or "").split(",") if p.strip()]
        return [Completion(p.split("=")[0].strip(), "parameter", p, insert_text=p.split("=")[0].strip() + " = ") for p in ps] + tensors
    if not words:
        out = [Completion(o, "op", (ops.get(o).__doc__ or "").strip().split("\n")[0]) for o in ops.USER_OPS]
        if not before.strip():
            out += [Completion(w, "keyword") for w in STATEMENT_WORDS]
        return out + blocks + tensors
    head = words[0]
    if head in ops.CATALOGUE and head not in ops.INTERNAL:
        op = ops.get(head)
        used = set(words[1:])
        out = [
            Completion(k, "key", f"{k} (required)" if d == "required" else f"{k} = {d}", f"{head} … {k} VALUE")
            for k, d in op_fields(head)
            if k not in used
        ]
        out += [Completion(w, "word", f"{f} {w}") for w, (f, _) in sorted(op.words().items())]
        out.append(Completion("as", "keyword", "name this layer"))
        return out + tensors
    return tensors + blocks
