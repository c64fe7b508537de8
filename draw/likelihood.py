"""Likelihoods, KL divergence and the variational bound (Gregor et al., 2015, section 2).

All losses are in nats per image: summed over pixels / latent units, never averaged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """Reconstruction loss L^x = -log D(x | c_T) (eq. 9) for D Bernoulli with p = sigmoid(c_T).

    ``logits``, ``x``: ``(batch, ...)``, ``x`` in [0, 1]; returns ``(batch,)`` nats.
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def gaussian_kl(mu: Tensor, log_sigma: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over the last axis (eq. 11 for one step).

    ``mu``, ``log_sigma``: ``(..., z)``; returns ``(...)`` nats.
    """
    return 0.5 * (mu.square() + torch.exp(2 * log_sigma) - 2 * log_sigma - 1).sum(-1)


def gaussian_log_prob(z: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """log N(z; mu, sigma^2) summed over the last axis; ``(..., z)`` -> ``(...)``."""
    return (-0.5 * ((z - mu) / log_sigma.exp()).square() - log_sigma - 0.5 * LOG_2PI).sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last axis."""
    return (-0.5 * z.square() - 0.5 * LOG_2PI).sum(-1)


def variational_bound(recon: Tensor, kl: Tensor) -> Tensor:
    """Total loss L = L^x + L^z (eq. 12), ``(batch,)``; ``kl`` is ``(batch, T)`` per step."""
    return recon + kl.sum(-1)
