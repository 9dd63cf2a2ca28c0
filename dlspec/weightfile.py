"""Weights files read without running anything in them: NumPy arrays and metadata out.

- **safetensors**: the header is validated completely before any tensor is read, with the
  rules of the safetensors reference implementation (a header length within the file and at
  most 100 MB, a JSON object without duplicate keys, ``__metadata__`` mapping strings to
  strings, a known dtype and a shape of whole numbers ≥ 0 for every tensor, ``data_offsets``
  ``0 ≤ begin ≤ end`` whose span is the shape's byte count, and tensors that tile the data
  buffer exactly: no overlaps, no holes, nothing after the last one). One validation,
  :func:`safetensors_header`, serves every reader of the format.
- **PyTorch** ``torch.save`` files (the zip format, the legacy format and a bare pickle) go
  through a restricted unpickler that resolves an exact allow-list of globals — the ones a
  state dict needs, as PyTorch's ``weights_only=True`` does — to dlspec's own inert stand-ins;
  nothing is imported, and nothing else is called or built. Tensors are rebuilt from their
  storages with their offsets and strides; every size is checked against the file.

Nothing is half-loaded: a file is checked whole before its arrays are returned. bfloat16 is
widened to float32 (NumPy has no bfloat16; the widening is exact). This module does not import
tinygrad: the backend turns the arrays into tensors.
"""

from __future__ import annotations

import json
import math
import pickle
import reprlib
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import BackendError, UsageError

#: the safetensors reference implementation's limit on the JSON header
MAX_HEADER = 100_000_000
#: a tensor whose strides repeat storage elements (an expanded, stride-0 tensor) may have at most
#: this many elements; any other tensor is bounded by its storage
MAX_EXPANDED = 1 << 26
MAX_DIMS = 64
#: keys under which PyTorch checkpoints commonly keep the model's state dict
WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "module")
TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER (legacy format)
TORCH_PROTOCOL = 1001


class WeightsError(BackendError):
    """A weights file that cannot be read: malformed, truncated, lying about its contents, or
    asking to run code. The message starts with the file's path."""


@dataclass(frozen=True)
class Weights:
    """What a weights file holds: its tensors by name, its metadata, and its format."""

    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]
    kind: str  # "safetensors" or "PyTorch"


# ---- element types -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DType:
    """An element type: its little-endian NumPy storage dtype and how to decode it."""

    name: str
    storage: str  # NumPy dtype string of the stored bits (little-endian)
    decode: str = "plain"  # "plain", "bool" (bytes → True/False), "bf16" (widened to float32)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.storage).itemsize


_DT = {
    d.name: d
    for d in (
        _DType("bool", "u1", "bool"),
        _DType("uint8", "u1"),
        _DType("int8", "i1"),
        _DType("int16", "<i2"),
        _DType("uint16", "<u2"),
        _DType("int32", "<i4"),
        _DType("uint32", "<u4"),
        _DType("int64", "<i8"),
        _DType("uint64", "<u8"),
        _DType("float16", "<f2"),
        _DType("bfloat16", "<u2", "bf16"),
        _DType("float32", "<f4"),
        _DType("float64", "<f8"),
    )
}

SAFETENSORS_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "I32": "int32",
    "U32": "uint32",
    "I64": "int64",
    "U64": "uint64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
}
#: dtypes the safetensors format knows and NumPy cannot hold
SAFETENSORS_UNSUPPORTED = ("F8_E5M2", "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64")


def _stored(dt: _DType, big: bool = False) -> np.dtype:
    """The NumPy dtype of ``dt``'s stored bits in the file's byte order."""
    d = np.dtype(dt.storage)
    return d.newbyteorder(">") if big and d.byteorder == "<" else d


def _convert(a: np.ndarray, dt: _DType) -> np.ndarray:
    """Stored elements → the values: bools from bytes, bfloat16 widened to float32, native byte order."""
    if dt.decode == "bool":
        return a != 0  # any byte other than 0 is True (as PyTorch reads it), never an invalid bool
    if dt.decode == "bf16":
        return (a.astype(np.uint32) << 16).view(np.float32)  # exact: bfloat16 is float32's top half
    return a.astype(a.dtype.newbyteorder("="), copy=False) if a.dtype.byteorder not in ("=", "|") else a


def _out_dtype(dt: _DType) -> np.dtype:
    return _convert(np.zeros(0, _stored(dt)), dt).dtype


# ---- file types ----------------------------------------------------------------------------------------


def file_kind(path: str | Path) -> str | None:
    """``"safetensors"``, ``"torch-zip"``, ``"pickle"`` or ``"tar"`` by the file's first bytes; None
    for anything else (a short or unknown file)."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(512)
    n = int.from_bytes(head[:8], "little")
    # a JSON object after the 8-byte length; or the length alone (a file cut right after it)
    looks_safetensors = 2 <= n <= MAX_HEADER and (head[8:9] == b"{" if len(head) >= 9 else len(head) == 8)
    if looks_safetensors and 8 + n <= path.stat().st_size:
        return "safetensors"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "torch-zip"
    if head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5:
        return "pickle"
    if looks_safetensors:
        return "safetensors"  # a truncated one
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def is_safetensors(path: str | Path) -> bool:
    """safetensors by content: an 8-byte little-endian header length, then a JSON object."""
    return file_kind(path) == "safetensors"


def is_torch_file(path: str | Path) -> bool:
    """A ``torch.save`` file by its first bytes: a zip archive, or a (legacy) pickle."""
    return file_kind(path) in ("torch-zip", "pickle")


def weights_format(path: str | Path) -> str:
    """``"safetensors"`` or ``"PyTorch"``, by content (a file of neither kind named
    ``*.safetensors`` counts as safetensors, so that its error is precise); a clear
    :class:`WeightsError` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} is a directory, not a weights file" if path.is_dir() else f"no such weights file: {path}")
    try:
        kind = file_kind(path)
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read: {e.strerror or e}") from None
    if kind == "safetensors" or (kind is None and path.suffix.lower() == ".safetensors"):
        return "safetensors"
    if kind in ("torch-zip", "pickle"):
        return "PyTorch"
    if kind == "tar":
        raise WeightsError(f"{path}: a tar archive (PyTorch's pre-1.0 format?): dlspec reads PyTorch's zip and legacy formats; re-save it")
    if size == 0:
        raise WeightsError(f"{path}: not a readable PyTorch or safetensors weights file: the file is empty")
    raise WeightsError(
        f"{path}: not a readable PyTorch or safetensors weights file ({size} bytes starting {head!r}: "
        "neither a zip archive or a pickle (torch.save) nor an 8-byte length and a JSON header (safetensors))"
    )


def read(path: str | Path) -> Weights:
    """The tensors and metadata of a safetensors or PyTorch file, told apart by content
    (:func:`weights_format`). A PyTorch checkpoint's state dict under
    ``state_dict``/``model_state_dict``/… is unwrapped."""
    if weights_format(path) == "safetensors":
        tensors, meta = read_safetensors(path)
        return Weights(tensors, meta, "safetensors")
    return Weights(read_torch(path), {}, "PyTorch")


# ---- safetensors -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header, validated."""

    name: str
    dtype: str  # the file's dtype name: "F32", "BF16", …
    shape: tuple[int, ...]
    begin: int  # byte offsets in the data buffer
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A completely validated safetensors header."""

    metadata: dict[str, str]
    tensors: tuple[TensorEntry, ...]  # in the header's order
    data_start: int  # byte offset of the data buffer in the file
    data_size: int


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Corrupt(f"key '{_show(k)}' appears twice in the header")
        out[k] = v
    return out


def _no_constants(word: str) -> Any:
    raise _Corrupt(f"its header holds {word}, which is not JSON")


class _Corrupt(Exception):
    """A safetensors file's header lies; the message says how (the caller adds the path)."""


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def safetensors_header(path: str | Path) -> SafetensorsHeader:
    """Read and validate the whole header of a safetensors file (the tensors' bytes are not read).

    Raises :class:`WeightsError` naming the file (and the tensor) for: a length missing, over
    100 MB or past the end of the file; a header that is not a JSON object (or has duplicate
    keys); ``__metadata__`` that is not strings to strings; an entry with an unknown dtype, a
    shape that is not whole numbers ≥ 0, ``data_offsets`` that are not ``0 ≤ begin ≤ end`` or
    do not span the shape's byte count; tensors that overlap, leave holes, lie past the end of
    the data or leave bytes after the last one; and a file shorter than its header says (a
    truncated safetensors file). ``OSError`` (a missing file) is the caller's to handle."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise WeightsError(f"{path}: truncated safetensors file ({size} bytes: not even the 8-byte header length)")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER:
            raise WeightsError(
                f"{path}: corrupt safetensors file: its header length {n:,} bytes is over the limit of {MAX_HEADER:,} (not a safetensors file?)"
            )
        if 8 + n > size:
            raise WeightsError(
                f"{path}: truncated safetensors file: its header is {n:,} bytes, the file has only {size - 8:,} after its length"
            )
        raw = fh.read(n)
    if len(raw) < n:  # the file shrank while being read
        raise WeightsError(f"{path}: truncated safetensors file: its header is {n:,} bytes, only {len(raw):,} could be read")
    try:
        header = _parse_header(raw)
        meta, entries = _check_entries(header)
        _check_layout(entries, size - 8 - n)
    except _Corrupt as e:
        msg = str(e)
        raise WeightsError(f"{path}: {msg if msg.startswith('truncated') else 'corrupt safetensors file: ' + msg}") from None
    return SafetensorsHeader(meta, tuple(entries), 8 + n, size - 8 - n)


def _parse_header(raw: bytes) -> dict[str, Any]:
    if raw[:1] != b"{":
        raise _Corrupt(f"its header does not start with '{{' (it starts {raw[:8]!r})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Corrupt(f"its header is not UTF-8 text (byte {e.start})") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise _Corrupt(f"its header is not valid JSON ({e.msg} at byte {e.pos})") from None
    except RecursionError:
        raise _Corrupt("its header nests too deeply") from None
    if not isinstance(header, dict):
        raise _Corrupt(f"its header is a JSON {type(header).__name__}, not an object")
    return header


def _check_entries(header: dict[str, Any]) -> tuple[dict[str, str], list[TensorEntry]]:
    meta = header.get("__metadata__")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise _Corrupt(f"__metadata__ is a {type(meta).__name__}, not an object of strings")
    for k, v in meta.items():
        if not isinstance(v, str):
            raise _Corrupt(f"__metadata__ must map strings to strings, but '{_show(k)}' is {_show(v)} ({type(v).__name__})")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        t = f"tensor '{_show(name)}'"
        if not isinstance(info, dict):
            raise _Corrupt(f"{t} is {_show(info)}, not an object with dtype, shape and data_offsets")
        for key in ("dtype", "shape", "data_offsets"):
            if key not in info:
                raise _Corrupt(f"{t} has no {key}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype in SAFETENSORS_UNSUPPORTED:
            raise _Corrupt(f"{t} has dtype {dtype}, which dlspec cannot read (it reads {', '.join(SAFETENSORS_DTYPES)})")
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
            raise _Corrupt(f"{t} has unknown dtype {_show(dtype)} (safetensors dtypes: {', '.join(SAFETENSORS_DTYPES)})")
        if not isinstance(shape, list) or not all(_int(s) and s >= 0 for s in shape):
            raise _Corrupt(f"{t} has shape {_show(shape)}: a shape is a list of whole numbers ≥ 0")
        if len(shape) > MAX_DIMS:
            raise _Corrupt(f"{t} has {len(shape)} dimensions, more than {MAX_DIMS}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_int(o) for o in offsets):
            raise _Corrupt(f"{t} has data_offsets {_show(offsets)}: they are two whole numbers [begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise _Corrupt(f"{t} has data_offsets [{begin}, {end}]: they must be 0 ≤ begin ≤ end")
        nbytes = math.prod(shape) * _DT[SAFETENSORS_DTYPES[dtype]].itemsize
        if end - begin != nbytes:
            raise _Corrupt(f"{t} is {dtype} {shape}: {nbytes:,} bytes, but its data_offsets [{begin}, {end}] span {end - begin:,} bytes")
        entries.append(TensorEntry(name, dtype, tuple(shape), begin, end))
    return dict(meta), entries


def _check_layout(entries: list[TensorEntry], data_size: int) -> None:
    """The tensors tile the data buffer ``[0, data_size)`` exactly, as the reference requires."""
    pos, prev = 0, None
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        t = f"tensor '{_show(e.name)}'"
        if e.begin < pos:
            raise _Corrupt(
                f"{t} (bytes [{e.begin}, {e.end}) of the data) overlaps tensor '{_show(prev.name)}' (bytes [{prev.begin}, {prev.end}))"
            )
        if e.begin > pos:
            if e.end > data_size:
                raise _Corrupt(f"{t} lies at bytes [{e.begin}, {e.end}) of the data, past its end ({data_size:,} bytes)")
            after = f"after tensor '{_show(prev.name)}'" if prev else "before the first tensor"
            raise _Corrupt(f"bytes [{pos}, {e.begin}) of the data belong to no tensor ({after}; the next is '{_show(e.name)}')")
        pos, prev = e.end, e
    if pos > data_size:
        raise _Corrupt(f"truncated safetensors file: its header needs {pos:,} bytes of tensor data, the file holds {data_size:,}")
    if pos < data_size:
        raise _Corrupt(f"{data_size - pos:,} bytes after the last tensor's data belong to no tensor")


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a safetensors file (bfloat16 as float32) and its metadata; the header is
    validated first (:func:`safetensors_header`)."""
    path = Path(path)
    h = safetensors_header(path)
    buf = bytearray(h.data_size)
    with open(path, "rb") as fh:
        fh.seek(h.data_start)
        got = fh.readinto(buf)
    if got != h.data_size:
        raise WeightsError(f"{path}: truncated safetensors file: {h.data_size:,} bytes of tensor data expected, {got:,} could be read")
    out = {}
    for e in h.tensors:
        dt = _DT[SAFETENSORS_DTYPES[e.dtype]]
        out[e.name] = _convert(np.frombuffer(buf, _stored(dt), math.prod(e.shape), e.begin), dt).reshape(e.shape)
    return out, h.metadata


# ---- PyTorch files: the restricted unpickler -----------------------------------------------------------------


class _Refused(Exception):
    """The pickle asks for something outside the allow-list (the caller adds the path)."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co: which element type a storage holds."""

    name: str
    dtype: str | None  # None: a type dlspec cannot read (complex, quantized)
    untyped: bool = False  # torch.UntypedStorage: numel counts bytes


@dataclass(frozen=True)
class _TorchDType:
    """Stand-in for ``torch.float32`` & co."""

    name: str
    dtype: str | None


class _Storage:
    """A storage a persistent id declares: ``numel`` elements of ``dtype`` (bytes if untyped),
    found under ``key``; a legacy storage view starts ``offset`` bytes into its root."""

    def __init__(self, key: str, dtype: str, numel: int, offset: int = 0):
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset

    @property
    def nbytes(self) -> int:
        return self.numel * _DT[self.dtype].itemsize


class _TensorRef:
    """A tensor the pickle rebuilds: a strided view of a storage, resolved once the storages are read."""

    def __init__(self, storage: _Storage, dtype: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...], neg: bool = False):
        self.storage, self.dtype, self.offset, self.size, self.stride, self.neg = storage, dtype, offset, size, stride, neg


class _ODict(dict):
    """What ``collections.OrderedDict`` becomes: a plain (ordered) dict whose pickled state is dropped."""


class _Marker:
    """``torch.Tensor``/``torch.nn.Parameter`` as types named by ``_rebuild_from_type_v2``."""

    def __init__(self, name: str):
        self.name = name


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80


def _show(v: Any, limit: int = 80) -> str:
    """A value for a one-line message: non-printable characters escaped, long ones cut (a huge
    or deeply nested value is never rendered whole)."""
    s = v[: limit * 4] if isinstance(v, str) else _REPR.repr(v)
    s = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _ints(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)) or not all(_int(x) for x in v):
        raise _Refused(f"a tensor's {what} is {_show(v)}, not a tuple of whole numbers")
    if len(v) > MAX_DIMS:
        raise _Refused(f"a tensor has {len(v)} dimensions, more than {MAX_DIMS}")
    if any(x < 0 for x in v):
        raise _Refused(f"a tensor's {what} {tuple(v)} has a negative entry")
    return tuple(v)


def _tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, dtype: str | None = None, metadata: Any = None) -> _TensorRef:
    """Check a tensor's geometry against its storage (before any byte is read)."""
    if not isinstance(storage, _Storage):
        raise _Refused(f"a tensor's storage is {_show(storage)}, not a storage record of the file")
    dtype = dtype or storage.dtype
    if not _int(storage_offset) or storage_offset < 0:
        raise _Refused(f"a tensor's storage offset is {_show(storage_offset)}, not a whole number ≥ 0")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride):
        raise _Refused(f"a tensor has size {size} but stride {stride}")
    neg = False
    if metadata is not None:
        if (
            not isinstance(metadata, dict)
            or not set(metadata) <= {"neg", "conj"}
            or not all(isinstance(v, bool) for v in metadata.values())
        ):
            raise _Refused(f"a tensor has metadata {_show(metadata)}; dlspec reads only real tensors (neg/conj flags)")
        if metadata.get("conj"):
            raise _Refused("a tensor is a conjugate view (a complex tensor); dlspec reads real tensors")
        neg = metadata.get("neg", False)
    numel = math.prod(size)
    itemsize = _DT[dtype].itemsize
    avail = storage.nbytes // itemsize
    if numel:
        need = storage_offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1
        if need > avail:
            raise _Refused(
                f"a tensor of size {size}, stride {stride} at offset {storage_offset} needs {need:,} elements of storage "
                f"'{_show(storage.key)}', which holds {avail:,}"
            )
        if numel > max(avail, MAX_EXPANDED):
            raise _Refused(f"a tensor of size {size} repeats its storage's {avail:,} elements {numel:,} times over: too large to expand")
    return _TensorRef(storage, dtype, storage_offset, size, stride, neg)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _TensorRef:
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False, backward_hooks: Any = None, metadata: Any = None
) -> _TensorRef:
    return _tensor(storage, storage_offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any, backward_hooks: Any, dtype: Any, metadata: Any = None
) -> _TensorRef:
    if not isinstance(dtype, _TorchDType):
        raise _Refused(f"a tensor's dtype is {_show(dtype)}, not a torch dtype")
    if dtype.dtype is None:
        raise _Refused(f"a tensor has dtype torch.{dtype.name}, which dlspec cannot read")
    return _tensor(storage, storage_offset, size, stride, dtype.dtype, metadata)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise _Refused(f"a parameter holds {_show(data)}, not a tensor")
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> _TensorRef:
    return _rebuild_parameter(data, requires_grad, backward_hooks)  # the state (Python attributes) is dropped


_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter, _rebuild_parameter_with_state)
_TENSOR_TYPES = (_Marker("torch.Tensor"), _Marker("torch.nn.parameter.Parameter"))


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> _TensorRef:
    if not any(func is f for f in _REBUILDERS) or not any(new_type is m for m in _TENSOR_TYPES) or not isinstance(args, tuple):
        raise _Refused(f"a tensor subclass ({_show(getattr(new_type, 'name', new_type))}) is not a plain tensor")
    return func(*args)


def _ordered_dict(items: Any = ()) -> _ODict:
    if not isinstance(items, (list, tuple, dict)):
        raise _Refused(f"an OrderedDict is built from {type(items).__name__}, not from pairs")
    return _ODict(items)


def _size(dims: Any = ()) -> tuple[int, ...]:
    if not isinstance(dims, (tuple, list)) or not all(_int(d) for d in dims):
        raise _Refused(f"a torch.Size of {_show(dims)}")
    return tuple(dims)


def _device(kind: Any, index: Any = None) -> str:
    if not isinstance(kind, str) or not (index is None or _int(index)):
        raise _Refused(f"a torch.device of {_show(kind)}")
    return kind if index is None else f"{kind}:{index}"


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode``, as protocol-2 pickles spell ``bytes``: only str → bytes in latin-1/utf-8."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise _Refused(f"_codecs.encode of {type(text).__name__} with {_show(encoding)}")
    return text.encode(encoding)


def _set(items: Any = ()) -> set:
    if not isinstance(items, (list, tuple)):
        raise _Refused(f"a set built from {type(items).__name__}")
    return set(items)


_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
_STORAGE_UNSUPPORTED = ("ComplexFloatStorage", "ComplexDoubleStorage", "QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage")
_TORCH_DTYPES = {
    "float32": "float32",
    "float": "float32",
    "float64": "float64",
    "double": "float64",
    "float16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "int16": "int16",
    "short": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
}
_TORCH_DTYPES_UNSUPPORTED = (
    "complex32",
    "complex64",
    "complex128",
    "cfloat",
    "cdouble",
    "chalf",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
)


def _allowed() -> dict[tuple[str, str], Any]:
    """(module, name) → the stand-in a pickle's global resolves to; nothing else resolves."""
    a: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): _ordered_dict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Tensor"): _TENSOR_TYPES[0],
        ("torch.nn.parameter", "Parameter"): _TENSOR_TYPES[1],
        ("torch", "Size"): _size,
        ("torch", "device"): _device,
        ("_codecs", "encode"): _encode,
        ("builtins", "set"): _set,
    }
    for name, dt in _STORAGE_DTYPES.items():
        a[("torch", name)] = a[("torch.cuda", name)] = _StorageType(name, dt)
    for name in _STORAGE_UNSUPPORTED:
        a[("torch", name)] = _StorageType(name, None)
    a[("torch", "UntypedStorage")] = a[("torch.storage", "UntypedStorage")] = _StorageType("UntypedStorage", "uint8", untyped=True)
    for name, dt in _TORCH_DTYPES.items():
        a[("torch", name)] = _TorchDType(name, dt)
    for name in _TORCH_DTYPES_UNSUPPORTED:
        a[("torch", name)] = _TorchDType(name, None)
    return a


ALLOWED = _allowed()
_CALLABLE = {id(v): v for v in ALLOWED.values() if callable(v) and not isinstance(v, (_StorageType, _TorchDType, _Marker))}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _refuse_op(what: str) -> Callable[[Any], None]:
    def op(self: Any) -> None:
        raise _Refused(f"refusing to {what}: a state dict needs no such pickle operation")

    return op


class _Unpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """Python's own unpickler with its dangerous operations replaced: ``find_class`` resolves only
    :data:`ALLOWED` (to stand-ins), REDUCE calls only allowed stand-ins, NEWOBJ/BUILD work only on
    OrderedDicts, and APPEND/SETITEM/ADDITEMS only on lists, dicts and sets."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: BinaryIO, persistent: Callable[[Any], Any] | None = None):
        super().__init__(file, encoding="utf-8")
        self._persistent = persistent

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:
            module = _PY2_MODULES.get(module, module)
        found = ALLOWED.get((module, name))
        if found is None:
            hint = ""
            if name[:1].isupper() and "." not in name and not module.startswith(("numpy", "builtins", "os", "posix", "subprocess")):
                hint = " (a whole pickled model, torch.save(model), cannot be read without its code: save model.state_dict() instead)"
            raise _Refused(f"refusing to load '{_show(module + '.' + name, 120)}': not a tensor type{hint}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise _Refused(f"the pickle refers to data outside it ({_show(pid)}), which a plain pickle does not hold")
        return self._persistent(pid)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if _CALLABLE.get(id(func)) is not func or not isinstance(args, tuple):
            raise _Refused(f"refusing to call {_show(func)}: not an allowed tensor rebuild function")
        try:
            self.stack[-1] = func(*args)
        except TypeError as e:
            raise _Refused(f"bad arguments to {func.__name__.lstrip('_')}: {e}") from None

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls is not _ordered_dict or args != ():
            raise _Refused(f"refusing to build {_show(cls)}: only OrderedDicts and tensors are built")
        self.append(_ODict())

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        self.stack.append(kwargs)
        if kwargs != {}:
            raise _Refused("refusing to build an object with keyword arguments")
        self.stack.pop()
        self.load_newobj()

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is not _ODict:
            raise _Refused(f"refusing to set the state of a {type(inst).__name__}: only OrderedDicts have one here")
        if isinstance(state, tuple) and len(state) == 2:
            ok = all(s is None or isinstance(s, dict) for s in state)
        else:
            ok = state is None or isinstance(state, dict)
        if not ok:
            raise _Refused(f"an OrderedDict's state is a {type(state).__name__}")
        # the state (PyTorch's `_metadata` attribute of a state dict) is dropped

    def load_append(self) -> None:
        value = self.stack.pop()
        if type(self.stack[-1]) is not list:
            raise _Refused(f"refusing to append to a {type(self.stack[-1]).__name__}")
        self.stack[-1].append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        if type(self.stack[-1]) is not list:
            raise _Refused(f"refusing to append to a {type(self.stack[-1]).__name__}")
        self.stack[-1].extend(items)

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        if type(self.stack[-1]) not in (dict, _ODict):
            raise _Refused(f"refusing to set an item of a {type(self.stack[-1]).__name__}")
        self.stack[-1][key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        d = self.stack[-1]
        if type(d) not in (dict, _ODict):
            raise _Refused(f"refusing to set items of a {type(d).__name__}")
        for i in range(0, len(items) - 1, 2):
            d[items[i]] = items[i + 1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        if type(self.stack[-1]) is not set:
            raise _Refused(f"refusing to add items to a {type(self.stack[-1]).__name__}")
        self.stack[-1].update(items)

    for _op, _fn in (
        (pickle.REDUCE, load_reduce),
        (pickle.NEWOBJ, load_newobj),
        (pickle.NEWOBJ_EX, load_newobj_ex),
        (pickle.BUILD, load_build),
        (pickle.APPEND, load_append),
        (pickle.APPENDS, load_appends),
        (pickle.SETITEM, load_setitem),
        (pickle.SETITEMS, load_setitems),
        (pickle.ADDITEMS, load_additems),
        (pickle.INST, _refuse_op("build an object (INST)")),
        (pickle.OBJ, _refuse_op("build an object (OBJ)")),
        (pickle.EXT1, _refuse_op("load an extension-registry global")),
        (pickle.EXT2, _refuse_op("load an extension-registry global")),
        (pickle.EXT4, _refuse_op("load an extension-registry global")),
    ):
        dispatch[_op[0]] = _fn
    del _op, _fn


# ---- PyTorch files: the formats ---------------------------------------------------------------------------------

#: where a storage's bytes are: (buffer, byte offset of the storage in it, big-endian?)
Fetch = Callable[[_Storage], tuple[bytes, int, bool]]


class _Storages:
    """The storages a pickle declares by persistent id, checked as they come: at most ``limit``
    bytes each (the file's size), one type and size per key."""

    def __init__(self, limit: int, legacy: bool):
        self.limit, self.legacy = limit, legacy
        self.roots: dict[str, _Storage] = {}
        self.views: dict[str, _Storage] = {}

    def __call__(self, pid: Any) -> _Storage:
        n = 6 if self.legacy else 5
        if not isinstance(pid, tuple) or len(pid) != n or pid[0] != "storage":
            form = "('storage', type, key, location, numel" + (", view)" if self.legacy else ")")
            raise _Refused(f"unknown persistent id {_show(pid)} (a torch.save file's are {form})")
        _, stype, key, location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise _Refused(f"a storage's type is {_show(stype)}, not a torch storage type")
        if stype.dtype is None:
            raise _Refused(f"a storage of type torch.{stype.name}, which dlspec cannot read (it reads real, non-quantized tensors)")
        if not isinstance(key, str) or not isinstance(location, str):
            raise _Refused(f"a storage's key {_show(key)} or location {_show(location)} is not a string")
        if not _int(numel) or numel < 0:
            raise _Refused(f"storage '{_show(key)}' has {_show(numel)} elements, not a whole number ≥ 0")
        root = _Storage(key, stype.dtype, numel)
        if root.nbytes > self.limit:
            raise _Refused(
                f"storage '{_show(key)}' declares {numel:,} × {stype.dtype} = {root.nbytes:,} bytes, more than the whole file ({self.limit:,})"
            )
        seen = self.roots.setdefault(key, root)
        if (seen.dtype, seen.numel) != (root.dtype, root.numel):
            raise _Refused(f"storage '{_show(key)}' is declared twice: {seen.numel:,} × {seen.dtype}, then {root.numel:,} × {root.dtype}")
        view = pid[5] if self.legacy else None
        if view is None:
            return seen
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str) and _int(view[1]) and _int(view[2])):
            raise _Refused(f"storage '{_show(key)}' has a bad view record {_show(view)}")
        vkey, offset, vsize = view
        if offset < 0 or vsize < 0 or offset + vsize > numel:
            raise _Refused(f"a view of {vsize:,} elements at {offset:,} of storage '{_show(key)}' ({numel:,} elements) lies outside it")
        v = _Storage(key, stype.dtype, vsize, offset * _DT[stype.dtype].itemsize)
        seen_view = self.views.setdefault(vkey, v)
        if (seen_view.key, seen_view.numel, seen_view.offset) != (v.key, v.numel, v.offset):
            raise _Refused(f"storage view '{_show(vkey)}' is declared twice, differently")
        return seen_view


def _load_pickle(fh: BinaryIO, persistent: Callable[[Any], Any] | None = None) -> Any:
    """One pickle from ``fh``; a pickle cut short raises EOFError, however it was cut."""
    try:
        return _Unpickler(fh, persistent).load()
    except struct.error:  # a number's bytes missing
        raise EOFError from None
    except pickle.UnpicklingError as e:
        if "truncated" in str(e):
            raise EOFError from None
        raise


def read_torch(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict of a PyTorch file (zip, legacy or bare pickle), never running its code; a
    checkpoint's dict under :data:`WRAPPERS` is unwrapped. Every storage and tensor is checked
    against the file before its bytes are used."""
    path = Path(path)
    try:
        if file_kind(path) == "torch-zip":
            with zipfile.ZipFile(path) as zf:
                obj, fetch = _zip_file(zf, path)
                sd = _state_dict(obj, path)
                return {k: _resolve(v, fetch) for k, v in sd.items()}
        obj, fetch = _pickle_file(path)
        sd = _state_dict(obj, path)
        return {k: _resolve(v, fetch) for k, v in sd.items()}
    except WeightsError:
        raise
    except _Refused as e:
        raise WeightsError(f"{path}: {e}") from None
    except EOFError:
        raise WeightsError(f"{path}: truncated PyTorch file: a pickle in it ends early") from None
    except (MemoryError, RecursionError) as e:
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: it nests or grows too much)") from None
    except Exception as e:  # noqa: BLE001 - any other failure to parse is the file's fault
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {_show(str(e), 200)})") from None


def _zip_file(zf: zipfile.ZipFile, path: Path) -> tuple[Any, Fetch]:
    """``torch.save``'s zip format: ``<dir>/data.pkl`` and one ``<dir>/data/<key>`` record per storage."""
    names = set(zf.namelist())
    pkls = sorted(n for n in names if n.count("/") == 1 and n.endswith("/data.pkl"))
    if not pkls:
        raise WeightsError(f"{path}: a zip archive without a '<folder>/data.pkl' record: not a torch.save file")
    if len(pkls) > 1:
        raise WeightsError(f"{path}: a zip archive with several data.pkl records ({', '.join(pkls[:4])}): not one torch.save file")
    prefix = pkls[0][: -len("data.pkl")]
    big = False
    if prefix + "byteorder" in names:
        order = _zip_record(zf, prefix + "byteorder", path, limit=16)
        if order not in (b"little", b"big"):
            raise WeightsError(f"{path}: its byteorder record says {order!r}, not 'little' or 'big'")
        big = order == b"big"
    size = path.stat().st_size
    compressed = any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist())
    storages = _Storages(size * 1033 if compressed else size, legacy=False)  # deflate expands at most ~1032×
    with zf.open(pkls[0]) as fh:
        obj = _load_pickle(fh, storages)
    cache: dict[str, bytes] = {}

    def fetch(s: _Storage) -> tuple[bytes, int, bool]:
        if s.key not in cache:
            name = f"{prefix}data/{s.key}"
            if name not in names:
                raise WeightsError(f"{path}: storage '{_show(s.key)}' has no record {_show(name)} in the archive")
            info = zf.getinfo(name)
            if info.file_size != s.nbytes:
                raise WeightsError(
                    f"{path}: storage '{_show(s.key)}' is declared as {s.numel:,} × {s.dtype} = {s.nbytes:,} bytes, "
                    f"but its record holds {info.file_size:,}"
                )
            cache[s.key] = _zip_record(zf, name, path)
        return cache[s.key], s.offset, big

    return obj, fetch


def _zip_record(zf: zipfile.ZipFile, name: str, path: Path, limit: int | None = None) -> bytes:
    info = zf.getinfo(name)
    if limit is not None and info.file_size > limit:
        raise WeightsError(f"{path}: record {_show(name)} is {info.file_size:,} bytes, expected at most {limit}")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > 1032 * info.compress_size + 1024:
        raise WeightsError(
            f"{path}: record {_show(name)} claims {info.file_size:,} bytes from {info.compress_size:,} compressed: not a real stream"
        )
    data = zf.read(name)
    if len(data) != info.file_size:
        raise WeightsError(f"{path}: truncated PyTorch file: record {_show(name)} holds {len(data):,} of its {info.file_size:,} bytes")
    return data


def _pickle_file(path: Path) -> tuple[Any, Fetch]:
    """The legacy format (magic number, protocol, system info, the pickle, its list of storage keys,
    then each storage as a little-endian 8-byte element count and its little-endian bytes), or a
    bare pickle."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        first = _load_pickle(fh)
        if not (_int(first) and first == TORCH_MAGIC):
            return first, _no_storages(path)  # a bare pickle: it is its own content
        protocol = _load_pickle(fh)
        if protocol != TORCH_PROTOCOL:
            raise WeightsError(f"{path}: a legacy torch.save file of protocol {_show(protocol)}; dlspec reads protocol {TORCH_PROTOCOL}")
        info = _load_pickle(fh)
        if not isinstance(info, dict):
            raise WeightsError(f"{path}: a legacy torch.save file whose system-info record is {_show(info)}, not a dict")
        storages = _Storages(size, legacy=True)
        obj = _load_pickle(fh, storages)
        keys = _load_pickle(fh)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise WeightsError(f"{path}: a legacy torch.save file whose storage list is {_show(keys)}, not a list of keys")
        where: dict[str, int] = {}
        pos = fh.tell()
        for key in keys:
            s = storages.roots.get(key)
            if s is None:
                raise WeightsError(f"{path}: its storage list names '{_show(key)}', which no tensor declares")
            if key in where:
                raise WeightsError(f"{path}: its storage list names '{_show(key)}' twice")
            head = fh.read(8)
            if len(head) < 8:
                raise WeightsError(f"{path}: truncated PyTorch file: storage '{_show(key)}' is missing (the file ends at byte {size:,})")
            (count,) = struct.unpack("<q", head)  # PyTorch writes storages little-endian on every machine
            if count != s.numel:
                raise WeightsError(f"{path}: storage '{_show(key)}' is declared as {s.numel:,} elements, but its data says {count:,}")
            if pos + 8 + s.nbytes > size:
                raise WeightsError(
                    f"{path}: truncated PyTorch file: storage '{_show(key)}' needs bytes up to {pos + 8 + s.nbytes:,}, the file has {size:,}"
                )
            where[key] = pos + 8
            pos += 8 + s.nbytes
            fh.seek(pos)
        missing = [k for k in storages.roots if k not in where]
        if missing:
            raise WeightsError(f"{path}: storage '{_show(missing[0])}' has no data in the file (it is not in the storage list)")
    cache: dict[str, bytes] = {}

    def fetch(s: _Storage) -> tuple[bytes, int, bool]:
        if s.key not in cache:
            nbytes = storages.roots[s.key].nbytes
            with open(path, "rb") as f:
                f.seek(where[s.key])
                data = f.read(nbytes)
            if len(data) != nbytes:
                raise WeightsError(f"{path}: truncated PyTorch file: storage '{_show(s.key)}' holds {len(data):,} of its {nbytes:,} bytes")
            cache[s.key] = data
        return cache[s.key], s.offset, False

    return obj, fetch


def _no_storages(path: Path) -> Fetch:
    def fetch(s: _Storage) -> tuple[bytes, int, bool]:
        raise WeightsError(f"{path}: storage '{_show(s.key)}' has no data in the file")

    return fetch


def _state_dict(obj: Any, path: Path) -> dict[str, _TensorRef]:
    """``obj`` itself if it is a dict of tensors, else the dict of tensors under a :data:`WRAPPERS` key."""

    def tensors(d: Any) -> bool:
        return isinstance(d, dict) and all(isinstance(v, _TensorRef) for v in d.values())

    sd = obj
    if isinstance(obj, dict) and not tensors(obj):
        sd = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict) and obj[k] and tensors(obj[k])), obj)
    if not tensors(sd):
        if isinstance(sd, dict):
            found = ", ".join(f"{_show(k, 40)} ({_kind(v)})" for k, v in list(sd.items())[:12])
        else:
            found = _kind(sd)
        raise WeightsError(f"{path}: does not hold a state dict of tensors (found {found}); the state dict may be under another key")
    bad = next((k for k in sd if not isinstance(k, str)), None)
    if bad is not None:
        raise WeightsError(f"{path}: its state dict has a key {_show(bad)} ({type(bad).__name__}), not a tensor name")
    return sd


def _kind(v: Any) -> str:
    return "tensor" if isinstance(v, _TensorRef) else "dict" if isinstance(v, dict) else type(v).__name__


def _resolve(t: _TensorRef, fetch: Fetch) -> np.ndarray:
    """The tensor's values: its strided view of the storage's bytes, copied out (bounds were
    checked when the tensor was rebuilt)."""
    dt = _DT[t.dtype]
    if not math.prod(t.size):
        return np.zeros(t.size, dtype=_out_dtype(dt))
    buf, base, big = fetch(t.storage)
    stored = np.frombuffer(buf, dtype=_stored(dt, big), count=t.storage.nbytes // dt.itemsize, offset=base)
    view = np.lib.stride_tricks.as_strided(
        stored[t.offset :], shape=t.size, strides=tuple(s * dt.itemsize for s in t.stride), writeable=False
    )
    out = _convert(np.array(view, order="C"), dt)  # a C-ordered copy (0-d stays 0-d)
    return -out if t.neg else out
