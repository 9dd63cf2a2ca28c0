"""Commands beyond check/fmt, registered here without importing their (heavy) modules.

Each entry: (name, help, add_arguments(parser), run(args) -> exit code)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable


def _seq(text: str) -> tuple[str, int]:
    import argparse

    from .bounds import MAX_INT

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier() or not value.isdigit() or len(value) > 19 or not 0 < int(value) <= MAX_INT:
        raise argparse.ArgumentTypeError(f"expected NAME=LENGTH such as T=128 (LENGTH at most 2**63 − 1), got {text!r}")
    return name, int(value)


def _finite(text: str) -> float:
    """A finite decimal (``--lr 1e400`` is infinity: refused as a usage error)."""
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def _positive(text: str) -> int:
    import argparse

    from .bounds import MAX_INT

    if not text.isdigit() or len(text) > 19 or not 0 < int(text) <= MAX_INT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 2**63 − 1, got {text!r}")
    return int(text)


def _natural(text: str) -> int:
    import argparse

    from .bounds import MAX_INT

    if not text.isdigit() or len(text) > 19 or int(text) > MAX_INT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 2**63 − 1, got {text!r}")
    return int(text)


def _devices(text: str) -> list[str] | int:
    """``--devices``: device names separated by commas, or a count."""
    import argparse

    text = text.strip()
    if text.isdigit():
        if len(text) > 4 or int(text) < 1:
            raise argparse.ArgumentTypeError(f"expected a number of devices from 1 to 9999, got {text!r}")
        return int(text)
    names = [n.strip() for n in text.split(",")]
    if not text or any(not n for n in names):
        raise argparse.ArgumentTypeError(f"expected device names separated by commas (CUDA:0,CUDA:1) or a count, got {text!r}")
    return names


def _dataset(text: str) -> str:
    """``--data``: a data set the registry knows (a name or an alias, as a spec's ``data``), else a
    usage error with a did-you-mean; whether its files are here is checked when it is loaded."""
    import argparse

    from .errors import suggest
    from .registry import DATASETS, dataset

    if dataset(text) is None:
        names = [n for e in DATASETS.values() for n in (e.name, *e.aliases)]
        hint = suggest(text.strip().lower(), names) or f" (data sets: {DATASETS.help()})"
        raise argparse.ArgumentTypeError(f"unknown data set {text!r}{hint}")
    return text


def _compile_args(p) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--model", help="the model to compile (default: every model of the file)")
    p.add_argument("--depth", type=_natural, default=None, help="collapse block calls nested deeper than this into one row")
    p.add_argument("--batch", type=_positive, default=None, help="batch size for the training memory estimate and --verify (default 2)")
    from .registry import OPTIMIZERS

    states = [*OPTIMIZERS, *(f"{n}+momentum" for n, e in OPTIMIZERS.items() if e.momentum_state)]
    p.add_argument(
        "--optimizer", default=None, choices=states, help="optimizer for the training memory estimate (default: the spec's, else adam)"
    )
    p.add_argument(
        "--seq", type=_seq, action="append", default=[], metavar="T=LEN", help="bind a symbolic dim (e.g. T=128) for MACs and memory"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--emit", choices=["ir"], help="print the resolved, shape-annotated IR as JSON instead")
    p.add_argument(
        "--verify",
        action="store_true",
        help="build the model, run one random batch, and check runtime shapes and params against the static ones",
    )
    p.add_argument("--device", default=None, help="tinygrad device for --verify (CPU, CUDA, NV, METAL, AMD, …; default: tinygrad's choice)")
    p.add_argument(
        "--dtype", default=None, choices=["float32", "float16", "bfloat16"], help="parameter dtype for --verify (default float32)"
    )


def _compile(args) -> int:
    import json

    from . import load
    from .errors import DlspecError, UsageError, render_all, to_json
    from .shapes import free_names

    seq = dict(args.seq)
    try:
        if not args.verify and (args.device is not None or args.dtype is not None):
            raise UsageError("--device and --dtype apply to --verify (the report itself runs nothing)")
        prog = load(Path(args.file))
        models = [args.model] if args.model else prog.models
        if args.model:
            prog._model_name(args.model)  # a usage error for an unknown model
        out = []
        symbols: set[str] = set()
        for m in models:
            rep = prog.analyze(m, depth=args.depth, seq=seq)
            for w in rep.shapes.warnings:
                print(render_all([w]), file=sys.stderr)
            out.append((m, rep))
            for name in rep.graph.inputs:
                for d in rep.shapes.types[name].shape:
                    symbols |= free_names(d)
        symbols.discard("N")  # the batch: --batch
        unknown = sorted(set(seq) - symbols - {"N"})
        if unknown:
            raise UsageError(
                f"--seq {unknown[0]}: no input of {', '.join(models)} has a symbolic size '{unknown[0]}'"
                + (f"; symbolic sizes: {', '.join(sorted(symbols))}" if symbols else "; every input size is fixed")
            )
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
    import json
    import time

    from .backends.tinygrad import verify

    status, results = 0, []
    dtype, batch = args.dtype or "float32", args.batch or 2
    for m, _rep in out:
        t0 = time.perf_counter()
        net = prog.build(m, device=args.device, seed=0, dtype=dtype)
        problems = verify(net, batch=batch, seq=seq)
        dt = time.perf_counter() - t0
        p, b = net.num_params()
        n = len(net.graph.top_level())
        results.append(
            {"model": m, "device": net.device, "dtype": dtype, "batch": batch, "layers": n, "params": p, "buffers": b, "problems": problems}
        )
        if problems:
            status = 1
            if not args.json:
                print(f"{args.file}: {m}: runtime differs from the static report:", file=sys.stderr)
                for line in problems:
                    print(f"  {line}", file=sys.stderr)
        elif not args.json:
            null = "; the NULL device computes nothing" if net.device.split(":")[0] == "NULL" else ""
            print(
                f"verified {m} on {net.device} ({dtype}, batch {batch}{null}): {n} layer shapes and {p:,} params (+{b:,} buffers)"
                f" match the static report ({dt:.1f} s)"
            )
    if args.json:
        print(json.dumps({"file": args.file, "verified": results}, indent=2))
    return status


def _spec_optimizer(prog, model: str) -> str | None:
    try:
        for t in prog.trains():
            if model in t.models.values():
                from .registry import OPTIMIZERS

                opt = t.get("optimizer")
                if opt in OPTIMIZERS and OPTIMIZERS[opt].momentum_state and t.options("optimizer").get("momentum"):
                    return f"{opt}+momentum"  # its momentum buffer is more state (dlspec.report.OPTIMIZER_STATE)
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
    p.add_argument(
        "-o", "--output", metavar="OUT", help="where to write (default: NAME.FORMAT beside the spec; dot goes to stdout; '-': stdout)"
    )
    p.add_argument(
        "--format", choices=("svg", "png", "pdf", "dot"), default=None, help="svg (default), png, pdf, or dot (needs no Graphviz)"
    )
    p.add_argument("--model", help="the model to draw (default: the file's last model)")
    p.add_argument("--depth", type=_natural, default=None, metavar="K", help="collapse block calls nested deeper than K into one node")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB", help="top to bottom (default) or left to right")
    p.add_argument("--activations", action="store_true", help="give activations their own nodes (default: merged into the layer before)")
    p.add_argument("--fold-repeats", action="store_true", help="draw runs of identical repeat iterations once, with a ×N badge")
    p.add_argument("--cells", action="store_true", help="draw the inside of recurrent cells: gates, state and update equations")
    p.add_argument("--phase", choices=("train", "eval"), default="train", help="eval hides dropout and droppath")


def _draw(args) -> int:
    from . import load
    from .draw import FORMATS, render
    from .runfiles import atomic_write

    fmt, out = args.format, args.output
    if fmt is None:
        suffix = Path(out).suffix.lstrip(".").lower() if out and out != "-" else ""
        fmt = "dot" if suffix == "gv" else suffix if suffix in FORMATS else "svg"
    prog = load(Path(args.file))
    options = {k: getattr(args, k) for k in ("depth", "rankdir", "activations", "fold_repeats", "cells", "phase")}
    data = render(prog.draw(args.model, **options), fmt)
    if out == "-" or (out is None and fmt == "dot"):
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    target = Path(out) if out else Path(args.file).with_suffix("." + fmt)
    atomic_write(target, data, what="diagram")
    print(f"wrote {target}", file=sys.stderr)
    return 0


def _export_args(p) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--model", help="the model to export (default: the file's only or first model)")
    p.add_argument("--to", required=True, metavar="TARGET", help="onnx (an ONNX model) or pytorch (a standalone PyTorch module)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the file to write (written whole or not at all)")
    p.add_argument("--weights", metavar="W", help="a safetensors or PyTorch state dict, or a run's checkpoint (default: the seeded init)")
    p.add_argument("--name-map", dest="name_map", metavar="FILE", help="'FILE_NAME SPEC_NAME' lines renaming the weights' keys")
    p.add_argument("--seed", type=_natural, default=0, help="seed of the initial weights when no --weights (default 0)")
    p.add_argument("--batch", type=_positive, default=None, help="a fixed batch size instead of the dynamic axis N")
    p.add_argument(
        "--seq", type=_seq, action="append", default=[], metavar="T=LEN", help="fix a symbolic dim (e.g. T=128) instead of a dynamic axis"
    )


def _export(args) -> int:
    from . import load

    prog = load(Path(args.file))
    fixed = dict(args.seq)
    if args.batch is not None:
        fixed["N"] = args.batch
    out = prog.export(args.model, args.to, args.output, weights=args.weights, name_map=args.name_map, seed=args.seed, fixed=fixed)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _train_args(p) -> None:
    p.add_argument("file", metavar="FILE", nargs="?", help="the spec (optional with --resume)")
    p.add_argument("--model", help="the model to train (default: the spec's train section's)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly where it stopped")
    p.add_argument("--out", default="runs", metavar="DIR", help="where run directories go (default: runs/)")
    _train_overrides(p)
    p.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary at the end")


def _train_overrides(p) -> None:
    """The overrides of a spec's train section (``dlspec train``'s, also ``dlspec sweep``'s for every trial)."""
    from . import registry

    g = p.add_argument_group("overrides of the spec's train section")
    g.add_argument(
        "--data", type=_dataset, help="data set: " + ", ".join(n for n, e in registry.DATASETS.items() if e.source != "unavailable")
    )
    g.add_argument("--data-dir", dest="data_dir", help="directory with the data set's files")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch", type=int)
    g.add_argument("--lr", type=_finite)
    g.add_argument("--optimizer", choices=registry.OPTIMIZERS.names())
    g.add_argument("--schedule", choices=registry.SCHEDULES.names())
    g.add_argument("--weight-decay", dest="weight_decay", type=_finite)
    g.add_argument("--loss", choices=registry.LOSSES.names())
    g.add_argument("--clip", type=_finite, help="clip gradients to this global norm")
    g.add_argument("--val-split", dest="val_split", type=_finite, help="fraction of the training data held out for validation")
    g.add_argument("--limit", type=int, help="use only the first N training samples (quick runs)")
    g.add_argument("--max-steps", dest="max_steps", type=int, help="stop after this many optimizer steps")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="tinygrad device: CPU, CUDA, NV, METAL, AMD, … (default: tinygrad's choice)")
    g.add_argument(
        "--devices",
        type=_devices,
        metavar="D1,D2,…|N",
        help="train data parallel: each batch split across these devices (CUDA:0,CUDA:1), or the first N of --device's kind",
    )
    g.add_argument("--episodes", type=int, help="episodes to train ('train dqn' only; with --resume, as --epochs: train further)")


def _train(args) -> int:
    from pathlib import Path

    from . import load
    from .errors import UsageError
    from .loop import resume_command, train_command
    from .train import OVERRIDES, file_digest, resolve

    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k, None) is not None}
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").is_file() or not (run_dir / "spec.dl").is_file():
            raise UsageError(f"{run_dir} is not a dlspec run directory (no config.json and spec.dl)")
        if args.file and not Path(args.file).is_file():
            raise UsageError(f"no such file: {args.file}")
        if args.file and file_digest(Path(args.file)) != file_digest(run_dir / "spec.dl"):
            raise UsageError(
                f"{run_dir} was trained from another spec than {args.file} (sha256 {file_digest(run_dir / 'spec.dl')} of its spec.dl, "
                f"{file_digest(Path(args.file))} of {args.file}); resume it without FILE, or start a new run"
            )
        return resume_command(args, run_dir, overrides)  # every objective's run (dlspec.loop)
    if not args.file:
        raise UsageError("give a spec FILE to train, or --resume DIR")
    prog = load(Path(args.file))
    cfg = resolve(prog, args.file, args.model, overrides, objectives=True)
    prog.check()  # a spec with errors never trains
    return train_command(args, prog, cfg)


def _eval_args(p) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--weights", required=True, help="a .safetensors file (a run's best/last, or net.save) or a PyTorch .pt/.pth state dict")
    p.add_argument("--model")
    p.add_argument("--data", type=_dataset)
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--name-map", dest="name_map", metavar="FILE", help="rename the weights file's keys: lines 'FILE_NAME SPEC_NAME'")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--batch", type=_positive)
    p.add_argument("--device")
    p.add_argument("--limit", type=_positive)
    p.add_argument("--json", action="store_true")


def _eval(args) -> int:
    import json
    from pathlib import Path

    from . import load
    from .errors import UsageError
    from .objectives.classifier import Classifier as Trainer
    from .objectives.classifier import normalization as _normalization
    from .train import RunConfig, check_safetensors, resolve

    prog = load(Path(args.file))
    overrides = {k: getattr(args, k) for k in ("data", "data_dir", "batch", "device", "limit") if getattr(args, k, None) is not None}
    cfg = resolve(prog, args.file, args.model, {})
    weights = Path(args.weights)
    from .weightfile import read_torch, weights_format

    # by content: a safetensors header is validated here and a PyTorch file read whole (its
    # pickle through the allow-list), so anything unreadable fails before data and model
    if weights_format(weights) == "safetensors":
        meta = check_safetensors(weights, "weights file")
    else:
        read_torch(weights)
        meta = {}
    run_cfg = _run_config_beside(weights)
    if run_cfg is not None and run_cfg.model == cfg.model:  # a run's weights: evaluate on the run's data settings
        keep = ("data", "data_options", "data_dir", "loss", "loss_options", "batch", "seed", "metrics", "val_split", "limit", "augment")
        cfg = cfg.model_copy(update={k: getattr(run_cfg, k) for k in keep})
        print(f"data settings from {weights.parent / 'config.json'}", file=sys.stderr)
        if run_cfg.params:  # a sweep trial's model parameters: the weights are of the model they make
            prog = prog.bind(run_cfg.params)
            cfg = cfg.model_copy(update={"params": run_cfg.params})
    if "data" in overrides and overrides["data"] != cfg.data:
        cfg = cfg.model_copy(update={"data_options": {}})
    if "device" in overrides:  # one device, instead of a train section's `devices`
        cfg = cfg.model_copy(update={"devices": None})
    try:
        cfg = RunConfig(**{**cfg.model_dump(), **overrides})
    except Exception as e:  # noqa: BLE001 - pydantic names the field
        raise UsageError(f"bad evaluation settings: {e}") from None
    trainer = Trainer(prog, cfg, Path("."), lambda m: print(m, file=sys.stderr))  # its log: the tuned-kernels line
    trainer.normalization = _normalization(meta)  # the normalisation the weights were trained with
    trainer.load_data()
    trainer.build()
    trainer.load_weights(weights, args.name_map)
    loader = trainer.eval_loaders.get(args.split) if args.split != "train" else None
    if args.split == "train":
        from . import data

        loader = data.Loader(trainer.train_data, cfg.batch, cfg.seed, shuffle=False, mean=trainer.loader.mean, std=trainer.loader.std)
    if loader is None:
        raise UsageError("there is no validation split (val_split is 0)")
    metrics = trainer.evaluate(loader)
    result = {"model": cfg.model, "weights": args.weights, "data": cfg.data, "split": args.split, **metrics}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        extra = f", top-5 {metrics['top5'] * 100:.2f}%" if "top5" in metrics else ""
        print(f"{cfg.model} on {cfg.data} {args.split}: loss {metrics['loss']:.4f}, accuracy {metrics['accuracy'] * 100:.2f}%{extra}")
    return 0


def _run_config_beside(weights):
    """The :class:`RunConfig` of the run directory holding ``weights``, if it is one."""
    import json

    from .train import RunConfig

    f = weights.parent / "config.json"
    if not f.is_file():
        return None
    try:
        return RunConfig(**json.loads(f.read_text(encoding="utf-8")))
    except Exception:  # noqa: BLE001 - not a run's config: evaluate with the spec's settings
        return None


def _sample_args(p) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--weights", required=True, help="a run's last/best.safetensors (or net.save weights)")
    p.add_argument("--model", help="the generator: a model with a 'sample' step or one input z (default: gan generator, vae model)")
    p.add_argument("-n", type=int, default=64, help="how many images (default 64)")
    p.add_argument("-o", "--output", default="samples.png", metavar="PNG", help="where to write the grid (default samples.png)")
    p.add_argument("--seed", type=int, default=0, help="seed of z (default 0)")
    p.add_argument("--device", help="tinygrad device (default: tinygrad's choice)")


def _sample(args) -> int:
    from .objectives.sample import run

    return run(args)


def _lsp_args(p) -> None:
    p.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default and only transport)")
    p.add_argument("--log", metavar="FILE", help="write the server's own log to FILE (default: none)")


def _lsp(args) -> int:
    from .lsp import run

    return run(args)


#: dlspec serve's default port on 127.0.0.1
SERVE_PORT = 8737


def _serve_args(p) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="the specs to show (their imports are watched too)")
    p.add_argument("--port", type=int, default=SERVE_PORT, help=f"port on 127.0.0.1 (default {SERVE_PORT}; 0: any free port)")


def _serve(args) -> int:
    from .serve import run

    return run(args)


def _bench_args(p) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument("--model", help="the model to measure (default: the train section's, else the file's)")
    p.add_argument("--batch", type=_positive, default=None, help="batch size (default: the train section's; needed without one)")
    p.add_argument(
        "--seq", type=_seq, action="append", default=[], metavar="T=LEN", help="fix a symbolic input size (e.g. T=32); needed for each one"
    )
    p.add_argument("--steps", type=_positive, default=30, help="timed steps after the warm-up (default 30)")
    p.add_argument("--device", default=None, help="tinygrad device (default: the train section's, else tinygrad's choice)")
    p.add_argument("--against", choices=["torch"], help="also measure the PyTorch export (eager; same weights, optimizer, threads)")
    p.add_argument("--untuned", action="store_true", help="measure tinygrad's default kernels even where dlspec tune found faster ones")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def _bench(args) -> int:
    from .benchmark import bench_command

    return bench_command(args)


def _tune_args(p) -> None:
    from .tuning import DEFAULT_BUDGET

    p.add_argument("file", metavar="FILE")
    p.add_argument("--model", help="the model to tune (default: the train section's, else the file's)")
    p.add_argument("--batch", type=_positive, default=None, help="batch size (default: the train section's; needed without one)")
    p.add_argument(
        "--seq", type=_seq, action="append", default=[], metavar="T=LEN", help="fix a symbolic input size (e.g. T=32); needed for each one"
    )
    p.add_argument("--beam", type=_positive, default=2, metavar="K", help="BEAM width: candidates kept per search round (default 2)")
    p.add_argument(
        "--budget", type=_finite, default=DEFAULT_BUDGET, metavar="SECONDS", help=f"seconds of search at most (default {DEFAULT_BUDGET:g})"
    )
    p.add_argument("--device", default=None, help="tinygrad device (default: the train section's, else tinygrad's choice)")


def _tune(args) -> int:
    from .tuning import tune_command

    return tune_command(args)


def _count(text: str) -> int:
    """``--max-params 1.5M``: a whole count, with an optional K, M or G (10³, 10⁶, 10⁹)."""
    import argparse
    import re

    from .bounds import MAX_INT

    m = re.fullmatch(r"\s*(\d{1,19}(?:\.\d{1,19})?)\s*([kKmMgG]?)\s*", text)
    v = float(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2).lower()] if m else 0
    if not 1 <= v <= MAX_INT:
        raise argparse.ArgumentTypeError(f"expected a count such as 500000, 1.5M or 2G (at most 2**63 − 1), got {text!r}")
    return int(v)


def _resources(text: str) -> float:
    """``--cpus 0.5``: a number of CPUs or GPUs per trial (a fraction shares one)."""
    import argparse

    v = _finite(text)
    if v < 0 or v > 4096:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 4096, got {text!r}")
    return v


def _sweep_args(p) -> None:
    from . import registry

    p.add_argument("file", metavar="FILE", nargs="?", help="the spec (optional with --resume)")
    p.add_argument("--model", help="the model to tune (default: the spec's train section's)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=SPACE",
        help="what to vary and its values, once per name: a parameter of the model (hidden; a GAN's generator.width,"
        " discriminator.width) or of a block (Block.width), a train setting of the objective (lr, batch, optimizer, epochs,"
        " noise, beta, d_lr, gamma, …) or an optimizer option (momentum, beta1, …); SPACE: a list"
        " 64,128,256, int:LO:HI[:STEP], uniform:LO:HI or loguniform:LO:HI",
    )
    p.add_argument(
        "--trials", type=_positive, metavar="K", help="draw K random configurations (default: the full grid of lists and int ranges)"
    )
    p.add_argument("--sweep-seed", dest="sweep_seed", type=_natural, metavar="S", help="seed of the random draws (default 0)")
    p.add_argument(
        "--metric",
        help="what to optimise, at each trial's best epoch (a DQN's: episode), one its objective reports: "
        + "; ".join(f"{name}: {', '.join(m.name for m in e.metrics)}" for name, e in registry.OBJECTIVES.items())
        + " (the first is the default)",
    )
    p.add_argument("--mode", choices=["max", "min"], help="maximise or minimise the metric (default: the metric's, as docs/sweep.md lists)")
    p.add_argument("--max-params", dest="max_params", type=_count, metavar="N", help="prune configurations with more parameters (1.5M, 2G)")
    p.add_argument("--max-macs", dest="max_macs", type=_count, metavar="N", help="prune configurations with more MACs per sample")
    p.add_argument("--scheduler", choices=["fifo", "asha"], help="fifo: every trial runs to its end (default); asha: stop bad trials early")
    p.add_argument(
        "--out", metavar="DIR", help="the sweep's folder: sweep.json and trials/NNN run directories (default: sweeps/MODEL-TIME)"
    )
    p.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR: run its unfinished trials, keep the finished ones")
    p.add_argument("--address", metavar="HOST:PORT", help="run on this existing Ray cluster (or auto) instead of starting a local Ray")
    p.add_argument("--cpus", type=_resources, metavar="N", help="CPUs per trial (default 1)")
    p.add_argument("--gpus", type=_resources, metavar="N", help="GPUs per trial (default 0)")
    p.add_argument("--concurrent", type=_positive, metavar="K", help="run at most K trials at a time (default: as many as fit)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true", help="plan and check the configurations, print them, run nothing")
    p.add_argument("--json", action="store_true", help="print sweep.json's document at the end instead of the table")
    _train_overrides(p)


def _sweep(args) -> int:
    from .sweep import sweep_command

    return sweep_command(args)


def _cache_args(p) -> None:
    p.add_argument("action", choices=["info", "clear"], help="info: list the compiled steps cached; clear: remove them")


def _cache(args) -> int:
    from .stepcache import cache_command

    return cache_command(args)


COMMANDS: list[tuple[str, str, Callable, Callable]] = [
    ("compile", "infer shapes and report params, MACs and memory per layer", _compile_args, _compile),
    ("train", "train a model on a data set (the spec's train section, with overrides)", _train_args, _train),
    ("eval", "evaluate trained weights on a data set", _eval_args, _eval),
    ("sample", "write a PNG grid of images generated by a trained GAN generator or VAE decoder", _sample_args, _sample),
    ("export", "export a model to ONNX or to a standalone PyTorch module, with its weights", _export_args, _export),
    ("draw", "draw a model as a Graphviz diagram (svg, png, pdf or dot) with shapes, blocks and costs", _draw_args, _draw),
    ("lsp", "run the language server (LSP over stdio) for editors: diagnostics, shapes inline, hover, completion", _lsp_args, _lsp),
    ("serve", "serve a live preview page (diagram, report, diagnostics) that follows the files as they are saved", _serve_args, _serve),
    ("bench", "measure a model's training step: first step cold and warm, steady step, memory; --against torch", _bench_args, _bench),
    ("tune", "search faster kernels for a model's training and evaluation steps (tinygrad BEAM); later runs use them", _tune_args, _tune),
    ("cache", "list (info) or remove (clear) the compiled training and evaluation steps cached across runs", _cache_args, _cache),
    ("sweep", "search model parameters and train settings on Ray Tune; configurations are checked statically first", _sweep_args, _sweep),
]
