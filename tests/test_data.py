"""dlspec.data: generated sets, IDX and CIFAR loaders, downloads, errors, splits, batches.

Loaders are tested on small files written here in the real formats; downloads against an HTTP
server on 127.0.0.1. The real MNIST files in ``../shared/data/mnist`` are used when present.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dlspec import data as D
from dlspec.errors import DataError, DlspecError, render_all

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(os.environ.get("DLSPEC_TEST_MNIST", ROOT.parent / "shared" / "data" / "mnist"))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test reads or writes the real cache, $DLSPEC_DATA, or the network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("DLSPEC_DATA", raising=False)
    monkeypatch.delenv("DLSPEC_OFFLINE", raising=False)
    for name in D.MIRRORS:
        monkeypatch.setitem(D.MIRRORS, name, [f"http://127.0.0.1:{_closed_port()}/"])
    monkeypatch.setattr(D, "DOWNLOAD_TIMEOUT", 5.0)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet(_msg: str) -> None:
    pass


def message(e: DataError) -> str:
    return render_all(e.diagnostics)


# --------------------------------------------------------------------------- writers of the real formats


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    header = (0x0800 + arr.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    data = idx_bytes(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_mnist(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def write_mnist_dir(d: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> dict:
    """The four IDX files of a small MNIST in ``d``; returns the arrays written."""
    out = {}
    for split, stem, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        imgs, labs = fake_mnist(n, seed=n + (split == "test"))
        suffix = ".gz" if gz else ""
        write_idx(d / f"{stem}-images-idx3-ubyte{suffix}", imgs, gz)
        write_idx(d / f"{stem}-labels-idx1-ubyte{suffix}", labs, gz)
        out[split] = (imgs, labs)
    return out


def fake_cifar(n: int, seed: int, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, classes, n)


def write_cifar_bin(path: Path, x: np.ndarray, y: np.ndarray, coarse: np.ndarray | None = None) -> Path:
    cols = ([coarse.astype(np.uint8)[:, None]] if coarse is not None else []) + [y.astype(np.uint8)[:, None], x]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.concatenate(cols, axis=1).tobytes())
    return path


def write_cifar_py(path: Path, x: np.ndarray, y: np.ndarray, key: str = "labels", protocol: int = 2, byte_keys: bool = True) -> Path:
    k = (lambda s: s.encode()) if byte_keys else (lambda s: s)
    d = {k("batch_label"): k("testing batch 1 of 1"), k("data"): x, k(key): [int(v) for v in y], k("filenames"): [b"a.png"] * len(y)}
    if key == "fine_labels":
        d[k("coarse_labels")] = [int(v) // 5 for v in y]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(d, protocol=protocol))
    return path


def as_images(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 3, 32, 32).astype(np.float32) / 255


# --------------------------------------------------------------------------- names, options


def test_available_and_names():
    assert D.available() == ["shapes", "sequences", "mnist", "fashion_mnist", "cifar10", "cifar100"]
    assert D.canonical_name("Fashion-MNIST") == "fashion_mnist"
    assert D.canonical_name("CIFAR-10") == "cifar10"
    with pytest.raises(DataError, match="did you mean 'mnist'"):
        D.load("mnits")
    with pytest.raises(DataError, match="ImageNet"):
        D.load("imagenet")
    with pytest.raises(DataError, match="split"):
        D.load("shapes", "val")
    assert issubclass(DataError, DlspecError) and DataError.stage == "data"


def test_options_are_checked():
    with pytest.raises(DataError, match="no option 'colour'"):
        D.load("shapes", colour=3)
    with pytest.raises(DataError, match="classes"):
        D.load("shapes", classes=99)
    with pytest.raises(DataError, match="limit"):
        D.load("shapes", limit=0)
    with pytest.raises(DataError, match="only the generated sets"):
        D.load("mnist", classes=3, download=False)
    # the trainer's options pass through
    ds = D.load("shapes", "test", val_split=0.1, augment=True, normalize=True, length=30)
    assert len(ds) == 30


# --------------------------------------------------------------------------- generated sets


def nearest_centroid_accuracy(f_train, y_train, f_test, y_test, k) -> float:
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    a, b = (f_train - mu) / sd, (f_test - mu) / sd
    centroids = np.stack([a[y_train == c].mean(0) for c in range(k)])
    pred = np.argmin(((b[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == y_test).mean())


def test_shapes_format_determinism_and_options():
    t0 = time.perf_counter()
    ds = D.load("shapes")
    assert time.perf_counter() - t0 < 5
    assert (len(ds), ds.sample_shape, ds.classes, ds.x.dtype, ds.y.dtype) == (6000, (1, 28, 28), 10, np.float32, np.int64)
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert np.bincount(ds.y).tolist() == [600] * 10
    assert ds.labels[:4] == ("disk", "square", "triangle", "plus")
    again = D.load("shapes")
    assert np.array_equal(ds.x, again.x) and np.array_equal(ds.y, again.y)
    test = D.load("shapes", "test")
    assert len(test) == 1000 and not np.array_equal(test.x[:10], ds.x[:10])
    other = D.load("shapes", "test", seed=1)
    assert not np.array_equal(other.x, test.x)
    small = D.load("shapes", length=100, classes=4)
    assert len(small) == 100 and small.classes == 4 and set(small.y.tolist()) == {0, 1, 2, 3}
    assert len(D.load("shapes", "test", limit=7)) == 7


def test_shapes_are_learnable_but_not_by_position():
    """Translation-invariant features (|FFT|) and a nearest centroid: far above the 10 % chance."""
    tr, te = D.load("shapes", length=3000), D.load("shapes", "test")

    def feats(x):
        x = x[:, 0] - x[:, 0].mean(axis=(1, 2), keepdims=True)
        return np.log1p(np.abs(np.fft.rfft2(x))).reshape(len(x), -1)

    acc = nearest_centroid_accuracy(feats(tr.x), tr.y, feats(te.x), te.y, 10)
    assert acc > 0.6, acc


def test_sequences_format_and_temporal_structure():
    ds = D.load("sequences")
    assert (len(ds), ds.sample_shape, ds.classes, ds.x.dtype) == (4000, (28, 16), 3, np.float32)  # specs/gru_cell.dl: [T, 16], 3 classes
    assert np.array_equal(ds.x, D.load("sequences").x)
    te = D.load("sequences", "test")
    assert len(te) == 1000
    # one step alone says nothing: every class has the same per-step statistics
    stats = np.array([[ds.x[ds.y == c].mean(), ds.x[ds.y == c].std()] for c in range(3)])
    assert np.ptp(stats[:, 0]) < 0.02 and np.ptp(stats[:, 1]) < 0.02
    # the spectrum over time tells them apart
    spec = lambda x: np.abs(np.fft.rfft(x, axis=1)).mean(axis=2)
    assert nearest_centroid_accuracy(spec(ds.x), ds.y, spec(te.x), te.y, 3) > 0.9
    # while a time-blind feature (per-feature mean and spread) does not
    blind = lambda x: np.concatenate([x.mean(1), x.std(1)], axis=1)
    assert nearest_centroid_accuracy(blind(ds.x), ds.y, blind(te.x), te.y, 3) < 0.6
    longer = D.load("sequences", "test", length=50, classes=5, limit=64)
    assert longer.x.shape == (64, 50, 16) and longer.classes == 5


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_idx_files(tmp_path, gz):
    written = write_mnist_dir(tmp_path, gz=gz)
    for split in ("train", "test"):
        ds = D.load("mnist", split, data_dir=tmp_path, download=False)
        imgs, labs = written[split]
        assert ds.x.shape == (len(imgs), 1, 28, 28) and ds.x.dtype == np.float32
        assert np.array_equal(ds.x[:, 0], imgs.astype(np.float32) / 255)
        assert np.array_equal(ds.y, labs.astype(np.int64)) and ds.y.dtype == np.int64
        assert ds.classes == 10 and not ds.hflip
    assert len(D.load("mnist", data_dir=tmp_path, download=False, limit=5)) == 5


def test_fashion_mnist_layouts_and_directories(tmp_path, monkeypatch):
    # torchvision's layout under a root, found through $DLSPEC_DATA
    root = tmp_path / "datasets"
    written = write_mnist_dir(root / "FashionMNIST" / "raw", gz=False)
    monkeypatch.setenv("DLSPEC_DATA", str(root))
    ds = D.load("fashion_mnist", "test", download=False)
    assert np.array_equal(ds.y, written["test"][1]) and ds.labels[0] == "T-shirt/top"
    # the cache directory respects $XDG_CACHE_HOME
    monkeypatch.delenv("DLSPEC_DATA")
    assert D.cache_dir("mnist") == tmp_path / "xdg-cache" / "dlspec" / "mnist"
    write_mnist_dir(D.cache_dir("mnist"), n_train=12)
    assert len(D.load("mnist", download=False)) == 12
    # an explicit data_dir (or the 'dir' option) wins, and only it is searched
    write_mnist_dir(tmp_path / "mine", n_train=9)
    assert len(D.load("mnist", data_dir=tmp_path / "mine", download=False)) == 9
    assert len(D.load("mnist", dir=str(tmp_path / "mine"), download=False)) == 9
    with pytest.raises(DataError):
        D.load("mnist", data_dir=tmp_path / "empty", download=False)


def test_missing_files_without_network_say_what_and_where(tmp_path):
    with pytest.raises(DataError) as ei:
        D.load("mnist", data_dir=tmp_path / "nothing", log=quiet)  # the mirrors point at a closed port
    text = message(ei.value)
    assert "train-images-idx3-ubyte.gz" in text and "train-labels-idx1-ubyte.gz" in text
    assert "downloading failed" in text and str(tmp_path / "nothing") in text
    assert not (tmp_path / "nothing").exists()  # no folder made for a download that failed
    with pytest.raises(DataError) as ei:
        D.load("cifar10", "test", download=False)
    text = message(ei.value)
    assert "cifar-10-batches-py/test_batch" in text and "downloading is turned off" in text
    assert "--data-dir" in text and "$DLSPEC_DATA/cifar10" in text and str(D.cache_dir("cifar10")) in text


def test_offline_environment_turns_downloads_off(tmp_path, monkeypatch):
    monkeypatch.setenv("DLSPEC_OFFLINE", "1")
    with pytest.raises(DataError, match=r"downloading is turned off \(\$DLSPEC_OFFLINE is set\)"):
        D.load("fashion_mnist", "test", data_dir=tmp_path)


CORRUPTIONS = {
    "truncated gzip": (lambda p: p.write_bytes(p.read_bytes()[:-20]), "truncated gzip"),
    "bad gzip data": (lambda p: p.write_bytes(p.read_bytes()[:10] + b"\xff" * 40 + p.read_bytes()[50:]), "corrupt gzip"),
    "not gzip": (lambda p: p.write_bytes(idx_bytes(fake_mnist(3, 0)[0])), "not a gzip file"),
    "wrong magic": (
        lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + idx_bytes(fake_mnist(3, 0)[0])[4:])),
        "wrong magic number 2049",
    ),
    "truncated data": (lambda p: p.write_bytes(gzip.compress(idx_bytes(fake_mnist(3, 0)[0])[:-100])), "truncated: the header says 3×28×28"),
    "trailing bytes": (lambda p: p.write_bytes(gzip.compress(idx_bytes(fake_mnist(3, 0)[0]) + b"xx")), "wrong size"),
    "tiny": (lambda p: p.write_bytes(gzip.compress(b"\x00\x00")), "truncated"),
    "empty": (lambda p: p.write_bytes(b""), "not a gzip file"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_idx_files_name_the_file_and_the_problem(tmp_path, case):
    write_mnist_dir(tmp_path)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    damage, expected = CORRUPTIONS[case]
    damage(target)
    with pytest.raises(DataError) as ei:
        D.load("mnist", data_dir=tmp_path, download=False)
    assert str(target) in str(ei.value) and expected in str(ei.value)


def test_idx_labels_must_match_images(tmp_path):
    write_mnist_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
    with pytest.raises(DataError, match="50 images but .* 7 labels"):
        D.load("mnist", data_dir=tmp_path, download=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(50, 12, np.uint8))
    with pytest.raises(DataError, match="label 12 out of range"):
        D.load("mnist", data_dir=tmp_path, download=False)


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_binary_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    parts = [fake_cifar(8, i) for i in range(1, 6)]
    for i, (x, y) in enumerate(parts, 1):
        write_cifar_bin(folder / f"data_batch_{i}.bin", x, y)
    tx, ty = fake_cifar(6, 9)
    write_cifar_bin(folder / "test_batch.bin", tx, ty)
    ds = D.load("cifar10", data_dir=tmp_path, download=False)
    assert ds.x.shape == (40, 3, 32, 32) and ds.classes == 10 and ds.hflip and ds.labels[0] == "airplane"
    assert np.array_equal(ds.x, as_images(np.concatenate([p[0] for p in parts])))
    assert np.array_equal(ds.y, np.concatenate([p[1] for p in parts]))
    te = D.load("cifar10", "test", data_dir=tmp_path, download=False)
    assert np.array_equal(te.x, as_images(tx)) and np.array_equal(te.y, ty)
    # truncated
    (folder / "test_batch.bin").write_bytes((folder / "test_batch.bin").read_bytes()[:-5])
    with pytest.raises(DataError, match=r"test_batch\.bin: wrong size: .* 3073-byte records"):
        D.load("cifar10", "test", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("protocol,byte_keys", [(2, True), (pickle.HIGHEST_PROTOCOL, False)])
def test_cifar10_python_batches(tmp_path, protocol, byte_keys):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    parts = [fake_cifar(4, i) for i in range(1, 6)]
    for i, (x, y) in enumerate(parts, 1):
        write_cifar_py(folder / f"data_batch_{i}", x, y, protocol=protocol, byte_keys=byte_keys)
    tx, ty = fake_cifar(3, 7)
    write_cifar_py(folder / "test_batch", tx, ty, protocol=protocol, byte_keys=byte_keys)
    ds = D.load("cifar10", data_dir=tmp_path, download=False)  # found under <dir>/cifar10/
    assert np.array_equal(ds.x, as_images(np.concatenate([p[0] for p in parts])))
    assert np.array_equal(ds.y, np.concatenate([p[1] for p in parts]))
    te = D.load("cifar10", "test", data_dir=tmp_path, download=False)
    assert np.array_equal(te.x, as_images(tx)) and np.array_equal(te.y, ty)


def test_cifar100_fine_labels_binary_and_python(tmp_path):
    x, y = fake_cifar(10, 3, classes=100)
    write_cifar_bin(tmp_path / "bin" / "cifar-100-binary" / "train.bin", x, y, coarse=y // 5)
    ds = D.load("cifar100", data_dir=tmp_path / "bin", download=False)
    assert ds.classes == 100 and np.array_equal(ds.y, y) and np.array_equal(ds.x, as_images(x))
    write_cifar_py(tmp_path / "py" / "cifar-100-python" / "test", x, y, key="fine_labels")
    ds = D.load("cifar100", "test", data_dir=tmp_path / "py", download=False)
    assert np.array_equal(ds.y, y) and np.array_equal(ds.x, as_images(x))


def test_corrupt_cifar_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    x, y = fake_cifar(3, 1)
    p = write_cifar_py(folder / "test_batch", x, y)
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(DataError, match="test_batch: truncated"):
        D.load("cifar10", "test", data_dir=tmp_path, download=False)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p.write_bytes(pickle.dumps({"data": x, "labels": Evil()}))
    with pytest.raises(DataError, match="refusing to load 'posix.system'|refusing to load 'os.system'"):
        D.load("cifar10", "test", data_dir=tmp_path, download=False)
    p.write_bytes(pickle.dumps({"data": x, "fine_labels": [0, 1, 2]}))
    with pytest.raises(DataError, match="no 'labels' entry"):
        D.load("cifar10", "test", data_dir=tmp_path, download=False)
    write_cifar_py(p, x, np.array([0, 1, 10]))
    with pytest.raises(DataError, match="label 10 out of range 0..9"):
        D.load("cifar10", "test", data_dir=tmp_path, download=False)


def cifar_archive(x: np.ndarray, y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            blob = pickle.dumps({b"data": x, b"labels": [int(v) for v in y]}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def test_cifar_archive_in_the_data_dir_is_extracted(tmp_path):
    x, y = fake_cifar(2, 5)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(cifar_archive(x, y))
    ds = D.load("cifar10", "test", data_dir=tmp_path, download=False, log=quiet)
    assert np.array_equal(ds.y, y) and (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not list(tmp_path.glob(".extract-*"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cifar-10-python.tar.gz").write_bytes(cifar_archive(x, y)[:300])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz: (truncated|corrupt) archive"):
        D.load("cifar10", data_dir=tmp_path / "bad", download=False, log=quiet)


# --------------------------------------------------------------------------- downloads


@pytest.fixture
def http_root(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / 'www'``; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def resource(path: Path) -> D.Resource:
    b = path.read_bytes()
    return D.Resource(path.name, hashlib.md5(b).hexdigest(), hashlib.sha256(b).hexdigest(), len(b))


def test_download_from_mirrors_with_checksums(tmp_path, http_root, monkeypatch):
    www, base = http_root
    written = write_mnist_dir(www / "good")
    table = {p.name: resource(p) for p in (www / "good").iterdir()}
    monkeypatch.setitem(D.RESOURCES, "mnist", table)
    # the first mirror answers 404 for everything, the second has the files
    monkeypatch.setitem(D.MIRRORS, "mnist", [base + "missing/", base + "good/"])
    lines = []
    dest = tmp_path / "dl"
    ds = D.load("mnist", "test", data_dir=dest, log=lines.append)
    assert np.array_equal(ds.y, written["test"][1])
    assert sorted(p.name for p in dest.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert any("HTTP 404" in line for line in lines) and any("checksum ok" in line for line in lines)
    # downloaded to $DLSPEC_DATA/mnist when no data_dir is given, then found there without the network
    monkeypatch.setenv("DLSPEC_DATA", str(tmp_path / "envdata"))
    D.load("mnist", log=quiet)
    assert (tmp_path / "envdata" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    monkeypatch.setitem(D.MIRRORS, "mnist", [])
    assert len(D.load("mnist", log=quiet)) == 50


def test_download_checksum_mismatch_leaves_nothing(tmp_path, http_root, monkeypatch):
    www, base = http_root
    write_mnist_dir(www)
    good = {p.name: resource(p) for p in www.iterdir()}
    bad = dict(good)
    bad["t10k-images-idx3-ubyte.gz"] = D.Resource("t10k-images-idx3-ubyte.gz", md5="0" * 32)
    monkeypatch.setitem(D.RESOURCES, "mnist", bad)
    monkeypatch.setitem(D.MIRRORS, "mnist", [base])
    dest = tmp_path / "dl"
    with pytest.raises(DataError) as ei:
        D.load("mnist", "test", data_dir=dest, log=quiet)
    text = message(ei.value)
    assert "checksum mismatch: MD5" in text and "t10k-images-idx3-ubyte.gz" in text
    assert not (dest / "t10k-images-idx3-ubyte.gz").exists() and not list(dest.glob(".*part"))
    # a wrong size is caught the same way (e.g. a proxy's error page)
    bad["t10k-images-idx3-ubyte.gz"] = D.Resource("t10k-images-idx3-ubyte.gz", size=12)
    with pytest.raises(DataError, match="wrong size"):
        D.load("mnist", "test", data_dir=dest, log=quiet)
    assert not dest.exists()


def test_download_404_everywhere(tmp_path, http_root, monkeypatch):
    _, base = http_root
    monkeypatch.setitem(D.MIRRORS, "fashion_mnist", [base + "a/", base + "b/"])
    with pytest.raises(DataError) as ei:
        D.load("fashion_mnist", data_dir=tmp_path / "dl", log=quiet)
    text = message(ei.value)
    assert text.count("HTTP 404") == 2 and "train-images-idx3-ubyte.gz" in text
    assert not (tmp_path / "dl").exists()


def test_cifar_download_and_extract(tmp_path, http_root, monkeypatch):
    www, base = http_root
    x, y = fake_cifar(3, 2)
    archive = www / "cifar-10-python.tar.gz"
    archive.write_bytes(cifar_archive(x, y))
    monkeypatch.setitem(D.RESOURCES, "cifar10", {archive.name: resource(archive)})
    monkeypatch.setitem(D.MIRRORS, "cifar10", [base])
    ds = D.load("cifar10", data_dir=tmp_path / "c", log=quiet)
    assert len(ds) == 15 and np.array_equal(ds.y[:3], y)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["cifar-10-batches-py"]


# --------------------------------------------------------------------------- validation split, normalisation


def test_split_validation():
    ds = D.load("shapes", length=1000)
    ds.x[:, 0, 0, 0] = np.arange(1000)  # tag each sample
    train, val = D.split_validation(ds, 0.1, seed=3)
    assert (len(train), len(val)) == (900, 100) and val.split == "validation"
    tags_t, tags_v = train.x[:, 0, 0, 0], val.x[:, 0, 0, 0]
    assert not set(tags_t) & set(tags_v) and sorted(set(tags_t) | set(tags_v)) == list(range(1000))
    assert np.bincount(val.y).tolist() == [10] * 10  # stratified
    again_t, again_v = D.split_validation(ds, 0.1, seed=3)
    assert np.array_equal(again_v.x, val.x) and np.array_equal(again_t.y, train.y)
    _, other = D.split_validation(ds, 0.1, seed=4)
    assert not np.array_equal(other.x[:, 0, 0, 0], tags_v)
    _, odd = D.split_validation(D.load("shapes", length=333, classes=4), 0.25, seed=0)
    assert len(odd) == 83 and abs(np.bincount(odd.y) - 83 / 4).max() <= 1
    for bad in (0.0, 1.0, 1.5, 0.0001):
        with pytest.raises(DataError, match="val_split"):
            D.split_validation(ds, bad, seed=0)


def test_normalizer():
    mean, std = D.normalizer(D.Dataset("mnist", np.zeros((2, 1, 28, 28), np.float32), np.zeros(2, np.int64), 10))
    assert np.allclose(mean, [0.1307]) and np.allclose(std, [0.3081])
    cifar = D.Dataset("cifar10", np.zeros((2, 3, 32, 32), np.float32), np.zeros(2, np.int64), 10)
    assert D.normalizer(cifar)[0].shape == (3,)
    ds = D.load("shapes", length=500)
    mean, std = D.normalizer(ds)
    assert mean.shape == (1,) and np.isclose(mean[0], ds.x.mean(), atol=1e-5) and np.isclose(std[0], ds.x.std(), atol=1e-5)
    batch, _ = next(D.Loader(ds, 500, seed=0, mean=mean, std=std).epoch(0))
    assert abs(batch.mean()) < 1e-4 and abs(batch.std() - 1) < 1e-3 and batch.dtype == np.float32
    seq = D.load("sequences", limit=200)
    m, s = D.normalizer(seq)
    assert m.shape == (16,) and np.allclose(s, seq.x.std(axis=(0, 1)), atol=1e-4)
    xb, _ = next(D.Loader(seq, 200, seed=0, shuffle=False, mean=m, std=s).epoch(0))
    assert np.allclose(xb.mean(axis=(0, 1)), 0, atol=1e-4)
    with pytest.raises(DataError):
        D.normalizer(D.Dataset("tokens", np.zeros((2, 5), np.int64), np.zeros(2, np.int64), 3))


# --------------------------------------------------------------------------- Loader


def tagged(n: int) -> D.Dataset:
    x = np.zeros((n, 1, 4, 4), np.float32)
    x[:, 0, 0, 0] = np.arange(n)
    return D.Dataset("t", x, np.arange(n, dtype=np.int64) % 3, 3)


def test_loader_batches_partial_last_batch_and_drop_last():
    ds = tagged(10)
    loader = D.Loader(ds, 4, seed=0)
    assert loader.steps_per_epoch() == len(loader) == 3
    batches = list(loader.epoch(0))
    assert [len(y) for _, y in batches] == [4, 4, 2]  # the last batch has its true size
    seen = np.concatenate([x[:, 0, 0, 0] for x, _ in batches])
    assert sorted(seen) == list(range(10))
    assert all(np.array_equal(y, x[:, 0, 0, 0].astype(np.int64) % 3) for x, y in batches)
    dropped = D.Loader(ds, 4, seed=0, drop_last=True)
    assert dropped.steps_per_epoch() == 2 and [len(y) for _, y in dropped.epoch(0)] == [4, 4]
    plain = D.Loader(ds, 4, seed=0, shuffle=False)
    assert np.concatenate([x[:, 0, 0, 0] for x, _ in plain.epoch(5)]).tolist() == list(range(10))
    with pytest.raises(DataError):
        D.Loader(ds, 11, seed=0, drop_last=True)
    with pytest.raises(DataError):
        D.Loader(ds, 0, seed=0)


def test_loader_drop_single_skips_only_a_last_batch_of_one():
    # 9 = 4 + 4 + 1: the lone sample is skipped (batch norm cannot train on it), a different one each epoch
    single = D.Loader(tagged(9), 4, seed=0, drop_single=True)
    assert single.steps_per_epoch() == 2 and [len(y) for _, y in single.epoch(0)] == [4, 4]
    left = [set(range(9)) - set(np.concatenate([x[:, 0, 0, 0] for x, _ in single.epoch(e)]).astype(int)) for e in range(6)]
    assert all(len(s) == 1 for s in left) and len(set().union(*left)) > 1
    # 10 = 4 + 4 + 2 and 1 = 1: kept as they are
    assert [len(y) for _, y in D.Loader(tagged(10), 4, seed=0, drop_single=True).epoch(0)] == [4, 4, 2]
    assert [len(y) for _, y in D.Loader(tagged(1), 4, seed=0, drop_single=True).epoch(0)] == [1]


def test_loader_is_a_pure_function_of_seed_and_epoch():
    ds = D.load("shapes", length=103)
    run = lambda seed, epoch, start=0: list(D.Loader(ds, 16, seed=seed, augment=True).epoch(epoch, start))
    a, b = run(1, 2), run(1, 2)
    assert len(a) == 7 and all(np.array_equal(xa, xb) and np.array_equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not np.array_equal(run(1, 3)[0][1], a[0][1])  # another epoch, another order
    assert not np.array_equal(run(2, 2)[0][1], a[0][1])  # another seed, another order
    resumed = run(1, 2, start=4)  # resuming mid-epoch gives exactly the remaining batches
    assert len(resumed) == 3
    assert all(np.array_equal(xa, xb) and np.array_equal(ya, yb) for (xa, ya), (xb, yb) in zip(a[4:], resumed))
    assert list(D.Loader(ds, 16, seed=1).epoch(0, 7)) == []
    with pytest.raises(DataError):
        list(D.Loader(ds, 16, seed=1).epoch(0, 8))


def test_augmentation_crop_and_flip():
    rng = np.random.default_rng(0)
    x = rng.random((64, 3, 32, 32), dtype=np.float32)
    ds = D.Dataset("cifar10", x, np.zeros(64, np.int64), 10, hflip=True)
    loader = D.Loader(ds, 64, seed=5, shuffle=False, augment=True)
    (xa, _), (xb, _) = next(loader.epoch(0)), next(loader.epoch(0))
    assert np.array_equal(xa, xb) and xa.shape == x.shape and xa.dtype == np.float32
    assert not np.array_equal(next(loader.epoch(1))[0], xa)
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    flips = 0
    for i in range(64):  # every sample is a 32×32 window of the zero-padded image, maybe mirrored
        found = None
        for dy in range(9):
            for dx in range(9):
                win = padded[i, :, dy : dy + 32, dx : dx + 32]
                if np.array_equal(xa[i], win):
                    found = "same"
                elif np.array_equal(xa[i], win[:, :, ::-1]):
                    found = "flipped"
        assert found, i
        flips += found == "flipped"
    assert 15 < flips < 49
    # digits are never mirrored; sequences are not augmented
    digits = D.Dataset("mnist", x[:, :1, :28, :28].copy(), np.zeros(64, np.int64), 10)
    xd, _ = next(D.Loader(digits, 64, seed=5, shuffle=False, augment=True).epoch(0))
    padded = np.pad(digits.x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    assert all(any(np.array_equal(xd[i], padded[i, :, a : a + 28, b : b + 28]) for a in range(9) for b in range(9)) for i in range(64))
    with pytest.raises(DataError, match="augment applies to images"):
        D.Loader(D.load("sequences", limit=10), 4, seed=0, augment=True)


# --------------------------------------------------------------------------- the real MNIST


MNIST_COUNTS = {
    "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}


@pytest.fixture(scope="module")
def real_mnist():
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the real MNIST files are not in {SHARED_MNIST}")
    t0 = time.perf_counter()
    train = D.load("mnist", "train", data_dir=SHARED_MNIST, download=False)
    seconds = time.perf_counter() - t0
    test = D.load("mnist", "test", data_dir=SHARED_MNIST, download=False)
    return train, test, seconds


def test_real_mnist_counts_and_labels(real_mnist):
    train, test, seconds = real_mnist
    assert seconds < 6, f"loading MNIST took {seconds:.1f} s"
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert np.bincount(train.y).tolist() == MNIST_COUNTS["train"]
    assert np.bincount(test.y).tolist() == MNIST_COUNTS["test"]
    mean, std = D.normalizer(train, standard=False)
    assert abs(mean[0] - 0.1307) < 1e-3 and abs(std[0] - 0.3081) < 1e-3


def test_real_mnist_files_match_the_checksum_table(real_mnist):
    for name, res in D.RESOURCES["mnist"].items():
        assert D.verify(SHARED_MNIST / name, res) is None, name
