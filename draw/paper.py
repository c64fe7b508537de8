"""The paper's experimental settings (Table 3 of Gregor et al., 2015, arXiv 1502.04623),
the one place they are written down. The models' config defaults are derived from it
(:class:`draw.model.DrawConfig` from the MNIST row, :class:`draw.classifier.ClassifierConfig`
from the cluttered-classification row), and ``benchmark.paper.table3()`` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table3Row:
    """One row of Table 3, "Experimental Hyper-Parameters". ``read_n`` and ``write_n`` are
    N of the N x N attention patches; None where the paper prints "-" (the classifier has no
    latent z and does not write)."""

    task: str
    image_shape: tuple[int, int, int]  # (C, H, W)
    glimpses: int
    lstm_size: int
    z_size: int | None
    read_n: int
    write_n: int | None


TABLE3: dict[str, Table3Row] = {
    "cluttered": Table3Row("100 x 100 MNIST Classification", (1, 100, 100), 8, 256, None, 12, None),
    "mnist": Table3Row("MNIST Model", (1, 28, 28), 64, 256, 100, 2, 5),
    "svhn": Table3Row("SVHN Model", (3, 32, 32), 32, 800, 100, 12, 12),
    "cifar10": Table3Row("CIFAR Model", (3, 32, 32), 64, 400, 200, 5, 5),
}
