"""Frozen test sets (the MNIST-C convention): the exact test images the benches evaluate on,
as plain .npz files anyone can load, with a manifest of hashes.

``python cli.py data export cluttered|robustness --preset P --out DIR`` writes

- ``cluttered_test.npz``: the test split of ``bench cluttered`` (the preset's ``n_test``
  images of its generator parameters and seed, :func:`datasets.cluttered.cached_split`);
- ``robustness_clean.npz`` and one ``robustness_<axis>_<value>.npz`` per setting of
  ``bench robustness`` (:class:`datasets.degrade.Scenes`, the same images it evaluates);
- ``manifest.json``: the generator parameters, seeds, n, the MNIST source and its hashes
  (:func:`datasets.mnist.fetch_mnist`), and per file its SHA-256, that of its arrays
  (``arrays_sha256``, below) and, for one-line checks, of each array's raw bytes
  (``images_sha256``: uint8; ``labels_sha256``: little-endian int64).

Each .npz holds ``images`` (n, H, W) uint8 (value k stands for k/255) and ``labels`` (n,)
int64, nothing else: ``numpy.load(path, allow_pickle=False)`` reads it. The files are
byte-reproducible (fixed zip timestamps).

The array hash (:func:`arrays_sha256`, recipe :data:`HASH_RECIPE`) is what the benches
record for the test arrays they evaluate, in ``test_sets.json`` in their output folder
(:func:`record_test_sets`): an exported file belongs to a result when the two agree.
Nothing here imports a model or a bench; callers pass plain parameters.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from datasets import files

TEST_SETS_FILE = "test_sets.json"
MANIFEST_FILE = "manifest.json"
HASH_RECIPE = ("SHA-256 of the UTF-8 JSON header {\"images\":[n,H,W],\"labels\":[n]} (compact, keys sorted), "
               "then the images as uint8 and the labels as little-endian int64, both in C order")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def arrays_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """The hash of a test set's arrays (see :data:`HASH_RECIPE`): shapes, image bytes, label bytes."""
    images = np.ascontiguousarray(images, dtype="<u1")
    labels = np.ascontiguousarray(labels, dtype="<i8")
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise ValueError(f"need images (n, H, W) and labels (n,), got {images.shape} and {labels.shape}")
    header = json.dumps({"images": list(images.shape), "labels": list(labels.shape)}, sort_keys=True,
                        separators=(",", ":"))
    h = hashlib.sha256(header.encode())
    h.update(images.data)
    h.update(labels.data)
    return h.hexdigest()


def write_npz(path: str | Path, images: np.ndarray, labels: np.ndarray) -> dict:
    """Write ``images`` (uint8) and ``labels`` (int64) to a compressed .npz with fixed
    timestamps (the same arrays give the same bytes), atomically. Returns its manifest entry."""
    path = Path(path)
    arrays = {"images": np.ascontiguousarray(images, dtype="<u1"), "labels": np.ascontiguousarray(labels, dtype="<i8")}
    digest = arrays_sha256(arrays["images"], arrays["labels"])
    with files.atomic_open(path) as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with z.open(info, "w", force_zip64=True) as w:
                np.lib.format.write_array(w, arr, allow_pickle=False)
    return {"file": path.name, "file_sha256": files.sha256_file(path), "arrays_sha256": digest,
            "images_sha256": files.sha256_array(arrays["images"]), "labels_sha256": files.sha256_array(arrays["labels"]),
            "n": int(arrays["labels"].shape[0]), "shape": list(arrays["images"].shape)}


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of an exported file, with plain ``numpy.load`` (no pickles)."""
    with np.load(path, allow_pickle=False) as z:
        return z["images"], z["labels"]


def record_test_sets(folder: str | Path, identity: dict, sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Record in ``folder/test_sets.json`` the :func:`arrays_sha256` of each named test set a
    bench evaluates (names: the exported file's stem, e.g. ``cluttered_test``). ``identity``
    (the data settings) is stored too; entries recorded under another identity are dropped."""
    folder = Path(folder)
    path = folder / TEST_SETS_FILE
    identity = json.loads(json.dumps(identity, default=str))
    with files.folder_lock(folder):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = {}
        entries = doc.get("sets", {}) if isinstance(doc, dict) and doc.get("identity") == identity else {}
        for name, (images, labels) in sets.items():
            entries[name] = {"arrays_sha256": arrays_sha256(images, labels), "n": int(len(labels)),
                             "shape": [int(s) for s in np.shape(images)]}
        doc = {"recipe": HASH_RECIPE, "identity": identity, "sets": dict(sorted(entries.items()))}
        files.atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


def setting_name(axis: str, value: float) -> str:
    """The file stem of one robustness setting, e.g. ``robustness_gaussian_0.1``."""
    return f"robustness_{axis}_{float(value):g}"


def mnist_source(data_dir: str | Path | None = None) -> dict:
    """Where the MNIST digits came from and their hashes (:func:`datasets.mnist.fetch_mnist`)."""
    from datasets.mnist import fetch_mnist

    info = fetch_mnist(data_dir)
    return {"source": info.source, "sha256": dict(info.sha256)}


def cluttered_test_set(canvas: int, distractors: int, distractor_size: int, seed: int, n: int,
                       data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The test split ``bench cluttered`` evaluates: ``(images, labels)``."""
    from datasets.cluttered import ClutterParams, cached_split

    params = ClutterParams(canvas=canvas, distractors=distractors, distractor_size=distractor_size)
    ds = cached_split("test", params, seed=seed, n=n, data_dir=data_dir)
    return ds.images, ds.labels


def robustness_sets(n: int, canvas: int, seed: int, split: str, distractors: int, distractor_size: int,
                    max_distractors: int, axes: dict[str, list[float]], data_dir: str | Path | None = None
                    ) -> Iterator[tuple[str, str | None, float | None, np.ndarray, np.ndarray]]:
    """``(name, axis, value, images, labels)`` of the clean scenes, then of every setting of
    ``axes``, rendered as ``bench robustness`` renders them."""
    from datasets.degrade import Scenes
    from datasets.mnist import load_mnist

    digits, labels = load_mnist(split, data_dir=data_dir)
    scenes = Scenes(digits, labels, n, canvas, seed, max_distractors)
    clean = scenes.render(distractors, distractor_size)
    yield "robustness_clean", None, None, clean, scenes.labels
    for axis, values in axes.items():
        for v in values:
            x = scenes.degrade(axis, float(v), distractors=distractors, distractor_size=distractor_size, clean=clean)
            yield setting_name(axis, v), axis, float(v), x, scenes.labels


def _write_manifest(out: Path, doc: dict) -> Path:
    path = out / MANIFEST_FILE
    files.atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


def export_cluttered(out: str | Path, *, canvas: int, distractors: int, distractor_size: int, seed: int, n: int,
                     preset: str | None = None, data_dir: str | Path | None = None) -> dict:
    """Write ``cluttered_test.npz`` and ``manifest.json`` into ``out``; return the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = cluttered_test_set(canvas, distractors, distractor_size, seed, n, data_dir)
    entry = write_npz(out / "cluttered_test.npz", images, labels)
    doc = {"bench": "cluttered", "preset": preset, "hash_recipe": HASH_RECIPE, "mnist": mnist_source(data_dir),
           "generator": {"module": "datasets.cluttered.make_split", "split": "test", "seed": seed, "n": n,
                         "params": {"canvas": canvas, "distractors": distractors, "distractor_size": distractor_size,
                                    "digit_size": 28}},
           "files": [entry]}
    _write_manifest(out, doc)
    return doc


def export_robustness(out: str | Path, *, n: int, canvas: int, seed: int, split: str, distractors: int,
                      distractor_size: int, max_distractors: int, axes: dict[str, list[float]],
                      preset: str | None = None, data_dir: str | Path | None = None) -> dict:
    """Write ``robustness_clean.npz``, one ``robustness_<axis>_<value>.npz`` per setting and
    ``manifest.json`` into ``out``; return the manifest."""
    from datasets.degrade import severity

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, axis, value, images, labels in robustness_sets(n, canvas, seed, split, distractors, distractor_size,
                                                             max_distractors, axes, data_dir):
        entry = write_npz(out / f"{name}.npz", images, labels)
        if axis is not None:
            entry = {**entry, "axis": axis, "value": value,
                     "severity": severity(axis, value, distractors, distractor_size)}
        entries.append(entry)
    doc = {"bench": "robustness", "preset": preset, "hash_recipe": HASH_RECIPE, "mnist": mnist_source(data_dir),
           "generator": {"module": "datasets.degrade.Scenes", "split": split, "seed": seed, "n": n, "canvas": canvas,
                         "max_distractors": max_distractors, "training_setting": {
                             "distractors": distractors, "distractor_size": distractor_size},
                         "axes": {a: [float(v) for v in vs] for a, vs in axes.items()}},
           "files": entries}
    _write_manifest(out, doc)
    return doc
