"""DRAW: shapes, the KL term, generation, both variants."""

from __future__ import annotations

import torch

from draw.likelihood import bernoulli_nll, gaussian_kl, gaussian_log_prob, standard_normal_log_prob
from draw.model import DRAW, DrawConfig


def small_cfg(**kw) -> DrawConfig:
    base = dict(image_shape=(1, 12, 10), T=4, read_n=3, write_n=4, lstm_size=16, z_size=5)
    base.update(kw)
    return DrawConfig(**base)


def test_forward_shapes_with_and_without_attention():
    x = torch.rand(3, 1, 12, 10)
    for attention in (True, False):
        model = DRAW(small_cfg(attention=attention))
        out = model(x, return_params=True, return_canvases=True)
        assert out.logits.shape == (3, 1, 12, 10)
        assert out.kl.shape == (3, 4)
        assert (out.kl >= 0).all()
        assert out.canvases.shape == (4, 3, 1, 12, 10)
        if attention:
            assert out.read_params.shape == (3, 4, 5) and out.write_params.shape == (3, 4, 5)
        else:
            assert out.read_params is None


def test_multichannel_images():
    model = DRAW(small_cfg(image_shape=(3, 8, 8)))
    loss, metrics = model.loss(torch.rand(2, 3, 8, 8))
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_generate_returns_every_canvas_and_window():
    model = DRAW(small_cfg())
    g = model.generate(6, generator=torch.Generator().manual_seed(0))
    assert g.canvases.shape == (4, 6, 1, 12, 10)
    assert g.write_params.shape == (4, 6, 5)
    assert ((g.canvases >= 0) & (g.canvases <= 1)).all()
    g2 = model.generate(6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(g.canvases, g2.canvases)
    assert DRAW(small_cfg(attention=False)).generate(2).write_params is None


def test_kl_closed_form_matches_monte_carlo():
    torch.manual_seed(0)
    mu = torch.tensor([[0.5, -1.0, 0.2]])
    log_sigma = torch.tensor([[-0.3, 0.4, 0.0]])
    z = mu + log_sigma.exp() * torch.randn(200_000, 3)
    mc = (gaussian_log_prob(z, mu, log_sigma) - standard_normal_log_prob(z)).mean()
    closed = gaussian_kl(mu, log_sigma)[0]
    assert abs(mc.item() - closed.item()) < 0.02
    assert gaussian_kl(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0


def test_bernoulli_nll_is_summed_binary_cross_entropy():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.sigmoid(logits)
    expected = -(x * p.log() + (1 - x) * (1 - p).log()).sum(1)
    torch.testing.assert_close(bernoulli_nll(logits, x), expected)


def test_loss_is_mean_bound_in_nats():
    torch.manual_seed(0)
    model = DRAW(small_cfg())
    x = (torch.rand(4, 1, 12, 10) > 0.5).float()
    torch.manual_seed(1)
    loss, m = model.loss(x)
    torch.testing.assert_close(loss, m["recon"] + m["kl"])
    # an untrained model with a zero canvas predicts p = 1/2 everywhere: about 120 log 2 nats
    assert 0.5 * 120 * 0.693 < m["recon"].item() < 3 * 120 * 0.693


def test_describe_names_the_patch_sizes_only_with_attention():
    assert DrawConfig().describe() == "T=64, read 2x2, write 5x5, LSTM 256, z 100"  # Table 3's MNIST model
    assert DrawConfig(T=16, read_n=12, write_n=12, attention=False).describe() == "T=16, LSTM 256, z 100"
