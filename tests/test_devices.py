"""``dlspec train --devices D1,D2,…``: data parallel in one process (issue 18).

Every test runs on tinygrad's CPU device twice over (``CPU:0``, ``CPU:1``: two devices of one
machine, each with its own buffers and kernels), on tiny models and the built-in ``shapes`` data:

* a 2-device run equals a 1-device run on the same global batches (every tensor of the checkpoint,
  weights and Adam's state, after 3 steps: relative error < 1e-5), for an MLP and a conv net with
  batch norm synced (``sync_bn true``); the checkpoint holds one copy of each tensor;
* batch norm per device (the default): the weights after 3 Adam steps equal a 1-device reference
  that normalises each device's share on its own (the loss of each share with its own statistics,
  averaged), and the running statistics are the first device's share's, as NumPy computes them in
  float64; synced, they are the whole batch's;
* ``--resume`` of a 2-device run (with dropout and batch norm) is bit-identical to the run trained
  straight, and ``--device`` moves a resumed run to one device;
* a batch that does not divide across the devices, an unknown device, a device listed twice,
  ``--device`` with a list of ``--devices``: one clear error line (exit 2 on the command line, 1 at
  the spec's line), no traceback, no run directory; the last partial batch of an epoch is cut to a
  multiple of the devices (evaluation keeps the rest as a batch of its own).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import read_safetensors, run_main

DEVICES = "CPU:0,CPU:1"

MLP = """\
model M {
  input image: [1, 28, 28]
  flatten
  dense 16 -> relu
  dense 10
}
train M {
  data shapes limit 64 val_split 0
  optimizer adam lr 0.01
  batch 16
  epochs 1
  seed 1
}
"""

CONV_BN = """\
model B {
  input image: [1, 28, 28]
  conv 4 kernel 5 stride 3, bias false
  batchnorm -> relu
  flatten
  dense 10
}
train B {
  data shapes limit 64 val_split 0
  optimizer adam lr 0.01
  batch 16
  epochs 1
  seed 1
  sync_bn true
}
"""

#: dropout (a random stream per device) and batch norm per device: what --resume must restore exactly;
#: 43 training samples: batches of 12, 12, 12 and the last 7 cut to 6 (3 per device); 11 validation
#: samples: 10 split, the last one computed whole on each device
RESUMED = """\
model R {
  input image: [1, 28, 28]
  flatten
  dense 12
  batchnorm -> relu
  dropout 0.2
  dense 10
}
train R {
  data shapes limit 54 val_split 0.2
  optimizer adam lr 0.01
  batch 12
  epochs 2
  seed 3
}
"""


def train(*args: str) -> tuple[str, Path]:
    """``dlspec train … --quiet``; (stderr, the run directory named in its log)."""
    code, _, err = run_main("train", *args, "--quiet")
    assert code == 0, err
    line = next(ln for ln in err.splitlines() if "run directory " in ln)
    return err, Path(line.split("run directory ", 1)[1].strip())


def tensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    """Every tensor of a safetensors file as (dtype, shape, raw bytes), parsed independently."""
    return read_safetensors(path)[0]


def arrays(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for k, (dtype, shape, raw) in tensors(path).items():
        out[k] = np.frombuffer(raw, dtype={"F32": np.float32, "I64": np.int64, "I32": np.int32}[dtype]).reshape(shape).astype(np.float64)
    return out


def lines(run: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock fields."""
    wall = ("seconds", "samples_per_s")
    return [{k: v for k, v in json.loads(ln).items() if k not in wall} for ln in (run / "metrics.jsonl").read_text().splitlines()]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# ---- the configuration: --devices, --device, the spec's settings ------------------------------------


def test_placement_of_device_and_devices():
    from dlspec.errors import UsageError
    from dlspec.train import placement

    assert placement(None, ["CPU:0", "CPU:1"]) == {"device": None, "devices": ["CPU:0", "CPU:1"]}
    assert placement("CUDA", 2) == {"device": None, "devices": ["CUDA:0", "CUDA:1"]}  # --device KIND --devices N
    assert placement(None, ["CPU:1"]) == {"device": "CPU:1", "devices": None}  # one device: no split
    assert placement("CPU", None) == {"device": "CPU", "devices": None}
    with pytest.raises(UsageError, match="give --device or --devices, not both"):
        placement("CPU", ["CPU:0", "CPU:1"])
    with pytest.raises(UsageError, match="give --device CUDA, not CUDA:1"):
        placement("CUDA:1", 2)


def test_spec_settings_and_overrides():
    import dlspec
    from dlspec.train import resolve

    spec = MLP.replace("  seed 1\n", '  seed 1\n  devices "CPU:0", "CPU:1"\n  sync_bn true\n')
    prog = dlspec.load(spec)
    assert prog.check() == []
    cfg = resolve(prog, "m.dl", None, {})
    assert (cfg.device, cfg.devices, cfg.sync_bn) == (None, ["CPU:0", "CPU:1"], True)
    assert resolve(prog, "m.dl", None, {"device": "CPU"}).devices is None  # --device: one device
    assert resolve(prog, "m.dl", None, {"devices": 3}).devices == ["CPU:0", "CPU:1", "CPU:2"]
    counted = dlspec.load(MLP.replace("  seed 1\n", "  seed 1\n  devices 2\n  device CUDA\n"))
    assert counted.check() == [] and resolve(counted, "m.dl", None, {}).devices == ["CUDA:0", "CUDA:1"]
    assert resolve(dlspec.load(MLP), "m.dl", None, {}).devices is None


@pytest.mark.parametrize(
    "setting, message",
    [
        ('devices "CPU:0", "CPU:1"\n  device "CPU"', "'devices' names the devices itself: set 'device' or 'devices', not both"),
        ("devices 0", "'devices' must be positive, got 0"),
        ('devices "CPU:0", 2', "'devices' takes device names or one count, got 2"),
        ("sync_bn 1", "'sync_bn' must be true or false, got 1"),
    ],
)
def test_bad_device_settings_are_located(tmp_path, setting, message):
    spec = tmp_path / "m.dl"
    spec.write_text(MLP.replace("  seed 1\n", f"  seed 1\n  {setting}\n"))
    code, _, err = run_main("check", str(spec))
    assert code == 1 and message in err and f"{spec}:" in err, err
    assert "Traceback" not in err


# ---- batches that split evenly ------------------------------------------------------------------------


def test_loader_cuts_the_last_batch_to_a_multiple_of_the_devices():
    """30 samples in batches of 8 on 4 devices: 8, 8, 8 and the last 6 cut to 4 (2 skipped, other ones
    each epoch); evaluation (keep_rest) serves the 2 as a batch of their own: every sample once."""
    from dlspec.data import Dataset, Loader

    ds = Dataset("t", np.arange(30, dtype=np.float32).reshape(30, 1), np.arange(30), 30)
    loader = Loader(ds, 8, 0, shuffle=True, multiple=4)
    sizes = [len(y) for _, y in loader.epoch(0)]
    assert sizes == [8, 8, 8, 4] and loader.steps_per_epoch() == 4
    left = [set(range(30)) - {int(v) for _, y in loader.epoch(e) for v in y} for e in (0, 1)]
    assert all(len(s) == 2 for s in left) and left[0] != left[1]
    whole = Loader(ds, 8, 0, shuffle=False, multiple=4, keep_rest=True)
    assert [len(y) for _, y in whole.epoch(0)] == [8, 8, 8, 4, 2] and whole.steps_per_epoch() == 5
    assert sorted(int(v) for _, y in whole.epoch(0) for v in y) == list(range(30))
    # batch norm: a cut last batch of one sample per device is skipped (as one of one sample is on one device)
    assert [len(y) for _, y in Loader(ds, 7, 0, multiple=2, drop_single=True).epoch(0)] == [7, 7, 7, 7]
    assert [len(y) for _, y in Loader(ds, 8, 0, multiple=1).epoch(0)] == [8, 8, 8, 6]  # one device: as before


def test_staging_and_place_split_a_batch_across_devices():
    """A staged batch is split on its first axis, device k holding rows k·N/D …; one that does not
    divide is copied whole to each device; labels (int32) likewise."""
    from tinygrad import Tensor, dtypes

    from dlspec.backends.tinygrad import check_devices, place
    from dlspec.objectives.common import Staging

    devs = check_devices(DEVICES.split(","))
    assert devs == ("CPU", "CPU:1")
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    st = Staging(a.shape, device=devs)
    for k in range(2):
        t = st.set(a + k)
        assert t.device == devs and t.uop.axis == 0
        assert np.array_equal(t.numpy(), a + k)
        shares = [np.frombuffer(b.as_memoryview(), dtype=np.float32).reshape(2, 3) for b in t.uop.base.buffer.bufs]
        assert np.array_equal(shares[0], a[:2] + k) and np.array_equal(shares[1], a[2:] + k)
    odd = Staging((3,), dtypes.int32, device=devs).set(np.array([4, 5, 6]))
    assert odd.uop.axis is None and odd.numpy().tolist() == [4, 5, 6]
    assert place(Tensor(a), devs).uop.axis == 0 and place(Tensor(a[:3]), devs).uop.axis is None


# ---- 2 devices = 1 device -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [MLP, CONV_BN], ids=["mlp", "conv-bn-synced"])
def test_two_devices_train_as_one(tmp_path, spec):
    """3 Adam steps on batches of 16 split 8 + 8 over CPU:0 and CPU:1 end where 3 steps on one
    device do: every weight, batch-norm statistic and Adam moment within 1e-5 (relative). The
    checkpoint holds one copy of every tensor, with the 1-device run's names and shapes."""
    f = tmp_path / "spec.dl"
    f.write_text(spec)
    _, one = train(str(f), "--out", str(tmp_path / "one"), "--max-steps", "3")
    err, two = train(str(f), "--out", str(tmp_path / "two"), "--max-steps", "3", "--devices", DEVICES)
    assert "data parallel: each batch split in 2" in err
    assert json.loads((two / "config.json").read_text())["devices"] == ["CPU:0", "CPU:1"]
    a, b = arrays(one / "last.safetensors"), arrays(two / "last.safetensors")
    assert set(a) == set(b) and all(a[k].shape == b[k].shape for k in a)
    assert a["optim.step"][0] == 3
    worst = {k: rel_err(b[k], a[k]) for k in a}
    assert max(worst.values()) < 1e-5, sorted(worst.items(), key=lambda kv: -kv[1])[:3]
    assert [r["train"]["loss"] for r in lines(one)] == pytest.approx([r["train"]["loss"] for r in lines(two)], rel=1e-5)


# ---- batch norm per device or synced --------------------------------------------------------------------

BN_NET = """\
model N {
  input x: [2, 4, 4]
  batchnorm -> relu
  conv 3 kernel 3, bias false
  batchnorm -> relu
  flatten
  dense 3
}
"""


def _bn_steps(net, batches, per_share: int = 0):
    """3 Adam steps (lr 0.01) of the cross-entropy on ``batches``; ``per_share`` > 0: a 1-device
    reference of batch norm per device — the loss of each of ``per_share`` equal shares of a batch
    computed on its own (its own statistics), averaged."""
    from tinygrad import Context, Tensor

    from dlspec import losses
    from dlspec.backends.tinygrad import place
    from dlspec.optim import make_optimizer

    opt = make_optimizer("adam", net.parameters(), 0.01)
    buffers = [t for k, t in net.state_dict().items() if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for xb, yb in batches:
        with Context(TRAINING=1):
            opt.zero_grad()
            if per_share:
                xs, ys = np.split(xb, per_share), np.split(yb, per_share)
                loss = sum(losses.loss("cross_entropy", net(Tensor(x), train=True), Tensor(y)) for x, y in zip(xs, ys)) / per_share
            else:
                y = place(Tensor(yb), net.device)
                loss = losses.loss("cross_entropy", net(Tensor(xb), train=True), y)
            loss.backward()
            Tensor.realize(loss, *buffers, *opt.schedule_step())
    return {k: t.numpy().astype(np.float64) for k, t in net.state_dict().items()}


def _running(batches, share: slice, momentum: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The first batch norm's running mean and (unbiased) variance after ``batches``, in float64 from
    the samples ``share`` of each batch (the layer sees the data itself)."""
    mean, var = np.zeros(2), np.ones(2)
    for xb, _ in batches:
        x = xb[share].astype(np.float64)
        mean = (1 - momentum) * mean + momentum * x.mean(axis=(0, 2, 3))
        var = (1 - momentum) * var + momentum * x.var(axis=(0, 2, 3), ddof=1)
    return mean, var


def test_batch_norm_per_device_and_synced():
    """On CPU:0 + CPU:1 (batches of 8, 4 per device), 3 Adam steps:

    * per device (``sync_bn false``, the default): the weights equal the 1-device reference that
      normalises each share of 4 with its own statistics; the running statistics are device 0's
      share's (NumPy, float64);
    * synced (``sync_bn true``): the weights equal plain 1-device training on the whole batch, the
      running statistics the whole batch's;
    * the two differ (per-device statistics are a real change, not rounding)."""
    import dlspec

    prog = dlspec.load(BN_NET)
    rng = np.random.default_rng(7)
    batches = [(rng.standard_normal((8, 2, 4, 4)).astype(np.float32) * 2 + 1, rng.integers(0, 3, 8).astype(np.int32)) for _ in range(3)]
    devs = tuple(DEVICES.split(","))
    per_device = _bn_steps(prog.build("N", device=devs, seed=5), batches)
    reference = _bn_steps(prog.build("N", seed=5), batches, per_share=2)
    synced = _bn_steps(prog.build("N", device=devs, seed=5, sync_bn=True), batches)
    whole = _bn_steps(prog.build("N", seed=5), batches)
    params = [k for k in whole if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    for k in params:
        assert rel_err(per_device[k], reference[k]) < 1e-5, k
        assert rel_err(synced[k], whole[k]) < 1e-5, k
    assert max(rel_err(per_device[k], synced[k]) for k in params) > 1e-3
    for got, share in ((per_device, slice(0, 4)), (synced, slice(0, 8))):
        mean, var = _running(batches, share)
        assert rel_err(got["batchnorm1.running_mean"], mean) < 1e-5 and rel_err(got["batchnorm1.running_var"], var) < 1e-5
        assert got["batchnorm1.num_batches_tracked"] == 3
    for k in ("batchnorm2.running_mean", "batchnorm2.running_var"):
        assert rel_err(synced[k], whole[k]) < 1e-5


def test_one_value_per_channel_per_device_is_refused():
    """A batch of 2 on 2 devices leaves batch norm (per device) one value per channel: a clear error."""
    from tinygrad import Context, Tensor

    import dlspec
    from dlspec.errors import BackendError

    net = dlspec.load("model D {\n  input x: [3]\n  batchnorm\n}\n").build("D", device=tuple(DEVICES.split(",")))
    with Context(TRAINING=1), pytest.raises(BackendError, match="needs more than 1 value per channel on each of 2 devices"):
        net(Tensor(np.ones((2, 3), np.float32)), train=True)


# ---- resume ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_with_devices_is_bit_identical(tmp_path):
    """2 epochs on 2 devices straight vs 1 epoch + ``--resume --epochs 2`` (the devices from the run's
    config): every checkpoint tensor and metrics line identical — dropout draws from each device's
    own stream, reseeded in place; batch norm per device. ``--device CPU`` then moves the run on to
    one device."""
    f = tmp_path / "spec.dl"
    f.write_text(RESUMED)
    _, straight = train(str(f), "--out", str(tmp_path / "straight"), "--devices", DEVICES)
    _, resumed = train(str(f), "--out", str(tmp_path / "resumed"), "--devices", DEVICES, "--epochs", "1")
    err, again = train("--resume", str(resumed), "--epochs", "2")
    assert again == resumed and "resumed after epoch 1" in err and "data parallel" in err
    a, b = tensors(resumed / "last.safetensors"), tensors(straight / "last.safetensors")
    assert set(a) == set(b) and not [k for k in a if a[k] != b[k]]
    assert lines(resumed) == lines(straight) and [r["epoch"] for r in lines(resumed)] == [1, 2]
    assert [r["step"] for r in lines(resumed)] == [4, 8]  # 3 full batches and the cut one per epoch
    err, _ = train("--resume", str(resumed), "--epochs", "3", "--device", "CPU")
    cfg = json.loads((resumed / "config.json").read_text())
    assert (cfg["device"], cfg["devices"]) == ("CPU", None) and "device CPU;" in err
    assert [r["epoch"] for r in lines(resumed)] == [1, 2, 3]


# ---- clear errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--batch", "30", "--devices", "CPU:0,CPU:1,CPU:2,CPU:3"],
            "--batch 30 does not divide across 4 devices (CPU:0, CPU:1, CPU:2, CPU:3)",
        ),
        (["--devices", "CPU:0,NOPE:1"], "device 'NOPE:1' is not available here; available: "),
        (["--devices", "CPU:0,CPU"], "device 'CPU' is listed twice"),
        (["--device", "CPU", "--devices", DEVICES], "give --device or --devices, not both"),
        (["--devices", "CPU:0,,CPU:1"], "expected device names separated by commas"),
    ],
    ids=["batch", "unknown", "twice", "both", "empty"],
)
def test_bad_devices_on_the_command_line(tmp_path, args, message):
    f = tmp_path / "spec.dl"
    f.write_text(MLP)
    code, _, err = run_main("train", str(f), "--out", str(tmp_path / "runs"), "--quiet", *args)
    assert code == 2 and message in err, err
    assert "Traceback" not in err and "internal error" not in err
    assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run directory left


def test_bad_devices_in_the_spec_are_errors_at_their_lines(tmp_path):
    f = tmp_path / "spec.dl"
    f.write_text(
        MLP.replace("  batch 16\n", "  batch 30\n").replace("  seed 1\n", '  seed 1\n  devices "CPU:0", "CPU:1", "CPU:2", "CPU:3"\n')
    )
    code, _, err = run_main("train", str(f), "--out", str(tmp_path / "runs"), "--quiet")
    batch_line = MLP.splitlines().index("  batch 16") + 1
    assert code == 1 and f"{f}:{batch_line}:3: error: batch 30 does not divide across 4 devices" in err, err
    assert "use a multiple of 4 (28 or 32)" in err
    f.write_text(MLP.replace("  seed 1\n", '  seed 1\n  devices "CPU:0", "NOPE"\n'))
    code, _, err = run_main("train", str(f), "--out", str(tmp_path / "runs"), "--quiet")
    devices_line = MLP.splitlines().index("  seed 1") + 2
    assert code == 1 and f"{f}:{devices_line}:3: error: device 'NOPE' is not available here" in err, err
    assert "Traceback" not in err


def test_an_unknown_device_in_the_spec_is_an_error_at_its_line(tmp_path):
    f = tmp_path / "spec.dl"
    f.write_text(MLP.replace("  seed 1\n", '  seed 1\n  device "GPU:5"\n'))
    code, _, err = run_main("train", str(f), "--out", str(tmp_path / "runs"), "--quiet")
    line = MLP.splitlines().index("  seed 1") + 2
    assert code == 1 and f"{f}:{line}:3: error: device 'GPU:5' is not available here" in err, err
    code, _, err = run_main("train", str(f), "--out", str(tmp_path / "runs"), "--quiet", "--device", "GPU:6")
    assert code == 2 and "dlspec: error: device 'GPU:6' is not available here" in err, err  # the command line's: a usage error
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_resume_refuses_bad_devices_before_recording_them(tmp_path):
    """``--resume RUN --devices …`` with a device that is not here: exit 2, and the run's config.json
    keeps the devices it had (a later plain --resume is not broken by the typo)."""
    import dlspec
    from dlspec.train import resolve

    run = tmp_path / "runs" / "M-1"  # a run killed before its first checkpoint: its spec and config only
    run.mkdir(parents=True)
    (run / "spec.dl").write_text(MLP)
    config = resolve(dlspec.load(MLP), str(run / "spec.dl"), None, {"devices": ["CPU:0", "CPU:1"]}).model_dump_json(indent=2)
    (run / "config.json").write_text(config)
    code, _, err = run_main("train", "--resume", str(run), "--devices", "CPU:0,NOPE", "--quiet")
    assert code == 2 and "device 'NOPE' is not available here" in err and "Traceback" not in err
    assert (run / "config.json").read_text() == config
    code, _, err = run_main("train", "--resume", str(run), "--devices", "3", "--quiet")  # the spec's batch 16
    assert code == 2 and "dlspec: error: batch 16 does not divide across 3 devices (CPU:0, CPU:1, CPU:2)" in err, err
    assert (run / "config.json").read_text() == config


def test_summary_titles_name_the_devices_not_a_tuple():
    """The final table's title of a data-parallel run lists its devices (``on CPU, CPU:1``), from the
    run's tuple or from summary.json's list, for a classifier and the other objectives."""
    from dlspec.objectives import final_table

    base = {"model": "M", "epochs": 2, "steps": 16, "wall_seconds": 4.0}
    for device in (("CPU", "CPU:1"), ["CPU", "CPU:1"]):
        t = final_table({**base, "device": device, "train": {"loss": 1.0, "accuracy": 0.5}})
        assert t.title == "M: 2 epochs, 16 steps, 4.0 s on CPU, CPU:1"
        t = final_table({**base, "kind": "autoencoder", "device": device, "metrics": {"test_mse": 0.5}, "first": {"test_mse": 0.7}})
        assert t.title == "M (autoencoder) — 2 epochs, 4.0 s on CPU, CPU:1"
    assert final_table({**base, "device": "CPU", "train": {"loss": 1.0, "accuracy": 0.5}}).title.endswith(" on CPU")
