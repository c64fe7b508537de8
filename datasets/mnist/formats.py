"""MNIST file formats and array checks: idx files (plain or gzipped), the split of the
official training file into train / valid, validation of the six arrays, and Larochelle's
binarized ``.amat`` text files.

Everything here reads bytes or checks arrays; nothing downloads, caches or chooses a
source. Malformed input raises :class:`MnistFormatError` with the file named in the message.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np

SPLITS: tuple[str, str, str] = ("train", "valid", "test")
#: MNIST's split sizes (the split of binarized MNIST and of ``mnist.pkl.gz``): the one
#: definition in drawbench; other modules import it.
SPLIT_SIZES: dict[str, int] = {"train": 50000, "valid": 10000, "test": 10000}

IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
AMAT_FILE = "binarized_mnist_{split}.amat"

ARRAY_KEYS: tuple[str, ...] = tuple(f"{s}_{k}" for s in SPLITS for k in ("x", "y"))
_OFFICIAL_TRAIN_SIZE = 60000
_OFFICIAL_VALID_SIZE = 10000

Arrays = dict[str, np.ndarray]


class MnistFormatError(ValueError):
    """A source's file exists but is malformed, partial, or has the wrong shapes."""


class MnistChecksumError(ValueError):
    """A downloaded or local file does not have the expected SHA-256."""


def check_sha256(what: str, expected: str, got: str) -> None:
    """Raise :class:`MnistChecksumError` naming ``what`` unless the two hex digests agree."""
    if expected.lower() != got.lower():
        raise MnistChecksumError(
            f"SHA-256 mismatch for {what}: expected {expected}, got {got}; refusing to use it"
        )


def check_split(split: str) -> int:
    """The index of ``split`` in :data:`SPLITS`; ValueError for any other name."""
    if split not in SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {SPLITS}")
    return SPLITS.index(split)


def format_error(e: BaseException) -> str:
    """``"TypeName: message"`` for an exception (its repr when the message is empty)."""
    text = str(e) or repr(e)
    return f"{type(e).__name__}: {text}"


# --------------------------------------------------------------- array validation


def validate_split(split: str, x: Any, y: Any, *, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Check one split; return C-contiguous uint8 images (n, 28, 28) and int64 labels (n,)."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype != np.uint8:
        raise MnistFormatError(f"{what}: {split} images have dtype {x.dtype}, expected uint8")
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise MnistFormatError(f"{what}: {split} images have shape {x.shape}, expected (n, 28, 28)")
    if x.shape[0] == 0:
        raise MnistFormatError(f"{what}: {split} split is empty")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise MnistFormatError(
            f"{what}: {split} labels have shape {y.shape}, expected ({x.shape[0]},)"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise MnistFormatError(f"{what}: {split} labels have dtype {y.dtype}, expected integers")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi > 9:
        raise MnistFormatError(f"{what}: {split} labels range {lo}..{hi}, expected 0..9")
    return np.ascontiguousarray(x), np.ascontiguousarray(y, dtype=np.int64)


def validate_arrays(arrays: Arrays, *, what: str) -> Arrays:
    """Check all six arrays (:data:`ARRAY_KEYS`); return them as :func:`validate_split` does."""
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    if missing:
        raise MnistFormatError(f"{what}: missing arrays {missing}")
    out: Arrays = {}
    for split in SPLITS:
        x, y = validate_split(split, arrays[f"{split}_x"], arrays[f"{split}_y"], what=what)
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return out


def sizes(arrays: Arrays) -> dict[str, int]:
    """Number of images per split."""
    return {s: int(arrays[f"{s}_x"].shape[0]) for s in SPLITS}


# ------------------------------------------------------------------------ idx files


def _read_maybe_gz(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # truncated gzip -> EOFError
        raise MnistFormatError(f"{path}: cannot read ({format_error(e)})") from e


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an idx file of unsigned bytes (magic ``0x0000080<ndim>``), gzipped if ``.gz``."""
    data = _read_maybe_gz(path)
    if len(data) < 4:
        raise MnistFormatError(f"{path}: too short for an idx header ({len(data)} bytes)")
    magic = struct.unpack(">I", data[:4])[0]
    expected_magic = 0x00000800 | ndim
    if magic != expected_magic:
        raise MnistFormatError(
            f"{path}: bad magic number 0x{magic:08x}, expected 0x{expected_magic:08x}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MnistFormatError(f"{path}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(dims, dtype=np.int64))
    if len(data) != header + count:
        raise MnistFormatError(
            f"{path}: header says dims {dims} ({count} bytes of data) but the file holds "
            f"{len(data) - header} bytes of data (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_files(folder: Path) -> dict[str, Path]:
    """The idx files present in ``folder`` (plain or ``.gz``), keyed as :data:`IDX_FILES`.

    The set may be incomplete or empty; the caller decides what that means.
    """
    found: dict[str, Path] = {}
    for key, name in IDX_FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    return found


def split_official_train(
    x: np.ndarray, y: np.ndarray, *, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split the official training file into train / valid (valid = the tail, in order).

    60,000 images -> 50,000 / 10,000; any other size n -> n - n // 6 / n // 6.
    """
    n = int(x.shape[0])
    n_valid = _OFFICIAL_VALID_SIZE if n == _OFFICIAL_TRAIN_SIZE else n // 6
    if n_valid < 1 or n - n_valid < 1:
        raise MnistFormatError(f"{what}: training file has only {n} images, too few to split")
    return x[: n - n_valid], y[: n - n_valid], x[n - n_valid :], y[n - n_valid :]


def arrays_from_official(
    train_x: Any, train_y: Any, test_x: Any, test_y: Any, *, what: str
) -> Arrays:
    """The six arrays from the official training and test sets (see :func:`split_official_train`)."""
    train_x, train_y = validate_split("official train", train_x, train_y, what=what)
    tx, ty, vx, vy = split_official_train(train_x, train_y, what=what)
    return {
        "train_x": tx,
        "train_y": ty,
        "valid_x": vx,
        "valid_y": vy,
        "test_x": np.asarray(test_x),
        "test_y": np.asarray(test_y),
    }


# ----------------------------------------------------------------------- .amat files


def read_amat(path: Path) -> np.ndarray:
    """Parse a Larochelle .amat file: whitespace-separated 0/1, 784 per line -> uint8 (n, 28, 28)."""
    try:
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as e:
        raise MnistFormatError(f"{path}: cannot read ({format_error(e)})") from e
    is_digit = (data == ord("0")) | (data == ord("1"))
    is_space = (data == ord(" ")) | (data == ord("\t")) | (data == ord("\n")) | (data == ord("\r"))
    bad = ~(is_digit | is_space)
    if bad.any():
        pos = int(np.argmax(bad))
        raise MnistFormatError(
            f"{path}: unexpected byte {bytes(data[pos : pos + 1])!r} at offset {pos}"
        )
    if data.size > 1 and (is_digit[:-1] & is_digit[1:]).any():
        raise MnistFormatError(f"{path}: tokens other than single 0/1 digits")
    # Digits per line: the cumulative digit count at each line's last byte, differenced.
    if data.size == 0:
        raise MnistFormatError(f"{path}: empty file")
    line_ends = np.union1d(np.flatnonzero(data == ord("\n")), [data.size - 1])
    counts = np.diff(np.cumsum(is_digit, dtype=np.int64)[line_ends], prepend=0)
    counts = counts[counts > 0]
    if counts.size == 0:
        raise MnistFormatError(f"{path}: no data")
    if (counts != 784).any():
        line = int(np.argmax(counts != 784))
        raise MnistFormatError(
            f"{path}: data line {line + 1} has {int(counts[line])} values, expected 784"
        )
    return (data[is_digit] - ord("0")).astype(np.uint8).reshape(-1, 28, 28)
