"""SVHN and CIFAR-10 for DRAW on colour images (Gregor et al., 2015, sections 4.4-4.5),
read through torchvision from files placed by hand (or, with ``download=True``, fetched).

Splits
------
``"train"`` is the official training set without its last :data:`N_VALID` images,
``"valid"`` those last images (in order), ``"test"`` the official test set. SVHN's
``extra`` set is not used.

Files
-----
torchvision's own layout under ``root``: ``cifar-10-batches-py/`` (from
``cifar-10-python.tar.gz``) for CIFAR-10, ``train_32x32.mat`` and ``test_32x32.mat`` for
SVHN. ``root`` defaults to ``$DRAWBENCH_DATA/natural``, else ``~/.cache/drawbench/natural``.
The suite never downloads by default: without the files, :class:`NaturalDataNotFoundError`
says what to place where.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from datasets import files

__all__ = [
    "FILES",
    "NAMES",
    "N_VALID",
    "SPLITS",
    "NaturalDataNotFoundError",
    "default_root",
    "load_natural",
]

NAMES = ("svhn", "cifar10")
SPLITS = ("train", "valid", "test")
N_VALID = 5000
FILES = {
    "cifar10": "cifar-10-batches-py/ (torchvision's CIFAR10 layout; from cifar-10-python.tar.gz)",
    "svhn": "train_32x32.mat and test_32x32.mat (torchvision's SVHN layout)",
}


class NaturalDataNotFoundError(RuntimeError):
    """The data set is not under ``root`` (and, with ``download=True``, could not be downloaded)."""


def default_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root`` if given, else ``$DRAWBENCH_DATA/natural``, else ``~/.cache/drawbench/natural``."""
    if root is not None:
        return Path(root).expanduser()
    return files.data_dir() / "natural"


def _official(name: str, train: bool, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """The official train or test set: ``uint8`` ``(n, 3, 32, 32)`` and ``int64`` labels ``(n,)``."""
    import torchvision.datasets as tvd  # imported lazily: slow, and only this function needs it

    try:
        if name == "cifar10":
            ds = tvd.CIFAR10(root=str(root), train=train, download=download)
            x = np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2)  # (n, 32, 32, 3) -> (n, 3, 32, 32)
            y = np.asarray(ds.targets, dtype=np.int64)
        else:
            ds = tvd.SVHN(root=str(root), split="train" if train else "test", download=download)
            x = np.asarray(ds.data, dtype=np.uint8)  # already (n, 3, 32, 32)
            y = np.asarray(ds.labels, dtype=np.int64)
    except (RuntimeError, OSError) as e:  # "Dataset not found", URLError, no route to host ...
        how = ("the download failed (no internet?)" if download else "download=False")
        raise NaturalDataNotFoundError(
            f"{name} is not in {root} and {how}: {e}. Place {FILES[name]} in {root}, "
            f"or run once with internet and download=True."
        ) from e
    if x.ndim != 4 or x.shape[1:] != (3, 32, 32) or len(y) != len(x):
        raise ValueError(f"{name}: unexpected arrays {x.shape} / {y.shape} from torchvision")
    return np.ascontiguousarray(x), y


def load_natural(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    *,
    n_valid: int = N_VALID,
) -> tuple[np.ndarray, np.ndarray]:
    """SVHN or CIFAR-10 ``split`` as numpy arrays: images ``uint8`` ``(n, 3, 32, 32)``
    (value k stands for k/255) and labels ``int64`` ``(n,)``; fresh, writable copies.

    ``"valid"`` is the last ``n_valid`` images of the official training set, ``"train"`` the
    rest. ``root`` is as :func:`default_root`. Nothing is downloaded unless ``download``
    is true. Raises :class:`NaturalDataNotFoundError` when the files are absent (and could
    not be downloaded), naming the files to place and where."""
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; expected one of {NAMES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    folder = default_root(root)
    x, y = _official(name, split != "test", folder, download)
    if split != "test":
        if not 0 < n_valid < len(x):
            raise ValueError(f"{name}: cannot hold out {n_valid} of the {len(x)} training images for validation")
        cut = len(x) - n_valid
        x, y = (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])
    return x.copy(), y.copy()
