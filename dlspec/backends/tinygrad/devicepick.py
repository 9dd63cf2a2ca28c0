"""tinygrad's default device, remembered across processes.

With no ``DEV`` set, tinygrad picks its device on first use by opening each runtime in turn
(METAL, AMD, NV, CUDA, QCOM, CL, then CPU), importing each one: on a machine with no accelerator
that costs about 0.4 s of every process before its first kernel (measured on the 2-core VM:
``Device.DEFAULT`` 0.83 s against 0.43 s for the CPU device alone). dlspec remembers the device
tinygrad chose in ``$XDG_CACHE_HOME/dlspec/device.json``, keyed by a fingerprint of what the choice
depends on — the tinygrad version, the host, the accelerator device files in ``/dev``, the OpenCL
vendor files, the dynamic linker's cache and the environment variables tinygrad's runtimes read —
and later processes set tinygrad's ``DEV`` to it, exactly as tinygrad itself does once it has
chosen (it sets ``DEV`` for its child processes). A remembered device that no longer opens, or a
changed fingerprint, means a new probe. ``DLSPEC_DEVICE_CACHE=0`` turns this off.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path

#: ``DLSPEC_DEVICE_CACHE=0``: always let tinygrad probe
ENV_SWITCH = "DLSPEC_DEVICE_CACHE"
FILE_NAME = "device.json"
#: the device files accelerators' drivers make (NVIDIA, AMD KFD, DRM render nodes, Qualcomm KGSL)
_DEV_PREFIXES = ("nvidia", "kfd", "dri", "kgsl", "accel")


def cache_path() -> Path:
    from ...data import cache_dir

    return cache_dir() / FILE_NAME


def fingerprint() -> str:
    """A digest of everything tinygrad's device choice depends on, cheap to compute (no imports,
    no subprocess): a change to any of it means a new probe."""
    from tinygrad.device import ALL_DEVICES

    parts: list[str] = [_tinygrad_version(), platform.node(), sys.platform, platform.machine()]
    try:
        parts += sorted(n for n in os.listdir("/dev") if n.startswith(_DEV_PREFIXES))
    except OSError:
        parts.append("no /dev")
    for path in ("/etc/OpenCL/vendors", "/etc/ld.so.cache"):
        try:
            st = os.stat(path)
            parts.append(f"{path}:{st.st_mtime_ns}:{st.st_size}")
            if os.path.isdir(path):
                parts += sorted(os.listdir(path))
        except OSError:
            parts.append(f"{path}:-")
    prefixes = tuple(ALL_DEVICES) + ("LD_LIBRARY_PATH", "PCI", "USB", "MOCK")
    parts += sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(prefixes))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _tinygrad_version() -> str:
    try:
        from importlib.metadata import version

        return version("tinygrad")
    except Exception:  # noqa: BLE001 - an uninstalled checkout
        return "unknown"


def _read() -> dict:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def remembered() -> str | None:
    """The device remembered for this machine's current fingerprint, if any."""
    known = _read().get(fingerprint())
    return known if isinstance(known, str) and known else None


def default_device() -> str:
    """tinygrad's default device: ``DEV`` when set; else the remembered choice for this machine's
    fingerprint, set as tinygrad's ``DEV`` (checked by opening it); else tinygrad's own probe, then
    remembered. Raises what ``Device.DEFAULT`` raises when no device at all is usable."""
    from tinygrad import Device
    from tinygrad.helpers import DEV

    if repr(DEV) or os.environ.get(ENV_SWITCH, "").strip() == "0":  # DEV set (a device, renderer, …)
        return Device.DEFAULT
    key = fingerprint()
    known = _read().get(key)
    if isinstance(known, str) and known:
        try:
            Device[known]  # opens it: a driver gone since means a new probe
            DEV.value = known
            os.environ["DEV"] = known  # as tinygrad's own choice does, for child processes
            return known
        except Exception:  # noqa: BLE001 - tinygrad raises many kinds here
            pass
    device = Device.DEFAULT
    from ...errors import DlspecError
    from ...runfiles import atomic_write

    data = {k: v for k, v in _read().items() if k != key}
    data[key] = device  # the newest last; 8 fingerprints at most
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_path(), json.dumps(dict(list(data.items())[-8:]), indent=1) + "\n")
    except (OSError, DlspecError):
        pass  # a read-only or full cache folder: the next process probes again
    return device
