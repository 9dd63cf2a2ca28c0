"""``train gan generator G, discriminator D`` (Goodfellow et al., 2014; DCGAN's settings).

Each batch: one discriminator step on ``BCE(D(x), 1 − ε) + BCE(D(G(z)), 0)`` (``G(z)`` detached;
``label_smoothing ε`` is one-sided, on the real labels only), then one generator step on the
non-saturating ``BCE(D(G(z)), 1)``, each with its own optimizer (``d_optimizer`` /
``g_optimizer``, default Adam lr 2e-4 β1 0.5 as DCGAN). ``z ~ N(0, σ²I)`` with ``noise σ dim d``
(default σ 1; d is the generator's input size). Real images are scaled to the generator's output
range (``tanh`` → [−1, 1]). ``loss bce_logits`` (default) takes D's output as a logit, ``bce`` as a
probability. Every epoch: ``samples-epoch-NNN.png`` from a fixed z, both losses, ``D(x)``, ``D(G(z))``
and the discriminator's accuracy on held-out real images against fresh samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import EpochRun
from .common import item, output_range, realize_before_step, save_grid

BUFFER_KEYS = ("running_mean", "running_var", "num_batches_tracked")


def _buffers(net) -> list:
    return [t for k, t in net.state_dict().items() if k.rsplit(".", 1)[-1] in BUFFER_KEYS]


class GANRun(EpochRun):
    kind = "gan"
    curves = ("train_d_loss", "train_g_loss", "test_d_acc")

    def setup(self) -> None:
        from tinygrad import Tensor

        from ..backends.tinygrad import describe_device

        c = self.cfg
        self.G = self.build_net(c.models["generator"], c.seed)
        self.D = self.build_net(c.models["discriminator"], c.seed + 1)
        self.device = self.G.device
        self.shape = self.fit_shape(self.D, "input (the discriminator's)")
        self.zdim = int(self.G.shapes.types[self.G.input_names[0]].sample[0])
        lo, hi = self.range = output_range(self.G.graph)
        self.scale = (hi - lo, lo)  # data in [0, 1] → the generator's range
        self.logits = c.loss == "bce_logits"
        self.d_opt = self.optimizer(self.D.parameters(), c.d_optimizer, c.d_lr, c.d_optimizer_options, role="d_")
        self.g_opt = self.optimizer(self.G.parameters(), c.g_optimizer, c.g_lr, c.g_optimizer_options, role="g_")
        self.bufs = _buffers(self.G) + _buffers(self.D)
        self.fixed_z = Tensor(self.noise(np.random.default_rng([c.seed, 0xF1C5ED]), 64), device=self.device).realize()
        self._d = self._g = self._eval = None
        self.log(
            f"device {describe_device(self.device)}; generator {c.models['generator']}: {self.G.num_params()[0]:,} params, "
            f"discriminator {c.models['discriminator']}: {self.D.num_params()[0]:,} params; z [{self.zdim}] σ {c.noise}; "
            f"data {c.data}: {len(self.train_data):,} train, {len(self.test_data):,} test"
        )

    def parts(self) -> dict[str, Any]:
        return {"generator": self.G, "discriminator": self.D, "optim_g": self.g_opt, "optim_d": self.d_opt}

    def noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return (self.cfg.noise * rng.standard_normal((n, self.zdim))).astype(np.float32)

    def _score(self, out):
        """D's output as a probability."""
        out = out.reshape(-1)
        return out.sigmoid() if self.logits else out

    def _d_fn(self):
        from tinygrad import Context, Tensor, TinyJit

        from .losses import gan_d_loss

        G, D, opt, c = self.G, self.D, self.d_opt, self.cfg

        def step(x: Tensor, z: Tensor):
            with Context(TRAINING=1):
                opt.zero_grad()
                fake = G(z, train=True).detach()
                real_out, fake_out = D(x, train=True), D(fake, train=True)
                loss = gan_d_loss(real_out, fake_out, self.logits, c.label_smoothing)
                loss.backward()
                pr, pf = self._score(real_out), self._score(fake_out)
                acc = ((pr > 0.5).float().mean() + (pf < 0.5).float().mean()) / 2
                pr, pf = pr.mean(), pf.mean()
                realize_before_step(opt, loss, pr, pf, acc, *self.bufs)
                opt.step()
                return loss, pr, pf, acc

        return TinyJit(step)

    def _g_fn(self):
        from tinygrad import Context, Tensor, TinyJit

        from .losses import gan_g_loss

        G, D, opt = self.G, self.D, self.g_opt

        def step(z: Tensor):
            with Context(TRAINING=1):
                opt.zero_grad()
                loss = gan_g_loss(D(G(z, train=True), train=True), self.logits)
                loss.backward()
                realize_before_step(opt, loss, *self.bufs)
                opt.step()
                return loss

        return TinyJit(step)

    def train_batch(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, float]:

        if self._d is None:
            self._d, self._g = self._d_fn(), self._g_fn()
        n = len(xb)
        x = self.tensor(xb, self.shape, self.scale)
        z1 = self.tensor(self.noise(rng, n), (self.zdim,), slot="z1")
        z2 = self.tensor(self.noise(rng, n), (self.zdim,), slot="z2")
        d_loss, d_real, d_fake, acc = self._d(x, z1)
        vals = {"d_loss": item(d_loss), "d_real": item(d_real), "d_fake": item(d_fake), "d_acc": item(acc)}
        vals["g_loss"] = item(self._g(z2))
        return vals

    def _eval_fn(self):
        from tinygrad import Tensor, TinyJit

        G, D = self.G, self.D

        def step(x: Tensor, z: Tensor):
            pr, pf = self._score(D(x, train=False)), self._score(D(G(z, train=False), train=False))
            return (((pr > 0.5).float().mean() + (pf < 0.5).float().mean()) / 2).realize()

        return TinyJit(step)

    def evaluate(self) -> dict[str, float]:
        """The discriminator's accuracy on held-out real images against fresh generator samples."""

        if self._eval is None:
            self._eval = self._eval_fn()
        rng = np.random.default_rng([self.cfg.seed, 0xE7A1])
        acc, n = 0.0, 0
        for xb, _ in self.test_loader.epoch(0):
            z = self.tensor(self.noise(rng, len(xb)), (self.zdim,), slot="z1")
            acc += item(self._eval(self.tensor(xb, self.shape, self.scale), z))
            n += 1
        return {"d_acc": acc / n}

    def describe(self, m: dict[str, float]) -> str:
        keys = [k for k in m if k.endswith(("d_loss", "g_loss", "d_acc"))]
        return " ".join(f"{k} {m[k]:.3f}" for k in keys)

    def images(self, epoch: int) -> None:
        lo, hi = self.range
        s = (self.G(self.fixed_z, train=False).numpy() - lo) / (hi - lo)
        save_grid(self.dir / f"samples-epoch-{epoch:03d}.png", s)
