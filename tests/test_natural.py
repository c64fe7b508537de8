"""SVHN / CIFAR-10 loading, with torchvision's data sets replaced by tiny fakes in its layout:
no network. (DRAW with the logistic likelihood on colour images: tests/test_logistic.py.)"""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torchvision.datasets

from datasets.natural import NaturalDataNotFoundError, default_root, load_natural


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
    n_train = 40

    def __init__(self, root, train=True, download=False, **kw):
        if not self.present:
            if download:
                raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        n = self.n_train if train else 12
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


def test_splits_shapes_and_dtypes(fake_torchvision, tmp_path):
    train_x, train_y = load_natural("cifar10", "train", tmp_path, n_valid=8)
    valid_x, valid_y = load_natural("cifar10", "valid", tmp_path, n_valid=8)
    test_x, test_y = load_natural("cifar10", "test", tmp_path)
    assert isinstance(train_x, np.ndarray) and isinstance(train_y, np.ndarray)
    assert train_x.shape == (32, 3, 32, 32) and valid_x.shape == (8, 3, 32, 32) and test_x.shape == (12, 3, 32, 32)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int64 and train_y.shape == (32,)
    assert valid_y.tolist() == [2, 3, 4, 5, 6, 7, 8, 9] and test_y.shape == (12,)
    # channels first, in the source's order: the red channel is the x gradient
    full = colour_images(40, 0)
    np.testing.assert_array_equal(valid_x, full[32:].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(train_x, full[:32].transpose(0, 3, 1, 2))
    train_x[:] = 0  # a private, writable copy
    np.testing.assert_array_equal(load_natural("cifar10", "train", tmp_path, n_valid=8)[0],
                                  full[:32].transpose(0, 3, 1, 2))
    svhn_x, svhn_y = load_natural("svhn", "train", tmp_path, n_valid=5)
    assert svhn_x.shape == (25, 3, 32, 32) and svhn_y.tolist()[:3] == [0, 1, 2]


def test_never_downloads_by_default(monkeypatch, tmp_path):
    seen = []

    class Recorder(FakeCIFAR10):
        def __init__(self, root, train=True, download=False, **kw):
            seen.append(download)
            super().__init__(root, train, download, **kw)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Recorder)
    load_natural("cifar10", "test", tmp_path)
    assert seen == [False]


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DRAWBENCH_DATA", str(tmp_path / "data"))
    assert default_root() == tmp_path / "data" / "natural"
    assert default_root(tmp_path / "mine") == tmp_path / "mine"  # a root given is used as is
    monkeypatch.setenv("DRAWBENCH_DATA", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "drawbench" / "natural"
    monkeypatch.delenv("DRAWBENCH_DATA")
    assert default_root() == tmp_path / "home" / ".cache" / "drawbench" / "natural"


def test_clear_error_when_offline_and_absent(fake_torchvision, monkeypatch, tmp_path):
    monkeypatch.setattr(FakeCIFAR10, "present", False)
    monkeypatch.setattr(FakeSVHN, "present", False)
    with pytest.raises(NaturalDataNotFoundError, match="no internet") as e:
        load_natural("cifar10", "test", tmp_path, download=True)
    assert str(tmp_path) in str(e.value) and "cifar-10-batches-py" in str(e.value)
    with pytest.raises(NaturalDataNotFoundError, match="train_32x32.mat"):
        load_natural("svhn", "train", tmp_path, download=False)
    with pytest.raises(NaturalDataNotFoundError, match="download=False") as e:
        load_natural("cifar10", "test", tmp_path)  # the default: no network
    assert f"cifar-10-batches-py/ (torchvision's CIFAR10 layout; from cifar-10-python.tar.gz) in {tmp_path}" in str(e.value)
    with pytest.raises(ValueError, match="unknown data set"):
        load_natural("imagenet")
    with pytest.raises(ValueError, match="unknown split"):
        load_natural("svhn", "extra", tmp_path)


@pytest.mark.slow
def test_bench_nll_on_cifar10_runs_from_the_data_folder_and_names_missing_files(fake_torchvision, monkeypatch,
                                                                               tmp_path):
    """`bench nll --dataset cifar10` reaches the loader and the logistic likelihood; without
    the files the error names what to place where."""
    import pandas as pd
    from click.testing import CliRunner

    from cli import cli

    monkeypatch.setattr(FakeCIFAR10, "n_train", 5064)  # 64 training images + the 5,000 held out
    out = tmp_path / "nll"
    args = ["bench", "nll", "--dataset", "cifar10", "--preset", "smoke", "--device", "cpu", "--eager", "--data-dir",
            str(tmp_path / "data")]
    r = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "results.csv")
    bound = df[(df.metric == "nll_bound_nats") & (df.split == "test")].value.item()
    estimate = df[df.metric == "nll_is_nats"].value.item()
    assert 0 < estimate and 0 < bound  # a discretised likelihood: a probability mass, NLL >= 0
    assert "CIFAR-10" in (out / "table.md").read_text() and "logistic" in (out / "table.md").read_text()

    monkeypatch.setattr(FakeCIFAR10, "present", False)
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "nll2")])
    assert r.exit_code == 1 and "cifar-10-batches-py" in r.output and "Traceback" not in r.output
