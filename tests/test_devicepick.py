"""tinygrad's default device remembered across processes (dlspec/backends/tinygrad/devicepick.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PICK = (
    "import json, os, sys\n"
    "from dlspec.backends.tinygrad import check_device\n"
    "from tinygrad.helpers import DEV\n"
    "print(json.dumps({'device': check_device(None), 'dev': repr(DEV), 'env': os.environ.get('DEV')}))\n"
)
PROBE = "from tinygrad import Device; print(Device.DEFAULT)"


def _run(code: str, cache, **env) -> str:
    e = {k: v for k, v in os.environ.items() if k not in ("DEV", "DLSPEC_DEVICE_CACHE")}
    e.update(XDG_CACHE_HOME=str(cache), **env)
    done = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _fingerprint(cache) -> str:
    return _run("from dlspec.backends.tinygrad.devicepick import fingerprint; print(fingerprint())", cache)


def test_the_remembered_device_is_tinygrads_choice(tmp_path):
    probed = _run(PROBE, tmp_path)  # tinygrad's own probe, nothing remembered
    first = json.loads(_run(PICK, tmp_path))
    assert first["device"] == probed
    stored = json.loads((tmp_path / "dlspec" / "device.json").read_text())
    assert stored == {_fingerprint(tmp_path): probed}
    second = json.loads(_run(PICK, tmp_path))  # from the file: DEV set as tinygrad sets it
    assert second == {"device": probed, "dev": probed, "env": probed}


def test_a_device_that_no_longer_opens_means_a_new_probe(tmp_path):
    probed = _run(PROBE, tmp_path)
    (tmp_path / "dlspec").mkdir()
    key = _fingerprint(tmp_path)
    (tmp_path / "dlspec" / "device.json").write_text(json.dumps({key: "NOSUCHDEVICE", "other": "CPU"}))
    assert json.loads(_run(PICK, tmp_path))["device"] == probed
    assert json.loads((tmp_path / "dlspec" / "device.json").read_text()) == {"other": "CPU", key: probed}


def test_a_set_DEV_wins_and_nothing_is_written(tmp_path):
    out = json.loads(_run(PICK, tmp_path, DEV="NULL"))
    assert out["device"] == "NULL"
    assert not (tmp_path / "dlspec" / "device.json").exists()


def test_switched_off_or_unwritable_still_picks(tmp_path):
    probed = _run(PROBE, tmp_path)
    assert json.loads(_run(PICK, tmp_path, DLSPEC_DEVICE_CACHE="0"))["device"] == probed
    assert not (tmp_path / "dlspec").exists()
    (tmp_path / "dlspec").write_text("a file where dlspec's cache folder would be")
    assert json.loads(_run(PICK, tmp_path))["device"] == probed


def test_the_fingerprint_follows_the_runtimes_environment(tmp_path):
    base = _fingerprint(tmp_path)
    assert _fingerprint(tmp_path) == base
    assert _run("from dlspec.backends.tinygrad.devicepick import fingerprint; print(fingerprint())", tmp_path, CUDA_PATH="/x") != base
    assert _run("from dlspec.backends.tinygrad.devicepick import fingerprint; print(fingerprint())", tmp_path, UNRELATED_VAR="1") == base
