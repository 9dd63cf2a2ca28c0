"""What the objective runners share: images and plots (Pillow), progress bars, data, checkpoints,
the decoder half of a VAE, and copying weights between nets."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..loop import Bars, Record, clock, finite  # noqa: F401 - their old home
from ..train import TrainError, atomic_write_text

# ---- host ↔ device ----------------------------------------------------------------------------------


class Staging:
    """A realized device tensor that host arrays are written into in place — zero-copy where the
    device allows it (CPU) — so a TinyJit step takes new data each call without building a tensor
    (on CPU, ``Tensor(array)`` costs milliseconds, the write microseconds). Elsewhere ``set`` makes a
    new realized tensor of the same shape, which TinyJit accepts just as well.

    On several devices (``device`` a tuple: a data-parallel net's) the tensor is split across them
    on its first axis, an equal share each (:func:`dlspec.backends.tinygrad.place`; a batch that does
    not divide is copied whole to each), and each device's share is written into its own buffer."""

    def __init__(self, shape: tuple[int, ...], dtype: Any = None, device: str | tuple[str, ...] | None = None):
        from tinygrad import Tensor, dtypes

        self.shape, self.dtype, self.device = tuple(shape), dtype or dtypes.float32, device
        self.np_dtype = np.int32 if self.dtype == dtypes.int32 else np.float32
        self.split: int | None = None  # several devices: how many (each holds 1/split of the rows, or all of them)
        if isinstance(device, tuple):
            from ..backends.tinygrad import place

            t = place(Tensor.zeros(*self.shape, dtype=self.dtype, device=device[0]).contiguous(), device)
            self.t = t.contiguous().realize()
            self.split = len(device) if self.t.uop.axis == 0 else 1
        else:
            self.t = Tensor.zeros(*self.shape, dtype=self.dtype, device=device).contiguous().realize()
        self.views: list[np.ndarray] | None = None  # one per device buffer
        try:
            base = self.t.uop.base
            buffers = list(base.buffer.bufs) if self.split else [base.realized]
            share = (self.shape[0] // (self.split or 1), *self.shape[1:]) if self.shape else ()
            views = [np.frombuffer(b.as_memoryview(force_zero_copy=True), dtype=self.np_dtype).reshape(share) for b in buffers]
            for v in views:
                v[...] = 0
            self.views = views
        except Exception:  # noqa: BLE001 - no zero-copy view on this device: copy instead
            self.views = None

    def set(self, a: np.ndarray):
        from tinygrad import Tensor

        a = np.asarray(a, dtype=self.np_dtype).reshape(self.shape)
        if self.views is not None:
            parts = np.split(a, self.split) if self.split and self.split > 1 else [a] * len(self.views)
            for view, part in zip(self.views, parts):
                view[...] = part
            return self.t
        if isinstance(self.device, tuple):
            from ..backends.tinygrad import place

            self.t = place(Tensor(np.ascontiguousarray(a), dtype=self.dtype, device=self.device[0]), self.device).realize()
            return self.t
        self.t = Tensor(np.ascontiguousarray(a), dtype=self.dtype, device=self.device).realize()
        return self.t


def read(t) -> np.ndarray:
    """A realized tensor's values (zero-copy on CPU; a copy elsewhere)."""
    try:
        buf = t.uop.base.realized
        u = t.uop
        while u.op.name == "RESHAPE":  # a reshape of a whole buffer reads the buffer in order
            u = u.src[0]
        if buf is not None and u is t.uop.base and buf.size == t.numel() and buf.device.startswith("CPU"):
            return np.frombuffer(buf.as_memoryview(allow_zero_copy=True), dtype=_np(t.dtype)).reshape(t.shape).copy()
    except Exception:  # noqa: BLE001 - fall back to the portable path
        pass
    return t.numpy()


def _np(dtype):
    from tinygrad import dtypes

    return {dtypes.float32: np.float32, dtypes.int32: np.int32, dtypes.int64: np.int64, dtypes.float16: np.float16}[dtype]


def realize_before_step(opt, *tensors) -> None:
    """Realize ``tensors`` (the loss, metrics) together with the gradients, before ``opt.step()``
    changes the weights they were computed from: a lazy loss realized after the step would read
    the updated weights."""
    from tinygrad import Tensor

    grads = [p.grad for p in opt.params if p.grad is not None]
    Tensor.realize(*tensors, *grads)


def item(t) -> float:
    return float(read(t).reshape(-1)[0])


# ---- images ----------------------------------------------------------------------------------------


def to_images(x: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """``(N, C, H, W)``, ``(N, H, W)`` or flat ``(N, H·W)`` values in ``value_range`` → uint8 ``(N, H, W, C)``."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise UsageError(f"cannot show samples of {x.shape[1]} values as square images")
        x = x.reshape(-1, 1, side, side)
    elif x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UsageError(f"cannot show samples of shape {tuple(x.shape[1:])} as images (need [1 or 3, H, W])")
    lo, hi = value_range
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return (x.transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8)


def save_grid(
    path: Path, x: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0), cols: int | None = None, scale: int = 2, pad: int = 2
) -> Path:
    """A PNG grid of images (atomically written); returns ``path``."""
    from PIL import Image

    imgs = to_images(x, value_range)
    n, h, w, c = imgs.shape
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = imgs[i]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    _save_image(img, Path(path))
    return Path(path)


def _save_image(img, path: Path) -> None:
    """A PIL image as PNG, encoded in memory, then written atomically (:func:`dlspec.runfiles.atomic_write`)."""
    import io

    from ..runfiles import atomic_write

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write(path, buf.getbuffer())


# ---- learning curves -------------------------------------------------------------------------------

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def plot_curves(stem: Path, series: dict[str, list[float]], xlabel: str = "epoch", title: str = "", x0: int = 1) -> None:
    """Learning curves as ``stem.svg`` and ``stem.png`` (one polyline per series, shared y axis)."""
    series = {k: [float(v) for v in vs] for k, vs in series.items() if vs}
    values = [v for vs in series.values() for v in vs if math.isfinite(v)]
    if not values:
        return
    w, h, m = 560, 320, 56
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1
    n = max(max(len(v) for v in series.values()), 2)

    def pt(i: int, v: float) -> tuple[float, float]:
        return m + (w - 2 * m) * i / (n - 1), h - m - (h - 2 * m) * (v - lo) / (hi - lo)

    # SVG
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 14}" text-anchor="middle">{xlabel}</text>',
        f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>',
        f'<text x="{m - 6}" y="{m + 4}" text-anchor="end">{hi:.4g}</text><text x="{m - 6}" y="{h - m}" text-anchor="end">{lo:.4g}</text>',
        f'<text x="{m}" y="{h - m + 14}">{x0}</text><text x="{w - m}" y="{h - m + 14}" text-anchor="end">{x0 + n - 1}</text>',
    ]
    for k, (name, vals) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (pt(i, v) for i, v in enumerate(vals) if math.isfinite(v)))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{w - m - 150}" y="{m + 14 * k}" fill="{color}">{name}</text>')
    parts.append("</svg>")
    atomic_write_text(stem.with_suffix(".svg"), "\n".join(parts) + "\n")
    # PNG
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.line([(m, h - m), (w - m, h - m)], fill="black")
    d.line([(m, m), (m, h - m)], fill="black")
    d.text((w / 2 - 15, h - 22), xlabel, fill="black")
    if title:
        d.text((w / 2 - 3 * len(title), 6), title, fill="black")
    d.text((4, m - 4), f"{hi:.4g}", fill="black")
    d.text((4, h - m - 8), f"{lo:.4g}", fill="black")
    d.text((m, h - m + 4), str(x0), fill="black")
    d.text((w - m - 20, h - m + 4), str(x0 + n - 1), fill="black")
    for k, (name, vals) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        pts = [pt(i, v) for i, v in enumerate(vals) if math.isfinite(v)]
        if len(pts) > 1:
            d.line(pts, fill=color, width=2)
        d.text((w - m - 150, m + 14 * k - 8), name, fill=color)
    _save_image(img, stem.with_suffix(".png"))


# ---- data ------------------------------------------------------------------------------------------


def load_images(cfg, split: str):
    """The data set's ``split`` (``limit`` applied; the test split gets a fifth of it)."""
    from .. import data

    ds = data.load(cfg.data, split, data_dir=cfg.data_dir, **dict(cfg.data_options))
    if cfg.limit:
        ds = head(ds, cfg.limit if split == "train" else max(cfg.batch, cfg.limit // 5))
    if not np.issubdtype(ds.x.dtype, np.floating):
        raise TrainError(f"data '{cfg.data}' holds {ds.x.dtype} values; 'train {cfg.kind}' needs images or vectors in [0, 1]")
    return ds


def fit_shape(net, ds, cfg, what: str = "input") -> tuple[int, ...]:
    """The model input shape a data sample is reshaped to (same shape, or same number of values)."""
    want = net.shapes.types[net.input_names[0]]
    dims = tuple(want.sample)
    have = ds.sample_shape
    if all(isinstance(d, int) for d in dims):
        if dims != have and math.prod(dims) != math.prod(have):
            raise TrainError(f"data '{cfg.data}' gives samples of shape {have} but {net.graph.name}'s {what} is {want.show()}")
        return dims
    if len(dims) != len(have):
        raise TrainError(f"data '{cfg.data}' gives samples of shape {have} but {net.graph.name}'s {what} is {want.show()}")
    return have


def need_batches(ds, batch: int, cfg) -> None:
    if len(ds) < batch:
        raise TrainError(
            f"data '{cfg.data}' ({ds.split}) has {len(ds)} samples, fewer than one batch of {batch}: lower --batch or raise --limit"
        )


def output_range(graph, node: str | None = None) -> tuple[float, float]:
    """The value range of a model's output by its last activation: tanh → (−1, 1), else (0, 1)."""
    path = node or graph.outputs[0].node
    for _ in range(len(graph.nodes)):
        n = graph.node(path)
        if n.op in ("reshape", "flatten") and n.inputs:
            path = n.inputs[0]
            continue
        return (-1.0, 1.0) if n.op in ("tanh", "hardtanh") else (0.0, 1.0)
    return (0.0, 1.0)


# ---- checkpoints -----------------------------------------------------------------------------------


def save_checkpoint(path: Path, parts: dict[str, Any], meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
    """``{prefix: net or optimizer}`` (and host ``arrays``, e.g. a replay buffer) → one safetensors
    file, written atomically with its tensors' digest (:func:`dlspec.resume.save`); ``meta`` as
    metadata. ``last.safetensors`` keeps the checkpoint it replaces as ``last.prev.safetensors``."""
    from tinygrad import Tensor

    from .. import resume
    from ..optim import optimizer_state

    sd = {}
    for prefix, obj in parts.items():
        if hasattr(obj, "state_dict"):
            sd.update({f"{prefix}.{k}": v for k, v in obj.state_dict().items()})
        else:
            sd.update(optimizer_state(obj, prefix=f"{prefix}."))
    device = next(iter(sd.values())).device if sd else None
    if isinstance(device, tuple):  # a data-parallel run: host arrays need only be on one device to be saved
        device = device[0]
    for k, a in (arrays or {}).items():
        sd[k] = Tensor(np.ascontiguousarray(a), device=device)
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    resume.save(path, sd, text, backup=Path(path).name == "last.safetensors")


def load_checkpoint(path: Path, parts: dict[str, Any], verify: bool = True) -> dict[str, str]:
    """Restore ``parts`` (as :func:`save_checkpoint` wrote them); returns the metadata. With
    ``verify`` the checkpoint's header and tensors are checked first (:func:`dlspec.resume.check`)."""
    from .. import resume
    from ..backends.tinygrad import read_weights
    from ..errors import DlspecError
    from ..optim import load_optimizer_state

    meta = resume.check(path, advice=Path(path).name == "last.safetensors") if verify else metadata(path)
    try:
        sd = read_weights(path)
    except DlspecError as e:
        raise TrainError(e.diagnostics) from None
    for prefix, obj in parts.items():
        try:
            if hasattr(obj, "state_dict"):
                assign_weights(obj, {k[len(prefix) + 1 :]: v for k, v in sd.items() if k.startswith(prefix + ".")}, str(path))
            else:
                load_optimizer_state(obj, sd, prefix=f"{prefix}.")
        except (KeyError, ValueError) as e:
            raise TrainError(f"{path}: '{prefix}' state does not fit ({e})") from None
    return meta


def read_arrays(path: Path, prefix: str) -> dict[str, np.ndarray]:
    """The host arrays saved under ``prefix.`` in a checkpoint (see :func:`save_checkpoint`)."""
    from ..backends.tinygrad import read_arrays as read

    return {k[len(prefix) + 1 :]: v for k, v in read(path).items() if k.startswith(prefix + ".")}


def metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, its whole header validated (see
    :func:`dlspec.train.check_safetensors`)."""
    from ..train import check_safetensors

    return check_safetensors(path, "checkpoint")


def head(ds, n: int):
    """The first ``n`` samples of a data set."""
    from dataclasses import replace

    return replace(ds, x=ds.x[:n], y=ds.y[:n])


def assign_weights(net, sd: dict[str, Any], source: str = "weights") -> None:
    """Copy every tensor ``net`` has from ``sd`` (same keys and shapes) in place (safe after TinyJit capture)."""
    from tinygrad import Tensor

    mine = net.state_dict()
    missing = [k for k in mine if k not in sd]
    if missing:
        raise TrainError(f"{source} lacks {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''} of {net.graph.name}")
    for k, t in mine.items():
        src = sd[k]
        if tuple(src.shape) != tuple(t.shape):
            raise TrainError(f"{source}: '{k}' has shape {tuple(src.shape)}, {net.graph.name} needs {tuple(t.shape)}")
    Tensor.realize(*[t.assign(sd[k].to(t.device).cast(t.dtype).contiguous()) for k, t in mine.items()])


def copy_weights(dst, src) -> None:
    """``dst`` ← ``src`` (two nets of one model), in place."""
    from tinygrad import Tensor

    s = src.state_dict()
    Tensor.realize(*[t.assign(s[k].detach().contiguous()) for k, t in dst.state_dict().items()])


# ---- the VAE's decoder -----------------------------------------------------------------------------


def decoder_nodes(graph) -> tuple[str, list[str], str]:
    """``(sample node, decoder node paths in order, reconstruction output node)`` of a VAE graph: the
    nodes computed from the sampled z alone."""
    samples = [n for n in graph.nodes if n.op == "sample" and n.in_cell is None]
    if len(samples) != 1:
        raise TrainError(f"{graph.name} must have exactly one sampling step '(mu, logvar) -> sample', it has {len(samples)}")
    z = samples[0].path
    inside = {z}
    order = []
    for n in graph.nodes:
        if n.in_cell is not None or n.path == z or not n.inputs:
            continue
        if any(i in inside for i in n.inputs):
            if not all(i in inside for i in n.inputs):
                raise TrainError(f"{graph.name}: '{n.path}' mixes the sampled z with other tensors; the decoder must depend on z alone")
            inside.add(n.path)
            order.append(n.path)
    recon = [o.node for o in graph.outputs if o.node in inside]
    if len(recon) != 1:
        raise TrainError(f"{graph.name}: exactly one output must be decoded from the sampled z, found {len(recon)}")
    return z, order, recon[0]


def decode(net, z):
    """Run a VAE's decoder (the nodes after its sampling step) on latent codes ``z`` (eval phase)."""
    from tinygrad import Context

    zpath, order, recon = decoder_nodes(net.graph)
    layers = net._meta.value["layers"]
    values = {zpath: z}
    with Context(TRAINING=0):
        for path in order:
            node = net.graph.node(path)
            values[path] = layers[path](*(values[i] for i in node.inputs))
    return values[recon]


def latent_size(net) -> int:
    zpath, _, _ = decoder_nodes(net.graph)
    t = net.shapes.types[zpath]
    if not all(isinstance(d, int) for d in t.sample):
        raise TrainError(f"{net.graph.name}'s latent z {t.show()} has no fixed size")
    return math.prod(t.sample)
