"""Cluttered and translated MNIST, after deepmind/mnist-cluttered.

Each image is a square ``canvas`` x ``canvas`` uint8 picture (k/255 stands for
k/255 in [0, 1]) holding one whole 28x28 target digit, pasted at a uniform
position, plus ``distractors`` random ``distractor_size`` x ``distractor_size``
crops of random digits of the same split, each pasted at a uniform position.
All layers are added and the sum is clipped to 255.

The generator is pure numpy and vectorized over images (a Python loop runs only
over the few distractors). It is deterministic: the same arguments give the same
bytes on every machine for a given numpy version (numpy's ``Generator`` streams
are platform independent; only integer draws are used). Two further properties
hold and are tested:

* output does not depend on the chunk size used internally;
* it is prefix-stable in ``n``: the first k images of a set of n > k images are
  the set of k images made with the same other arguments. A smoke run on 100
  images therefore sees the first 100 images of the full split.

Typical use::

    ds = cached_split("test", CLUTTERED_100, seed=0)   # 10,000 images, cached
    ds.images.shape                                    # (10000, 100, 100) uint8
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from datasets import files
from datasets.mnist import SPLIT_SIZES as MNIST_SPLIT_SIZES

__all__ = [
    "CLUTTERED_60",
    "CLUTTERED_100",
    "SET_SIZES",
    "SPLIT_IDS",
    "TRANSLATED",
    "ClutterParamError",
    "ClutterParams",
    "ClutteredSet",
    "CorruptDatasetError",
    "cache_path",
    "cached_split",
    "default_cache_dir",
    "load_npz",
    "make_cluttered",
    "make_split",
    "preview_grid",
    "save_npz",
]

FORMAT_VERSION = 1
#: Images generated per split by default. Not MNIST's split sizes (datasets.mnist.SPLIT_SIZES,
#: 50k/10k/10k digits): train is 60,000 images drawn from the 50,000 training digits (as the
#: paper's 60,000 training images), valid and test are one image per digit of their split.
SET_SIZES: dict[str, int] = {
    "train": 60000,
    "valid": MNIST_SPLIT_SIZES["valid"],
    "test": MNIST_SPLIT_SIZES["test"],
}
SPLIT_IDS: dict[str, int] = {"train": 0, "valid": 1, "test": 2}
_NO_SPLIT_ID = 99
_CHUNK = 512  # images rendered at a time: a 10 MB uint16 accumulator at 100x100 stays in cache


class ClutterParamError(ValueError):
    """An invalid generator option; ``param`` names the option (e.g. ``"distractor_size"``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class CorruptDatasetError(ValueError):
    """A saved cluttered set that cannot be read or whose checksum does not match."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"corrupt cluttered-MNIST file {os.fspath(path)!s}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


@dataclass(frozen=True)
class ClutterParams:
    """Generator options. Validated on construction (raises :class:`ClutterParamError`)."""

    canvas: int = 100  # square canvas side, >= digit_size
    distractors: int = 8  # number of distractor crops per image, >= 0
    distractor_size: int = 8  # crop side, 1..digit_size and <= canvas
    digit_size: int = 28  # side of the source digits

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ClutterParamError(f.name, f"must be an integer, got {value!r}")
            object.__setattr__(self, f.name, int(value))  # numpy ints -> int (JSON-safe)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ClutterParamError` naming the first invalid option."""
        if self.digit_size < 1:
            raise ClutterParamError("digit_size", f"must be >= 1, got {self.digit_size}")
        if self.canvas < self.digit_size:
            raise ClutterParamError(
                "canvas", f"must be >= the digit size {self.digit_size}, got {self.canvas}"
            )
        if self.distractors < 0:
            raise ClutterParamError("distractors", f"must be >= 0, got {self.distractors}")
        if self.distractor_size < 1:
            raise ClutterParamError("distractor_size", f"must be >= 1, got {self.distractor_size}")
        if self.distractor_size > self.digit_size:
            raise ClutterParamError(
                "distractor_size",
                f"must be <= the digit size {self.digit_size}, got {self.distractor_size}",
            )
        if self.distractor_size > self.canvas:
            raise ClutterParamError(
                "distractor_size",
                f"must be <= the canvas {self.canvas}, got {self.distractor_size}",
            )

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClutterParams:
        return cls(**d)

    @property
    def tag(self) -> str:
        """Short readable name, e.g. ``"c100-d8-s8"`` (``"-g<digit_size>"`` if not 28)."""
        tag = f"c{self.canvas}-d{self.distractors}-s{self.distractor_size}"
        return tag if self.digit_size == 28 else f"{tag}-g{self.digit_size}"


TRANSLATED = ClutterParams(canvas=60, distractors=0)  # translated MNIST, no clutter
CLUTTERED_60 = ClutterParams(canvas=60, distractors=4)
CLUTTERED_100 = ClutterParams()  # the paper's 100x100, 8 distractors of 8x8


@dataclass(eq=False)
class ClutteredSet:
    """A generated set of n images.

    images:    (n, canvas, canvas) uint8, k/255 stands for intensity k/255
    labels:    (n,) int64, the target digit's class
    positions: (n, 2) int32, (row, col) of the target digit's top-left corner
    """

    images: np.ndarray
    labels: np.ndarray
    positions: np.ndarray
    params: ClutterParams
    seed: int
    split: str | None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _header(self) -> bytes:
        meta = {
            "format": FORMAT_VERSION,
            "params": self.params.to_dict(),
            "seed": int(self.seed),
            "split": self.split,
            "shapes": [
                list(self.images.shape),
                list(self.labels.shape),
                list(self.positions.shape),
            ],
        }
        return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()

    def sha256(self) -> str:
        """Hex SHA-256 over a canonical JSON header (params, seed, split, shapes) and the
        little-endian bytes of images (u1), labels (i8) and positions (i4)."""
        h = hashlib.sha256(self._header())
        for arr, dt in ((self.images, "<u1"), (self.labels, "<i8"), (self.positions, "<i4")):
            h.update(np.ascontiguousarray(arr, dtype=dt).data)
        return h.hexdigest()


def _split_id(split: str | None) -> int:
    if split is None:
        return _NO_SPLIT_ID
    if split in SPLIT_IDS:
        return SPLIT_IDS[split]
    # any other name: a stable id that cannot collide with the small ones above
    return 1000 + int.from_bytes(hashlib.sha256(split.encode()).digest()[:8], "little")


def _check_digits(name: str, arr: np.ndarray, g: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0..255), got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[1:] != (g, g):
        raise ValueError(f"{name} must have shape (m, {g}, {g}), got {arr.shape}")
    return np.ascontiguousarray(arr)


def make_cluttered(
    digits: np.ndarray,
    labels: np.ndarray,
    n: int | None,
    params: ClutterParams,
    seed: int,
    distractor_digits: np.ndarray | None = None,
    split: str | None = None,
    chunk: int = _CHUNK,
) -> ClutteredSet:
    """Generate n cluttered images from the digits of one split.

    digits:            (m, g, g) uint8 source digits (g = params.digit_size), one split
    labels:            (m,) integer labels of ``digits``
    n:                 number of images; None or m: every digit once in a seeded order;
                       n > m: successive seeded permutations; n < m: first n of one
    distractor_digits: (k, g, g) uint8 pool for distractor crops; default ``digits``
    split:             split name, mixed into the seed ("train", "valid", "test" or None)
    chunk:             images rendered at a time (memory only; output does not depend on it)

    Returns a :class:`ClutteredSet` with images (n, canvas, canvas) uint8, labels (n,)
    int64, positions (n, 2) int32.
    """
    params.validate()
    g, H = params.digit_size, params.canvas
    D, s = params.distractors, params.distractor_size
    digits = _check_digits("digits", digits, g)
    labels = np.asarray(labels)
    if labels.shape != (digits.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be integers of shape ({digits.shape[0]},), "
            f"got {labels.dtype} {labels.shape}"
        )
    labels = labels.astype(np.int64)
    pool = (
        digits
        if distractor_digits is None
        else _check_digits("distractor_digits", distractor_digits, g)
    )
    m = digits.shape[0]
    n = m if n is None else int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n > 0 and m == 0:
        raise ValueError("digits is empty")
    if n > 0 and D > 0 and pool.shape[0] == 0:
        raise ValueError("distractor_digits is empty but distractors > 0")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")

    # Two independent streams so that each is prefix-stable in n on its own.
    ss_order, ss_geom = np.random.SeedSequence([int(seed), _split_id(split)]).spawn(2)
    rng = np.random.default_rng(ss_order)
    n_perm = -(-n // m) if m else 0
    perms = [rng.permutation(m) for _ in range(n_perm)]
    order = np.concatenate(perms)[:n] if perms else np.zeros(0, np.int64)

    # Per image, one row of 2 + 5*D bounded integers drawn in C order:
    # target (row, col), then per distractor (source, crop row, crop col, row, col).
    highs = np.array(
        [H - g + 1, H - g + 1] + [pool.shape[0], g - s + 1, g - s + 1, H - s + 1, H - s + 1] * D,
        dtype=np.int64,
    )
    geom = np.random.default_rng(ss_geom).integers(0, highs, size=(n, highs.size), dtype=np.int64)
    tpos = geom[:, :2]
    dist = geom[:, 2:].reshape(n, D, 5)

    images = np.empty((n, H, H), np.uint8)
    # The largest sum is 255 * (1 + D); uint16 holds it for D <= 256.
    acc_dtype = np.uint16 if 255 * (1 + D) <= np.iinfo(np.uint16).max else np.uint32
    crops = sliding_window_view(pool, (s, s), axis=(1, 2))  # (k, g-s+1, g-s+1, s, s) view
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        _render(images[a:b], digits, order[a:b], tpos[a:b], crops, dist[a:b], acc_dtype)
    return ClutteredSet(
        images=images,
        labels=labels[order],
        positions=tpos.astype(np.int32),
        params=params,
        seed=int(seed),
        split=split,
    )


def _render(out, digits, order, tpos, crops, dist, acc_dtype) -> None:
    """Render c images into ``out`` (c, H, W) uint8. tpos (c, 2); dist (c, D, 5)."""
    c, H, W = out.shape
    g = digits.shape[1]
    s = crops.shape[-1]
    D = dist.shape[1]
    rows = np.arange(c)
    if D == 0:  # no sums: paste straight into the output
        out[...] = 0
        sliding_window_view(out, (g, g), axis=(1, 2), writeable=True)[
            rows, tpos[:, 0], tpos[:, 1]
        ] = digits[order]
        return
    acc = np.zeros((c, H, W), acc_dtype)
    # Writeable window views: win[i, r, c] is the (g, g) patch of image i at (r, c).
    # Each advanced-index assignment touches each image once, so no index repeats.
    win = sliding_window_view(acc, (g, g), axis=(1, 2), writeable=True)
    win[rows, tpos[:, 0], tpos[:, 1]] = digits[order]
    dwin = sliding_window_view(acc, (s, s), axis=(1, 2), writeable=True)
    for j in range(D):
        src, cr, cc, pr, pc = dist[:, j].T
        dwin[rows, pr, pc] += crops[src, cr, cc]
    np.minimum(acc, 255, out=acc)
    out[...] = acc


def make_split(
    split: str,
    params: ClutterParams,
    seed: int = 0,
    n: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> ClutteredSet:
    """Cluttered set for an MNIST split; targets and distractors both from that split.

    n defaults to ``SET_SIZES[split]`` (train 60,000 from the 50,000 train digits,
    cycling; valid and test 10,000: every digit once). Returns images (n, canvas, canvas).
    """
    if split not in SET_SIZES:
        raise ValueError(f"split must be one of {sorted(SET_SIZES)}, got {split!r}")
    from datasets.mnist import load_mnist  # looked up at call time: tests stand in a fake

    digits, labels = load_mnist(split, data_dir=data_dir)
    n = SET_SIZES[split] if n is None else n
    return make_cluttered(digits, labels, n, params, seed, split=split)


# ---------------------------------------------------------------- files and cache


def save_npz(ds: ClutteredSet, path: str | os.PathLike, compress: bool = True) -> str:
    """Write ``ds`` to an .npz atomically (:func:`datasets.files.atomic_open`).

    Stores images, labels, positions, params (JSON), seed, split (JSON), format and the
    SHA-256, and returns that SHA-256. Cluttered images are mostly zeros: compressed, the
    100x100 train set takes ~25 MB instead of 600 MB, for a few seconds more to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = ds.sha256()
    with files.atomic_open(path) as f:
        (np.savez_compressed if compress else np.savez)(
            f,
            images=np.ascontiguousarray(ds.images, dtype="<u1"),
            labels=np.ascontiguousarray(ds.labels, dtype="<i8"),
            positions=np.ascontiguousarray(ds.positions, dtype="<i4"),
            params=np.array(json.dumps(ds.params.to_dict(), sort_keys=True)),
            seed=np.array(int(ds.seed), dtype="<i8"),
            split=np.array(json.dumps(ds.split)),
            format=np.array(FORMAT_VERSION, dtype="<i8"),
            sha256=np.array(digest),
        )
    return digest


def load_npz(path: str | os.PathLike) -> ClutteredSet:
    """Read a file written by :func:`save_npz` and verify its SHA-256.

    Raises FileNotFoundError if the file is missing and :class:`CorruptDatasetError`
    if it is truncated, unreadable, incomplete or fails its checksum.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such cluttered-MNIST file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            fmt = int(z["format"])
            if fmt != FORMAT_VERSION:
                raise CorruptDatasetError(path, f"unknown format version {fmt}")
            ds = ClutteredSet(
                images=z["images"],
                labels=z["labels"],
                positions=z["positions"],
                params=ClutterParams.from_dict(json.loads(str(z["params"]))),
                seed=int(z["seed"]),
                split=json.loads(str(z["split"])),
            )
            stored = str(z["sha256"])
    except CorruptDatasetError:
        raise
    except Exception as e:
        # Everything above only reads and parses the file, and a damaged zip or npy header
        # fails in many ways (BadZipFile, zlib.error, EOFError, tokenize.TokenError,
        # NotImplementedError, ...): all of them mean the file is unreadable.
        raise CorruptDatasetError(path, f"{type(e).__name__}: {e}") from e
    n, H = ds.labels.shape[0] if ds.labels.ndim == 1 else -1, ds.params.canvas
    if (
        n < 0
        or ds.images.shape != (n, H, H)
        or ds.images.dtype != np.uint8
        or ds.positions.shape != (n, 2)
        or ds.labels.dtype != np.int64
        or ds.positions.dtype != np.int32
    ):
        raise CorruptDatasetError(path, "arrays have the wrong shapes or dtypes")
    actual = ds.sha256()
    if actual != stored:
        raise CorruptDatasetError(path, f"sha256 {actual} != stored {stored}")
    return ds


def default_cache_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``<data_dir>/cluttered`` if data_dir is given, else ``$DRAWBENCH_DATA/cluttered``,
    else ``~/.cache/drawbench/cluttered``: :func:`datasets.files.data_dir` (where
    datasets.mnist caches) plus ``cluttered``."""
    return files.data_dir(data_dir) / "cluttered"


def cache_path(
    split: str,
    params: ClutterParams,
    seed: int = 0,
    n: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Path:
    """Cache file for these arguments, e.g. ``cluttered-test-c100-d8-s8-seed0-n10000.npz``,
    in ``cache_dir``, else :func:`default_cache_dir` of ``data_dir``."""
    n = SET_SIZES[split] if n is None else int(n)
    folder = default_cache_dir(data_dir) if cache_dir is None else Path(cache_dir)
    return folder / f"cluttered-{split}-{params.tag}-seed{int(seed)}-n{n}.npz"


def cached_split(
    split: str,
    params: ClutterParams,
    seed: int = 0,
    n: int | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ClutteredSet:
    """:func:`make_split`, cached as a checksummed .npz (see :func:`cache_path`; by default
    under ``<data_dir or $DRAWBENCH_DATA or ~/.cache/drawbench>/cluttered``).

    A cached file is reused when its checksum verifies and it matches the request;
    a corrupt or mismatching one is reported with a warning, regenerated and rewritten.
    """
    if split not in SET_SIZES:
        raise ValueError(f"split must be one of {sorted(SET_SIZES)}, got {split!r}")
    n = SET_SIZES[split] if n is None else int(n)
    path = cache_path(split, params, seed, n, cache_dir, data_dir)
    if path.exists():
        try:
            ds = load_npz(path)
        except CorruptDatasetError as e:
            warnings.warn(f"{e}; regenerating", stacklevel=2)
        else:
            if ds.params == params and ds.seed == seed and ds.split == split and len(ds) == n:
                return ds
            warnings.warn(f"{path} does not match the request; regenerating", stacklevel=2)
    ds = make_split(split, params, seed=seed, n=n, data_dir=data_dir)
    save_npz(ds, path)
    return ds


# ---------------------------------------------------------------- preview


def preview_grid(
    ds: ClutteredSet, path: str | os.PathLike, n: int = 36, boxes: bool = True
) -> None:
    """Write a PNG grid of the first n images of ``ds``, each titled with its label.

    With ``boxes``, a thin red rectangle marks the target digit's box. Uses matplotlib's
    object API with the Agg canvas, so pyplot's global backend is left untouched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    k = min(int(n), len(ds))
    if k < 1:
        raise ValueError("nothing to preview: the set is empty or n < 1")
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    g = ds.params.digit_size
    fig = Figure(figsize=(1.6 * cols, 1.75 * rows + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    for i in range(k):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(ds.images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        if boxes:
            r, c = (int(v) for v in ds.positions[i])
            ax.add_patch(
                Rectangle((c - 0.5, r - 0.5), g, g, fill=False, edgecolor="red", linewidth=0.8)
            )
        ax.set_title(str(int(ds.labels[i])), fontsize=9, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    p = ds.params
    fig.suptitle(
        f"{ds.split or 'cluttered'} seed {ds.seed}: {p.canvas}x{p.canvas}, "
        f"{p.distractors} distractors of {p.distractor_size}x{p.distractor_size}",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
