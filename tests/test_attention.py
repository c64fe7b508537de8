"""The filterbank, read and write against the paper's equations 19-29."""

from __future__ import annotations

import math

import pytest
import torch

from draw.attention import (
    attention_params,
    filterbank,
    filterbank_from,
    grid_centres,
    read,
    read_patch,
    write,
)


def _bank(batch=3, N=5, A=28, B=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    g_x = torch.rand(batch, generator=g) * A + 1
    g_y = torch.rand(batch, generator=g) * B + 1
    log_sigma2 = torch.randn(batch, generator=g)
    log_delta = torch.randn(batch, generator=g) * 0.3
    return filterbank(g_x, g_y, log_sigma2, log_delta, N, A, B)


def test_shapes_and_rows_sum_to_one():
    F_x, F_y = _bank(batch=3, N=5, A=28, B=20)
    assert F_x.shape == (3, 5, 28)
    assert F_y.shape == (3, 5, 20)
    torch.testing.assert_close(F_x.sum(-1), torch.ones(3, 5))
    torch.testing.assert_close(F_y.sum(-1), torch.ones(3, 5))
    assert (F_x >= 0).all() and (F_y >= 0).all()


def test_centred_unit_stride_grid_spans_image():
    """g~ = 0, delta~ = 1: the filter centres run from pixel 1 to pixel A (and 1..B)."""
    A, B, N = 40, 30, 6
    p = attention_params(torch.tensor([[0.0, 0.0, math.log(0.01), 0.0, 0.0]]), N, A, B)
    assert p.g_x.item() == pytest.approx((A + 1) / 2)
    assert p.delta.item() == pytest.approx((max(A, B) - 1) / (N - 1))
    mu_x = grid_centres(p.g_x, p.delta, N)[0]
    torch.testing.assert_close(mu_x[[0, -1]], torch.tensor([1.0, float(A)]))
    # with a tiny sigma each filter is a one-hot at its centre: first column 0, last A-1
    F_x, F_y = filterbank_from(p, N, A, B)
    centres_x = F_x[0].argmax(-1)
    assert centres_x[0].item() == 0 and centres_x[-1].item() == A - 1
    assert torch.all(centres_x.diff() > 0)
    # along y the grid uses the same stride (from max(A, B)), centred on the image
    mu_y = grid_centres(p.g_y, p.delta, N)[0]
    torch.testing.assert_close(mu_y.mean(), torch.tensor((B + 1) / 2))
    torch.testing.assert_close(mu_y.diff(), mu_x.diff())


def test_rows_sum_to_one_even_far_off_the_image():
    F_x, F_y = filterbank(torch.tensor([-500.0]), torch.tensor([900.0]), torch.tensor([-6.0]),
                          torch.tensor([0.0]), 4, 30, 30)
    torch.testing.assert_close(F_x.sum(-1), torch.ones(1, 4))
    torch.testing.assert_close(F_y.sum(-1), torch.ones(1, 4))


def test_read_constant_image_gives_gamma_times_constant():
    N, A, B = 4, 25, 17
    F_x, F_y = _bank(batch=2, N=N, A=A, B=B)
    gamma = torch.tensor([0.5, 2.0])
    x = torch.full((2, 1, B, A), 0.7)
    patch = read_patch(x, F_x, F_y, gamma)
    assert patch.shape == (2, 1, N, N)
    torch.testing.assert_close(patch[:, 0], gamma[:, None, None] * 0.7 * torch.ones(2, N, N))
    r = read(x, torch.zeros_like(x), F_x, F_y, gamma)
    assert r.shape == (2, 2 * N * N)
    torch.testing.assert_close(r[:, N * N :], torch.zeros(2, N * N))


def test_multichannel_read_and_write_shapes():
    N, A, B = 3, 12, 10
    F_x, F_y = _bank(batch=2, N=N, A=A, B=B)
    x = torch.rand(2, 3, B, A)
    assert read(x, x, F_x, F_y, torch.ones(2)).shape == (2, 2 * 3 * N * N)
    assert write(torch.rand(2, 3, N, N), F_x, F_y, torch.ones(2)).shape == (2, 3, B, A)


def test_write_puts_mass_where_it_was_read():
    """Read a bright square with a window on it, write the patch back: the canvas mass lands
    on the square and total mass is preserved (columns of F^T sum to the patch)."""
    A = B = 40
    N = 5
    x = torch.zeros(1, 1, B, A)
    x[..., 25:33, 5:13] = 1.0  # rows 26..33, columns 6..13 in 1-based pixels
    raw = torch.tensor([[2 * 9.5 / (A + 1) - 1, 2 * 29.5 / (B + 1) - 1, math.log(1.0), math.log(1.25 * 4 / 39), 0.0]])
    p = attention_params(raw, N, A, B)
    F_x, F_y = filterbank_from(p, N, A, B)
    patch = read_patch(x, F_x, F_y, p.gamma)
    assert patch.mean() > 0.5
    canvas = write(patch, F_x, F_y, p.gamma)
    inside = canvas[..., 25:33, 5:13].sum()
    assert inside / canvas.sum() > 0.8
    torch.testing.assert_close(canvas.sum(), patch.sum() / p.gamma.squeeze())


def test_parameters_stay_finite_at_extremes():
    raw = torch.tensor([[50.0, -50.0, 200.0, 200.0, 200.0], [0.0, 0.0, -200.0, -200.0, -200.0]])
    p = attention_params(raw, 12, 100, 100)
    for t in p.as_tuple():
        assert torch.isfinite(t).all() and (t.abs() < 1e8).all()
    assert (p.sigma2 > 0).all() and (p.delta > 0).all()
    F_x, F_y = filterbank_from(p, 12, 100, 100)
    assert torch.isfinite(F_x).all() and torch.isfinite(F_y).all()


def test_gradients_flow_to_window_parameters():
    raw = torch.zeros(2, 5, requires_grad=True)
    x = torch.rand(2, 1, 20, 20)
    p = attention_params(raw, 4, 20, 20)
    F_x, F_y = filterbank_from(p, 4, 20, 20)
    read_patch(x, F_x, F_y, p.gamma).square().sum().backward()
    assert torch.isfinite(raw.grad).all() and (raw.grad.abs().sum(0) > 0).all()


def test_sigma_floor_is_smooth_and_keeps_filters_a_pixel_wide():
    """min_sigma: sigma^2 = exp(log sigma^2) + min_sigma^2, differentiable everywhere; a window
    asking for a sub-pixel sigma gets filters about a pixel wide instead of point samples."""
    raw = torch.tensor([[0.0, 0.0, -6.0, 0.0, 0.0]], requires_grad=True)  # sigma^2 = e^-6: 0.05 pixel
    free = attention_params(raw, 5, 28, 28)
    floored = attention_params(raw, 5, 28, 28, min_sigma=0.5)
    assert free.sigma2.sqrt().item() < 0.06
    assert abs(floored.sigma2.item() - (math.exp(-6) + 0.25)) < 1e-7
    floored.sigma2.sum().backward()
    assert raw.grad[0, 2] > 0  # the floor is smooth: log sigma^2 still gets a gradient
    F_x, _ = filterbank_from(floored, 5, 28, 28)
    assert F_x.max() < 0.9  # no filter puts (almost) all its weight on one pixel


def test_gamma_bound_is_smooth_and_the_identity_near_one():
    """max_log_gamma M: gamma = exp(M tanh(log gamma / M)): in [e^-M, e^M], gamma ~ exp(log gamma)
    for small log gamma, and differentiable everywhere."""
    log_gamma = torch.tensor([-6.0, -0.1, 0.0, 0.1, 6.0], requires_grad=True)
    raw = torch.stack([torch.zeros(5), torch.zeros(5), torch.zeros(5), torch.zeros(5), log_gamma], -1)
    p = attention_params(raw, 4, 20, 20, max_log_gamma=1.0)
    assert (p.gamma >= math.exp(-1) - 1e-6).all() and (p.gamma <= math.e + 1e-6).all()
    assert abs(p.gamma[3].item() - math.exp(0.1)) < 1e-3 and p.gamma[2].item() == 1.0
    p.gamma.sum().backward()
    assert (log_gamma.grad > 0).all()
    unbounded = attention_params(raw.detach(), 4, 20, 20)
    assert unbounded.gamma[4].item() > 400  # the paper's gamma = exp(log gamma)
