"""``dlspec bench``: a classifier's training step measured the way a user meets it.

The step is the one ``dlspec train`` runs (:meth:`dlspec.objectives.classifier.Classifier._train_step`: the
``train`` section's loss and optimizer — without a section, ``--batch`` and the defaults
cross_entropy and adam lr 0.001 — under ``TinyJit``) on one random batch of the model's input
shape. Each figure comes from a child process, so that its caches and its peak memory are its
own:

- **cold**: a child with empty caches (a fresh, empty tinygrad ``CACHEDB`` and dlspec cache
  directory): seconds from the start of building the model to the end of the first step.
- **warm**: a second child with the caches the first one filled — or, when ``dlspec tune``
  recorded kernels for this spec, batch and device, with the user's own caches, where the tuned
  kernels are (:mod:`dlspec.tuning`; ``--untuned`` measures without them): its first step, then
  the **steady step**, the median and interquartile range of ``--steps`` steps after 3 warm-up
  steps (the JIT's capture and replays), each ended by reading the loss; **samples/s** is the
  batch over the median; **peak RSS** is the child's (``getrusage``).
- ``--against torch``: the same model as the generated PyTorch module
  (:func:`dlspec.backends.torch.generate`) with the same initial weights
  (:func:`dlspec.state.initial`), the same batch, loss and optimizer with the same
  hyperparameters (PyTorch's own ``torch.optim`` classes, whose update rules dlspec's follow),
  eager, on as many threads as tinygrad's CPU device uses; two children as well (PyTorch has no
  kernel cache: its cold and warm first steps differ by what the operating system caches).

``--json`` prints ``{"model", "batch", "device", "results": {"dlspec": {…}, "torch": {…} or
null}, "ratio_step"}``, each result holding ``first_step_cold_s``, ``first_step_warm_s``,
``step_ms``, ``samples_per_s`` and ``rss_mb``; ``ratio_step`` is dlspec's step over PyTorch's
(null without ``--against``).

Children run as ``python -m dlspec.benchmark dlspec|torch JOB``; this module imports only the
standard library at the top, so a PyTorch child loads no tinygrad.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

#: default number of timed steps
STEPS = 30
#: steps between the first one and the timed ones (the JIT's capture, then replays)
WARMUP = 3
#: losses whose targets are class indices; the others compare element-wise with 0/1 targets
CLASS_LOSSES = ("cross_entropy", "nll")


def _usage(message: str) -> Exception:
    """A :class:`~dlspec.errors.UsageError` (imported here: a PyTorch child never loads dlspec's errors, nor pydantic)."""
    from .errors import UsageError

    return UsageError(message)


# ---- what is measured ----------------------------------------------------------------------------------


def resolve_run(prog: Any, file: str, model: str | None, batch: int | None, device: str | None, seq: dict[str, int], what: str):
    """The run configuration and the input sample shape for ``dlspec bench``/``tune``: the
    model's ``train`` section (a classifier's) with ``--batch``/``--device``; without a section,
    ``--batch`` is needed (loss and optimizer: the defaults). Symbolic input sizes need ``--seq``."""
    from .dims import dvalue, free_names
    from .train import resolve

    trains = prog.trains()
    if model is None:
        section = next((t for t in trains if t.kind == "classifier"), trains[0] if trains else None)
        name = (section.models.get("model") or section.models.get("generator")) if section else prog._model_name(None)
    else:
        name = prog._model_name(model)
        section = next((t for t in trains if name in t.models.values()), None)
    if section is not None and section.kind != "classifier":
        raise _usage(
            f"dlspec {what} works on classifiers' training steps; {name}'s train section is 'train {section.kind}', not supported yet"
        )
    if section is None and batch is None:
        raise _usage(
            f"{name} has no train section to take the batch size from: give --batch B "
            "(the loss and optimizer are then the defaults, cross_entropy and adam lr 0.001)"
        )
    cfg = resolve(prog, file, name, {"batch": batch, "device": device})
    if cfg.devices:  # a train section's `devices`: bench and tune measure the step on one device
        cfg = cfg.model_copy(update={"devices": None})
    graph, shapes = prog.ir(name), prog.shapes(name)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise _usage(
            f"dlspec {what} works on models with one input and one output; {name} has {len(graph.inputs)} and {len(graph.outputs)}"
        )
    inp = graph.inputs[0]
    symbols: set[str] = set()
    for d in shapes.types[inp].sample:
        symbols |= free_names(d)
    unknown = sorted(set(seq) - symbols)
    if unknown:
        raise _usage(
            f"--seq {unknown[0]}: input '{inp}' of {name} has no symbolic size '{unknown[0]}'"
            + (f"; its symbolic sizes: {', '.join(sorted(symbols))}" if symbols else "; its sizes are all fixed")
        )
    sample = []
    for d in shapes.types[inp].sample:
        v = dvalue(d, seq)
        if v is None:
            free = sorted(free_names(d) - set(seq))
            raise _usage(
                f"input '{inp}' of {name} has the symbolic size {', '.join(free)}: fix it with "
                + " ".join(f"--seq {n}=LENGTH" for n in free)
                + (f" (and the batch with --batch; the train section's is {cfg.batch})" if section is not None else "")
            )
        if v < 1:
            raise _usage(f"input '{inp}' of {name} would have size {v} with {seq}: give larger --seq values")
        sample.append(int(v))
    return cfg, tuple(sample)


def synthetic_arrays(prog: Any, model: str, sample: tuple[int, ...], batch: int, seed: int, loss: str) -> tuple[Any, Any]:
    """A random batch ``(x, y)`` (NumPy): ``x`` of the input's shape and dtype, ``y`` class
    indices (0/1 for element-wise losses)."""
    import numpy as np

    graph, shapes = prog.ir(model), prog.shapes(model)
    t = shapes.types[graph.inputs[0]]
    rng = np.random.default_rng(seed)
    if t.is_float():
        x = rng.standard_normal((batch, *sample)).astype(np.float32)
    else:
        x = rng.integers(0, t.vocab or 2, (batch, *sample)).astype(np.int32)
    y = rng.integers(0, _classes(shapes, graph) if loss in CLASS_LOSSES else 2, batch).astype(np.int64)
    return x, y


def _classes(shapes: Any, graph: Any) -> int:
    out = shapes.types[graph.outputs[0].node]
    c = out.sample[-1] if out.sample else 1
    return c if isinstance(c, int) and c >= 1 else 2


def synthetic_trainer(prog: Any, cfg: Any, sample: tuple[int, ...], log: Callable[[str], None], tuned: bool = True, arrays: Any = None):
    """A :class:`~dlspec.objectives.classifier.Classifier` built for ``cfg`` with a random batch as its data (or
    ``arrays``): its compiled steps are exactly ``dlspec train``'s. ``tuned``: use kernels of
    ``dlspec tune`` (:func:`dlspec.tuning.use_tuned`)."""
    from . import data
    from .train import Trainer

    x, y = arrays if arrays is not None else synthetic_arrays(prog, cfg.model, sample, cfg.batch, cfg.seed, cfg.loss)
    graph, shapes = prog.ir(cfg.model), prog.shapes(cfg.model)
    trainer = Trainer(prog, cfg, Path("."), log)
    trainer.tuned_kernels = tuned
    trainer.train_data = data.Dataset("random", x, y, _classes(shapes, graph))
    trainer.val_data, trainer.test_data = None, trainer.train_data
    trainer.loader = data.Loader(trainer.train_data, cfg.batch, cfg.seed, shuffle=False)
    trainer.eval_loaders = {}
    trainer.build()
    return trainer


def synthetic_batch(trainer: Any, sample: tuple[int, ...], batch: int, seed: int) -> tuple[Any, Any]:
    """The trainer's random batch as realized tinygrad tensors, as ``dlspec train`` feeds them."""
    from tinygrad import Tensor

    x, y = trainer._tensors(trainer.train_data.x[:batch], trainer.train_data.y[:batch])
    Tensor.realize(x, y)
    return x, y


def torch_plan(cfg: Any) -> dict[str, Any]:
    """PyTorch's optimizer and loss with ``cfg``'s hyperparameters (a usage error where PyTorch has no equivalent)."""
    o, wd = dict(cfg.optimizer_options), float(cfg.weight_decay)
    lr = float(cfg.lr)
    if cfg.optimizer == "sgd":
        opt = ("SGD", {"lr": lr, "momentum": float(o.get("momentum", 0.0)), "nesterov": bool(o.get("nesterov", False)), "weight_decay": wd})
    elif cfg.optimizer in ("adam", "adamw"):
        betas = [float(o.get("beta1", 0.9)), float(o.get("beta2", 0.999))]
        opt = (
            "Adam" if cfg.optimizer == "adam" else "AdamW",
            {"lr": lr, "betas": betas, "eps": float(o.get("eps", 1e-8)), "weight_decay": wd},
        )
    elif cfg.optimizer == "rmsprop":
        opt = (
            "RMSprop",
            {
                "lr": lr,
                "alpha": float(o.get("alpha", 0.99)),
                "eps": float(o.get("eps", 1e-8)),
                "momentum": float(o.get("momentum", 0.0)),
                "weight_decay": wd,
            },
        )
    elif cfg.optimizer == "adagrad":
        opt = (
            "Adagrad",
            {
                "lr": lr,
                "eps": float(o.get("eps", 1e-10)),
                "initial_accumulator_value": float(o.get("initial_accumulator", 0.0)),
                "weight_decay": wd,
            },
        )
    else:
        raise _usage(
            f"--against torch: PyTorch has no {cfg.optimizer} optimizer; measure with --against omitted, or pick another optimizer"
        )
    return {
        "optimizer": opt[0],
        "options": opt[1],
        "loss": cfg.loss,
        "loss_options": dict(cfg.loss_options),
        "clip": cfg.clip,
        "clip_norm_type": cfg.clip_norm_type,
        "l2": cfg.l2,
    }


# ---- the parent: dlspec bench ------------------------------------------------------------------------


def bench_command(args: Any) -> int:
    """``dlspec bench FILE [--model M] [--batch B] [--seq T=LEN] [--steps N] [--device D] [--against torch] [--untuned] [--json]``."""
    import tempfile

    import numpy as np

    from . import load, state, tuning
    from .backends.tinygrad import check_device

    prog = load(Path(args.file))
    cfg, sample = resolve_run(prog, args.file, args.model, args.batch, args.device, dict(args.seq), "bench")
    device = measurable(check_device(cfg.device), "bench")
    graph, shapes = prog.ir(cfg.model), prog.shapes(cfg.model)
    plan = source = None
    if args.against == "torch":
        plan = torch_plan(cfg)
        _check_torch()
        from .backends.torch import generate

        source = generate(graph, shapes, prog)
    from tinygrad.helpers import NUM_CPU_THREADS

    threads = int(NUM_CPU_THREADS.value)  # the children's too: they inherit the environment
    entry = None if args.untuned else tuning.lookup(tuning.make_key(graph, cfg, device, "float32", sample, cfg.batch))
    say = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"bench {cfg.model}: batch {cfg.batch}, input {list(sample)}, {_describe(cfg)}, on {device}")
    if entry is not None:
        say(tuning.describe_entry(entry))
        entry = entry if tuning.wanted(entry) else None
    x, y = synthetic_arrays(prog, cfg.model, sample, cfg.batch, cfg.seed, cfg.loss)
    with tempfile.TemporaryDirectory(prefix="dlspec-bench-") as tmp:
        d = Path(tmp)
        np.save(d / "x.npy", x)
        np.save(d / "y.npy", y)
        job = {
            "spec": str(Path(args.file).resolve()),
            "config": cfg.model_dump(mode="json"),
            "sample": list(sample),
            "x": str(d / "x.npy"),
            "y": str(d / "y.npy"),
            "steps": args.steps,
            "warmup": WARMUP,
        }
        empty = {"CACHEDB": str(d / "tinygrad" / "cache.db"), "XDG_CACHE_HOME": str(d / "cache"), tuning.ENV_SWITCH: "0"}
        # the first step is what a cold process is timed for; one more call captures the step, which
        # fills the compiled-step cache the warm process reads (dlspec.stepcache)
        cold_job = {**job, "steps": 0, "warmup": 1}
        say("dlspec, cold (empty caches)…")
        cold = _child("dlspec", cold_job, d, empty, "dlspec cold")
        say(f"  first step {cold['first_step_s']:.2f} s")
        warm_env = empty if entry is None else {}
        if entry is not None:  # the cold process captured the default kernels' step: a tuned one is cached
            say("dlspec, tuned: the first process with the tuned kernels (it captures the tuned step)…")
            primed = _child("dlspec", cold_job, d, warm_env, "dlspec tuned")
            say(f"  first step {primed['first_step_s']:.2f} s")
        say("dlspec, warm (" + ("the caches the cold process filled" if entry is None else "the user's caches: tuned kernels") + ")…")
        warm = _child("dlspec", job, d, warm_env, "dlspec warm")
        say(f"  first step {warm['first_step_s']:.2f} s, step {warm['step_ms']:.2f} ms")
        results: dict[str, Any] = {"dlspec": _result(cold, warm, cfg.batch), "torch": None}
        torch_runs = None
        if plan is not None:
            assert source is not None
            (d / "model.py").write_text(source, encoding="utf-8")
            np.savez(d / "weights.npz", **state.initial(graph, shapes, cfg.seed))
            tjob = {
                **job,
                "module": str(d / "model.py"),
                "class": graph.name,
                "weights": str(d / "weights.npz"),
                "plan": plan,
                "threads": threads,
                "device": "cuda" if device.split(":")[0] in ("CUDA", "NV", "AMD", "HIP") else "cpu",
                "seed": cfg.seed,
            }
            say(f"PyTorch eager ({threads} threads)…")
            tcold = _child("torch", {**tjob, "steps": 0, "warmup": 0}, d, {}, "PyTorch")
            twarm = _child("torch", tjob, d, {}, "PyTorch")
            say(f"  first step {tcold['first_step_s']:.2f} s, step {twarm['step_ms']:.2f} ms")
            results["torch"] = _result(tcold, twarm, cfg.batch)
            torch_runs = (tcold, twarm)
    ratio = results["dlspec"]["step_ms"] / results["torch"]["step_ms"] if results["torch"] else None
    if args.json:
        print(json.dumps({"model": cfg.model, "batch": cfg.batch, "device": device, "results": results, "ratio_step": ratio}, indent=1))
    else:
        print(_table(cfg, device, cold, warm, torch_runs, ratio))
    return 0


def measurable(device: str, what: str) -> str:
    """``device``, unless it runs nothing (tinygrad's NULL device): a usage error."""
    if device.split(":")[0] == "NULL":
        raise _usage(f"dlspec {what}: the NULL device computes nothing, so there is nothing to time; use CPU or a GPU")
    return device


def _check_torch() -> None:
    """A usage error unless PyTorch imports here (checked in a child, as the measuring one will import it)."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", "import torch"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {done.returncode}"
        raise _usage(f"--against torch needs PyTorch, which does not import here ({why}): pip install 'dlspec[torch]'")


def _describe(cfg: Any) -> str:
    opts = "".join(f" {k} {v}" for k, v in cfg.optimizer_options.items())
    extra = "".join(f", {k} {getattr(cfg, k)}" for k in ("weight_decay", "l2", "clip") if getattr(cfg, k))
    return f"loss {cfg.loss}, optimizer {cfg.optimizer} lr {cfg.lr:g}{opts}{extra}"


def _result(cold: dict, warm: dict, batch: int) -> dict[str, float]:
    return {
        "first_step_cold_s": cold["first_step_s"],
        "first_step_warm_s": warm["first_step_s"],
        "step_ms": warm["step_ms"],
        "samples_per_s": batch / (warm["step_ms"] / 1000),
        "rss_mb": warm["rss_mb"],
    }


def _table(cfg: Any, device: str, cold: dict, warm: dict, torch_runs: tuple[dict, dict] | None, ratio: float | None) -> str:
    cols = [("dlspec", cold, warm)] + ([("PyTorch", *torch_runs)] if torch_runs else [])
    rows = [
        ("first step, cold", lambda c, w: f"{c['first_step_s']:.2f} s"),
        ("first step, warm", lambda c, w: f"{w['first_step_s']:.2f} s"),
        ("  from process start", lambda c, w: f"{w['to_first_step_s']:.2f} s"),
        ("steady step, median", lambda c, w: f"{w['step_ms']:.2f} ms"),
        ("  interquartile range", lambda c, w: f"{w['iqr_ms']:.2f} ms"),
        ("samples/s", lambda c, w: f"{cfg.batch / (w['step_ms'] / 1000):,.0f}"),
        ("peak RSS", lambda c, w: f"{w['rss_mb']:.0f} MB"),
    ]
    lines = [f"{cfg.model}, batch {cfg.batch}, on {device} ({warm['threads']} threads): {warm['steps']} steps after {WARMUP} warm-up steps"]
    lines.append(f"{'':24s}" + "".join(f"{name:>14s}" for name, _, _ in cols))
    for label, cell in rows:
        lines.append(f"{label:24s}" + "".join(f"{cell(c, w):>14s}" for _, c, w in cols))
    tuned = warm.get("tuned")
    if tuned and warm.get("step_cache"):
        lines.append(f"dlspec kernels: tuned, BEAM={tuned['beam']} (the compiled step, tuned kernels included, from the step cache)")
    elif tuned:
        lines.append(
            f"dlspec kernels: tuned, BEAM={tuned['beam']} ({tuned['hits']} from tinygrad's cache, {tuned['misses']} with the defaults)"
        )
    else:
        lines.append("dlspec kernels: tinygrad's default optimisations (dlspec tune searches faster ones)")
    if ratio is not None:
        lines.append(f"steady step dlspec / PyTorch: {ratio:.2f}×")
    return "\n".join(lines)


def _child(kind: str, job: dict, folder: Path, env: dict[str, str], label: str) -> dict:
    """Run one measuring child; its result (a DlspecError naming the child if it failed)."""
    import subprocess

    n = len(list(folder.glob("job-*.json")))
    path, out = folder / f"job-{n}.json", folder / f"result-{n}.json"
    path.write_text(json.dumps({**job, "out": str(out)}), encoding="utf-8")
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "dlspec.benchmark", kind, str(path)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0 or not out.is_file():
        lines = [ln for ln in (done.stderr or "").splitlines() if ln.strip()]
        why = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else f"exit code {done.returncode}")
        from .errors import DlspecError

        raise DlspecError(f"the {label} process failed: {why.strip()}")
    result = json.loads(out.read_text(encoding="utf-8"))
    result["to_first_step_s"] = result.pop("first_step_at") - started
    return result


# ---- the children ----------------------------------------------------------------------------------------


def _summary(times: list[float]) -> tuple[float, float]:
    """(median, interquartile range) in milliseconds."""
    import statistics

    ms = sorted(t * 1000 for t in times)
    if not ms:
        return math.nan, math.nan
    if len(ms) < 2:
        return ms[0], 0.0
    q = statistics.quantiles(ms, n=4, method="inclusive")
    return statistics.median(ms), q[2] - q[0]


def _peak_rss_mb() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _measure(build: Callable[[], Callable[[], Any]], steps: int, warmup: int) -> dict[str, Any]:
    """First step (from ``build``'s start), warm-up, then ``steps`` timed steps."""
    t0 = time.perf_counter()
    step = build()
    step()
    first = time.perf_counter() - t0
    first_at = time.time()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t1 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t1)
    median, iqr = _summary(times)
    return {"first_step_s": first, "first_step_at": first_at, "step_ms": median, "iqr_ms": iqr, "steps": steps}


def _child_dlspec(job: dict) -> dict:
    import numpy as np

    from . import load
    from .train import RunConfig

    xb, yb = np.load(job["x"]), np.load(job["y"])
    prog = load(Path(job["spec"]))
    cfg = RunConfig(**job["config"])
    holder: dict[str, Any] = {}

    def build() -> Callable[[], Any]:
        trainer = synthetic_trainer(prog, cfg, tuple(job["sample"]), log=lambda m: print(m, file=sys.stderr), arrays=(xb, yb))
        x, y = synthetic_batch(trainer, tuple(job["sample"]), len(yb), cfg.seed)
        step = trainer._train_step(len(yb))
        holder["trainer"] = trainer
        return lambda: step(x, y)[0].item()

    result = _measure(build, int(job["steps"]), int(job["warmup"]))
    from tinygrad.helpers import NUM_CPU_THREADS

    hook = getattr(holder["trainer"], "kernels", None)
    result["tuned"] = {"beam": hook.beam, "hits": hook.hits, "misses": hook.misses} if hook is not None else None
    result["step_cache"] = "train" in getattr(getattr(holder["trainer"], "_step_cache", None), "loaded", [])  # dlspec.stepcache
    result["threads"] = int(NUM_CPU_THREADS.value)
    return result


def _torch_loss(torch: Any, plan: dict) -> Callable[[Any, Any], Any]:
    F = torch.nn.functional
    name, o = plan["loss"], plan["loss_options"]
    if name == "cross_entropy":
        eps = float(o.get("label_smoothing", 0.0))
        return lambda out, y: F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), label_smoothing=eps)
    if name == "nll":
        return lambda out, y: F.nll_loss(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    fns = {
        "bce": F.binary_cross_entropy,
        "bce_logits": F.binary_cross_entropy_with_logits,
        "mse": F.mse_loss,
        "l1": F.l1_loss,
        "huber": lambda a, b: F.huber_loss(a, b, delta=float(o.get("delta", 1.0))),
    }
    fn = fns[name]
    return lambda out, y: fn(out.float(), y.float().reshape(out.shape))


def _child_torch(job: dict) -> dict:
    import importlib.util

    import numpy as np
    import torch

    torch.set_num_threads(int(job["threads"]))
    torch.manual_seed(int(job["seed"]))
    dev = torch.device(job["device"] if job["device"] != "cuda" or torch.cuda.is_available() else "cpu")
    spec = importlib.util.spec_from_file_location("dlspec_bench_model", job["module"])
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = getattr(mod, job["class"], None) or [v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)][-1]
    x = torch.from_numpy(np.load(job["x"])).to(dev)
    y = torch.from_numpy(np.load(job["y"])).long().to(dev)
    plan = job["plan"]
    loss_fn = _torch_loss(torch, plan)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def build() -> Callable[[], Any]:
        model = cls()
        with np.load(job["weights"], allow_pickle=False) as w:
            model.load_state_dict({k: torch.from_numpy(w[k]) for k in w.files}, strict=True)
        model.to(dev).train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = getattr(torch.optim, plan["optimizer"])(params, **plan["options"])
        clip, l2 = plan["clip"], float(plan["l2"] or 0.0)

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = loss_fn(out, y)
            total = loss + 0.5 * l2 * sum((p.float() ** 2).sum() for p in params) if l2 else loss
            total.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip, norm_type=float(plan["clip_norm_type"]))
            opt.step()
            (out.detach().argmax(-1) == y).sum()  # the accuracy count dlspec's step makes too
            sync()
            return loss.item()

        return step

    result = _measure(build, int(job["steps"]), int(job["warmup"]))
    result["tuned"] = None
    result["threads"] = torch.get_num_threads()
    return result


def _child_main(argv: list[str]) -> int:
    """``python -m dlspec.benchmark dlspec|torch JOB``: measure, write the result to the job's ``out``."""
    kind, job_file = argv
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    if kind == "torch":
        result = _child_torch(job)
    else:
        from .errors import DlspecError, UsageError, render_all

        try:
            result = _child_dlspec(job)
        except DlspecError as e:
            print(render_all(e.diagnostics), file=sys.stderr)
            return 2 if isinstance(e, UsageError) else 1
    result["rss_mb"] = _peak_rss_mb()
    Path(job["out"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
