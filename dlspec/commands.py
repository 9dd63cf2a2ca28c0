"""Commands beyond check/fmt, registered here without importing their (heavy) modules.

Each entry: (name, help, add_arguments(parser), run(args) -> exit code)."""

from __future__ import annotations

import sys
from typing import Callable


def _seq(text: str) -> tuple[str, int]:
    import argparse

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier() or not value.isdigit() or int(value) <= 0:
        raise argparse.ArgumentTypeError(f"expected NAME=LENGTH such as T=128, got {text!r}")
    return name, int(value)


def _compile_args(p) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--model", help="the model to compile (default: the file's last model)")
    p.add_argument("--depth", type=int, default=None, help="collapse block calls nested deeper than this into one row")
    p.add_argument("--batch", type=int, default=None, help="batch size for the training memory estimate")
    p.add_argument("--optimizer", default=None, help="optimizer for the training memory estimate (default: the spec's, else adam)")
    p.add_argument(
        "--seq", type=_seq, action="append", default=[], metavar="T=LEN", help="bind a symbolic dim (e.g. T=128) for MACs and memory"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--emit", choices=["ir"], help="print the resolved, shape-annotated IR as JSON instead")


def _compile(args) -> int:
    import json

    from . import load
    from .errors import DlspecError, render_all, to_json

    seq = dict(args.seq)
    try:
        prog = load(args.file)
        models = [args.model] if args.model else prog.models
        if args.model:
            prog._model_name(args.model)  # a usage error for an unknown model
        out = []
        for m in models:
            rep = prog.analyze(m, depth=args.depth, seq=seq)
            for w in rep.shapes.warnings:
                print(render_all([w]), file=sys.stderr)
            out.append((m, rep))
    except DlspecError as e:
        if args.json or args.emit:
            print(to_json(e.diagnostics))
            return 2 if type(e).__name__ == "UsageError" else 1
        raise
    if args.emit == "ir":
        docs = [annotated_ir(rep) for _, rep in out]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=1))
        return 0
    if args.json:
        print(json.dumps({"file": args.file, "models": [rep.to_json() for _, rep in out]}, indent=2))
        return 0
    from rich.console import Console

    from .report import table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    for m, rep in out:
        optimizer = args.optimizer or _spec_optimizer(prog, m) or "adam"
        console.print(table(rep, args.file, batch=args.batch, optimizer=optimizer))
    return 0


def _spec_optimizer(prog, model: str) -> str | None:
    try:
        for t in prog.trains():
            if model in t.models.values():
                opt = t.get("optimizer")
                if opt == "sgd" and t.options("optimizer").get("momentum"):
                    return "sgd+momentum"
                return opt
    except Exception:  # noqa: BLE001 - a bad train section is reported by `check`, not here
        return None
    return None


def annotated_ir(rep) -> dict:
    """The resolved IR as JSON, each node with its output shape, dtype, params and MACs."""
    from .shapes import macs_value

    doc = rep.graph.model_dump(mode="json")
    for node in doc["nodes"]:
        t = rep.shapes.types.get(node["path"])
        c = rep.shapes.costs.get(node["path"])
        if t is not None:
            node["shape"] = t.json()
            node["dtype"] = t.dtype
        if c is not None:
            node["params_count"] = c.params
            node["buffers"] = c.buffers
            node["macs"] = macs_value(c.macs, rep.seq)
    return doc


COMMANDS: list[tuple[str, str, Callable, Callable]] = [
    ("compile", "infer shapes and report params, MACs and memory per layer", _compile_args, _compile),
]
