"""Writing run files safely: one atomic-write path for every file a run (or ``net.save``) writes.

Every file is written to a temporary sibling ``.NAME.PID.XXXXXXXX.tmp`` with plain ``write()``
calls (never through a memory map: a full disk is an ``ENOSPC`` error, not a ``SIGBUS``),
fsynced, then renamed over ``NAME`` (``os.replace``), and the folder fsynced. The temporary file is
created like a normal ``open()`` does (mode ``0o666`` less the umask: ``0644`` under the usual
umask 022). On any ``OSError`` the temporary file is removed, the previous ``NAME`` stays as it
was, and a :class:`WriteError` names the file and the reason::

    runs/x/last.safetensors: cannot write checkpoint: No space left on device

A checkpoint being replaced can be kept as a backup generation (:func:`keeping_backup`: a hard
link renamed into place once the new file is written, so neither file is ever missing or half
written, and a failed write changes neither).

``metrics.jsonl`` lines are appended whole: a failed append is truncated back, so the file never
ends in half a line. Temporary files left by a killed process (its pid is gone) are removed by
:func:`remove_stale_temps`, on the next write of the same file and when a run is resumed.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from .errors import DlspecError


class WriteError(DlspecError):
    """A file that cannot be written (a full disk, a read-only folder, …): exit code 1."""

    stage = "write"

    def __init__(self, message: str, path: Path | str | None = None):
        super().__init__(message)
        self.path = Path(path) if path is not None else None


#: flags of a new temporary file: created here or not at all, never inherited by child processes
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
#: what a file is called in messages, by name or suffix
_WHAT = {
    "metrics.jsonl": "metrics",
    "config.json": "run configuration",
    "summary.json": "run summary",
    "eval.json": "evaluation results",
    "spec.dl": "spec copy",
    ".safetensors": "checkpoint",
    ".svg": "plot",
    ".png": "image",
}
#: a temporary file of this module: ``.NAME.PID.HEX8.tmp``
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
#: temporary files of earlier dlspec versions: ``.NAME.XXXXXXXX.tmp`` (mkstemp), ``.NAME.tmpPID[.png]``
_LEGACY = (re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$"), re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)(\.png)?$"))
#: bytes gathered before a ``write()`` call
_CHUNK = 1 << 20


def describe(path: Path | str) -> str:
    """What ``path`` is, for messages: ``checkpoint``, ``metrics``, ``plot``, … (else ``file``)."""
    p = Path(path)
    return _WHAT.get(p.name) or _WHAT.get(p.suffix.lower()) or "file"


def _write(fd: int, data: memoryview) -> int:
    """One ``write()`` system call (the single place bytes reach a file; tests replace it)."""
    return os.write(fd, data)


#: a test hook for kill-at-any-moment tests: ``DLSPEC_TEST_PAUSE_WRITE=NAME[:N]`` makes the ``N``-th
#: (default first) write of a file named ``NAME`` (``*``: of any file) in this process stop after
#: half its bytes, say ``dlspec-test: paused writing PATH`` on stderr and sleep until it is killed
PAUSE_ENV = "DLSPEC_TEST_PAUSE_WRITE"
_pause_count = [0]  # writes the hook has counted in this process (only ever set under the test variable)


def _pause_point(path: Path) -> bool:
    """Whether this write of ``path`` is the one :data:`PAUSE_ENV` pauses in."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return False
    name, _, n = spec.partition(":")
    if name not in ("*", path.name):
        return False
    _pause_count[0] += 1
    return _pause_count[0] == int(n or 1)


def _pause(fd: int, view: memoryview, path: Path) -> None:
    """Write half of ``view``, then wait to be killed (see :data:`PAUSE_ENV`)."""
    import time

    half = view[: len(view) // 2]
    while half:
        half = half[os.write(fd, half) :]
    os.write(2, f"dlspec-test: paused writing {path}\n".encode())
    while True:
        time.sleep(3600)


def _write_all(fd: int, data: bytes | bytearray | memoryview, pause: Path | None = None) -> None:
    view = memoryview(data).cast("B")
    if pause is not None and view:
        _pause(fd, view, pause)
    while view:
        n = _write(fd, view[:_CHUNK])
        if n <= 0:  # pragma: no cover - a regular file never takes 0 bytes without an error
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        view = view[n:]


class _FdWriter:
    """A minimal buffered writer on a file descriptor, through :func:`_write`."""

    def __init__(self, fd: int, pause: Path | None = None):
        self.fd, self.buf, self.pause = fd, bytearray(), pause

    def write(self, data: bytes | bytearray | memoryview | str) -> int:
        if isinstance(data, str):
            data = data.encode("utf-8")
        view = memoryview(data).cast("B")
        if len(view) >= _CHUNK:
            self.flush()
            _write_all(self.fd, view, self.pause)
        else:
            self.buf += view
            if len(self.buf) >= _CHUNK:
                self.flush()
        return len(view)

    def flush(self) -> None:
        if self.buf:
            _write_all(self.fd, self.buf, self.pause)
            self.buf.clear()


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # a file system without fsync: nothing more to do
            raise


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: some systems cannot open or sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(e: OSError, path: Path) -> str:
    if e.errno == errno.ENOENT and not path.parent.is_dir():
        return f"folder {path.parent} does not exist"
    return e.strerror or str(e)


def atomic_write(path: Path | str, data: bytes | str | Callable[[Any], None], what: str | None = None) -> None:
    """Write ``data`` (bytes, text as UTF-8, or a function given a file object with ``write``)
    to ``path`` atomically: a temporary sibling, fsynced, renamed over ``path``. On an
    ``OSError`` (a full disk, a read-only folder, …) the temporary file is removed, the old
    ``path`` is untouched and a :class:`WriteError` names the file and the reason."""
    path = Path(path)
    what = what or describe(path)
    remove_stale_temps(path.parent, name=path.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = -1
    try:
        fd = os.open(tmp, _CREATE, 0o666)  # 0o666 less the umask, as open() creates files
        out = _FdWriter(fd, path if _pause_point(path) else None)
        if callable(data):
            data(out)
        else:
            out.write(data)
        out.flush()
        _fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException as e:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise WriteError(f"{path}: cannot write {what}: {_reason(e, path)}", path) from None
        raise
    fsync_dir(path.parent)


@contextmanager
def keeping_backup(path: Path | str, backup: Path | str) -> Iterator[None]:
    """Around a block that replaces ``path`` (with :func:`atomic_write`): once the block has
    succeeded, what ``path`` held before it is ``backup``. ``path``'s old contents are hard-linked
    to a temporary name first (copied, where links are not supported) and renamed over ``backup``
    only after the block: ``path`` is never missing, ``backup`` is always whole, and a block that
    fails (a full disk) leaves both as they were. Killed in between, the temporary file is
    removed later (:func:`remove_stale_temps`) and ``backup`` is one generation older. A
    :class:`WriteError` names ``backup`` if it cannot be written."""
    path, backup = Path(path), Path(backup)
    if not path.is_file():
        yield
        return
    what = f"{describe(backup)} backup"
    remove_stale_temps(backup.parent, name=backup.name)
    tmp = backup.with_name(f".{backup.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        os.link(path, tmp)
    except OSError:  # no hard links here (FAT, some network file systems): a copy
        try:
            data = path.read_bytes()
        except OSError as e:
            raise WriteError(f"{backup}: cannot write {what}: {_reason(e, path)}", backup) from None
        _write_temp(tmp, data, backup, what)
    try:
        yield
    except BaseException:
        _unlink(tmp)
        raise
    try:
        os.replace(tmp, backup)
    except OSError as e:
        _unlink(tmp)
        raise WriteError(f"{backup}: cannot write {what}: {_reason(e, backup)}", backup) from None
    fsync_dir(backup.parent)


def _write_temp(tmp: Path, data: bytes, path: Path, what: str) -> None:
    """``data`` to the new file ``tmp``, fsynced (removed again on an error: a :class:`WriteError` naming ``path``)."""
    fd = -1
    try:
        fd = os.open(tmp, _CREATE, 0o666)
        _write_all(fd, data)
        _fsync(fd)
    except OSError as e:
        _unlink(tmp)
        raise WriteError(f"{path}: cannot write {what}: {_reason(e, path)}", path) from None
    finally:
        if fd >= 0:
            os.close(fd)


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def append_line(path: Path | str, line: str, what: str | None = None) -> None:
    """Append one line (``line`` plus a newline) to ``path`` and fsync it; the line is written
    whole or not at all (a failed write is truncated back): a :class:`WriteError` then."""
    path = Path(path)
    what = what or describe(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise WriteError(f"{path}: cannot write {what}: {_reason(e, path)}", path) from None
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data, path if _pause_point(path) else None)
            _fsync(fd)
        except BaseException as e:
            try:
                os.ftruncate(fd, size)  # no half line: the file as it was
            except OSError:
                pass
            if isinstance(e, OSError):
                raise WriteError(f"{path}: cannot write {what}: {_reason(e, path)}", path) from None
            raise
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (EPERM): alive
        return True
    return True


def remove_stale_temps(folder: Path | str, name: str | None = None, legacy: bool = False) -> list[Path]:
    """Remove temporary files of interrupted writes in ``folder`` whose process is gone (all
    files' or only ``name``'s); with ``legacy`` also those of earlier dlspec versions without
    a live pid in their name (use only on a folder no other process writes, a resumed run's).
    Best effort: a file that cannot be removed stays. Returns the files removed."""
    folder = Path(folder)
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for entry in entries:
        if not entry.startswith("."):
            continue
        m = _TEMP.match(entry)
        stale = m is not None and not _alive(int(m["pid"]))
        if m is None and legacy:
            for pattern in _LEGACY:
                m = pattern.match(entry)
                if m is not None:
                    pid = m.groupdict().get("pid")
                    stale = pid is None or not _alive(int(pid))
                    break
        if not stale or m is None or (name is not None and m["name"] != name):
            continue
        p = folder / entry
        try:
            if p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed
