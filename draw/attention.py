"""Selective attention with Gaussian filterbanks (Gregor et al., 2015, section 3.2).

Pure functions, batched over images: no Python loop over glimpse positions or pixels.
Conventions: images are ``(batch, C, B, A)`` tensors (``B`` = height, ``A`` = width, as in
the paper, where ``A`` runs along the x axis). Pixel coordinates are 1-based, as in the
paper, so that ``g~ = 0, delta~ = 1`` puts the first filter on pixel 1 and the last on
pixel A (the grid spans the image).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Safe ranges for the unconstrained parameters: exp() of these can neither underflow to 0
# nor overflow (sigma^2 in [3e-4, 3e3] pixels^2, delta~ and gamma in [e^-8, e^8]).
LOG_SIGMA2_RANGE = (-8.0, 8.0)
LOG_DELTA_RANGE = (-8.0, 4.0)
LOG_GAMMA_RANGE = (-8.0, 8.0)


@dataclass
class AttentionParams:
    """Attention window in pixel units, each ``(batch,)``: centre, stride, variance, intensity."""

    g_x: Tensor
    g_y: Tensor
    delta: Tensor
    sigma2: Tensor
    gamma: Tensor

    def detach(self) -> AttentionParams:
        return AttentionParams(*(t.detach() for t in self.as_tuple()))

    def as_tuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return (self.g_x, self.g_y, self.delta, self.sigma2, self.gamma)

    def stack(self) -> Tensor:
        """``(batch, 5)``: columns g_x, g_y, delta, sigma, gamma (sigma, not sigma^2)."""
        return torch.stack([self.g_x, self.g_y, self.delta, self.sigma2.sqrt(), self.gamma], -1)


def attention_params(raw: Tensor, N: int, A: int, B: int, *, bounded_centre: bool = False,
                     min_sigma: float = 0.0, max_log_gamma: float = 0.0) -> AttentionParams:
    """Map the linear output of a hidden state to the window, eqs. 21-24.

    ``raw``: ``(batch, 5)`` = (g~_X, g~_Y, log sigma^2, log delta~, log gamma) = W(h_dec) (eq. 21).
    ``bounded_centre``: pass g~ through tanh, so the centre stays on the image (the paper
    leaves g~ linear). ``min_sigma`` (pixels): sigma^2 = exp(log sigma^2) + min_sigma^2, a
    smooth floor under the filters' width (the paper has none). ``max_log_gamma`` M > 0:
    gamma = exp(M tanh(log gamma / M)), a smooth bound to [e^-M, e^M]. These are departures
    that :class:`draw.classifier.ClassifierConfig` explains; False and 0 give eqs. 21-24 as
    written.
    """
    g_tx, g_ty, log_sigma2, log_delta, log_gamma = raw.unbind(-1)
    if bounded_centre:
        g_tx, g_ty = torch.tanh(g_tx), torch.tanh(g_ty)
    g_x = (A + 1) / 2 * (g_tx + 1)  # eq. 22
    g_y = (B + 1) / 2 * (g_ty + 1)  # eq. 23
    delta = (max(A, B) - 1) / max(N - 1, 1) * log_delta.clamp(*LOG_DELTA_RANGE).exp()  # eq. 24
    sigma2 = log_sigma2.clamp(*LOG_SIGMA2_RANGE).exp() + min_sigma**2
    if max_log_gamma:
        log_gamma = max_log_gamma * torch.tanh(log_gamma / max_log_gamma)
    gamma = log_gamma.clamp(*LOG_GAMMA_RANGE).exp()
    return AttentionParams(g_x, g_y, delta, sigma2, gamma)


def filterbank(
    g_x: Tensor,
    g_y: Tensor,
    log_sigma2: Tensor | None = None,
    log_delta: Tensor | None = None,
    N: int = 12,
    A: int = 28,
    B: int = 28,
    *,
    sigma2: Tensor | None = None,
    delta: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Gaussian filterbank matrices, eqs. 19-20 and 25-26.

    ``g_x``, ``g_y``: ``(batch,)`` grid centre in pixels (already mapped by eqs. 22-23).
    Give either ``log_sigma2`` and ``log_delta`` (the unconstrained ``log sigma^2`` and
    ``log delta~``; delta is then mapped by eq. 24) or ``sigma2`` and ``delta`` in pixels.
    Returns ``F_x`` of shape ``(batch, N, A)`` and ``F_y`` of shape ``(batch, N, B)``;
    each row sums to 1 over the image axis.
    """
    if sigma2 is None:
        if log_sigma2 is None:
            raise ValueError("give log_sigma2 or sigma2")
        sigma2 = log_sigma2.clamp(*LOG_SIGMA2_RANGE).exp()
    if delta is None:
        if log_delta is None:
            raise ValueError("give log_delta or delta")
        delta = (max(A, B) - 1) / max(N - 1, 1) * log_delta.clamp(*LOG_DELTA_RANGE).exp()  # eq. 24
    mu_x = grid_centres(g_x, delta, N)  # eq. 19, (batch, N)
    mu_y = grid_centres(g_y, delta, N)  # eq. 20, (batch, N)
    a = torch.arange(1, A + 1, dtype=g_x.dtype, device=g_x.device)  # (A,) 1-based pixel columns
    b = torch.arange(1, B + 1, dtype=g_x.dtype, device=g_x.device)  # (B,)
    two_s2 = 2 * sigma2[:, None, None]  # (batch, 1, 1)
    # eqs. 25-26: exp(-(a - mu)^2 / 2 sigma^2) / Z. Normalising with a softmax over the
    # image axis is the same quantity, computed stably: a row whose centre lies far off
    # the image still sums to 1 instead of underflowing to 0 / 0.
    F_x = torch.softmax(-((a - mu_x[:, :, None]) ** 2) / two_s2, dim=-1)  # (batch, N, A)
    F_y = torch.softmax(-((b - mu_y[:, :, None]) ** 2) / two_s2, dim=-1)  # (batch, N, B)
    return F_x, F_y


def grid_centres(g: Tensor, delta: Tensor, N: int) -> Tensor:
    """Filter centres ``mu^i = g + (i - N/2 - 0.5) delta``, i = 1..N (eqs. 19-20): ``(batch, N)``."""
    offsets = torch.arange(1, N + 1, dtype=g.dtype, device=g.device) - N / 2 - 0.5  # (N,)
    return g[:, None] + offsets * delta[:, None]


def filterbank_from(params: AttentionParams, N: int, A: int, B: int) -> tuple[Tensor, Tensor]:
    """``filterbank`` for an :class:`AttentionParams`."""
    return filterbank(params.g_x, params.g_y, N=N, A=A, B=B, sigma2=params.sigma2, delta=params.delta)


def read_patch(x: Tensor, F_x: Tensor, F_y: Tensor, gamma: Tensor) -> Tensor:
    """Glimpse ``gamma F_y x F_x^T`` (eq. 27) of images ``x`` ``(batch, C, B, A)`` -> ``(batch, C, N, N)``."""
    # (batch, 1, N, B) @ (batch, C, B, A) @ (batch, 1, A, N) -> (batch, C, N, N)
    patch = F_y[:, None] @ x @ F_x[:, None].transpose(-1, -2)
    return gamma[:, None, None, None] * patch


def read(x: Tensor, x_hat: Tensor, F_x: Tensor, F_y: Tensor, gamma: Tensor) -> Tensor:
    """DRAW's attentive read, eq. 27: ``gamma [F_y x F_x^T, F_y x^ F_x^T]``.

    ``x``, ``x_hat``: ``(batch, C, B, A)``; returns ``(batch, 2 C N N)`` (flattened, x first).
    """
    both = torch.cat([x, x_hat], 1)  # (batch, 2C, B, A): one pair of matmuls for both
    return read_patch(both, F_x, F_y, gamma).flatten(1)


def write(w: Tensor, F_x: Tensor, F_y: Tensor, gamma: Tensor) -> Tensor:
    """DRAW's attentive write, eq. 29: ``(1/gamma^) F^_y^T w F^_x``.

    ``w``: writing patch ``(batch, C, N, N)`` (eq. 28); returns ``(batch, C, B, A)``.
    """
    # (batch, 1, B, N) @ (batch, C, N, N) @ (batch, 1, N, A) -> (batch, C, B, A)
    canvas = F_y[:, None].transpose(-1, -2) @ w @ F_x[:, None]
    return canvas / gamma[:, None, None, None]
