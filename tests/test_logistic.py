"""DRAW with the discretised-logistic likelihood on colour images: the likelihood is a
distribution over the 256 levels, and the model trains and estimates on small colour data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.tensors import TensorData
from draw.likelihood import discretized_logistic_nll, importance_sampled_nll
from draw.model import DRAW, DrawConfig
from draw.train import TrainConfig, evaluate, train


def colour_images(n: int, seed: int) -> np.ndarray:
    """``(n, 32, 32, 3)`` uint8: a smooth colour gradient per image plus noise (learnable)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31
    base = np.stack([xx, yy, 1 - xx], -1)[None]  # (1, 32, 32, 3)
    tint = rng.uniform(0.3, 1.0, size=(n, 1, 1, 3))
    return np.clip(255 * (base * tint + rng.normal(0, 0.03, (n, 32, 32, 3))), 0, 255).astype(np.uint8)


def test_logistic_config():
    cfg = DrawConfig(image_shape=(3, 32, 32), likelihood="logistic")
    assert cfg.likelihood == "logistic" and cfg.image_shape == (3, 32, 32)
    assert DrawConfig().likelihood == "bernoulli"  # the default is unchanged
    with pytest.raises(ValueError, match="likelihood"):
        DrawConfig(likelihood="gaussian-ish")


def test_discretized_logistic_is_a_distribution_over_256_levels():
    levels = torch.arange(256, dtype=torch.float64) / 255  # every value a pixel can take
    for mean, log_scale in [(0.5, -3.0), (0.02, -5.0), (0.97, -1.0), (0.3, -9.0)]:
        m = torch.full((256, 1), mean, dtype=torch.float64)
        nll = discretized_logistic_nll(m, torch.tensor(log_scale, dtype=torch.float64), levels[:, None])
        assert torch.isfinite(nll).all() and (nll >= 0).all()
        assert abs(torch.exp(-nll).sum().item() - 1) < 1e-4, (mean, log_scale)
    # a sharp logistic puts (almost) all its mass on the level nearest its mean
    nll = discretized_logistic_nll(torch.tensor([[0.302]]), torch.tensor(-9.0), torch.tensor([[77 / 255]]))
    assert nll.item() < 0.01


def test_draw_on_colour_images_trains_and_estimates():
    # the 32 training images load_natural("cifar10", "train", n_valid=8) gives on the fake of
    # tests/test_natural.py, channels first: (32, 3, 32, 32) uint8
    x = colour_images(40, 0)[:32].transpose(0, 3, 1, 2).copy()
    data = TensorData.from_numpy(x, (np.arange(32) % 10).astype(np.int64))
    torch.manual_seed(0)
    model = DRAW(DrawConfig(image_shape=(3, 32, 32), T=3, read_n=3, write_n=4, lstm_size=24, z_size=6,
                            likelihood="logistic"))
    before = evaluate(model, data)["loss"]
    train(model, data, None, TrainConfig(epochs=20, batch_size=16, lr=1e-2, checkpoint_every=0), None,
          device="cpu", progress=False)
    after = evaluate(model, data)["loss"]
    assert after < before - 300, (before, after)  # nats over 3072 values: the scale and means are learnt
    est = importance_sampled_nll(model, data, K=8)
    assert np.isfinite(est) and est < after + 5
    g = model.generate(2)
    assert g.canvases.shape == (3, 2, 3, 32, 32)
