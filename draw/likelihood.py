"""Likelihoods and KL divergence of the variational bound (Gregor et al., 2015, section 2) and
the importance-sampled NLL estimate (Burda et al., 2016, "Importance Weighted Autoencoders").

All losses are in nats per image: summed over pixels / latent units, never averaged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datasets.tensors import TensorData

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


# -- a continuous likelihood for colour images ------------------------------------------
def discretized_logistic_nll(mean: Tensor, log_scale: Tensor, x: Tensor, bins: int = 256) -> Tensor:
    """-log P(x) for 8-bit data under a logistic discretised to ``bins`` levels, summed over pixels.

    ``x`` ``(batch, ...)`` holds values ``k / (bins - 1)`` in [0, 1]; ``mean`` has its shape
    and ``log_scale`` broadcasts to it (both in the same [0, 1] units). Level ``k`` gets the
    logistic's mass on ``[x - h, x + h]`` with ``h = 1 / (2 (bins - 1))``; the two end levels
    take the tails down to -inf and up to +inf, so the masses of the ``bins`` levels sum to
    1 and the result is a true negative log-likelihood in nats (Salimans et al., 2017,
    PixelCNN++, eq. 2, with one component). Returns ``(batch,)``.
    """
    half = 0.5 / (bins - 1)
    inv_s = torch.exp(-log_scale)
    centred = x - mean
    plus, minus = inv_s * (centred + half), inv_s * (centred - half)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus): the k = 0 level
    log_sf_minus = -F.softplus(minus)  # log (1 - sigmoid(minus)): the k = bins - 1 level
    # log(sigmoid(plus) - sigmoid(minus)), computed where it is stable; in the far tails
    # the mass is the density at the centre times the bin width.
    delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * centred
    log_pdf_mid = mid - log_scale - 2 * F.softplus(mid)
    log_mass = torch.where(delta > 1e-5, torch.log(delta.clamp_min(1e-12)), log_pdf_mid + math.log(2 * half))
    log_p = torch.where(x < half, log_cdf_plus, torch.where(x > 1 - half, log_sf_minus, log_mass))
    return -log_p.flatten(1).sum(1)


# -- importance-sampled negative log-likelihood -----------------------------------------
# Rows of importance weights per forward pass, by device type. On a CPU a pass whose recurrent
# state stays nearer the cores wins: the paper's MNIST models (T=64, trained 100 epochs) on the
# 2-core EPYC of family 25, 2 threads, eager float32, passes of 1,000 / 2,500 / 5,000 rows
# interleaved in one process on real test images, rows/s (median of 3): with attention 747 /
# 750 / 618, without 586 / 557 / 518. This VM's speed drifts by 10-20% from minute to minute:
# in the paper run itself chunks of 20 images took 122-124 s (attention) and 171 s (without)
# at 5,000 rows, and 121 s and 178 s at 1,000 rows ten minutes later. A GPU is kept busy by
# larger passes (not timed here: 5,000, the size the paper preset used before).
# The weights stay on the eager float32 path. Timed against it on the same machine (paper run
# paused, same draws, 1,000 rows, 2 threads): the training fast path's fused layout compiled in
# float32 gave 855-860 rows/s against 755-765 with attention (+13%) and 435 against 590-615
# without (the fused layout multiplies x itself at every step, which the eager path does once),
# and agreed with eager to 4e-4 nats per weight. bf16 products would be faster, but their
# rounding moves each weight, and the log-mean-exp of noisier weights is biased low.
ROWS_PER_PASS = {"cpu": 1000}
ROWS_PER_PASS_DEFAULT = 5000


def rows_per_pass(device: torch.device | str) -> int:
    """How many importance-weight rows one forward pass takes on ``device`` (see ROWS_PER_PASS)."""
    return ROWS_PER_PASS.get(torch.device(device).type, ROWS_PER_PASS_DEFAULT)


def log_mean_exp(w: Tensor, dim: int = -1) -> Tensor:
    """``log(mean(exp(w)))`` along ``dim`` in float64, stable for any magnitude of ``w``."""
    w = w.double()
    return torch.logsumexp(w, dim) - math.log(w.shape[dim])


def iwae_nll(log_weights: Callable[[Tensor], Tensor], x: Tensor, K: int, *, max_rows: int | None = None) -> Tensor:
    """Importance-sampled estimate of ``-log p(x)`` per item, ``(n,)`` float64 nats.

    ``log_weights(x_rows) -> (rows,)`` draws one latent ``z ~ q(z | x)`` per row and returns
    ``log p(x | z) + log p(z) - log q(z | x)``. The estimate is
    ``-(logsumexp_k w_k - log K)`` over ``K`` independent draws (Burda et al., 2016, eq. 8).
    It is at most the variational bound in expectation (Jensen), and for the same draws
    never above ``-mean_k w_k``; it tends to ``-log p(x)`` as ``K`` grows.

    The ``n * K`` rows are evaluated in chunks of at most ``max_rows`` (``x`` repeated,
    several items per chunk when ``K <= max_rows``; otherwise one item and several chunks
    of draws; None: :func:`rows_per_pass` of ``x``'s device); log-mean-exp runs in float64.
    The chunking changes the speed, not the estimate's distribution.
    """
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    max_rows = rows_per_pass(x.device) if max_rows is None else max_rows
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    n = x.shape[0]
    if K <= max_rows:
        m = max(1, max_rows // K)  # items per chunk
        out = []
        for start in range(0, n, m):
            xs = x[start : start + m]  # (m, ...)
            w = log_weights(xs.repeat_interleave(K, 0))  # (m * K,): item-major
            out.append(-log_mean_exp(w.view(len(xs), K), 1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=x.device)
    out = []
    for i in range(n):  # K > max_rows: one item at a time, its draws in chunks
        parts = []
        for start in range(0, K, max_rows):
            k = min(max_rows, K - start)
            parts.append(log_weights(x[i : i + 1].expand(k, *x.shape[1:])).double())
        w = torch.cat(parts)  # (K,)
        out.append(-log_mean_exp(w, 0))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64, device=x.device)


@torch.no_grad()
def importance_sampled_nll_per_item(
    model: nn.Module, data: TensorData, K: int, *, max_rows: int | None = None, batch_size: int = 2000,
    progress: bool = False,
) -> Tensor:
    """``-log p(x)`` estimates ``(n,)`` float64 for every item of ``data``, using
    ``model.log_importance_weights`` (see :func:`iwae_nll`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(data), desc=f"IS NLL (K={K})", leave=False, dynamic_ncols=True)
    try:
        for x, _ in data.batches(batch_size, device=device):
            out.append(iwae_nll(model.log_importance_weights, x, K, max_rows=max_rows).cpu())
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def importance_sampled_nll(model: nn.Module, data: TensorData, K: int, *, max_rows: int | None = None,
                           progress: bool = False) -> float:
    """Mean over ``data`` of the importance-sampled NLL estimate with ``K`` draws per image, in
    nats per image (see :func:`iwae_nll`). ``model`` provides ``log_importance_weights(x)``
    (as :class:`draw.model.DRAW` does)."""
    return float(importance_sampled_nll_per_item(model, data, K, max_rows=max_rows, progress=progress).mean())
