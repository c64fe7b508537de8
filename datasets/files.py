"""Files, the one place for: atomic writes, an inter-process lock, SHA-256 digests and the
data folder. Every layer above (models, benches, the CLI) writes through these.

- :func:`atomic_open` / :func:`atomic_write_bytes` / :func:`atomic_write_text`: a temporary
  file in the target's folder, flushed and fsync'ed, then ``os.replace``: an interrupted
  write (a kill, a full disk) leaves the previous file whole, and the error names the file.
- :func:`folder_lock`: an advisory exclusive lock (POSIX ``flock``) on a folder, so that
  two processes appending to one results file or building one cache take turns.
- :func:`sha256_bytes`, :func:`sha256_array`, :func:`sha256_file`: hex digests.
- :func:`data_dir` / :func:`user_data_dir`: where data and caches live: the folder given
  (the CLI's ``--data-dir``), else ``$DRAWBENCH_DATA``, else ``~/.cache/drawbench``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

ENV_DATA_DIR = "DRAWBENCH_DATA"
DEFAULT_DATA_DIR = "~/.cache/drawbench"


# --------------------------------------------------------------------------- the data folder


def user_data_dir(data_dir: PathLike | None = None) -> Path | None:
    """The folder the user named: ``data_dir`` if given and non-empty, else
    ``$DRAWBENCH_DATA`` if set and non-empty, else None (nothing placed by hand)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA_DIR, "")
    return Path(env).expanduser() if env else None


def data_dir(data_dir: PathLike | None = None) -> Path:
    """Where data and caches live: :func:`user_data_dir`, else ``~/.cache/drawbench``."""
    return user_data_dir(data_dir) or Path(DEFAULT_DATA_DIR).expanduser()


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_open(path: PathLike) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` atomically when the block exits cleanly.

    The temporary file lives in the target's folder (``os.replace`` is atomic only within
    one file system), gets the permissions a plain ``open`` would give (0o666 less the
    umask), and is removed if the block raises. An ``OSError`` without a file name (a full
    disk, say) is raised again naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            raise OSError(e.errno, f"{e.strerror or e}; the previous {path.name}, if any, is kept",
                          str(path)) from e
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; best effort (not every platform can open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: PathLike) -> None:
    """Delete the temporary files that a process killed inside :func:`atomic_open` left in
    ``folder`` (``.<name>.<pid>.<hex>.tmp``); the targets themselves are untouched."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


# --------------------------------------------------------------------------- lock


@contextlib.contextmanager
def folder_lock(folder: PathLike) -> Iterator[None]:
    """Advisory exclusive lock on ``folder`` (created if missing) for the block.

    POSIX ``flock`` on the folder itself; where that is unavailable (not POSIX, or a file
    system that refuses it) the block runs unlocked, and the atomic writes still keep
    every file whole.
    """
    folder = Path(folder)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# --------------------------------------------------------------------------- digests


def sha256_bytes(data: bytes | memoryview) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_array(a: np.ndarray) -> str:
    """Hex SHA-256 of an array's raw bytes in C order (dtype and shape not included)."""
    return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
