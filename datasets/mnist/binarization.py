"""The fixed stochastic binarization of MNIST.

Pixel value ``k`` is on with probability ``k / 255``, drawn as ``u < k / 255`` with
``u = np.random.default_rng([BINARIZE_SEED, split_index]).random((n, 28, 28))``
(``split_index`` 0/1/2 for train/valid/test). Every call gives the same bits.
"""

from __future__ import annotations

import numpy as np

from datasets.mnist.formats import check_split

#: Seed of the fixed stochastic binarization (2015-02-10: DRAW, arXiv 1502.04623).
BINARIZE_SEED: int = 20150210
BINARIZED_SOURCE_STOCHASTIC = f"stochastic-seed-{BINARIZE_SEED}"
BINARIZED_SOURCE_AMAT = "larochelle-amat"

# Rows of uniforms drawn at a time (memory only: the stream, hence the bits, do not change).
_BINARIZE_CHUNK_ROWS = 4096


def binarize(images: np.ndarray, split: str) -> np.ndarray:
    """The fixed stochastic binarization of ``split``'s uint8 images.

    Pixel value ``k`` is on with probability ``k / 255``: ``u < k / 255`` with
    ``u = np.random.default_rng([BINARIZE_SEED, SPLITS.index(split)]).random(images.shape)``
    (drawn in row-major order, in chunks of rows, which gives the same stream).

    Args:
        images: ``uint8`` array of shape ``(n, 28, 28)`` (any shape ``(n, ...)`` works).
        split: ``"train"``, ``"valid"`` or ``"test"``; selects the random stream.

    Returns:
        ``uint8`` array of 0/1 with the shape of ``images``.
    """
    split_index = check_split(split)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"binarize expects uint8 images, got {images.dtype}")
    rng = np.random.default_rng([BINARIZE_SEED, split_index])
    out = np.empty(images.shape, dtype=np.uint8)
    n = images.shape[0] if images.ndim else 0
    step = max(1, int(_BINARIZE_CHUNK_ROWS))  # read at call time (tests change it)
    for start in range(0, n, step):
        block = images[start : start + step]
        u = rng.random(block.shape)
        np.less(u, block / 255.0, out=out[start : start + step], casting="unsafe")
    return out
