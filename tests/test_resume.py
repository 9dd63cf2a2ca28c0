"""Exact resume for every objective (issue 15), checkpoint backups, identity checks, and errors
found while training reported at their spec lines.

* For the autoencoder (with ``noise``), the VAE, the GAN (dropout in its discriminator), the
  classifier (dropout) and the DQN (dropout, replay buffer, ε): a run trained straight is
  compared with one stopped early and resumed — every tensor of the final ``last.safetensors``
  byte for byte and every line of ``metrics.jsonl`` (less its wall-clock fields ``seconds`` and
  ``samples_per_s``) identical.
* ``last.safetensors`` damaged (a flipped byte, a truncation, removed): a clear error naming it and
  its intact backup ``last.prev.safetensors``; following the error's advice resumes exactly.
* Another spec or other data: refused, both sha256 digests shown (checked against ``hashlib``).

Every run is in-process (``cli.main``), on tiny models and the built-in ``shapes`` data.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shlex
import shutil
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import read_safetensors

from dlspec.cli import main

#: wall-clock fields of a metrics.jsonl line (the only ones that may differ between two runs)
WALL = ("seconds", "samples_per_s")

AE = """\
model AE {
  input image: [1, 28, 28]
  flatten
  dense 16 -> relu
  dense 784 -> sigmoid
  reshape [1, 28, 28]
}
train autoencoder AE {
  data shapes limit 128
  loss bce
  noise 0.1
  optimizer adam lr 3e-3
  batch 32
  epochs 2
  seed 3
}
"""

VAE = """\
model V {
  input image: [1, 28, 28]
  h = image -> flatten -> dense 16 -> tanh
  mu = h -> dense 2 as mu
  logvar = h -> dense 2 as logvar
  z = (mu, logvar) -> sample
  recon = z -> dense 784 -> sigmoid -> reshape [1, 28, 28]
  output recon, mu, logvar
}
train vae V {
  data shapes limit 128
  optimizer adam lr 3e-3
  batch 32
  epochs 2
  seed 3
}
"""

GAN = """\
model G {
  input z: [8]
  dense 784 -> sigmoid
  reshape [1, 28, 28]
}
model D {
  input image: [1, 28, 28]
  flatten
  dense 16 -> leaky_relu 0.2
  dropout 0.3
  dense 1
}
train gan generator G, discriminator D {
  data shapes limit 128
  batch 32
  epochs 2
  seed 3
}
"""

CLASSIFIER = """\
model C {
  input image: [1, 28, 28]
  flatten
  dropout 0.2
  dense 10
}
train C {
  data shapes limit 200
  optimizer sgd lr 0.02 momentum 0.9
  batch 20
  epochs 2
  seed 3
}
"""

DQN = """\
model Q {
  input observation: [4]
  dense 16 -> relu
  dropout 0.1
  dense 2
}
train dqn Q {
  env cartpole
  optimizer adam lr 1e-3
  buffer 64
  target_update 20
  epsilon 1.0 end 0.1 decay 200
  warmup 40
  batch 16
  episodes 12
  seed 3
}
"""

SPECS = {"autoencoder": AE, "vae": VAE, "gan": GAN, "classifier": CLASSIFIER}


def run_main(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def train(*args: str) -> tuple[str, Path | None]:
    """``dlspec train … --quiet``; (stderr, the run directory named in its log)."""
    code, _, err = run_main("train", *args, "--quiet")
    assert code == 0, err
    line = next((ln for ln in err.splitlines() if "run directory " in ln), None)
    return err, Path(line.split("run directory ", 1)[1].strip()) if line else None


def tensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    """Every tensor of a safetensors file as (dtype, shape, raw bytes), parsed independently."""
    return read_safetensors(path)[0]


def metadata(path: Path) -> dict[str, str]:
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]).get("__metadata__", {})


def lines(run: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock fields."""
    return [{k: v for k, v in json.loads(ln).items() if k not in WALL} for ln in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(got: Path, want: Path) -> None:
    a, b = tensors(got / "last.safetensors"), tensors(want / "last.safetensors")
    assert set(a) == set(b) and len(a) >= 4
    different = sorted(k for k in b if a[k] != b[k])
    assert not different, f"the resumed run differs from the uninterrupted one in {different}"
    assert lines(got) == lines(want)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def runs(work):
    """Per objective: (spec file, the 2-epoch run trained straight, the 1-epoch run resumed to 2, its stderr)."""
    out = {}
    for kind, text in SPECS.items():
        spec = work / f"{kind}.dl"
        spec.write_text(text)
        _, straight = train(str(spec), "--out", str(work / kind / "straight"))
        _, resumed = train(str(spec), "--out", str(work / kind / "resumed"), "--epochs", "1")
        assert json.loads((resumed / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1
        err, _ = train("--resume", str(resumed), "--epochs", "2")
        out[kind] = spec, straight, resumed, err
    return out


# ---- bit-identical resume -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SPECS))
def test_stopped_and_resumed_run_is_bit_identical(runs, kind):
    """2 epochs straight vs 1 epoch + ``--resume --epochs 2``: every tensor of last.safetensors and
    every metrics.jsonl line (less seconds, samples_per_s) identical. The autoencoder's noise, the
    VAE's sampling and the GAN's and classifier's dropout draw from tinygrad's random stream inside
    captured TinyJit steps: before the stream was reseeded in place, the autoencoder's epoch-2
    train loss differed (0.644541 vs 0.644628)."""
    _, straight, resumed, err = runs[kind]
    assert "resumed after epoch 1" in err
    assert [r["epoch"] for r in lines(resumed)] == [1, 2]
    assert_same_run(resumed, straight)
    first = tensors(straight / "last.prev.safetensors")  # epoch 1's weights differ from epoch 2's: the comparison can fail
    assert any(first[k] != v for k, v in tensors(straight / "last.safetensors").items())


def test_dqn_resumes_bit_identically(work):
    """A DQN stopped after 10 episodes (its checkpoint: weights, target network, optimizer, replay
    buffer, ε position, exploration RNG) and resumed with --episodes 12 ends exactly as 12 straight."""
    pytest.importorskip("gymnasium")
    spec = work / "dqn.dl"
    spec.write_text(DQN)
    _, straight = train(str(spec), "--out", str(work / "dqn" / "straight"))
    _, resumed = train(str(spec), "--out", str(work / "dqn" / "resumed"), "--episodes", "10")
    before = tensors(resumed / "last.safetensors")
    assert int(metadata(resumed / "last.safetensors")["episode"]) == 10
    state = json.loads(metadata(resumed / "last.safetensors")["dqn_state"])
    assert state["steps"] > 64 and state["replay"]["n"] == 64 and before["replay.s"][1] == [64, 4]  # the ring buffer wrapped
    err, _ = train("--resume", str(resumed), "--episodes", "12")
    assert "resumed after episode 10" in err
    assert [r["episode"] for r in lines(resumed)] == list(range(1, 13))
    assert_same_run(resumed, straight)
    assert before["model.dense1.weight"] != tensors(resumed / "last.safetensors")["model.dense1.weight"]
    code, _, err = run_main("train", "--resume", str(resumed), "--epochs", "13")
    assert code == 2 and "--epochs does not apply to 'train dqn'" in err
    code, _, err = run_main("train", "--resume", str(resumed), "--episodes", "0")
    assert code == 2 and "--episodes must be positive, got 0" in err


def test_episodes_on_resume_is_for_dqn_only(runs):
    code, _, err = run_main("train", "--resume", str(runs["vae"][2]), "--episodes", "3")
    assert code == 2 and "--episodes applies to 'train dqn' only; 'train vae' trains for --epochs" in err


# ---- damaged checkpoints --------------------------------------------------------------------------


def _data_start(path: Path) -> int:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + n


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_damaged_checkpoint_names_its_intact_backup(runs, tmp_path, damage):
    """A bad last.safetensors: exit 1, one clear error naming it and the intact backup with the
    command that resumes from it; following it ends exactly as the uninterrupted run."""
    _, straight, _, _ = runs["autoencoder"]
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    last, prev = run / "last.safetensors", run / "last.prev.safetensors"
    assert metadata(prev)["epoch"] == "1" and metadata(last)["epoch"] == "2"  # one backup generation
    raw = bytearray(last.read_bytes())
    if damage == "flipped byte":
        raw[_data_start(last) + 1000] ^= 0x40  # inside the weights: the header still checks out
    else:
        raw = raw[:-300]
    last.write_bytes(bytes(raw))
    code, _, err = run_main("train", "--resume", str(run), "--quiet")
    assert code == 1, err
    assert "internal error" not in err and "Traceback" not in err
    [first] = [ln for ln in err.splitlines() if "error" in ln]
    assert first.startswith(f"dlspec: error: {last}: ")
    assert ("corrupt checkpoint: its tensors do not match" if damage == "flipped byte" else "truncated") in first
    advice = f"the previous checkpoint {prev} (epoch 1) is intact: to resume from it, mv {shlex.quote(str(prev))} {shlex.quote(str(last))}"
    assert advice in first
    shutil.move(prev, last)  # what the error says to do
    err, _ = train("--resume", str(run))
    assert "resumed after epoch 1" in err
    assert_same_run(run, straight)


def test_damaged_checkpoint_without_backup(runs, tmp_path):
    _, _, resumed, _ = runs["vae"]
    run = tmp_path / "run"
    shutil.copytree(resumed, run)
    (run / "last.prev.safetensors").unlink()
    (run / "last.safetensors").write_bytes((run / "last.safetensors").read_bytes()[:40])
    code, _, err = run_main("train", "--resume", str(run))
    assert code == 1 and "internal error" not in err
    assert f"{run / 'last.safetensors'}: truncated safetensors file" in err and "there is no backup (last.prev.safetensors)" in err


def test_missing_checkpoint_with_a_backup_is_not_restarted(runs, tmp_path):
    """last.safetensors removed but its backup there: the run is not silently trained from scratch."""
    _, straight, _, _ = runs["gan"]
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    (run / "last.safetensors").unlink()
    metrics = (run / "metrics.jsonl").read_text()
    code, _, err = run_main("train", "--resume", str(run))
    assert code == 1 and "internal error" not in err
    assert f"{run / 'last.safetensors'}: no such checkpoint" in err and "(epoch 1) is intact" in err
    assert (run / "metrics.jsonl").read_text() == metrics  # nothing cleared


# ---- another spec, other data ---------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["classifier", "autoencoder"])
def test_resume_with_an_edited_spec_is_refused_with_both_digests(runs, tmp_path, kind):
    _, straight, _, _ = runs[kind]
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    old = sha256(run / "spec.dl")
    (run / "spec.dl").write_text((run / "spec.dl").read_text().replace("seed 3", "seed 4"))
    new = sha256(run / "spec.dl")
    code, _, err = run_main("train", "--resume", str(run), "--epochs", "3")
    assert code == 1 and "internal error" not in err
    assert "trained from another spec" in err
    assert f"sha256 {old} in the checkpoint, {new} of {run / 'spec.dl'}" in err
    assert metadata(run / "last.safetensors")["epoch"] == "2"


def test_resume_with_another_spec_file_shows_both_digests(runs, tmp_path):
    spec, straight, _, _ = runs["classifier"]
    other = tmp_path / "other.dl"
    other.write_text(spec.read_text().replace("lr 0.02", "lr 0.5"))
    code, _, err = run_main("train", str(other), "--resume", str(straight))
    assert code == 2 and "another spec" in err
    assert f"sha256 {sha256(straight / 'spec.dl')} of its spec.dl, {sha256(other)} of {other}" in err


@pytest.mark.parametrize("kind", ["classifier", "gan"])
def test_resume_on_other_data_is_refused_with_both_digests(runs, tmp_path, kind):
    """The data a run resumes on are not those it was trained on (here: config.json's data options
    edited, so data 'shapes' generates another set): refused, showing the checkpoint's digest and
    that of the data now."""
    from dlspec import data
    from dlspec.resume import data_digest

    _, straight, _, _ = runs[kind]
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data_options"] = {**cfg["data_options"], "seed": 7}
    (run / "config.json").write_text(json.dumps(cfg))
    was = metadata(run / "last.safetensors")["data_sha256"]
    code, _, err = run_main("train", "--resume", str(run), "--epochs", "3")
    assert code == 1 and "internal error" not in err
    assert "trained on other data than data 'shapes' gives now" in err
    now = err.split(f"sha256 {was} in the checkpoint, ", 1)[1].split(" now)", 1)[0]
    assert len(now) == 64 and now != was
    if kind == "gan":  # what an objective trains and tests on: the train and test splits
        limit = cfg["limit"]
        splits = [data.load("shapes", s, seed=7) for s in ("train", "test")]
        splits = [replace(d, x=d.x[:n], y=d.y[:n]) for d, n in zip(splits, (limit, max(cfg["batch"], limit // 5)))]
        assert now == data_digest(*splits)


# ---- errors found while training, at their spec lines ---------------------------------------------

NET = """\
model C {
  input image: [1, 28, 28]
  flatten
  dense 10
}
model AE {
  input image: [1, 28, 28]
  flatten
  dense 784 -> sigmoid
}
model G {
  input z: [8]
  dense 784 -> sigmoid
}
model D {
  input image: [784]
  dense 1
}
"""


def _failed(tmp_path: Path, section: str, *args: str) -> tuple[int, str, Path]:
    spec = tmp_path / "spec.dl"
    spec.write_text(NET + section)
    code, _, err = run_main("train", str(spec), "--out", str(tmp_path / "runs"), "--quiet", *args)
    assert "internal error" not in err and "Traceback" not in err
    assert not list((tmp_path / "runs").glob("*/last.safetensors"))
    return code, err, spec


def _at(spec: Path, text: str) -> int:
    return next(i for i, ln in enumerate(spec.read_text().splitlines(), 1) if ln.strip() == text)


@pytest.mark.parametrize("kind", ["classifier", "autoencoder"])
def test_optimizer_error_is_at_its_spec_line(tmp_path, kind):
    """``nesterov true`` without momentum passes ``check`` (each option is fine alone) and is found
    when the optimizer is made: the error is rendered at the spec line, source line and caret
    included (for an autoencoder it was an internal error)."""
    head = "train C {" if kind == "classifier" else "train autoencoder AE {"
    code, err, spec = _failed(tmp_path, f"{head}\n  data shapes length 40\n  batch 10\n  optimizer sgd lr 0.1 nesterov true\n}}\n")
    line = _at(spec, "optimizer sgd lr 0.1 nesterov true")
    assert code == 1
    want = (
        f"{spec}:{line}:3: error: optimizer sgd: nesterov needs a momentum > 0\n"
        "   |\n"
        f"{line} |   optimizer sgd lr 0.1 nesterov true\n"
        f"   |   ^{'~' * (len('optimizer sgd lr 0.1 nesterov true') - 1)}\n"
    )
    assert want in err


def test_gan_optimizer_error_is_at_its_own_line(tmp_path):
    code, err, spec = _failed(
        tmp_path, "train gan generator G, discriminator D {\n  data shapes length 40\n  batch 10\n  d_optimizer sgd nesterov true\n}\n"
    )
    assert (
        code == 1 and f"{spec}:{_at(spec, 'd_optimizer sgd nesterov true')}:3: error: optimizer sgd: nesterov needs a momentum > 0" in err
    )


def test_data_and_range_errors_are_at_the_data_line(tmp_path):
    code, err, spec = _failed(tmp_path, "train C {\n  data shapes length 40 classes 20\n}\n")
    assert code == 1
    assert f"{spec}:{_at(spec, 'data shapes length 40 classes 20')}:3: error: data option 'classes'" in err
    code, err, spec = _failed(tmp_path, "train C {\n  data shapes length 40 val_split 1.5\n}\n")
    assert code == 1
    assert f"{spec}:{_at(spec, 'data shapes length 40 val_split 1.5')}:3: error: val_split: Input should be less than 1 (got 1.5)" in err
    code, err, _ = _failed(tmp_path, "train C {\n  data shapes length 40\n}\n", "--val-split", "1.5")  # the command line's: a usage error
    assert code == 2 and err.startswith("dlspec: error: bad training configuration: val_split")


def test_loss_that_does_not_fit_is_at_the_loss_line(tmp_path):
    code, err, spec = _failed(tmp_path, "train C {\n  data shapes length 40\n  batch 10\n  loss mse\n}\n")
    assert code == 1
    assert f"{spec}:{_at(spec, 'loss mse')}:3: error: loss mse on C: mse: target shape (10,) does not match output shape (10, 10)" in err
    code, err, _ = _failed(tmp_path, "train C {\n  data shapes length 40\n  batch 10\n}\n", "--loss", "mse")
    assert code == 1 and err.splitlines()[-1].startswith("dlspec: error: loss mse on C: mse: target shape")  # no spec line to show
