"""``dlspec sample SPEC --weights W [--model M] [-n 64] [-o grid.png]``: a PNG grid of generated images.

The generator is, by default, the spec's ``train gan`` generator (z ~ N(0, σ²I), σ its ``noise``) or
its ``train vae`` model's decoder — the layers after the ``sample`` step, run on z ~ N(0, I).
``--model`` names another one: a model with a ``sample`` step (decoded the same way) or a model
with one vector input z (e.g. vae.dl's ``Generator``, which shares the VAE's ``decoder`` names).
Weights come from a run (``last.safetensors``/``best.safetensors``: the ``generator.`` or ``model.``
keys) or a plain ``net.save`` file; only the keys the generator needs are read. The weights of a
``dlspec sweep`` trial are of the models its parameters make: those in its ``config.json`` are bound.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..train import TrainError


def _choose(prog, model: str | None) -> tuple[str, float]:
    """(model, σ of z)."""
    sections = prog.trains()
    if model is not None:
        prog._model_name(model)
        for t in sections:
            if t.kind == "gan" and t.models.get("generator") == model:
                return model, float(t.get("noise", 1.0))
        return model, 1.0
    for t in sections:
        if t.kind == "gan":
            return t.models["generator"], float(t.get("noise", 1.0))
        if t.kind == "vae":
            return t.models["model"], 1.0
    raise UsageError(
        f"{prog.file} has no 'train gan' or 'train vae' section: name the generator with --model (a model with a 'sample' step, or one whose input is z)"
    )


def _weights_for(net, path: Path) -> dict:
    from ..backends.tinygrad import read_weights

    try:
        sd = read_weights(path)
    except FileNotFoundError:
        raise UsageError(f"no such weights file: {path}") from None
    need = set(net.state_dict())
    for prefix in ("generator.", "model.", ""):
        sub = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if need <= set(sub):
            return sub
    missing = sorted(need - {k.split(".", 1)[1] if k.startswith(("generator.", "model.")) else k for k in sd})
    raise TrainError(f"{path} has no weights for {net.graph.name}'s {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}")


def generate(
    prog, model: str | None, weights: Path, n: int = 64, seed: int = 0, device: str | None = None, sigma: float | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """``n`` generated samples (NumPy) and their value range (``sigma``: σ of z, default the spec's)."""
    from tinygrad import Tensor

    from .common import assign_weights, decode, latent_size, output_range

    name, spec_sigma = _choose(prog, model)
    sigma = spec_sigma if sigma is None else sigma
    net = prog.build(name, device=device, seed=seed)
    has_sample = any(nd.op == "sample" for nd in net.graph.nodes)
    if has_sample:
        from .common import decoder_nodes

        dim = latent_size(net)
        rng_node = decoder_nodes(net.graph)[2]
    else:
        t = net.shapes.types[net.input_names[0]] if len(net.input_names) == 1 else None
        if t is None or len(t.sample) != 1 or not isinstance(t.sample[0], int) or len(net.output_names) != 1:
            raise UsageError(f"{name} is not a generator: it needs a 'sample' step, or one vector input z and one output")
        dim, rng_node = int(t.sample[0]), net.graph.outputs[0].node
    assign_weights(net, _weights_for(net, Path(weights)), str(weights))
    z = Tensor((sigma * np.random.default_rng(seed).standard_normal((n, dim))).astype(np.float32), device=net.device)
    out = decode(net, z) if has_sample else net(z, train=False)
    return out.numpy(), output_range(net.graph, rng_node)


def _run_beside(weights: Path) -> dict:
    """The ``config.json`` of the run directory holding ``weights`` (empty if it is none)."""
    import json

    try:
        cfg = json.loads((weights.parent / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def run(args) -> int:
    from .. import load
    from .common import save_grid

    if args.n < 1:
        raise UsageError(f"-n must be positive, got {args.n}")
    prog = load(Path(args.file))
    run_cfg = _run_beside(Path(args.weights))
    params, sigma = run_cfg.get("params"), None
    if isinstance(params, dict) and params:  # a sweep trial's model parameters: the weights are of the models they make
        prog = prog.bind(params)
    models = run_cfg.get("models") if isinstance(run_cfg.get("models"), dict) else {}
    if run_cfg.get("kind") == "gan" and args.model in (None, models.get("generator")) and isinstance(run_cfg.get("noise"), (int, float)):
        sigma = float(run_cfg["noise"])  # the run's σ of z (a sweep trial's may not be the spec's)
    x, value_range = generate(prog, args.model, Path(args.weights), args.n, args.seed, args.device, sigma=sigma)
    out = save_grid(Path(args.output), x, value_range)
    print(f"wrote {out} ({args.n} samples)", file=sys.stderr)
    return 0
