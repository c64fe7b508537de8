"""The data sets of the benches as :class:`datasets.tensors.TensorData`: cluttered MNIST
(cached, and new clutter every epoch), binarized MNIST, two-digit MNIST, SVHN and CIFAR-10.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from datasets.tensors import TensorData

NATURAL = ("svhn", "cifar10")


def cluttered_data(split: str, params: object, seed: int = 0, n: int | None = None,
                   data_dir: str | Path | None = None) -> TensorData:
    """A cached cluttered-MNIST split (see :mod:`datasets.cluttered`): uint8 images, labels."""
    return cluttered_split(split, params, seed, n, data_dir)[0]


def cluttered_split(split: str, params: object, seed: int = 0, n: int | None = None,
                    data_dir: str | Path | None = None) -> tuple[TensorData, np.ndarray]:
    """:func:`cluttered_data` and the target digits' positions ``(n, 2)``: 0-based (row, col)
    of each digit's top-left pixel (where a model's glimpses should go)."""
    from datasets.cluttered import cached_split

    ds = cached_split(split, params, seed=seed, n=n, data_dir=data_dir)
    return TensorData.from_numpy(ds.images, ds.labels), ds.positions


def fresh_cluttered(params: object, seed: int = 0, n: int | None = None, data_dir: str | Path | None = None,
                    device: torch.device | str = "cpu") -> Callable[[int], TensorData]:
    """``epoch -> TensorData``: new clutter for every training epoch (for ``train(epoch_data=...)``).

    Epoch ``e`` re-draws targets' order and positions and the distractors from the same
    50,000 training digits, from the stream of split name ``"train/epoch<e>"``: a
    deterministic function of (seed, e), never the validation or test digits. A fixed
    set of 60,000 images lets a large model memorise its clutter (the RAM paper's conv
    baseline reached train loss 0.03 at 56% validation error on one here).
    """
    from datasets.cluttered import SET_SIZES, make_cluttered
    from datasets.mnist import load_mnist

    digits, labels = load_mnist("train", data_dir=data_dir)
    size = SET_SIZES["train"] if n is None else n

    def data(epoch: int) -> TensorData:
        ds = make_cluttered(digits, labels, size, params, seed, split=f"train/epoch{epoch}")
        return TensorData.from_numpy(ds.images, ds.labels).to(device)

    return data


def binarized_mnist(split: str, data_dir: str | Path | None = None) -> tuple[TensorData, str]:
    """Binarized MNIST ``split`` (values 0/1, scale 1) and the binarization used."""
    from datasets.mnist import load_binarized_mnist

    x, source = load_binarized_mnist(split, data_dir)
    return TensorData.from_numpy(x, None, scale=1.0), source


def two_digit(split: str, n: int | None, seed: int, canvas: int,
              data_dir: str | Path | None = None) -> tuple[TensorData, str]:
    """Two-digit MNIST (section 4.3), binarized like MNIST: ``(data, description)``."""
    from datasets.multi_mnist import load_two_digit

    x = load_two_digit(split, n, seed=seed, canvas=canvas, data_dir=data_dir)
    return TensorData.from_numpy(x, None, scale=1.0), f"two-digit {canvas}x{canvas}, seed {seed}"


def natural(name: str, split: str, data_dir: str | Path | None = None) -> tuple[TensorData, str]:
    """SVHN or CIFAR-10 (8-bit colour, scale 1/255) from the data folder; never downloads:
    :class:`datasets.natural.NaturalDataNotFoundError` names the files to place."""
    from datasets.files import data_dir as data_folder
    from datasets.natural import load_natural

    root = data_folder(data_dir) / "natural"
    x, y = load_natural(name, split, root, download=False)
    return TensorData.from_numpy(x, y), f"{name} from {root}"


def generation_split(dataset: str, split: str, n: int | None = None, *, seed: int = 0, canvas: int = 60,
                     data_dir: str | Path | None = None) -> tuple[TensorData, str]:
    """The first ``n`` images of one split of a generation data set (``mnist``: binarized;
    ``twodigit``: two-digit MNIST on a ``canvas`` square; ``svhn``, ``cifar10``: 8-bit
    colour) and its source (for MNIST, the binarization)."""
    if dataset == "mnist":
        data, source = binarized_mnist(split, data_dir)
    elif dataset == "twodigit":
        data, source = two_digit(split, n, seed, canvas, data_dir)
    elif dataset in NATURAL:
        data, source = natural(dataset, split, data_dir)
    else:
        raise ValueError(f"unknown data set {dataset!r}; choose from mnist, twodigit, {', '.join(NATURAL)}")
    return data.take(n), source
