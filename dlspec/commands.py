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
    p.add_argument("--model", help="the model to compile (default: every model of the file)")
    p.add_argument("--depth", type=int, default=None, help="collapse block calls nested deeper than this into one row")
    p.add_argument("--batch", type=int, default=None, help="batch size for the training memory estimate")
    p.add_argument("--optimizer", default=None, help="optimizer for the training memory estimate (default: the spec's, else adam)")
    p.add_argument(
        "--seq", type=_seq, action="append", default=[], metavar="T=LEN", help="bind a symbolic dim (e.g. T=128) for MACs and memory"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--emit", choices=["ir"], help="print the resolved, shape-annotated IR as JSON instead")
    p.add_argument("--verify", action="store_true", help="build the model, run one random batch, and check runtime shapes and params against the static ones")
    p.add_argument("--device", default=None, help="tinygrad device for --verify (CPU, CUDA, NV, METAL, AMD, …; default: tinygrad's choice)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="parameter dtype for --verify")


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
    if args.verify:
        return _verify(prog, out, args, seq)
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


def _verify(prog, out, args, seq) -> int:
    import time

    from .backend.tinygrad import verify

    status = 0
    for m, rep in out:
        t0 = time.perf_counter()
        net = prog.build(m, device=args.device, seed=0, dtype=args.dtype)
        problems = verify(net, batch=2, seq=seq)
        dt = time.perf_counter() - t0
        if problems:
            status = 1
            print(f"{args.file}: {m}: runtime differs from the static report:", file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
        else:
            p, b = net.num_params()
            n = len(net.graph.top_level())
            print(f"verified {m} on {net.device}: {n} layer shapes and {p:,} params (+{b:,} buffers) match the static report ({dt:.1f} s)")
    return status


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


def _draw_args(p) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", metavar="OUT", help="where to write (default: NAME.FORMAT beside the spec; dot goes to stdout; '-': stdout)")
    p.add_argument("--format", choices=("svg", "png", "pdf", "dot"), default=None, help="svg (default), png, pdf, or dot (needs no Graphviz)")
    p.add_argument("--model", help="the model to draw (default: the file's last model)")
    p.add_argument("--depth", type=int, default=None, metavar="K", help="collapse block calls nested deeper than K into one node")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB", help="top to bottom (default) or left to right")
    p.add_argument("--activations", action="store_true", help="give activations their own nodes (default: merged into the layer before)")
    p.add_argument("--fold-repeats", action="store_true", help="draw runs of identical repeat iterations once, with a ×N badge")
    p.add_argument("--cells", action="store_true", help="draw the inside of recurrent cells: gates, state and update equations")
    p.add_argument("--phase", choices=("train", "eval"), default="train", help="eval hides dropout")


def _draw(args) -> int:
    from .draw import run

    return run(args)


COMMANDS: list[tuple[str, str, Callable, Callable]] = [
    ("compile", "infer shapes and report params, MACs and memory per layer", _compile_args, _compile),
    ("draw", "draw a model as a Graphviz diagram (svg, png, pdf or dot) with shapes, blocks and costs", _draw_args, _draw),
]
