"""SVHN / CIFAR-10 loading (torchvision replaced by tiny fakes: no network) and DRAW with the
discretised-logistic likelihood for colour images."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
import torchvision.datasets

from datasets.natural import NaturalDataNotFoundError, load_natural, paper_config
from draw.config import PAPER_DRAW, DrawConfig, TrainConfig
from draw.likelihood import discretized_logistic_nll, importance_sampled_nll
from draw.model import DRAW
from draw.train import TensorData, evaluate, train


def colour_images(n: int, seed: int) -> np.ndarray:
    """``(n, 32, 32, 3)`` uint8: a smooth colour gradient per image plus noise (learnable)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 31
    base = np.stack([xx, yy, 1 - xx], -1)[None]  # (1, 32, 32, 3)
    tint = rng.uniform(0.3, 1.0, size=(n, 1, 1, 3))
    return np.clip(255 * (base * tint + rng.normal(0, 0.03, (n, 32, 32, 3))), 0, 255).astype(np.uint8)


class FakeCIFAR10:
    """torchvision.datasets.CIFAR10's interface: ``data`` (n, 32, 32, 3) uint8, ``targets`` list."""

    present = True

    def __init__(self, root, train=True, download=False, **kw):
        if not self.present:
            if download:
                raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        n = 40 if train else 12
        self.data = colour_images(n, 0 if train else 1)
        self.targets = list(np.arange(n) % 10)


class FakeSVHN:
    """torchvision.datasets.SVHN's interface: ``data`` (n, 3, 32, 32) uint8, ``labels`` array."""

    present = True

    def __init__(self, root, split="train", download=False, **kw):
        if not self.present:
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        n = 30 if split == "train" else 10
        self.data = colour_images(n, 2).transpose(0, 3, 1, 2).copy()
        self.labels = np.arange(n) % 10


@pytest.fixture
def fake_torchvision(monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    monkeypatch.setattr(torchvision.datasets, "SVHN", FakeSVHN)
    monkeypatch.setattr(FakeCIFAR10, "present", True)
    monkeypatch.setattr(FakeSVHN, "present", True)


def test_splits_shapes_and_scale(fake_torchvision, tmp_path):
    train_set = load_natural("cifar10", "train", tmp_path, download=False, n_valid=8)
    valid = load_natural("cifar10", "valid", tmp_path, download=False, n_valid=8)
    test = load_natural("cifar10", "test", tmp_path, download=False)
    assert isinstance(train_set, TensorData)
    assert train_set.x.shape == (32, 3, 32, 32) and valid.x.shape == (8, 3, 32, 32) and test.x.shape == (12, 3, 32, 32)
    assert train_set.x.dtype == torch.uint8 and train_set.scale == pytest.approx(1 / 255)
    # channels first, in the source's order: the red channel is the x gradient
    full = colour_images(40, 0)
    np.testing.assert_array_equal(valid.x.numpy(), full[32:].transpose(0, 3, 1, 2))
    x, _ = test.batch(torch.arange(4))
    assert 0 <= x.min() and x.max() <= 1
    svhn = load_natural("svhn", "train", tmp_path, download=False, n_valid=5)
    assert svhn.x.shape == (25, 3, 32, 32) and svhn.y.tolist()[:3] == [0, 1, 2]


def test_clear_error_when_offline_and_absent(fake_torchvision, monkeypatch, tmp_path):
    monkeypatch.setattr(FakeCIFAR10, "present", False)
    monkeypatch.setattr(FakeSVHN, "present", False)
    with pytest.raises(NaturalDataNotFoundError, match="no internet") as e:
        load_natural("cifar10", "test", tmp_path, download=True)
    assert str(tmp_path) in str(e.value) and "cifar-10-batches-py" in str(e.value)
    with pytest.raises(NaturalDataNotFoundError, match="train_32x32.mat"):
        load_natural("svhn", "train", tmp_path, download=False)
    with pytest.raises(ValueError, match="unknown data set"):
        load_natural("imagenet")
    with pytest.raises(ValueError, match="unknown split"):
        load_natural("svhn", "extra", tmp_path)


def test_paper_configs_use_table3_with_the_logistic_likelihood():
    for name in ("svhn", "cifar10"):
        cfg = paper_config(name)
        assert cfg.likelihood == "logistic" and cfg.image_shape == (3, 32, 32)
        assert (cfg.T, cfg.read_n, cfg.write_n, cfg.enc_size, cfg.z_size) == (
            PAPER_DRAW[name].T, PAPER_DRAW[name].read_n, PAPER_DRAW[name].write_n, PAPER_DRAW[name].enc_size,
            PAPER_DRAW[name].z_size)
    assert (paper_config("cifar10").T, paper_config("svhn").T) == (64, 32)
    assert paper_config("svhn", T=4).T == 4
    assert PAPER_DRAW["svhn"].likelihood == "bernoulli"  # the shared presets are unchanged
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


def test_draw_on_colour_images_trains_and_estimates(fake_torchvision, tmp_path):
    data = load_natural("cifar10", "train", tmp_path, download=False, n_valid=8)
    torch.manual_seed(0)
    model = DRAW(paper_config("cifar10", T=3, read_n=3, write_n=4, enc_size=24, dec_size=24, z_size=6))
    before = evaluate(model, data)["loss"]
    train(model, data, None, TrainConfig(epochs=20, batch_size=16, lr=1e-2, checkpoint_every=0), None,
          device="cpu", progress=False)
    after = evaluate(model, data)["loss"]
    assert after < before - 300, (before, after)  # nats over 3072 values: the scale and means are learnt
    est = importance_sampled_nll(model, data, K=8)
    assert np.isfinite(est) and est < after + 5
    g = model.generate(2)
    assert g.canvases.shape == (3, 2, 3, 32, 32)
