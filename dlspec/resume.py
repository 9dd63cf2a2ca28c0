"""What bit-identical ``--resume`` needs, shared by every objective's loop.

* :func:`reseed` — tinygrad's random stream (dropout, ``sample``, a denoising autoencoder's noise)
  reseeded **in place** at every epoch (episode) start, so that its numbers are a pure function of
  (seed, epoch) in a captured TinyJit step too (``Tensor.manual_seed`` makes new buffers, which a
  captured step never reads).
* :func:`save` — a checkpoint written atomically (:mod:`dlspec.runfiles`) with a digest of its
  tensors in its metadata; ``last.safetensors`` keeps the checkpoint it replaces as
  ``last.prev.safetensors`` (one backup generation, :func:`dlspec.runfiles.keeping_backup`).
* :func:`check` — a checkpoint to resume from: its header validated and its tensors against their
  digest; a damaged one is an error naming the file that says whether the backup is intact and how
  to resume from it (as Keras' ``BackupAndRestore`` and Lightning do, nothing is picked silently).
* :func:`check_identity` — the run resumes the spec and the data the checkpoint was trained on
  (sha256 digests of ``spec.dl`` and of the loaded data), or is refused showing both digests.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .train import TrainError, check_safetensors

#: the metadata keys of a checkpoint's digests
TENSORS_KEY, SPEC_KEY, DATA_KEY = "tensors_sha256", "spec_sha256", "data_sha256"


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of tinygrad's random stream in epoch (episode) ``epoch`` of a run seeded ``seed``."""
    return (seed * 100_003 + epoch) & 0xFFFFFFFF


def reseed(device: str | tuple[str, ...], seed: int) -> None:
    """Reseed tinygrad's random stream on ``device`` to ``seed``, in place (on several devices, a
    tuple: each one's stream, in order — a data-parallel net draws on each device separately).

    ``Tensor.manual_seed`` would make new seed/counter buffers, but a TinyJit-captured step keeps
    drawing from the buffers it captured; so the stream's buffers are created once and overwritten
    here: the numbers drawn after it are a pure function of ``seed``, in an uninterrupted run and in
    a resumed one alike, jitted or not."""
    from tinygrad import Tensor, dtypes

    if isinstance(device, tuple):
        for d in device:
            reseed(d, seed)
        return
    if device not in Tensor._device_seeds:
        Tensor._next_counter(device, 0)
    s, n = Tensor._device_seeds[device], Tensor._device_rng_counters[device]
    first = s.tolist()[0]  # the per-device key word tinygrad derived when it made the buffer
    Tensor._seed = seed
    s.assign(Tensor([first, seed], device=device, dtype=dtypes.uint32))
    n.assign(Tensor([0, 0], device=device, dtype=dtypes.uint32))
    Tensor.realize(s, n)


# ---- digests -------------------------------------------------------------------------------------


def _digest_entries(entries: Iterable[tuple[str, str, tuple[int, ...], Any]]) -> str:
    """sha256 over ``(name, dtype, shape, bytes)`` in name order (independent of the file's layout)."""
    h = hashlib.sha256()
    for name, dtype, shape, data in sorted(entries, key=lambda e: e[0]):
        h.update(f"{name}\0{dtype}\0{','.join(map(str, shape))}\0".encode())
        h.update(data)
    return h.hexdigest()


def tensors_digest(sd: Mapping[str, Any]) -> str:
    """The digest of tinygrad tensors as a safetensors file stores them (see :func:`file_digest`)."""
    from tinygrad.nn.state import inverse_safe_dtypes

    from .backends.tinygrad import tensor_bytes

    return _digest_entries((k, inverse_safe_dtypes[t.dtype], tuple(t.shape), tensor_bytes(t.contiguous())) for k, t in sd.items())


def file_digest(path: Path) -> str:
    """The digest of a safetensors file's tensors, read from the file (its header validated first)."""
    from .weightfile import safetensors_header

    h = safetensors_header(path)
    with open(path, "rb") as fh:
        fh.seek(h.data_start)
        data = fh.read(h.data_size)
    if len(data) != h.data_size:
        raise OSError(f"{h.data_size:,} bytes of tensor data expected, {len(data):,} could be read")
    view = memoryview(data)
    return _digest_entries((e.name, e.dtype, e.shape, view[e.begin : e.end]) for e in h.tensors)


def data_digest(*datasets: Any) -> str:
    """sha256 of the samples and labels of data sets (``None`` skipped), in order: what a run trains
    and evaluates on."""
    import numpy as np

    h = hashlib.sha256()
    for ds in datasets:
        if ds is None:
            continue
        for a in (ds.x, ds.y):
            a = np.ascontiguousarray(a)
            h.update(f"{ds.name}\0{ds.split}\0{a.dtype.str}\0{a.shape}\0".encode())
            h.update(memoryview(a).cast("B"))
    return h.hexdigest()


# ---- checkpoints ---------------------------------------------------------------------------------


def backup_of(path: Path) -> Path:
    """``last.safetensors`` → ``last.prev.safetensors``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save(path: Path, sd: Mapping[str, Any], metadata: Mapping[str, str], backup: bool = False) -> None:
    """Write checkpoint ``path`` atomically with the digest of its tensors; with ``backup`` the
    checkpoint it replaces becomes :func:`backup_of` ``path`` once the new one is written."""
    from .backends.tinygrad import save_state
    from .runfiles import keeping_backup

    sd = {k: v.contiguous() for k, v in sd.items()}
    meta = {**metadata, TENSORS_KEY: tensors_digest(sd)}
    with keeping_backup(path, backup_of(path)) if backup else contextlib.nullcontext():
        save_state(sd, path, metadata=meta)


def position(meta: Mapping[str, str]) -> str:
    """Where a checkpoint is: ``epoch 3`` / ``episode 20``."""
    return f"episode {meta['episode']}" if "episode" in meta else f"epoch {meta.get('epoch', '?')}"


def _verified(path: Path) -> dict[str, str]:
    """The metadata of checkpoint ``path`` after its header and its tensors' digest check out."""
    meta = check_safetensors(path, "checkpoint")
    want = meta.get(TENSORS_KEY)
    if want is not None:  # checkpoints of earlier versions have no digest: their header is all there is to check
        try:
            got = file_digest(path)
        except OSError as e:
            raise TrainError(f"{path}: cannot read the checkpoint: {e.strerror or e}") from None
        if got != want:
            raise TrainError(
                f"{path}: corrupt checkpoint: its tensors do not match the digest they were written with "
                f"(sha256 {got} now, {want} when written)"
            )
    return meta


def check(path: Path, advice: bool = True) -> dict[str, str]:
    """The metadata of the checkpoint ``path`` to resume from, its header and tensors verified; a
    damaged or missing one is a :class:`~dlspec.train.TrainError` naming it, which (``advice``)
    says whether its backup generation is intact and how to resume from that."""
    path = Path(path)
    try:
        return _verified(path)
    except TrainError as e:
        if not advice:
            raise
        raise TrainError(f"{e.diagnostics[0].message}{backup_advice(path)}") from None


def backup_advice(path: Path) -> str:
    """``; the previous checkpoint … is intact: to resume from it, mv … and …`` (or why not)."""
    prev = backup_of(path)
    if not prev.is_file():
        return f"; there is no backup ({prev.name}): start a new run"
    try:
        meta = _verified(prev)
    except TrainError as e:
        return f"; its backup is damaged too ({e.diagnostics[0].message}): start a new run"
    run = path.parent
    return (
        f"; the previous checkpoint {prev} ({position(meta)}) is intact: to resume from it, "
        f"mv {shlex.quote(str(prev))} {shlex.quote(str(path))} and run dlspec train --resume {shlex.quote(str(run))} again"
    )


def check_identity(path: Path, meta: Mapping[str, str], spec_file: Path, spec_sha: str, data: str, data_sha: str | None) -> None:
    """Refuse to resume checkpoint ``path`` (metadata ``meta``) with another spec than ``spec_file``
    (digest ``spec_sha``) or other data than data set ``data`` now gives (``data_sha``), showing both
    digests. Checkpoints without the digests (earlier versions) pass."""
    was = meta.get(SPEC_KEY)
    if was is not None and was != spec_sha:
        raise TrainError(
            f"{path}: the checkpoint was trained from another spec than {spec_file} (sha256 {was} in the checkpoint, "
            f"{spec_sha} of {spec_file}): was {spec_file.name} edited? Restore it, or start a new run"
        )
    was = meta.get(DATA_KEY)
    if was is not None and data_sha is not None and was != data_sha:
        raise TrainError(
            f"{path}: the checkpoint was trained on other data than data '{data}' gives now (sha256 {was} in the checkpoint, "
            f"{data_sha} now): were its files replaced? Restore the files it was trained on, or start a new run"
        )
