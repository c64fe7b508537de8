"""Shared fixtures: tiny fake MNIST so no test touches the network."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # tiny models: one thread is fastest, and immune to oversubscription


def fake_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 'digits': class k is a bright bar at an angle/offset set by k, plus noise.

    Learnable shapes (so training tests can check that loss falls) in MNIST's format.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    yy, xx = np.mgrid[0:28, 0:28]
    images = np.zeros((n, 28, 28), np.float32)
    for k in range(10):
        angle = np.pi * k / 10
        d = np.abs((xx - 14) * np.sin(angle) - (yy - 14) * np.cos(angle))
        shape = np.clip(1.5 - d / 2, 0, 1) * ((xx - 14) ** 2 + (yy - 14) ** 2 < 120)
        images[labels == k] = shape
    images = np.clip(images + rng.normal(0, 0.05, images.shape), 0, 1)
    return (images * 255).round().astype(np.uint8), labels.astype(np.int64)


def write_fake_mnist_pkl(folder: Path, sizes=(200, 50, 50)) -> Path:
    """A small ``mnist.pkl.gz`` in the real file's layout: ((x, y), (x, y), (x, y)), x float32 k/256 (n, 784)."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = []
    for i, n in enumerate(sizes):
        x, y = fake_digits(n, seed=i)
        splits.append(((x.reshape(n, 784) / 256).astype(np.float32), y))
    path = folder / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(tuple(splits), f, protocol=2)
    return path


@pytest.fixture
def fake_mnist_dir(tmp_path, monkeypatch) -> Path:
    """A data folder holding a tiny fake MNIST, set as DRAWBENCH_DATA."""
    folder = tmp_path / "data"
    write_fake_mnist_pkl(folder)
    monkeypatch.setenv("DRAWBENCH_DATA", str(folder))
    return folder
