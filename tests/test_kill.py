"""kill -9 at any moment, then ``--resume``: bit-identical to a run trained straight (issue 15).

For every objective (classifier, denoising autoencoder, VAE, GAN, DQN) a ``dlspec train``
subprocess is trained straight, and another one is killed with SIGKILL six times and resumed
after each kill, then resumed to its end. The kill points are drawn at random (seeded, shown on
failure): a random moment after start (imports, kernel compilation), a random moment after a
random epoch's log line (mid-training), and inside file writes — the ``N``-th write of any run
file, a line of ``metrics.jsonl``, and the first and second write of ``last.safetensors`` — where
the writer is paused halfway through its bytes by the test hook ``DLSPEC_TEST_PAUSE_WRITE``
(:data:`dlspec.runfiles.PAUSE_ENV`) and killed there. Every tensor of the final
``last.safetensors`` (and ``best.safetensors`` where the objective keeps one) and every line of
``metrics.jsonl`` less its wall-clock fields must equal the straight run's.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_resume import AE, CLASSIFIER, DQN, GAN, VAE, lines, tensors

from dlspec.runfiles import PAUSE_ENV

ROOT = Path(__file__).resolve().parent.parent


def longer(spec: str, epochs: int) -> str:
    return spec.replace("epochs 2", f"epochs {epochs}").replace("episodes 12", f"episodes {epochs}")


SPECS = {
    "classifier": longer(CLASSIFIER, 5),
    "autoencoder": longer(AE, 5),
    "vae": longer(VAE, 5),
    "gan": longer(GAN, 5),
    "dqn": longer(DQN, 24),
}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dlspec", "train", *args, "--quiet"]


def env(pause: str | None = None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
    if pause:
        e[PAUSE_ENV] = pause
    return e


def run_to_end(args: list[str]) -> str:
    done = subprocess.run(command(*args), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stderr


def kill_at(args: list[str], point: tuple) -> str:
    """Start ``dlspec train args``, SIGKILL it at ``point``; its stderr so far."""
    kind = point[0]
    proc = subprocess.Popen(
        command(*args),
        cwd=ROOT,
        env=env(point[1] if kind == "write" else None),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: tinygrad's compiler workers die with it
    )
    got: list[str] = []
    hit = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            got.append(line)
            if kind == "write" and line.startswith("dlspec-test: paused writing"):
                hit.set()
            if (
                kind == "after"
                and line.startswith(("epoch ", "episode "))
                and sum(ln.startswith(("epoch ", "episode ")) for ln in got) >= point[1]
            ):
                hit.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if kind == "time":
        hit.wait(point[1])
    else:
        deadline = time.monotonic() + 300
        while not hit.is_set() and proc.poll() is None and time.monotonic() < deadline:
            hit.wait(0.05)
        if kind == "after":
            time.sleep(point[2])
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9 of the run (and of the workers it started)
    proc.wait()
    reader.join(5)
    return "".join(got)


def kill_points(rng: random.Random) -> list[tuple]:
    points = [
        ("time", round(rng.uniform(1.0, 6.0), 2)),
        ("write", "last.safetensors:1"),
        ("after", rng.randint(1, 2), round(rng.uniform(0.0, 0.3), 3)),
        ("write", f"*:{rng.randint(3, 9)}"),
        ("write", "metrics.jsonl:1"),
        ("write", "last.safetensors:2"),
    ]
    rng.shuffle(points)
    return points


@pytest.mark.slow  # 1-3 minutes per objective: eight processes, each compiling its kernels
@pytest.mark.parametrize("kind", list(SPECS))
def test_kill_9_anywhere_then_resume_is_bit_identical(kind, tmp_path):
    spec = tmp_path / f"{kind}.dl"
    spec.write_text(SPECS[kind])
    seed = random.randrange(1 << 30)
    points = kill_points(random.Random(seed))
    where = f"kill points {points} (seed {seed})"

    run_to_end([str(spec), "--out", str(tmp_path / "straight")])
    (straight,) = (tmp_path / "straight").iterdir()

    out = tmp_path / "killed"
    log = []
    for point in points:
        runs = list(out.iterdir()) if out.exists() else []
        if runs and not (runs[0] / "config.json").is_file():  # killed while the run directory was being made
            shutil.rmtree(runs[0])
            runs = []
        args = ["--resume", str(runs[0])] if runs else [str(spec), "--out", str(out)]
        err = kill_at(args, point)
        assert "Traceback" not in err, f"{where}: {err}"
        log.append((point, err.strip().splitlines()[-1:] if err.strip() else []))
    runs = list(out.iterdir()) if out.exists() else []
    if runs and not (runs[0] / "config.json").is_file():
        shutil.rmtree(runs[0])
        runs = []
    run_to_end(["--resume", str(runs[0])] if runs else [str(spec), "--out", str(out)])
    (killed,) = out.iterdir()

    for name in ("last.safetensors", "best.safetensors"):
        if (straight / name).exists():
            a, b = tensors(killed / name), tensors(straight / name)
            assert set(a) == set(b), f"{where}: {name} has other tensors"
            different = sorted(k for k in b if a[k] != b[k])
            assert not different, f"{where}: {name} differs in {different}; {log}"
    assert lines(killed) == lines(straight), f"{where}: metrics.jsonl differs; {log}"
    assert not [p.name for p in killed.iterdir() if p.name.endswith(".tmp")], "temporary files left behind"
