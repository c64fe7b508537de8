"""Two-digit MNIST for generation (Gregor et al., 2015, section 4.3): 60x60 canvases,
each holding two 28x28 MNIST digits at independent uniform positions.

Construction (deterministic from ``seed``)
------------------------------------------
``u = np.random.default_rng([TWO_DIGIT_SEED, seed]).random((n, 6))``: for image ``i``,
``u[i, :2]`` pick its two digits (``floor(u * m)``: uniform over the ``m`` source digits,
with replacement) and ``u[i, 2:]`` the top-left corners (row, column) of the first and of
the second digit (``floor(u * (canvas - 27))``: uniform over ``0 .. canvas - 28``). Row by
row, so the first ``k`` images do not depend on ``n``. The two digits are added and
clipped to 255, so overlapping strokes stay full strength.

Splits: the digits of MNIST's train / valid / test split (50k / 10k / 10k,
:data:`datasets.mnist.SPLIT_SIZES`, re-exported here as :data:`SPLIT_SIZES`) make the
two-digit split of the same name, by default as many images as digits, so no test digit
is seen in training. Images are binarized for the Bernoulli likelihood exactly as
binarized MNIST is: pixel value ``k`` is on with probability ``k / 255``, drawn by
:func:`datasets.mnist.binarize` (seed ``BINARIZE_SEED``, the split's own random stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.mnist import SPLIT_SIZES, SPLITS

__all__ = [
    "DIGIT",
    "SPLIT_SIZES",
    "TWO_DIGIT_SEED",
    "TwoDigitLayout",
    "load_two_digit",
    "make_two_digit",
    "two_digit_layout",
]

TWO_DIGIT_SEED = 43  # after section 4.3 of the paper
DIGIT = 28


@dataclass
class TwoDigitLayout:
    """Which digits go where: ``index`` ``(n, 2)`` rows of the source digits, ``position``
    ``(n, 2, 2)`` top-left (row, column) of each digit on the canvas."""

    index: np.ndarray
    position: np.ndarray


def two_digit_layout(m: int, n: int, seed: int, canvas: int = 60) -> TwoDigitLayout:
    """The random choices behind :func:`make_two_digit` for ``n`` images from ``m`` digits."""
    if canvas < DIGIT:
        raise ValueError(f"canvas must be at least {DIGIT} pixels, got {canvas}")
    if m < 1 or n < 0:
        raise ValueError(f"need at least one source digit and n >= 0 (got m={m}, n={n})")
    u = np.random.default_rng([TWO_DIGIT_SEED, seed]).random((n, 6))  # (n, 6): one row per image
    index = np.minimum((u[:, :2] * m).astype(np.int64), m - 1)  # (n, 2)
    span = canvas - DIGIT + 1
    position = np.minimum((u[:, 2:] * span).astype(np.int64), span - 1).reshape(n, 2, 2)  # (n, digit, (row, col))
    return TwoDigitLayout(index, position)


def make_two_digit(digits: np.ndarray, n: int, seed: int, canvas: int = 60, *, chunk: int = 4096) -> np.ndarray:
    """``n`` canvases ``uint8`` ``(n, canvas, canvas)``, each the clipped sum of two digits from
    ``digits`` ``uint8`` ``(m, 28, 28)`` at uniform positions; deterministic in ``seed``."""
    digits = np.asarray(digits)
    if digits.dtype != np.uint8 or digits.ndim != 3 or digits.shape[1:] != (DIGIT, DIGIT):
        raise ValueError(f"digits must be uint8 (m, 28, 28), got {digits.dtype} {digits.shape}")
    layout = two_digit_layout(len(digits), n, seed, canvas)
    out = np.zeros((n, canvas, canvas), np.uint8)
    ii, jj = np.mgrid[0:DIGIT, 0:DIGIT]  # (28, 28)
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        b = sl.stop - sl.start
        acc = np.zeros((b, canvas, canvas), np.uint16)
        rows = np.arange(b)[:, None, None]
        for k in range(2):  # within one digit the target pixels are distinct: plain += is exact
            r = layout.position[sl, k, 0, None, None] + ii  # (b, 28, 28)
            c = layout.position[sl, k, 1, None, None] + jj
            acc[rows, r, c] += digits[layout.index[sl, k]]
        out[sl] = np.minimum(acc, 255).astype(np.uint8)
    return out


def load_two_digit(
    split: str, n: int | None = None, *, seed: int = 0, canvas: int = 60, binarized: bool = True,
    data_dir: str | Path | None = None,
) -> np.ndarray:
    """Two-digit MNIST ``split`` (``n`` images, default as many as the MNIST split has):
    ``uint8`` ``(n, canvas, canvas)``, 0/1 if ``binarized`` else grey levels 0..255.

    The digits come from :func:`datasets.mnist.load_mnist` of the same split; ``seed`` is
    offset by the split so the three splits use different layouts.
    """
    from datasets.mnist import binarize, load_mnist  # looked up at call time

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    digits, _ = load_mnist(split, data_dir)
    n = len(digits) if n is None else n
    images = make_two_digit(digits, n, seed * len(SPLITS) + SPLITS.index(split), canvas)
    return binarize(images, split) if binarized else images
