"""Degraded cluttered-MNIST test sets for ``bench robustness``.

One fixed set of test *scenes* (a target digit at a position, and a nested sequence of up
to ``max_distractors`` distractor draws) is rendered under six kinds of degradation, each
at several severities:

==================  =====================================================  ==========
axis                what changes                                           identity
==================  =====================================================  ==========
clutter             number of distractors (the scene's first k draws)      training k
distractor_size     side of the distractor crops                           training s
contrast            the target digit's intensity, times c (clutter as is)  c = 1
gaussian            + sigma * N(0, 1) per pixel, clipped to [0, 1]         sigma = 0
salt_pepper         a fraction p of pixels set to 0 or 1 (even odds)       p = 0
occlusion           a black square of side ``f * canvas`` at a uniform      f = 0
                    position
==================  =====================================================  ==========

Severities are numbered as in ImageNet-C (Hendrycks & Dietterich, 2019): the training
setting (the identity) is severity 0 and severities 1-5 are the five values of the axis's
list after it, in increasing difficulty (:func:`severity`, :func:`axis_values`). For
clutter and distractor size the identity is the training setting, so the mapping is
relative to it; values easier than the training setting are kept as extra points on the
curves with negative severities (-1 the nearest), and values past severity 5 are not
evaluated:

=================  =================================  ==========================  ==========================
axis               values (easiest first)             paper/quick: 8 of 8x8       smoke: 4 of 6x6 (40x40)
=================  =================================  ==========================  ==========================
clutter            0, 4, 8, 12, 16, 20, 24, 28        -2: 0, -1: 4, 1-5: 12..28   -1: 0, 1-5: 8..24
distractor_size    4, 6, 8, 10, 12, 14, 16, 18        -2: 4, -1: 6, 1-5: 10..18   -1: 4, 1-5: 8..16
contrast           1, 0.8, 0.6, 0.4, 0.3, 0.2         1-5: 0.8 .. 0.2             the same
gaussian           0, 0.1, 0.2, 0.3, 0.4, 0.5         1-5: 0.1 .. 0.5             the same
salt_pepper        0, 0.05, 0.1, 0.15, 0.2, 0.3       1-5: 0.05 .. 0.3            the same
occlusion          0, 0.1, 0.2, 0.3, 0.4, 0.5         1-5: 0.1 .. 0.5             the same
=================  =================================  ==========================  ==========================

Distractor sizes stay <= 28 (the digit) and <= the canvas; a training setting whose next
five values are not all on the list (or fit) is an error.

Everything is a deterministic function of ``(digits, n, canvas, seed)`` and the severity,
and the random draws do not depend on the severity: the 4-distractor image holds the
first 4 of the 8-distractor image's distractors, the pixels hit by 5% salt-and-pepper are
also hit at 10%, sigma scales one fixed noise field, and an occluder grows from one fixed
relative position. Errors at neighbouring severities are therefore paired comparisons on
the same images, and curves are smooth. Every severity-0 (identity) setting returns the
clean scene exactly. Images stay uint8 (value k stands for k/255), so the Gaussian case is
rounded to the nearest 1/255 after clipping. (The scenes draw ``max_distractors`` = 28
distractors each; the streams depend on it.)

The clean scene has the training distribution of :func:`datasets.cluttered.make_cluttered`
(a uniform target position, distractors as uniform crops of uniform source digits pasted
at uniform positions, layers added and clipped), drawn from its own random streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from datasets.cluttered import _render

__all__ = ["AXES", "MAX_DISTRACTORS", "SEVERITIES", "Axis", "Scenes", "axis_values", "gaussian_noise", "occlude",
           "occluder_boxes", "salt_pepper", "severity"]

_BLOCK = 256  # images per noise block: each block has its own seeded stream (prefix-stable in n)
_STREAMS = {"scene": 0, "gaussian": 1, "salt_pepper": 2, "occlusion": 3}


@dataclass(frozen=True)
class Axis:
    """One degradation: its severities, in order of increasing difficulty, and how to read them."""

    name: str
    label: str  # axis label for plots
    values: tuple[float, ...]
    identity: float | None  # the value that returns the clean scene; None: the training setting

    def clean_value(self, distractors: int, distractor_size: int) -> float:
        """The value of this axis that renders the clean (training-distribution) scene."""
        if self.name == "clutter":
            return float(distractors)
        if self.name == "distractor_size":
            return float(distractor_size)
        assert self.identity is not None
        return self.identity


AXES: dict[str, Axis] = {a.name: a for a in (
    Axis("clutter", "distractors per image", (0, 4, 8, 12, 16, 20, 24, 28), None),
    Axis("distractor_size", "distractor crop side (pixels)", (4, 6, 8, 10, 12, 14, 16, 18), None),
    Axis("contrast", "target digit contrast (1 = as trained)", (1.0, 0.8, 0.6, 0.4, 0.3, 0.2), 1.0),
    Axis("gaussian", "Gaussian noise sigma", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), 0.0),
    Axis("salt_pepper", "salt-and-pepper fraction of pixels", (0.0, 0.05, 0.1, 0.15, 0.2, 0.3), 0.0),
    Axis("occlusion", "occluder side / canvas side", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), 0.0),
)}


SEVERITIES = 5  #: severities 1..5 are harder than the training setting (severity 0)
MAX_DISTRACTORS = max(AXES["clutter"].values)  #: distractor draws per scene (the streams depend on it)


def severity(axis: str, value: float, distractors: int, distractor_size: int) -> int:
    """The severity number of ``value`` on ``axis`` for a model trained with ``distractors``
    distractors of ``distractor_size``: 0 at the training setting, 1..5 for the five values
    after it in the axis's list (harder), -1, -2, ... for those before it (easier), 6 and
    more past the fifth. ValueError for a value (or a training setting) not on the list."""
    a = AXES[axis] if axis in AXES else None
    if a is None:
        raise ValueError(f"unknown axis {axis!r}; choose from {', '.join(AXES)}")
    values = [float(v) for v in a.values]
    clean = a.clean_value(distractors, distractor_size)
    for what, v in (("training setting", clean), ("value", float(value))):
        if not any(abs(v - w) < 1e-9 for w in values):
            raise ValueError(f"{axis}: {what} {v:g} is not one of its values {', '.join(f'{w:g}' for w in values)}")
    index = next(i for i, w in enumerate(values) if abs(w - float(value)) < 1e-9)
    return index - next(i for i, w in enumerate(values) if abs(w - clean) < 1e-9)


def axis_values(axis: str, distractors: int, distractor_size: int, canvas: int | None = None) -> list[float]:
    """The values of ``axis`` a bench evaluates: every value of its list up to severity 5 (the
    easier ones, the training setting and the five harder ones). ValueError when fewer than
    five harder values remain (or, for distractor sizes, fit ``canvas`` and the 28-pixel digit)."""
    values = [float(v) for v in AXES[axis].values
              if severity(axis, v, distractors, distractor_size) <= SEVERITIES]
    if axis == "distractor_size":
        values = [v for v in values if v <= min(28, canvas if canvas is not None else 28)]
    harder = sum(severity(axis, v, distractors, distractor_size) > 0 for v in values)
    if harder < SEVERITIES:
        raise ValueError(f"{axis}: only {harder} values harder than the training setting "
                         f"({distractors} distractors of {distractor_size}x{distractor_size}"
                         + (f", canvas {canvas}" if canvas is not None else "") + f"); {SEVERITIES} are needed")
    return values


def _rng(seed: int, stream: str, block: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _STREAMS[stream], int(block)]))


def _blocks(n: int):
    for b, a in enumerate(range(0, n, _BLOCK)):
        yield b, a, min(n, a + _BLOCK)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"images must be uint8 (n, H, W), got {images.dtype} {images.shape}")
    return images


def gaussian_noise(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``clip(x + sigma * eps, 0, 1)`` with ``x = images / 255`` and ``eps ~ N(0, 1)`` per pixel,
    rounded back to uint8. The noise field depends on ``seed`` and the image index only."""
    images = _check_images(images)
    if not 0 <= sigma:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return images.copy()
    out = np.empty_like(images)
    for b, a, z in _blocks(len(images)):
        eps = _rng(seed, "gaussian", b).standard_normal(images[a:z].shape, dtype=np.float32)
        x = images[a:z].astype(np.float32) / 255 + np.float32(sigma) * eps
        out[a:z] = np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)
    return out


def salt_pepper(images: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A ``fraction`` of the pixels (each independently) set to 0 or 255 with even odds. The
    pixels hit at a smaller fraction are also hit at a larger one."""
    images = _check_images(images)
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    out = images.copy()
    if fraction == 0:
        return out
    for b, a, z in _blocks(len(images)):
        u = _rng(seed, "salt_pepper", b).random((z - a, 2, *images.shape[1:]), dtype=np.float32)  # per image: hit, salt
        hit, salt = u[:, 0] < fraction, u[:, 1] < 0.5
        block = out[a:z]
        block[hit & salt] = 255
        block[hit & ~salt] = 0
    return out


def occlude(images: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A black square of side ``round(fraction * W)`` pasted at a uniform position of each
    image. The position is a fixed relative place per image, so squares grow in place."""
    images = _check_images(images)
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    n, H, W = images.shape
    out = images.copy()
    rows, cols, side = occluder_boxes(n, H, W, fraction, seed)
    if side:
        sliding_window_view(out, (side, side), axis=(1, 2), writeable=True)[np.arange(n), rows, cols] = 0
    return out


def occluder_boxes(n: int, H: int, W: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Where :func:`occlude` puts its squares: top rows ``(n,)``, left columns ``(n,)`` and the side."""
    side = int(round(fraction * min(H, W)))
    u = np.concatenate([_rng(seed, "occlusion", b).random((z - a, 2)) for b, a, z in _blocks(n)]) if n else np.zeros((0, 2))
    rows = np.minimum((u[:, 0] * (H - side + 1)).astype(np.int64), H - side)
    cols = np.minimum((u[:, 1] * (W - side + 1)).astype(np.int64), W - side)
    return rows, cols, side


class Scenes:
    """``n`` fixed test scenes on a ``canvas`` x ``canvas`` canvas, rendered on demand.

    digits: (m, 28, 28) uint8 source digits of one split, labels (m,): targets are a seeded
    permutation of them (cycled when n > m); distractors are crops of the same digits.
    """

    def __init__(self, digits: np.ndarray, labels: np.ndarray, n: int, canvas: int, seed: int,
                 max_distractors: int = MAX_DISTRACTORS) -> None:
        digits = np.ascontiguousarray(digits)
        if digits.dtype != np.uint8 or digits.ndim != 3 or digits.shape[1] != digits.shape[2]:
            raise ValueError(f"digits must be uint8 (m, g, g), got {digits.dtype} {digits.shape}")
        m, g = digits.shape[0], digits.shape[1]
        if m == 0 or n < 0 or canvas < g:
            raise ValueError(f"need digits, n >= 0 and canvas >= {g} (got m={m}, n={n}, canvas={canvas})")
        self.digits, self.labels_all = digits, np.asarray(labels).astype(np.int64)
        self.n, self.canvas, self.seed, self.max_distractors, self.g = int(n), int(canvas), int(seed), max_distractors, g
        # One stream per field, each drawn row by row: the first k scenes of n > k are the k scenes.
        streams = [np.random.default_rng(s) for s in
                   np.random.SeedSequence([int(seed), _STREAMS["scene"]]).spawn(4)]
        order = np.concatenate([streams[0].permutation(m) for _ in range(-(-n // m))])[:n] if n else np.zeros(0, np.int64)
        self.order = order
        self.labels = self.labels_all[order]
        self.positions = streams[1].integers(0, canvas - g + 1, size=(n, 2))  # target top-left (row, col)
        self.source = streams[2].integers(0, m, size=(n, max_distractors))  # distractor source digits
        self.u = streams[3].random((n, max_distractors, 4))  # crop row, crop col, paste row, paste col in [0, 1)

    def __len__(self) -> int:
        return self.n

    def render(self, distractors: int, distractor_size: int, contrast: float = 1.0) -> np.ndarray:
        """Images ``(n, canvas, canvas)`` uint8: the target at ``contrast`` plus the scene's first
        ``distractors`` distractors as ``distractor_size`` crops, added and clipped to 255."""
        k, s, H, g = int(distractors), int(distractor_size), self.canvas, self.g
        if not 0 <= k <= self.max_distractors:
            raise ValueError(f"distractors must be in 0..{self.max_distractors}, got {distractors}")
        if not 1 <= s <= min(g, H):
            raise ValueError(f"distractor_size must be in 1..{min(g, H)}, got {distractor_size}")
        if not 0 <= contrast <= 1:
            raise ValueError(f"contrast must be in [0, 1], got {contrast}")
        targets = self.digits if contrast == 1 else np.rint(self.digits * np.float32(contrast)).astype(np.uint8)
        u = self.u[:, :k]
        dist = np.stack([self.source[:, :k],
                         np.minimum((u[..., 0] * (g - s + 1)).astype(np.int64), g - s),
                         np.minimum((u[..., 1] * (g - s + 1)).astype(np.int64), g - s),
                         np.minimum((u[..., 2] * (H - s + 1)).astype(np.int64), H - s),
                         np.minimum((u[..., 3] * (H - s + 1)).astype(np.int64), H - s)], axis=-1)
        crops = sliding_window_view(self.digits, (s, s), axis=(1, 2))
        out = np.empty((self.n, H, H), np.uint8)
        for a in range(0, self.n, 512):  # the 100x100 uint16 accumulator of 512 images: 10 MB
            z = min(self.n, a + 512)
            _render(out[a:z], targets, self.order[a:z], self.positions[a:z], crops, dist[a:z], np.uint16)
        return out

    def degrade(self, axis: str, value: float, *, distractors: int, distractor_size: int,
                clean: np.ndarray | None = None) -> np.ndarray:
        """The scenes degraded along ``axis`` at ``value``; everything else at the clean setting
        (``distractors`` of ``distractor_size``). ``clean``: the clean render, if already made."""
        if axis == "clutter":
            return self.render(int(value), distractor_size)
        if axis == "distractor_size":
            return self.render(distractors, int(value))
        if axis == "contrast":
            return self.render(distractors, distractor_size, float(value))
        if clean is None:
            clean = self.render(distractors, distractor_size)
        if axis == "gaussian":
            return gaussian_noise(clean, float(value), self.seed)
        if axis == "salt_pepper":
            return salt_pepper(clean, float(value), self.seed)
        if axis == "occlusion":
            return occlude(clean, float(value), self.seed)
        raise ValueError(f"unknown axis {axis!r}; choose from {', '.join(AXES)}")
