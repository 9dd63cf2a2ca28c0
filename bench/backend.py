"""Backend benchmark: a compiled dlspec spec against the same model written by hand in tinygrad
(plain classes with ``tinygrad.nn`` layers), and against PyTorch where it is installed.

For each model — an MLP 784-256-256-10 (batch 128), LeNet-5 (64, ``specs/lenet5.dl``),
ResNet-20 for CIFAR (32, ``specs/resnet20_cifar.dl``, option-A shortcuts) and an LSTM (T 32,
32 features, hidden 128, 10 classes, batch 32) — and each implementation, one subprocess (so
that peak RSS and the caches are its own) with a fresh, empty kernel cache (``CACHEDB``):

- **first step**: seconds from the start of building the model to the end of the first
  training step (Adam, ``TinyJit``'d step; the JIT's first call runs eagerly), cold kernel cache.
  Goal ≤ 10 s for every model.
- **step**: median of ``--steps`` (≥ 30) training steps after warm-up (the JIT's replays).
  Goal: compiled / hand-written ≤ 1.00.
- **peak RSS** of the process. Goal: compiled / hand-written ≤ 1.05. ``hand+libs`` runs the
  hand-written model in a process that has also imported Lark and pydantic (and defined one
  pydantic model): the libraries' own cost, next to which the compiled spec's RSS is judged too.

Run: ``.venv/bin/python bench/backend.py`` (``--models mlp,lstm``, ``--steps N``, ``--json``,
``--timeout S`` per subprocess).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {
    # name: (spec file or text, model name, batch, input sample shape)
    "mlp": ("specs/mlp.dl", "MLP", 128, (1, 28, 28)),
    "lenet5": ("specs/lenet5.dl", "LeNet5", 64, (1, 28, 28)),
    "resnet20": ("specs/resnet20_cifar.dl", "ResNet20", 32, (3, 32, 32)),
    "lstm": ("model LSTM { input s: [32, 32]\n  lstm 128 sequences false\n  dense 10 }", "LSTM", 32, (32, 32)),
}
#: ``hand+libs`` is the hand-written model in a process that has also imported the front end's
#: libraries (Lark, pydantic, one model class): a control for what the compiled spec's extra RSS is.
IMPLS = ("compiled", "hand", "hand+libs", "torch")


# ---- hand-written tinygrad models ------------------------------------------------------------------


def hand_model(name: str):
    from tinygrad import Tensor, nn

    class MLP:
        def __init__(self):
            self.l1, self.l2, self.l3 = nn.Linear(784, 256), nn.Linear(256, 256), nn.Linear(256, 10)

        def __call__(self, x: Tensor) -> Tensor:
            x = x.flatten(1)
            return self.l3(self.l2(self.l1(x).relu()).relu())

    class LeNet5:
        def __init__(self):
            self.c1, self.c3 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
            self.c5, self.f6, self.out = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def __call__(self, x: Tensor) -> Tensor:
            x = self.c1(x).tanh().avg_pool2d(2)
            x = self.c3(x).tanh().avg_pool2d(2).flatten(1)
            return self.out(self.f6(self.c5(x).tanh()).tanh())

    class Basic:
        def __init__(self, cin: int, c: int, stride: int):
            self.conv1, self.bn1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm(c)
            self.stride, self.pad = stride, (c - cin) // 2

        def __call__(self, x: Tensor) -> Tensor:
            out = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            short = x
            if self.stride != 1:  # option A: subsample, zero-pad the channels
                short = x[:, :, :: self.stride, :: self.stride].pad((0, 0, 0, 0, self.pad, self.pad))
            return (out + short).relu()

    class ResNet20:
        def __init__(self):
            self.conv, self.bn = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm(16)
            blocks, cin = [], 16
            for c, stride in ((16, 1), (32, 2), (64, 2)):
                for i in range(3):
                    blocks.append(Basic(cin, c, stride if i == 0 else 1))
                    cin = c
            self.blocks, self.fc = blocks, nn.Linear(64, 10)

        def __call__(self, x: Tensor) -> Tensor:
            x = self.bn(self.conv(x)).relu()
            for b in self.blocks:
                x = b(x)
            return self.fc(x.mean((2, 3)))

    class LSTM:
        def __init__(self):
            self.cell, self.fc = nn.LSTMCell(32, 128), nn.Linear(128, 10)

        def __call__(self, x: Tensor) -> Tensor:
            h = c = None
            hc = None
            for t in range(x.shape[1]):
                h, c = self.cell(x[:, t], hc)
                hc = (h, c)
            return self.fc(h)

    return {"mlp": MLP, "lenet5": LeNet5, "resnet20": ResNet20, "lstm": LSTM}[name]()


def torch_model(name: str):
    import torch
    from torch import nn

    class LSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.fc = nn.LSTM(32, 128, batch_first=True), nn.Linear(128, 10)

        def forward(self, x):
            return self.fc(self.lstm(x)[0][:, -1])

    class Basic(nn.Module):
        def __init__(self, cin, c, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
            self.stride, self.pad = stride, (c - cin) // 2

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            short = x if self.stride == 1 else nn.functional.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))
            return torch.relu(out + short)

    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    if name == "lenet5":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10),
        )  # fmt: skip
    if name == "resnet20":
        blocks, cin = [], 16
        for c, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(Basic(cin, c, stride if i == 0 else 1))
                cin = c
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            *blocks,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 10),
        )
    return LSTM()


# ---- one measurement (in its own process) -------------------------------------------------------------


def worker(name: str, impl: str, steps: int, warmup: int) -> dict:
    import numpy as np

    spec, model, batch, sample = MODELS[name]
    label = impl
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((batch, *sample)).astype(np.float32)
    ys = rng.integers(0, 10, batch).astype(np.int32)
    times: list[float] = []
    if impl == "torch":
        import torch  # noqa: F401
    else:
        import tinygrad  # noqa: F401

        if impl == "compiled":
            import dlspec  # noqa: F401
        if impl == "hand+libs":
            import lark  # noqa: F401
            import pydantic

            class _Any(pydantic.BaseModel):  # pydantic builds its machinery on the first model class
                x: int

            impl = "hand"
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after imports
    if impl == "torch":
        import torch

        torch.manual_seed(0)
        t0 = time.perf_counter()
        net = torch_model(name)
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        x, y = torch.tensor(xs), torch.tensor(ys, dtype=torch.long)

        def step():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            return loss.item()

        step()
        first = time.perf_counter() - t0
        for _ in range(warmup):
            step()
        for _ in range(steps):
            t1 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t1)
    else:
        from tinygrad import Context, Tensor, TinyJit
        from tinygrad.nn.optim import Adam
        from tinygrad.nn.state import get_parameters

        t0 = time.perf_counter()
        if impl == "compiled":
            import dlspec

            text = (ROOT / spec).read_text() if spec.endswith(".dl") else spec
            net = dlspec.load(text).build(model, seed=0).train()
            params = net.parameters()
        else:
            Tensor.manual_seed(0)
            net = hand_model(name)
            params = [p for p in get_parameters(net) if getattr(p, "is_param", True)]
        opt = Adam(params, lr=1e-3)
        x, y = Tensor(xs).realize(), Tensor(ys).realize()

        @TinyJit
        def jstep(x, y):
            with Context(TRAINING=1):
                opt.zero_grad()
                loss = net(x).sparse_categorical_crossentropy(y).backward()
                opt.step()
            return loss

        jstep(x, y).item()
        first = time.perf_counter() - t0
        for _ in range(warmup):
            jstep(x, y).item()
        for _ in range(steps):
            t1 = time.perf_counter()
            jstep(x, y).item()
            times.append(time.perf_counter() - t1)
    return {
        "model": name,
        "impl": label,
        "first_step_s": first,
        "step_ms": statistics.median(times) * 1000 if times else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "import_rss_mb": base_rss,
        "cpu_s": time.process_time(),
    }


def measure(name: str, impl: str, steps: int, warmup: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "CACHEDB": str(Path(d) / "cache.db")}
        cmd = [sys.executable, __file__, "--worker", name, impl, "--steps", str(steps), "--warmup", str(warmup)]
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"model": name, "impl": impl, "error": f"timed out after {timeout:.0f} s"}
        if r.returncode != 0:
            return {"model": name, "impl": impl, "error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
        out = json.loads(r.stdout.strip().splitlines()[-1])
        out["process_s"] = time.perf_counter() - t0
        return out


def has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def fmt(v, spec=".1f", unit=""):
    return "—" if v is None else f"{v:{spec}}{unit}"


def table(rows: list[dict]) -> str:
    by = {(r["model"], r["impl"]): r for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    torch_col = any(r["impl"] == "torch" for r in rows)
    head = (
        "| model | step compiled | step hand | ratio | first step compiled | first step hand | RSS compiled | RSS hand | RSS ratio | RSS hand + lark/pydantic | RSS ratio to that |"
        + (" step PyTorch |" if torch_col else "")
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for m in models:
        c, h, t = by.get((m, "compiled"), {}), by.get((m, "hand"), {}), by.get((m, "torch"), {})
        hl = by.get((m, "hand+libs"), {})
        ratio = c["step_ms"] / h["step_ms"] if c.get("step_ms") and h.get("step_ms") else None
        rss = c["peak_rss_mb"] / h["peak_rss_mb"] if c.get("peak_rss_mb") and h.get("peak_rss_mb") else None
        libs = c["peak_rss_mb"] / hl["peak_rss_mb"] if c.get("peak_rss_mb") and hl.get("peak_rss_mb") else None

        def step(r):
            return r.get("error") or fmt(r.get("step_ms"), ".2f", " ms")

        def first(r):
            return r.get("error") or fmt(r.get("first_step_s"), ".1f", " s")

        row = f"| {m} | {step(c)} | {step(h)} | {fmt(ratio, '.2f')} | {first(c)} | {first(h)} | {fmt(c.get('peak_rss_mb'), '.0f', ' MB')} | {fmt(h.get('peak_rss_mb'), '.0f', ' MB')} | {fmt(rss, '.2f')} | {fmt(hl.get('peak_rss_mb'), '.0f', ' MB')} | {fmt(libs, '.2f')} |"
        if torch_col:
            row += f" {step(t)} |"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "IMPL"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(*a.worker, a.steps, a.warmup)))
        return
    impls = [i for i in a.impls.split(",") if i != "torch" or has_torch()]
    rows = []
    for m in a.models.split(","):
        for impl in impls:
            r = measure(m, impl, max(a.steps, 1), a.warmup, a.timeout)
            rows.append(r)
            if not a.json:
                print(
                    f"  {m:9s} {impl:9s} "
                    + (r.get("error") or f"first {r['first_step_s']:.1f} s, step {r['step_ms']:.2f} ms, RSS {r['peak_rss_mb']:.0f} MB"),
                    file=sys.stderr,
                    flush=True,
                )
    if a.json:
        print(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows}, indent=1))
    else:
        print(table(rows))


if __name__ == "__main__":
    main()
