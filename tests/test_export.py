"""Frozen test sets (`data export`): plain .npz files, their hashes, and the hashes the benches record."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from datasets.export import (
    TEST_SETS_FILE,
    arrays_sha256,
    read_npz,
    record_test_sets,
    write_npz,
)


def _arrays(n=5, side=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, side, side), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def test_array_hash_sees_every_image_byte_label_and_the_shape():
    x, y = _arrays()
    h = arrays_sha256(x, y)
    assert h == arrays_sha256(x.copy(), y.astype(np.int32))  # the labels are hashed as int64 whatever they came as
    x2 = x.copy()
    x2[3, 6, 6] ^= 1
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 10
    same_bytes = x.reshape(5, 49, 1)  # the bytes of x, another shape
    assert len({h, arrays_sha256(x2, y), arrays_sha256(x, y2), arrays_sha256(same_bytes, y)}) == 4
    with pytest.raises(ValueError, match="labels"):
        arrays_sha256(x, y[:3])


def test_npz_loads_without_pickles_and_is_byte_reproducible(tmp_path):
    x, y = _arrays()
    a = write_npz(tmp_path / "a.npz", x, y)
    b = write_npz(tmp_path / "b.npz", x, y)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert a["file_sha256"] == b["file_sha256"] and a["arrays_sha256"] == arrays_sha256(x, y)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["images", "labels"]
        assert z["images"].dtype == np.uint8 and z["labels"].dtype == np.int64
        assert np.array_equal(z["images"], x) and np.array_equal(z["labels"], y)
    assert a["n"] == 5 and a["shape"] == [5, 7, 7]
    assert a["images_sha256"] == hashlib.sha256(x.tobytes()).hexdigest()  # the one-line check
    assert a["labels_sha256"] == hashlib.sha256(y.astype("<i8").tobytes()).hexdigest()


def test_record_test_sets_merges_and_starts_afresh_for_other_data(tmp_path):
    x, y = _arrays()
    record_test_sets(tmp_path, {"n": 5}, {"one": (x, y)})
    record_test_sets(tmp_path, {"n": 5}, {"two": (x[:2], y[:2])})
    doc = json.loads((tmp_path / TEST_SETS_FILE).read_text())
    assert set(doc["sets"]) == {"one", "two"} and doc["sets"]["one"]["arrays_sha256"] == arrays_sha256(x, y)
    record_test_sets(tmp_path, {"n": 6}, {"three": (x, y)})  # other data: the old entries no longer apply
    assert set(json.loads((tmp_path / TEST_SETS_FILE).read_text())["sets"]) == {"three"}


def test_export_cluttered_smoke_writes_the_manifest(fake_mnist_dir, tmp_path):
    out = tmp_path / "frozen"
    r = CliRunner().invoke(cli, ["data", "export", "cluttered", "--preset", "smoke", "--out", str(out)])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = manifest["files"]
    images, labels = read_npz(out / "cluttered_test.npz")
    assert images.shape == (128, 40, 40) and labels.shape == (128,)
    assert entry["arrays_sha256"] == arrays_sha256(images, labels) and entry["n"] == 128
    g = manifest["generator"]
    assert g["params"] == {"canvas": 40, "distractors": 4, "distractor_size": 6, "digit_size": 28}
    assert g["seed"] == 0 and g["split"] == "test"
    assert manifest["mnist"]["source"] == "local" and len(manifest["mnist"]["sha256"]["test_x"]) == 64


@pytest.mark.parametrize(("args", "hint"), [
    (["data", "export", "imagenet", "--out", "x"], "cluttered|robustness"),
    (["data", "export", "cluttered", "--preset", "huge", "--out", "x"], "--preset"),
    (["data", "export", "cluttered"], "--out"),
])
def test_export_usage_errors(args, hint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and hint in r.output and "Traceback" not in r.output


def test_export_into_a_file_is_a_usage_error(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    r = CliRunner().invoke(cli, ["data", "export", "cluttered", "--preset", "smoke", "--out", str(f)])
    assert r.exit_code == 2 and "--out" in r.output


@pytest.mark.slow
def test_exported_cluttered_set_is_the_one_the_bench_evaluated(fake_mnist_dir, tmp_path):
    runner = CliRunner()
    bench = tmp_path / "bench"
    r = runner.invoke(cli, ["bench", "cluttered", "--preset", "smoke", "--eager", "--models", "conv2", "--device",
                            "cpu", "--out", str(bench)])
    assert r.exit_code == 0, r.output
    export = tmp_path / "frozen"
    r = runner.invoke(cli, ["data", "export", "cluttered", "--preset", "smoke", "--out", str(export)])
    assert r.exit_code == 0, r.output
    recorded = json.loads((bench / TEST_SETS_FILE).read_text())["sets"]["cluttered_test"]["arrays_sha256"]
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["files"][0]["arrays_sha256"] == recorded

    # the bench's test error, recomputed from the exported file with plain numpy -> torch
    from draw.checkpoint import load_model

    with np.load(export / "cluttered_test.npz", allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    assert arrays_sha256(images, labels) == recorded
    net, _ = load_model(bench / "weights" / "conv2-seed0.safetensors", "cpu")
    with torch.no_grad():
        out = net.eval()(torch.from_numpy(images).float()[:, None] / 255)
    logits = out[0] if isinstance(out, tuple) else out
    error = 100.0 * float((logits.argmax(1).numpy() != labels).mean())
    df = pd.read_csv(bench / "results.csv")
    assert error == df[(df.model == "conv2") & (df.metric == "test_error_pct")].value.item()
