"""``train autoencoder M`` and ``train vae M``.

Autoencoder: the mean reconstruction loss (``mse``, ``bce``, ``bce_logits`` or ``l1``) of the model's
output against its clean input; ``noise σ`` makes it a denoising autoencoder (Vincent et al., 2008)
— Gaussian noise of standard deviation σ is added to the input only. Every epoch reports the loss
and the per-pixel MSE on the test split and draws ``recon.png`` (test inputs above their
reconstructions).

VAE (Kingma & Welling, 2014): the model outputs the reconstruction, ``mu`` and ``logvar``; its
``sample`` step reparameterises ``z = mu + e^{logvar/2}·ε``. The loss is the negative ELBO
``rec + β·KL`` per sample: ``rec`` is the BCE summed over pixels (a Bernoulli decoder; ``mse`` for a
Gaussian one), ``KL = −½ Σ (1 + logvar − mu² − e^logvar)``. Both terms are reported each epoch
(train and test, the test ones a one-sample estimate with ``z`` drawn the same way);
``samples-epoch-NNN.png`` is the decoder on a fixed ``z ~ N(0, I)``, ``recon.png`` as above.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import EpochRun
from .common import decode, item, latent_size, output_range, realize_before_step, save_grid


class AutoencoderRun(EpochRun):
    kind = "autoencoder"
    curves = ("train_loss", "test_loss", "test_mse")

    def setup(self) -> None:
        from ..backends.tinygrad import describe_device

        c = self.cfg
        self.net = self.build_net(c.model, c.seed)
        self.device = self.net.device
        self.shape = self.fit_shape(self.net)
        self.opt = self.optimizer(self.net.parameters(), c.optimizer, c.lr, c.optimizer_options)
        self._step = self._eval = None
        self.range = output_range(self.net.graph, self._recon_node())
        self.log(
            f"device {describe_device(self.device)}; {c.model}: {self.net.num_params()[0]:,} params; data {c.data}: {len(self.train_data):,} train, {len(self.test_data):,} test"
        )

    def _recon_node(self) -> str:
        return self.net.graph.outputs[0].node

    def parts(self) -> dict[str, Any]:
        return {"model": self.net, "optim": self.opt}

    def _train_fn(self):
        from tinygrad import Context, Tensor, TinyJit

        from .losses import reconstruction

        net, opt, c = self.net, self.opt, self.cfg

        def step(x: Tensor):
            with Context(TRAINING=1):
                opt.zero_grad()
                inp = x + c.noise * x.randn_like() if c.noise else x  # drawn on each device for its share of x
                out = net(inp, train=True)
                loss = reconstruction(c.loss, out, x)
                loss.backward()
                realize_before_step(opt, loss)  # the loss of the weights it was computed with
                opt.step()
                return loss

        return TinyJit(step)

    def train_batch(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
        if self._step is None:
            self._step = self._train_fn()
        return {"loss": item(self._step(self.tensor(xb, self.shape)))}

    def _eval_fn(self):
        from tinygrad import Tensor, TinyJit

        from .losses import reconstruction

        net, c = self.net, self.cfg

        def step(x: Tensor):
            out = net(x, train=False)
            return reconstruction(c.loss, out, x).realize(), (out - x.reshape(out.shape)).square().mean().realize()

        return TinyJit(step)

    def evaluate(self) -> dict[str, float]:
        if self._eval is None:
            self._eval = self._eval_fn()
        loss = mse = 0.0
        n = 0
        for xb, _ in self.test_loader.epoch(0):
            a, b = self._eval(self.tensor(xb, self.shape))
            loss, mse, n = loss + item(a), mse + item(b), n + 1
        return {"loss": loss / n, "mse": mse / n}

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        out = self.net(self.tensor(x, self.shape), train=False)
        out = out[0] if isinstance(out, tuple) else out
        return out.numpy()

    def images(self, epoch: int) -> None:
        k = min(16, len(self.test_data))
        x = self.test_data.x[:k]
        out = self.reconstruct(x).reshape(k, *x.shape[1:])
        lo, hi = self.range
        out = (out - lo) / (hi - lo)
        save_grid(self.dir / "recon.png", np.concatenate([x, out]), cols=k)


class VAERun(AutoencoderRun):
    kind = "vae"
    curves = ("train_loss", "test_loss", "train_rec", "train_kl")

    def setup(self) -> None:
        super().setup()
        names = self.net.output_names
        self.idx = {n: names.index(n) for n in ("mu", "logvar")}
        self.idx["recon"] = next(i for i, n in enumerate(names) if n not in ("mu", "logvar"))
        self.latent = latent_size(self.net)
        z = np.random.default_rng([self.cfg.seed, 0xF1C5ED]).standard_normal((64, self.latent)).astype(np.float32)
        from tinygrad import Tensor

        self.fixed_z = Tensor(z, device=self.device).realize()

    def _recon_node(self) -> str:
        names = self.net.output_names
        i = next(i for i, n in enumerate(names) if n not in ("mu", "logvar"))
        return self.net.graph.outputs[i].node

    def _outs(self, outs):
        return outs[self.idx["recon"]], outs[self.idx["mu"]], outs[self.idx["logvar"]]

    def _train_fn(self):
        from tinygrad import Context, Tensor, TinyJit

        from .losses import vae_terms

        net, opt, c = self.net, self.opt, self.cfg

        def step(x: Tensor):
            with Context(TRAINING=1):
                opt.zero_grad()
                recon, mu, logvar = self._outs(net(x, train=True))
                rec, kl = vae_terms(c.loss, recon, x, mu, logvar)
                loss = rec + c.beta * kl
                loss.backward()
                realize_before_step(opt, loss, rec, kl)
                opt.step()
                return loss, rec, kl

        return TinyJit(step)

    def train_batch(self, xb: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
        if self._step is None:
            self._step = self._train_fn()
        loss, rec, kl = self._step(self.tensor(xb, self.shape))
        return {"loss": item(loss), "rec": item(rec), "kl": item(kl)}

    def _eval_fn(self):
        from tinygrad import Tensor, TinyJit

        from .losses import vae_terms

        net, c = self.net, self.cfg

        def step(x: Tensor):
            _, mu, logvar = self._outs(net(x, train=False))
            z = mu + (logvar * 0.5).exp() * mu.randn_like()
            rec, kl = vae_terms(c.loss, decode(net, z), x, mu, logvar)
            return (rec + c.beta * kl).realize(), rec.realize(), kl.realize()

        return TinyJit(step)

    def evaluate(self) -> dict[str, float]:
        if self._eval is None:
            self._eval = self._eval_fn()
        tot = np.zeros(3)
        n = 0
        for xb, _ in self.test_loader.epoch(0):
            tot += [item(t) for t in self._eval(self.tensor(xb, self.shape))]
            n += 1
        loss, rec, kl = tot / n
        return {"loss": float(loss), "rec": float(rec), "kl": float(kl)}

    def describe(self, m: dict[str, float]) -> str:
        return " ".join(f"{k.replace('loss', '−elbo')} {v:.2f}" for k, v in m.items())

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self._outs(self.net(self.tensor(x, self.shape), train=False))[0].numpy()

    def images(self, epoch: int) -> None:
        super().images(epoch)
        lo, hi = self.range
        s = (decode(self.net, self.fixed_z).numpy() - lo) / (hi - lo)
        save_grid(self.dir / f"samples-epoch-{epoch:03d}.png", s)
