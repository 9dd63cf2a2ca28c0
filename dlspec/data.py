"""Every data set ``dlspec train`` can use, and deterministic batches of it.

Built in (no files, no network): ``shapes`` — generated 1×28×28 images of shapes (disk,
square, triangle, plus, ring, …) at random positions, sizes, angles and noise — and
``sequences`` — generated (T, 16) sequences whose class is the frequency that produced them.
Real data from their standard files: ``mnist`` and ``fashion_mnist`` (IDX, gzip or not),
``cifar10`` and ``cifar100`` (the binary ``*.bin`` batches or the python pickles, or their
``.tar.gz`` archives). Files are looked for in ``data_dir``, else ``$DLSPEC_DATA`` (and
``$DLSPEC_DATA/<name>``), else the user cache ``~/.cache/dlspec/<name>`` (``$XDG_CACHE_HOME``
respected); a missing file is downloaded (mirrors, checksums, written atomically) unless
``download=False`` or ``$DLSPEC_OFFLINE=1``; every failure is a :class:`DataError` naming the
file and what is wrong.

:class:`Loader` makes batches whose order and augmentation are a pure function of
``(seed, epoch, step)``, so a run resumed at any step sees exactly the batches an
uninterrupted run would. NumPy only.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib
import math
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import DataError, Diagnostic, suggest
from .registry import DATASETS
from .runfiles import fsync_dir

# --------------------------------------------------------------------------- data sets


@dataclass
class Dataset:
    """Samples and labels of one split of one data set.

    ``x``: float32 images ``(N, C, H, W)`` in [0, 1] (before normalisation), float32
    sequences ``(N, T, F)``, or int64 token ids. ``y``: int64 class labels ``(N,)``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    classes: int
    split: str = "train"
    labels: tuple[str, ...] = ()  # class names, when known
    hflip: bool = False  # horizontal flips are a valid augmentation (CIFAR), not for digits

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, split={self.split!r}, n={len(self)}, sample_shape={self.sample_shape}, classes={self.classes})"


#: the data sets load() makes (built in) or reads (standard files): :data:`dlspec.registry.DATASETS`
GENERATED = tuple(n for n, e in DATASETS.items() if e.source == "built-in")
REAL = tuple(n for n, e in DATASETS.items() if e.source == "files")
_ALIASES = {a: n for n, e in DATASETS.items() for a in e.aliases}
_NOT_BUILT_IN = {n: e.why_not for n, e in DATASETS.items() if e.source == "unavailable"}
if set(GENERATED) != {"shapes", "sequences"} or set(REAL) != {"mnist", "fashion_mnist", "cifar10", "cifar100"}:  # pragma: no cover
    raise ImportError("dlspec.data loads shapes, sequences, mnist, fashion_mnist, cifar10 and cifar100; the registry names others")

#: per-channel (mean, std) over the training images, the constants everyone uses
STANDARD_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}

# options of the ``data`` setting that the trainer handles itself; load() accepts and ignores them
_TRAINER_OPTIONS = ("val_split", "augment", "normalize")


def available() -> list[str]:
    """The names :func:`load` accepts."""
    return [*GENERATED, *REAL]


def canonical_name(name: str) -> str:
    """``'Fashion-MNIST'`` → ``'fashion_mnist'``; raises :class:`DataError` for an unknown set."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in available():
        return key
    if key in _NOT_BUILT_IN:
        raise DataError(
            Diagnostic(f"data set '{name}' is not available: {_NOT_BUILT_IN[key]}", None, help="available: " + ", ".join(available()))
        )
    raise DataError(Diagnostic(f"unknown data set '{name}'{suggest(key, available())}", None, help="available: " + ", ".join(available())))


def load(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    download: bool = True,
    *,
    log: Callable[[str], None] | None = None,
    **options,
) -> Dataset:
    """One split (``"train"`` or ``"test"``) of a data set.

    Options (the ``data`` setting's): ``dir`` (same as ``data_dir``), ``limit N`` (the first N
    samples; for the generated sets, generate N), ``length`` (``shapes``: the number of
    samples; ``sequences``: the number of steps T), ``classes`` (generated sets only), ``seed``
    (generated sets: which data set is drawn, default 0), ``features`` (``sequences``, default
    16). ``val_split``, ``augment`` and ``normalize`` are the trainer's and are ignored here.
    ``log`` receives progress lines (downloads); default: stderr.
    """
    key = canonical_name(name)
    if split not in ("train", "test"):
        raise DataError(f"unknown split '{split}' of data set '{key}': use 'train' or 'test' (and split_validation for a validation set)")
    opts = dict(options)
    if "dir" in opts:
        d = opts.pop("dir")
        data_dir = data_dir if data_dir is not None else d
    for k in _TRAINER_OPTIONS:
        opts.pop(k, None)
    limit = opts.pop("limit", None)
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise DataError(f"data option 'limit' must be a positive integer, got {limit!r}")
    if key == "shapes":
        ds = _load_shapes(split, limit, opts)
    elif key == "sequences":
        ds = _load_sequences(split, limit, opts)
    else:
        bad = sorted(opts)
        if bad:
            raise DataError(
                f"data set '{key}' has no option '{bad[0]}'"
                + (" (only the generated sets take it)" if bad[0] in ("classes", "length", "seed") else ""),
                None,
            )
        log = log or _stderr
        loader = _load_mnist_like if key in ("mnist", "fashion_mnist") else _load_cifar
        ds = loader(key, split, data_dir, download, log)
        if limit is not None and limit < len(ds):
            ds = dataclasses.replace(ds, x=ds.x[:limit].copy(), y=ds.y[:limit].copy())
    return ds


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _int_option(opts: dict, key: str, default: int, lo: int, hi: int, what: str) -> int:
    v = opts.pop(key, default)
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not lo <= v <= hi:
        raise DataError(f"data option '{key}' ({what}) must be an integer from {lo} to {hi}, got {v!r}")
    return int(v)


def _no_more_options(name: str, opts: dict, known: tuple[str, ...]) -> None:
    for k in opts:
        raise DataError(Diagnostic(f"data set '{name}' has no option '{k}'{suggest(k, known)}", None, help="options: " + ", ".join(known)))


def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))


_SPLIT_CODE = {"train": 0, "test": 1}

# --------------------------------------------------------------------------- shapes

SHAPE_NAMES = ("disk", "square", "triangle", "plus", "ring", "frame", "cross", "diamond", "hollow_triangle", "hollow_diamond")
SHAPES_DEFAULT_LENGTH = {"train": 6000, "test": 1000}


def _load_shapes(split: str, limit: int | None, opts: dict) -> Dataset:
    n = _int_option(opts, "length", SHAPES_DEFAULT_LENGTH[split], 1, 10_000_000, "the number of samples")
    if limit is not None:
        n = int(limit)
    classes = _int_option(opts, "classes", len(SHAPE_NAMES), 2, len(SHAPE_NAMES), "the number of shape kinds")
    seed = _int_option(opts, "seed", 0, 0, 2**63 - 1, "which data set is drawn")
    _no_more_options("shapes", opts, ("limit", *DATASETS["shapes"].options))
    x, y = make_shapes(n, classes=classes, seed=seed, split=split)
    return Dataset("shapes", x, y, classes, split=split, labels=SHAPE_NAMES[:classes])


def _sd_triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # upright triangle, apex (0, -1), base corners (±0.95, 0.75); image y grows downwards
    a, b = 1.75, 0.95
    side = (a * np.abs(u) - b * (v + 1.0)) / math.hypot(a, b)
    return np.maximum(v - 0.75, side)


def _sd_plus(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return np.minimum(np.maximum(au - 0.3, av - 1.0), np.maximum(au - 1.0, av - 0.3))


def _hollow(sd: np.ndarray, t: float = 0.2) -> np.ndarray:
    return np.abs(sd + t) - t  # a band of width 2t just inside the outline


def _shape_sdf(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (in units of the shape's radius, negative inside) of one shape kind."""
    if kind == "disk":
        return np.hypot(u, v) - 1.0
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8
    if kind == "triangle":
        return _sd_triangle(u, v)
    if kind == "plus":
        return _sd_plus(u, v)
    if kind == "ring":
        return _hollow(np.hypot(u, v) - 1.0)
    if kind == "frame":
        return _hollow(np.maximum(np.abs(u), np.abs(v)) - 0.8)
    if kind == "cross":
        r = 1.0 / math.sqrt(2.0)
        return _sd_plus((u + v) * r, (u - v) * r)
    if kind == "diamond":
        return (np.abs(u) + np.abs(v) - 1.05) / math.sqrt(2.0)
    if kind == "hollow_triangle":
        return _hollow(_sd_triangle(u, v))
    if kind == "hollow_diamond":
        return _hollow((np.abs(u) + np.abs(v) - 1.05) / math.sqrt(2.0))
    raise ValueError(kind)


def make_shapes(
    n: int, classes: int = len(SHAPE_NAMES), seed: int = 0, split: str = "train", size: int = 28
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 1, size, size)`` float32 in [0, 1] and their int64 labels.

    Each image: one shape of kind ``SHAPE_NAMES[label]``, radius 5–11 px, centred at a random
    place where it fits, rotated by up to ±15°, anti-aliased, with random ink and background
    levels and Gaussian pixel noise. Balanced classes in random order; a pure function of
    ``(n, classes, seed, split)`` (train and test are drawn from different streams).
    """
    rng = _rng(seed, _SPLIT_CODE.get(split, 2), 0x5A4E5)
    y = np.resize(np.arange(classes, dtype=np.int64), n)
    rng.shuffle(y)
    lo, hi = 0.18 * size, 0.4 * size
    r = rng.uniform(lo, hi, n).astype(np.float32)
    cx = rng.uniform(r + 1.0, size - 1.0 - r).astype(np.float32)
    cy = rng.uniform(r + 1.0, size - 1.0 - r).astype(np.float32)
    theta = np.deg2rad(rng.uniform(-15.0, 15.0, n)).astype(np.float32)
    ink = rng.uniform(0.6, 1.0, n).astype(np.float32)
    background = rng.uniform(0.0, 0.2, n).astype(np.float32)
    noise = rng.normal(0.0, 0.08, (n, size, size)).astype(np.float32)
    grid = np.arange(size, dtype=np.float32) + 0.5
    x = np.empty((n, 1, size, size), dtype=np.float32)
    for k in range(classes):
        idx = np.nonzero(y == k)[0]
        if idx.size == 0:
            continue
        dx = grid[None, None, :] - cx[idx, None, None]
        dy = grid[None, :, None] - cy[idx, None, None]
        c, s, rk = np.cos(theta[idx])[:, None, None], np.sin(theta[idx])[:, None, None], r[idx, None, None]
        u = (dx * c + dy * s) / rk
        v = (dy * c - dx * s) / rk
        cover = np.clip(0.5 - _shape_sdf(SHAPE_NAMES[k], u, v) * rk, 0.0, 1.0)
        bg = background[idx, None, None]
        x[idx, 0] = bg + (ink[idx, None, None] - bg) * cover
    x[:, 0] += noise
    np.clip(x, 0.0, 1.0, out=x)
    return x, y


# --------------------------------------------------------------------------- sequences

SEQUENCES_DEFAULT_LENGTH = {"train": 4000, "test": 1000}
SEQUENCES_DEFAULT_STEPS = 28


def _load_sequences(split: str, limit: int | None, opts: dict) -> Dataset:
    steps = _int_option(opts, "length", SEQUENCES_DEFAULT_STEPS, 4, 100_000, "the number of steps T")
    classes = _int_option(opts, "classes", 3, 2, max(2, steps // 4), "the number of generators")
    features = _int_option(opts, "features", 16, 1, 4096, "the features per step")
    seed = _int_option(opts, "seed", 0, 0, 2**63 - 1, "which data set is drawn")
    _no_more_options("sequences", opts, ("limit", *DATASETS["sequences"].options))
    n = int(limit) if limit is not None else SEQUENCES_DEFAULT_LENGTH[split]
    x, y = make_sequences(n, steps=steps, features=features, classes=classes, seed=seed, split=split)
    return Dataset("sequences", x, y, classes, split=split, labels=tuple(f"frequency {f:g}" for f in sequence_frequencies(steps, classes)))


def sequence_frequencies(steps: int, classes: int) -> np.ndarray:
    """Cycles per sequence of each class's generator: evenly spaced from 1 to 0.4·T."""
    return np.linspace(1.0, 0.4 * steps, classes)


def make_sequences(
    n: int, steps: int = SEQUENCES_DEFAULT_STEPS, features: int = 16, classes: int = 3, seed: int = 0, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences ``(n, steps, features)`` float32 and their int64 labels.

    Class k's generator is a sinusoid of ``sequence_frequencies(steps, classes)[k]`` cycles per
    sequence (±8 % per sample); each feature sees it with its own random amplitude (0.5–1.5)
    and phase, plus Gaussian noise (σ 0.5). Every single step has the same distribution in
    every class — only the temporal structure tells them apart. Seeded like :func:`make_shapes`.
    """
    rng = _rng(seed, _SPLIT_CODE.get(split, 2), 0x5E0)
    y = np.resize(np.arange(classes, dtype=np.int64), n)
    rng.shuffle(y)
    freq = sequence_frequencies(steps, classes)[y] * rng.uniform(0.92, 1.08, n)
    amp = rng.uniform(0.5, 1.5, (n, 1, features))
    phase = rng.uniform(0.0, 2 * np.pi, (n, 1, features))
    t = np.arange(steps, dtype=np.float64)[None, :, None]
    x = amp * np.sin(2 * np.pi * freq[:, None, None] * t / steps + phase) + rng.normal(0.0, 0.5, (n, steps, features))
    return x.astype(np.float32), y


# --------------------------------------------------------------------------- files, directories, downloads


@dataclass(frozen=True)
class Resource:
    """A file a data set is downloaded as, with what it must hash to."""

    name: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None


def _table(*rs: Resource) -> dict[str, Resource]:
    return {r.name: r for r in rs}


#: data set → file name → expected checksums of the downloaded file
RESOURCES: dict[str, dict[str, Resource]] = {
    "mnist": _table(
        Resource(
            "train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            9912422,
        ),
        Resource(
            "train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            28881,
        ),
        Resource(
            "t10k-images-idx3-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            1648877,
        ),
        Resource(
            "t10k-labels-idx1-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            4542,
        ),
    ),
    "fashion_mnist": _table(
        Resource("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        Resource("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        Resource("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        Resource("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
    "cifar10": _table(Resource("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", size=170498071)),
    "cifar100": _table(Resource("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")),
}

#: data set → base URLs tried in order (a file's URL is base + its name)
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion_mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
    "cifar100": ["https://www.cs.toronto.edu/~kriz/"],
}

DOWNLOAD_TIMEOUT = 30.0  # seconds without data before a mirror is given up

_DIR_ALIASES = {
    "mnist": ("mnist", "MNIST", "MNIST/raw"),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST", "FashionMNIST/raw", "fashion"),
    "cifar10": ("cifar10", "cifar-10", "CIFAR10"),
    "cifar100": ("cifar100", "cifar-100", "CIFAR100"),
}


def cache_dir(name: str | None = None) -> Path:
    """``$XDG_CACHE_HOME/dlspec[/name]``, by default ``~/.cache/dlspec[/name]``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    root = root / "dlspec"
    return root / name if name else root


def search_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Where the files of ``name`` are looked for, in order."""
    if data_dir is not None:
        bases = [Path(data_dir).expanduser()]
    else:
        env = os.environ.get("DLSPEC_DATA", "").strip()
        bases = ([Path(env).expanduser()] if env else []) + [cache_dir()]
    out: list[Path] = []
    for b in bases:
        for d in (b, *(b / a for a in _DIR_ALIASES[name])):
            if d not in out:
                out.append(d)
    return out


def download_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """Where missing files of ``name`` are downloaded to: ``data_dir``, ``$DLSPEC_DATA/name`` or the cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("DLSPEC_DATA", "").strip()
    return Path(env).expanduser() / name if env else cache_dir(name)


def _where_help(name: str, data_dir: str | Path | None) -> str:
    if data_dir is not None:
        return f"put them in {Path(data_dir).expanduser()} (the --data-dir given), gzip-compressed or not"
    return (
        f"put them in a directory and pass --data-dir DIR (or the spec's 'data {name} dir \"DIR\"'), "
        f"or in $DLSPEC_DATA/{name}, or in the cache directory {cache_dir(name)}"
    )


def _missing_error(name: str, files: list[str], data_dir, looked: list[Path], why: str, urls: list[str]) -> DataError:
    msg = f"{name}: missing {', '.join(files)} — looked in {', '.join(str(d) for d in looked)}; {why}"
    help_ = _where_help(name, data_dir)
    if urls:
        help_ += "; the files are at " + ", ".join(urls)
    return DataError(Diagnostic(msg, None, help=help_))


class _DownloadFailed(Exception):
    def __init__(self, reasons: list[str]):
        self.reasons = reasons
        super().__init__("; ".join(reasons))


def _hash_file(path: Path) -> tuple[str, str, int]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
    return md5.hexdigest(), sha.hexdigest(), size


def verify(path: str | Path, res: Resource) -> str | None:
    """What is wrong with ``path`` against ``res``'s size and checksums, or None."""
    md5, sha, size = _hash_file(Path(path))
    return _check(res, md5, sha, size)


def _check(res: Resource, md5: str, sha: str, size: int) -> str | None:
    if res.size is not None and size != res.size:
        return f"wrong size: {size:,} bytes, expected {res.size:,}"
    if res.sha256 and sha != res.sha256:
        return f"checksum mismatch: SHA-256 {sha}, expected {res.sha256}"
    if res.md5 and md5 != res.md5:
        return f"checksum mismatch: MD5 {md5}, expected {res.md5}"
    return None


def _fetch(url: str, dest: Path, res: Resource, log: Callable[[str], None]) -> None:
    """Download ``url`` to ``dest`` atomically, verifying ``res``; raises on any failure, leaving nothing."""
    req = urllib.request.Request(url, headers={"User-Agent": "dlspec"})
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        md5, sha = hashlib.md5(), hashlib.sha256()
        size = 0
        t0 = time.monotonic()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT) as resp:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            log(f"downloading {url}" + (f" ({total / 1e6:.1f} MB)" if total else ""))
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                md5.update(chunk)
                sha.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and size != total:
            raise _BadDownload(f"truncated: received {size:,} of {total:,} bytes")
        problem = _check(res, md5.hexdigest(), sha.hexdigest(), size)
        if problem:
            raise _BadDownload(problem)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        log(f"saved {dest} ({size / 1e6:.1f} MB in {time.monotonic() - t0:.1f} s, checksum ok)")
    finally:
        if tmp.exists():
            tmp.unlink()


class _BadDownload(Exception):
    pass


def _download(name: str, res: Resource, dest_dir: Path, log: Callable[[str], None]) -> Path:
    """Try every mirror of ``name`` for ``res``; the path written, or :class:`_DownloadFailed`
    (and then no file, and no folder made for it, is left behind)."""
    created = [d for d in (dest_dir, *dest_dir.parents) if not d.exists()]
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _DownloadFailed([f"cannot create {dest_dir}: {e.strerror or e}"]) from None
    try:
        return _try_mirrors(name, res, dest_dir, log)
    except BaseException:
        for d in created:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _try_mirrors(name: str, res: Resource, dest_dir: Path, log: Callable[[str], None]) -> Path:
    dest = dest_dir / res.name
    reasons = []
    for base in MIRRORS.get(name, []):
        url = base + res.name
        try:
            _fetch(url, dest, res, log)
            return dest
        except _BadDownload as e:
            reasons.append(f"{url}: {e}")
        except urllib.error.HTTPError as e:
            reasons.append(f"{url}: HTTP {e.code} {e.reason}")
        except urllib.error.URLError as e:
            reasons.append(f"{url}: {getattr(e.reason, 'strerror', None) or e.reason}")
        except (OSError, TimeoutError, ValueError) as e:  # resets, timeouts mid-stream, disk full
            reasons.append(f"{url}: {type(e).__name__}: {e}")
        if reasons:
            log(f"download failed: {reasons[-1]}")
    raise _DownloadFailed(reasons or ["no download URL is known"])


def _offline_reason(download: bool) -> str | None:
    """Why downloads are off, or None when they are allowed."""
    if os.environ.get("DLSPEC_OFFLINE", "").strip() not in ("", "0"):
        return "downloading is turned off ($DLSPEC_OFFLINE is set)"
    return None if download else "downloading is turned off"


def _urls(name: str, file: str) -> list[str]:
    return [base + file for base in MIRRORS.get(name, [])[:1]]


# --------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_variants(stem: str) -> list[str]:
    dotted = stem.replace("-idx", ".idx")  # train-images.idx3-ubyte, as some copies are named
    return [stem + ".gz", stem, dotted + ".gz", dotted]


def _find(dirs: list[Path], names: list[str]) -> Path | None:
    for d in dirs:
        for n in names:
            p = d / n
            if p.is_file():
                return p
    return None


def _load_mnist_like(name: str, split: str, data_dir, download: bool, log) -> Dataset:
    dirs = search_dirs(name, data_dir)
    stems = _IDX_FILES[split]
    found = {s: _find(dirs, _idx_variants(s)) for s in stems}
    missing = [s for s in stems if found[s] is None]
    if missing:
        files = [s + ".gz" for s in missing]
        urls = [u for f in files for u in _urls(name, f)]
        if off := _offline_reason(download):
            raise _missing_error(name, files, data_dir, dirs, off, urls)
        target = download_dir(name, data_dir)
        for s in missing:
            res = RESOURCES[name][s + ".gz"]
            try:
                found[s] = _download(name, res, target, log)
            except _DownloadFailed as e:
                raise _missing_error(name, files, data_dir, dirs, "downloading failed: " + "; ".join(e.reasons), urls) from None
    images = _read_idx(found[stems[0]], 3)
    labels = _read_idx(found[stems[1]], 1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{found[stems[0]]}: images of {images.shape[1]}×{images.shape[2]} pixels, expected 28×28")
    if len(images) != len(labels):
        raise DataError(f"{found[stems[0]]} holds {len(images)} images but {found[stems[1]]} holds {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{found[stems[1]]}: label {int(labels.max())} out of range 0..9 — not a {name} label file")
    x = _to_unit(images).reshape(len(images), 1, 28, 28)
    return Dataset(name, x, labels.astype(np.int64), 10, split=split, labels=CLASS_NAMES[name])


_UNIT = np.arange(256, dtype=np.float32) / np.float32(255.0)


def _to_unit(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels → float32 in [0, 1]: a table look-up (faster than ``astype``), into memory
    allocated without numpy's transparent-huge-page advice, whose page compaction makes the first
    touch of a few hundred MB several times slower on some kernels (MNIST: 2.5 s → 1 s)."""
    toggle = getattr(getattr(np, "_core", None), "multiarray", None)
    toggle = getattr(toggle, "_set_madvise_hugepage", None)
    previous = toggle(False) if toggle is not None and pixels.size >= 1 << 22 else None
    try:
        return _UNIT[pixels]
    finally:
        if previous is not None:
            toggle(previous)


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except EOFError:
            raise DataError(
                f"{path}: truncated gzip file (it ends before the end of the compressed data) — delete it and fetch it again"
            ) from None
        except (gzip.BadGzipFile, zlib.error, OSError) as e:
            raise DataError(f"{path}: corrupt gzip data ({e}) — delete it and fetch it again") from None
    if path.name.endswith(".gz"):
        raise DataError(f"{path}: not a gzip file (it does not start with the gzip magic bytes 1f 8b)")
    return raw


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions, checked against its header."""
    data = _read_maybe_gzip(path)
    kind = {1: "label (idx1)", 3: "image (idx3)"}.get(ndim, f"idx{ndim}")
    want_magic = 0x0800 + ndim
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{path}: truncated: {len(data)} bytes, not even an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != want_magic:
        raise DataError(
            f"{path}: wrong magic number {magic} (0x{magic:08x}); an IDX {kind} file of bytes starts with {want_magic} (0x{want_magic:08x})"
        )
    if len(data) < header:
        raise DataError(f"{path}: truncated: {len(data)} bytes, shorter than its {header}-byte header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    want = header + math.prod(dims)
    if len(data) != want:
        what = "truncated" if len(data) < want else "wrong size"
        raise DataError(
            f"{path}: {what}: the header says {'×'.join(map(str, dims))} bytes of data ({want:,} bytes with the header), "
            f"but the {'decompressed ' if path.name.endswith('.gz') else ''}file has {len(data):,} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


# --------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    kind: str  # "bin" or "py"


_CIFAR_LAYOUTS: dict[str, tuple[_CifarLayout, ...]] = {
    "cifar10": (
        _CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "py"),
        _CifarLayout("cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), "bin"),
    ),
    "cifar100": (
        _CifarLayout("cifar-100-python", ("train",), ("test",), "py"),
        _CifarLayout("cifar-100-binary", ("train.bin",), ("test.bin",), "bin"),
    ),
}
_CIFAR_ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-binary.tar.gz"),
}


def _find_cifar(name: str, split: str, dirs: list[Path]) -> tuple[_CifarLayout, list[Path]] | None:
    for d in dirs:
        for lay in _CIFAR_LAYOUTS[name]:
            files = getattr(lay, split)
            for folder in (d / lay.folder, d):
                paths = [folder / f for f in files]
                if all(p.is_file() for p in paths):
                    return lay, paths
    return None


def _load_cifar(name: str, split: str, data_dir, download: bool, log) -> Dataset:
    dirs = search_dirs(name, data_dir)
    hit = _find_cifar(name, split, dirs)
    if hit is None:  # an archive lying around?
        archive = _find(dirs, list(_CIFAR_ARCHIVES[name]))
        if archive is not None:
            _extract(archive, archive.parent, log)
            hit = _find_cifar(name, split, dirs)
    if hit is None:
        lay = _CIFAR_LAYOUTS[name][0]
        files = [f"{lay.folder}/{f}" for f in getattr(lay, split)]
        arch = _CIFAR_ARCHIVES[name][0]
        urls = _urls(name, arch)
        alt = _CIFAR_LAYOUTS[name][1]
        why_prefix = f"(or the binary {alt.folder}/{', '.join(getattr(alt, split))}, or the archive {arch}); "
        if off := _offline_reason(download):
            raise _missing_error(name, files, data_dir, dirs, why_prefix + off, urls)
        target = download_dir(name, data_dir)
        try:
            path = _download(name, RESOURCES[name][arch], target, log)
        except _DownloadFailed as e:
            raise _missing_error(name, files, data_dir, dirs, why_prefix + "downloading failed: " + "; ".join(e.reasons), urls) from None
        _extract(path, target, log)
        path.unlink(missing_ok=True)  # the batches are out; the archive would only double the disk used
        hit = _find_cifar(name, split, search_dirs(name, data_dir) + [target])
        if hit is None:
            raise DataError(f"{path}: the archive did not contain {', '.join(files)}")
    lay, paths = hit
    classes = 10 if name == "cifar10" else 100
    xs, ys = [], []
    for p in paths:
        x, y = _read_cifar_bin(p, name) if lay.kind == "bin" else _read_cifar_py(p, name)
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise DataError(
                f"{p}: label {int(y.max()) if y.max() >= classes else int(y.min())} out of range 0..{classes - 1} — not a {name} file"
            )
        xs.append(x)
        ys.append(y)
    raw = np.concatenate(xs) if len(xs) > 1 else xs[0]
    x = _to_unit(raw).reshape(-1, 3, 32, 32)
    y = np.concatenate(ys).astype(np.int64)
    return Dataset(name, x, y, classes, split=split, labels=CLASS_NAMES.get(name, ()), hflip=True)


def _read_cifar_bin(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A binary CIFAR batch: records of label byte(s) (CIFAR-100: coarse, fine) + 3072 pixel bytes."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    nlab = 1 if name == "cifar10" else 2
    rec = nlab + 3072
    if len(data) == 0 or len(data) % rec:
        raise DataError(
            f"{path}: wrong size: {len(data):,} bytes is not a whole number of {rec}-byte records "
            f"({nlab} label byte{'s' if nlab > 1 else ''} + 3072 pixels) — truncated or not a {name} binary batch"
        )
    arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, rec)
    return arr[:, nlab:], arr[:, nlab - 1].copy()  # CIFAR-100: the fine label


_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
    ("__builtin__", "bytearray"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, strings and numbers — nothing that runs code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load '{module}.{name}' (a CIFAR batch holds only arrays, lists and strings)")
        if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core" + module[len("numpy.core") :]
        if module == "__builtin__":
            module = "builtins"
        return getattr(importlib.import_module(module), name)


def _read_cifar_py(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A python CIFAR batch: a pickled dict with ``data`` (N×3072 bytes) and ``labels`` / ``fine_labels``."""
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except EOFError:
        raise DataError(f"{path}: truncated: the pickle ends early — delete it and fetch it again") from None
    except Exception as e:  # UnpicklingError, ValueError, … from a damaged file
        if "truncated" in str(e):
            raise DataError(f"{path}: truncated: the pickle ends early — delete it and fetch it again") from None
        raise DataError(f"{path}: not a readable CIFAR python batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: not a CIFAR python batch (it holds a {type(d).__name__}, not a dict)")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}
    key = "labels" if name == "cifar10" else "fine_labels"
    if "data" not in d or key not in d:
        raise DataError(
            f"{path}: not a {name} python batch: it has no '{'data' if 'data' not in d else key}' entry (keys: {', '.join(map(str, d))})"
        )
    try:
        x = np.asarray(d["data"])
        y = np.asarray(d[key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: malformed '{key}' or 'data' entry ({e})") from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{path}: 'data' is {x.dtype} {x.shape}, expected uint8 (N, 3072)")
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    return x, y


def _extract(archive: Path, into: Path, log: Callable[[str], None]) -> None:
    """Unpack a CIFAR ``.tar.gz`` under ``into``: first to a temporary folder, then file by file into place."""
    log(f"extracting {archive}")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=into))
    except OSError as e:
        raise DataError(f"{archive}: cannot extract into {into}: {e.strerror or e}") from None
    try:
        try:
            with tarfile.open(archive, "r:*") as tf:
                members = []
                for m in tf.getmembers():
                    parts = Path(m.name).parts
                    if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
                        raise DataError(f"{archive}: refusing to extract '{m.name}' (outside the target folder or not a plain file)")
                    members.append(m)
                kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(tmp, members=members, **kw)
        except DataError:
            raise
        except EOFError:
            raise DataError(f"{archive}: truncated archive — delete it and fetch it again") from None
        except (tarfile.TarError, zlib.error, OSError) as e:
            raise DataError(f"{archive}: corrupt archive ({e}) — delete it and fetch it again") from None
        for src in sorted(p for p in tmp.rglob("*") if p.is_file()):
            dst = into / src.relative_to(tmp)
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- validation split, normalisation


def split_validation(ds: Dataset, fraction: float, seed: int, stratify: bool = True) -> tuple[Dataset, Dataset]:
    """``(train, validation)``: a seeded ``fraction`` of ``ds`` held out, per class when labels are classes.

    Both keep the original sample order; the result is a pure function of ``(ds, fraction, seed)``.
    """
    n = len(ds)
    if not 0.0 < float(fraction) < 1.0:
        raise DataError(f"val_split must be between 0 and 1 (exclusive), got {fraction}")
    n_val = int(round(float(fraction) * n))
    if n_val < 1 or n_val >= n:
        raise DataError(
            f"val_split {fraction} of {n} samples leaves {n_val} for validation and {n - n_val} for training — both need at least one"
        )
    rng = _rng(seed, 0x5A11D)
    perm = rng.permutation(n)
    if stratify and np.issubdtype(ds.y.dtype, np.integer) and ds.y.ndim == 1:
        order = perm[np.argsort(ds.y[perm], kind="stable")]  # grouped by class, random within each
        classes, starts, counts = np.unique(ds.y[order], return_index=True, return_counts=True)
        quota = counts * (n_val / n)
        take = np.floor(quota).astype(np.int64)
        short = n_val - int(take.sum())
        if short > 0:  # largest remainders first, ties by class
            rem_order = np.lexsort((classes, -(quota - take)))
            take[rem_order[:short]] += 1
        val_idx = np.concatenate([order[s : s + k] for s, k in zip(starts, take)])
    else:
        val_idx = perm[:n_val]
    mask = np.zeros(n, dtype=bool)
    mask[val_idx] = True
    train = dataclasses.replace(ds, x=ds.x[~mask], y=ds.y[~mask])
    val = dataclasses.replace(ds, x=ds.x[mask], y=ds.y[mask], split="validation")
    return train, val


def _channel_axes(x: np.ndarray) -> tuple[int, ...]:
    """The axes statistics are taken over: all but the channel (images) or feature (sequences) axis."""
    if x.ndim == 4:
        return (0, 2, 3)
    if x.ndim >= 2:
        return tuple(range(x.ndim - 1))
    return (0,)


def normalizer(ds: Dataset, standard: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (images) or per-feature (sequences) float32 ``(mean, std)``.

    The published constants for MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 (unless
    ``standard=False``); otherwise computed from ``ds`` — pass the training split.
    """
    if not np.issubdtype(ds.x.dtype, np.floating):
        raise DataError(f"data set '{ds.name}' holds {ds.x.dtype} values (token ids?), which are not normalised")
    channels = ds.x.shape[1] if ds.x.ndim == 4 else ds.x.shape[-1]
    if standard and ds.name in STANDARD_STATS and len(STANDARD_STATS[ds.name][0]) == channels:
        m, s = STANDARD_STATS[ds.name]
        return np.asarray(m, dtype=np.float32), np.asarray(s, dtype=np.float32)
    axes = _channel_axes(ds.x)
    total = np.zeros(channels, dtype=np.float64)
    total_sq = np.zeros(channels, dtype=np.float64)
    count = 0
    chunk = max(1, (1 << 22) // max(1, int(np.prod(ds.x.shape[1:]))))
    for i in range(0, len(ds), chunk):  # float64 sums without a float64 copy of the whole set
        part = ds.x[i : i + chunk].astype(np.float64)
        total += part.sum(axis=axes)
        total_sq += np.square(part).sum(axis=axes)
        count += part.size // channels
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


# --------------------------------------------------------------------------- batches


@dataclass(eq=False)
class Loader:
    """Deterministic batches of a :class:`Dataset`.

    Epoch ``e``'s order is a seeded permutation of ``(seed, e)``; batch ``k``'s augmentation is
    drawn from ``(seed, e, k)``; so ``epoch(e, start_step=k)`` yields exactly batches ``k, k+1, …``
    of ``epoch(e)``. The last batch is partial (its true size) unless ``drop_last`` (or, with
    ``drop_single``, when it would hold one sample: that epoch skips it, a different one each epoch).
    ``multiple`` (the devices a batch is split across, each taking an equal share): a partial last
    batch is cut to a multiple of it, and the fewer than ``multiple`` samples left over are skipped
    that epoch (a different few each epoch when shuffled), or, with ``keep_rest`` (evaluation: every
    sample counts), served as one more batch of their own; ``drop_single`` then skips a last batch of
    one sample per device.
    ``augment`` (images only): a random crop after zero-padding by ``pad`` pixels, plus a
    horizontal flip with probability ½ when ``flip`` (default: ``ds.hflip``, true for CIFAR).
    Augmentation applies to the [0, 1] pixels, then ``(x − mean) / std`` if ``mean``/``std`` are given.
    """

    ds: Dataset
    batch: int
    seed: int
    shuffle: bool = True
    augment: bool = False
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    drop_last: bool = False
    #: skip a last batch of a single sample (batch norm cannot train on one value per channel)
    drop_single: bool = False
    #: batches are split across this many devices: a partial last batch is cut to a multiple of it
    multiple: int = 1
    #: serve the samples that cut leaves over as a last batch of their own (else they are skipped)
    keep_rest: bool = False
    pad: int = 4
    flip: bool | None = None
    _mean: np.ndarray | None = field(init=False, repr=False, default=None)
    _scale: np.ndarray | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.batch, (int, np.integer)) or self.batch < 1:
            raise DataError(f"batch size must be a positive integer, got {self.batch!r}")
        if not isinstance(self.multiple, (int, np.integer)) or self.multiple < 1:
            raise DataError(f"multiple must be a positive integer, got {self.multiple!r}")
        if self.drop_last and len(self.ds) < self.batch:
            raise DataError(
                f"batch {self.batch} is larger than the {len(self.ds)} samples of '{self.ds.name}' ({self.ds.split}): with drop_last no batch is left"
            )
        if self.augment and self.ds.x.ndim != 4:
            raise DataError(f"augment applies to images; '{self.ds.name}' holds samples of shape {self.ds.sample_shape}")
        if self.flip is None:
            self.flip = bool(self.ds.hflip)
        if (self.mean is None) != (self.std is None):
            raise DataError("normalisation needs both mean and std")
        if self.mean is not None:
            if not np.issubdtype(self.ds.x.dtype, np.floating):
                raise DataError(f"data set '{self.ds.name}' holds {self.ds.x.dtype} values, which are not normalised")
            shape = [1] * self.ds.x.ndim
            axis = 1 if self.ds.x.ndim == 4 else self.ds.x.ndim - 1
            mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
            std = np.asarray(self.std, dtype=np.float32).reshape(-1)
            shape[axis] = mean.size
            self._mean = mean.reshape(shape)
            self._scale = (1.0 / std).reshape(shape).astype(np.float32)

    def _bounds(self) -> list[tuple[int, int]]:
        """``(start, end)`` positions in an epoch's order of each batch."""
        n, b, m = len(self.ds), int(self.batch), int(self.multiple)
        out = [(k * b, (k + 1) * b) for k in range(n // b)]
        rest = 0 if self.drop_last else n % b
        if rest:
            start, cut = n - rest, rest - rest % m
            if cut and not (self.drop_single and cut == m and n > cut):  # one sample per device, and other batches
                out.append((start, start + cut))
            if self.keep_rest and rest % m:
                out.append((start + cut, n))
        return out

    def steps_per_epoch(self) -> int:
        return len(self._bounds())

    def __len__(self) -> int:
        return self.steps_per_epoch()

    def order(self, epoch: int) -> np.ndarray:
        """The sample indices of epoch ``epoch``, in the order they are served."""
        n = len(self.ds)
        if not self.shuffle:
            return np.arange(n)
        return _rng(self.seed, epoch, 0x5EED).permutation(n)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` batches of epoch ``epoch`` from step ``start_step`` on."""
        steps = self.steps_per_epoch()
        if not 0 <= start_step <= steps:
            raise DataError(f"start_step {start_step} is outside the epoch's {steps} steps")
        order = self.order(epoch)
        bounds = self._bounds()
        for step in range(start_step, steps):
            lo, hi = bounds[step]
            idx = order[lo:hi]
            xb = self.ds.x[idx]
            if self.augment:
                xb = self._augmented(xb, epoch, step)
            if self._mean is not None:
                xb = (xb - self._mean) * self._scale
            yield xb, self.ds.y[idx]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.epoch(0)

    def _augmented(self, xb: np.ndarray, epoch: int, step: int) -> np.ndarray:
        rng = _rng(self.seed, epoch, step, 0xA06)
        n, c, h, w = xb.shape
        p = int(self.pad)
        oy = rng.integers(0, 2 * p + 1, n)
        ox = rng.integers(0, 2 * p + 1, n)
        flip = rng.random(n) < 0.5
        padded = np.pad(xb, ((0, 0), (0, 0), (p, p), (p, p))) if p else xb
        rows = oy[:, None] + np.arange(h)
        cols = ox[:, None] + np.arange(w)
        if self.flip:
            cols = np.where(flip[:, None], cols[:, ::-1], cols)
        return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
