"""SVHN and CIFAR-10 for DRAW on colour images (Gregor et al., 2015, sections 4.4-4.5),
through torchvision. Needs internet the first time (or the files placed by hand).

Splits
------
``"train"`` is the official training set without its last :data:`N_VALID` images,
``"valid"`` those last images (in order), ``"test"`` the official test set. SVHN's
``extra`` set is not used.

Files
-----
torchvision's own layout under ``root``: ``cifar-10-batches-py/`` (from
``cifar-10-python.tar.gz``) for CIFAR-10, ``train_32x32.mat`` and ``test_32x32.mat`` for
SVHN. Without them and without network, :class:`NaturalDataNotFoundError` says what to
place where.

Model
-----
:func:`paper_config` is the paper's Table 3 setting (``draw.config.PAPER_DRAW``) with the
discretised-logistic likelihood (``DrawConfig.likelihood = "logistic"``), the continuous
likelihood for 8-bit colour images; see :class:`draw.config.DrawConfig`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from draw.config import PAPER_DRAW, DrawConfig
from draw.train import TensorData

NAMES = ("svhn", "cifar10")
SPLITS = ("train", "valid", "test")
N_VALID = 5000
FILES = {
    "cifar10": "cifar-10-batches-py/ (torchvision's CIFAR10 layout; from cifar-10-python.tar.gz)",
    "svhn": "train_32x32.mat and test_32x32.mat (torchvision's SVHN layout)",
}


class NaturalDataNotFoundError(RuntimeError):
    """The data set is not under ``root`` and could not be downloaded."""


def default_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$DRAWBENCH_DATA/natural``, else ``~/.cache/drawbench/natural``."""
    import os

    if root is not None:
        return Path(root).expanduser()
    base = os.environ.get("DRAWBENCH_DATA") or "~/.cache/drawbench"
    return Path(base).expanduser() / "natural"


def _official(name: str, train: bool, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """The official train or test set: ``uint8`` ``(n, 3, 32, 32)`` and ``int64`` labels ``(n,)``."""
    import torchvision.datasets as tvd

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
    name: str, split: str = "train", root: str | Path | None = None, download: bool = True, *, n_valid: int = N_VALID
) -> TensorData:
    """SVHN or CIFAR-10 ``split`` as :class:`draw.train.TensorData`: ``x`` ``uint8``
    ``(n, 3, 32, 32)``, labels ``y`` ``(n,)``, ``scale`` 1/255 (so batches are in [0, 1]).

    ``"valid"`` is the last ``n_valid`` images of the official training set, ``"train"`` the
    rest. Raises :class:`NaturalDataNotFoundError` when the files are absent and cannot be
    downloaded."""
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; expected one of {NAMES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = default_root(root)
    x, y = _official(name, split != "test", root, download)
    if split != "test":
        if not 0 < n_valid < len(x):
            raise ValueError(f"{name}: cannot hold out {n_valid} of the {len(x)} training images for validation")
        cut = len(x) - n_valid
        x, y = (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])
    return TensorData(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), scale=1 / 255)


def paper_config(name: str, **overrides: object) -> DrawConfig:
    """The paper's Table 3 model for ``name`` with the discretised-logistic likelihood;
    ``overrides`` replace fields (e.g. ``T=8`` for a quick run)."""
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; expected one of {NAMES}")
    return dataclasses.replace(PAPER_DRAW[name], likelihood="logistic", **overrides)
