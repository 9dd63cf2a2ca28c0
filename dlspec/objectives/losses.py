"""The objectives' losses as tensor functions (TinyJit-safe, no host reads).

=====================  ===================================================================
:func:`reconstruction` autoencoder: mean ``mse`` / ``bce`` / ``bce_logits`` / ``l1`` per element
:func:`vae_terms`      VAE: reconstruction summed over pixels (Bernoulli: BCE, Kingma & Welling)
                       and ``KL(q(z|x) ‖ N(0, I)) = −½ Σ (1 + logvar − mu² − e^logvar)``, each
                       averaged over the batch; the loss (negative ELBO) is ``rec + β·KL``
:func:`gan_d_loss`     ``BCE(D(x), 1 − ε) + BCE(D(G(z)), 0)`` (one-sided label smoothing ε)
:func:`gan_g_loss`     non-saturating ``BCE(D(G(z)), 1)``
:func:`huber`          ``½d²`` if ``|d| < δ`` else ``δ(|d| − ½δ)``, mean
:func:`td_target`      ``r + γ · max_a' Q_target(s', a') · (1 − done)``
:func:`dqn_loss`       Huber (or MSE) of ``Q(s, a)`` against the (detached) TD target
=====================  ===================================================================
"""

from __future__ import annotations

from tinygrad import Tensor

from .. import losses as L


def _bce_elems(out: Tensor, y: Tensor, logits: bool) -> Tensor:
    if logits:
        return out.maximum(0) - out * y + (1 + (-out.abs()).exp()).log()
    return -(y * out.log().maximum(-100) + (1 - y) * (1 - out).log().maximum(-100))


def reconstruction(name: str, out: Tensor, x: Tensor) -> Tensor:
    """Mean reconstruction loss of ``out`` against the (clean) input ``x`` (reshaped like ``out``)."""
    return L.loss(name, out, x.reshape(out.shape))


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, e^logvar) ‖ N(0, I))`` per sample, summed over the latent dims: shape ``(N,)``."""
    return -0.5 * (1 + logvar - mu * mu - logvar.exp()).reshape(mu.shape[0], -1).sum(-1)


def vae_terms(name: str, recon: Tensor, x: Tensor, mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """(reconstruction, KL), each summed per sample and averaged over the batch."""
    n = recon.shape[0]
    y = x.reshape(recon.shape).float()
    out = recon.float()
    if name in ("bce", "bce_logits"):
        e = _bce_elems(out, y, name == "bce_logits")
    elif name == "mse":
        e = (out - y).square()
    else:
        raise ValueError(f"a VAE's reconstruction loss is bce, bce_logits or mse, not {name}")
    rec = e.reshape(n, -1).sum(-1).mean()
    return rec, kl_divergence(mu.float(), logvar.float()).mean()


def gan_d_loss(real: Tensor, fake: Tensor, logits: bool = True, label_smoothing: float = 0.0) -> Tensor:
    """The discriminator's loss: mean BCE of ``D(x)`` against ``1 − ε`` plus mean BCE of ``D(G(z))``
    against 0. ``real`` / ``fake`` are the discriminator's outputs (logits, or probabilities)."""
    real, fake = real.float().reshape(-1), fake.float().reshape(-1)
    return (
        _bce_elems(real, Tensor.full_like(real, 1.0 - label_smoothing), logits).mean() + _bce_elems(fake, fake.zeros_like(), logits).mean()
    )


def gan_g_loss(fake: Tensor, logits: bool = True) -> Tensor:
    """The generator's non-saturating loss: mean BCE of ``D(G(z))`` against 1 (``−log D(G(z))``)."""
    fake = fake.float().reshape(-1)
    return _bce_elems(fake, fake.ones_like(), logits).mean()


def huber(d: Tensor, delta: float = 1.0) -> Tensor:
    """Mean Huber loss of the differences ``d`` (PyTorch's ``HuberLoss``/``smooth_l1`` with β = δ·…)."""
    a = d.abs()
    return (a < delta).where(0.5 * d * d, delta * (a - 0.5 * delta)).mean()


def td_target(q_next: Tensor, reward: Tensor, done: Tensor, gamma: float) -> Tensor:
    """``r + γ · max_a' q_next[:, a'] · (1 − done)``: the target network's values ``q_next`` (N, A) of the
    next states; ``done`` is 1 where the episode ended there (no bootstrapping from a terminal state)."""
    return reward.float() + gamma * q_next.float().max(-1) * (1 - done.float())


def q_selected(q: Tensor, action: Tensor) -> Tensor:
    """``Q(s, a)``: the value of the action taken, per row of ``q`` (N, A); ``action`` integer (N,)."""
    return (q.float() * action.one_hot(q.shape[-1]).float()).sum(-1)


def dqn_loss(
    q: Tensor, action: Tensor, q_next_target: Tensor, reward: Tensor, done: Tensor, gamma: float, loss: str = "huber", delta: float = 1.0
) -> Tensor:
    """Huber (or MSE) of ``Q(s, a)`` against the detached TD target of the target network's values."""
    target = td_target(q_next_target, reward, done, gamma).detach()
    d = q_selected(q, action) - target
    return huber(d, delta) if loss == "huber" else (d * d).mean()
