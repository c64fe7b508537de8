"""The report writer (results.csv, config.json, tables, figures) and the paper's numbers."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark import paper
from benchmark.report import (
    RESULT_COLUMNS,
    OutputDirError,
    append_results,
    markdown_table,
    prepare_out_dir,
    provenance,
    read_results,
    save_figure,
    set_plot_style,
    summarize,
    write_config,
)
from datasets.files import atomic_open, atomic_write_bytes, atomic_write_text


def row(**kw) -> dict:
    base = dict(
        bench="cluttered",
        model="conv2",
        variant="",
        preset="smoke",
        seed=0,
        split="test",
        metric="test_error_pct",
        value=1.0,
    )
    base.update(kw)
    return base


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- atomic writes


def test_atomic_writes_replace_content_and_leave_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second ✓")
    assert target.read_text(encoding="utf-8") == "second ✓"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with atomic_open(tmp_path / "c.pt") as fh:
        torch.save({"w": torch.arange(3)}, fh)
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.arange(3))
    assert _only(tmp_path) == ["a.txt", "b.bin", "c.pt"]


def test_failed_atomic_write_keeps_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_write_text(target, "old")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), atomic_open(target) as fh:
        torch.save(Unpicklable(), fh)
    assert target.read_text() == "old"
    assert _only(tmp_path) == ["ckpt.pt"]


# --------------------------------------------------------------------------- results.csv


def test_append_results_dedups_on_key_keeping_newest(tmp_path: Path) -> None:
    append_results(tmp_path, [row(seed=0, value=10.0), row(seed=1, value=11.0)])
    append_results(tmp_path, [row(model="resnet", seed=0, value=5.0)])
    df = append_results(tmp_path, [row(seed=0, value=9.0)])  # replaces conv2 seed 0

    assert list(df.columns) == RESULT_COLUMNS
    assert len(df) == 3
    got = {(r.model, r.seed): r.value for r in df.itertuples()}
    assert got == {("conv2", 0): 9.0, ("conv2", 1): 11.0, ("resnet", 0): 5.0}
    # what is on disk is what was returned
    pd.testing.assert_frame_equal(read_results(tmp_path), df)
    assert _only(tmp_path) == ["results.csv"]


def test_append_results_dedups_within_one_call_and_survives_round_trip(tmp_path: Path) -> None:
    # Missing text values ("" / None / NaN) and seeds must compare equal after a CSV round trip.
    append_results(tmp_path, [row(variant=None, value=1.0)])
    df = append_results(
        tmp_path, pd.DataFrame([row(variant="", value=2.0), row(variant="", value=3.0)])
    )
    assert len(df) == 1 and df["value"].iloc[0] == 3.0
    assert df["variant"].iloc[0] == ""


def test_append_results_missing_columns_raise(tmp_path: Path) -> None:
    bad = row()
    del bad["metric"], bad["seed"]
    with pytest.raises(ValueError, match=r"missing columns \['seed', 'metric'\]"):
        append_results(tmp_path, [bad])
    with pytest.raises(ValueError, match="unexpected columns"):
        append_results(tmp_path, [row(epoch=3)])
    with pytest.raises(ValueError, match="numeric"):
        append_results(tmp_path, [row(value="fast")])
    assert not (tmp_path / "results.csv").exists()


def test_read_results_missing_file_is_empty_frame(tmp_path: Path) -> None:
    df = read_results(tmp_path)
    assert df.empty and list(df.columns) == RESULT_COLUMNS


# --------------------------------------------------------------------------- output folder


def test_prepare_out_dir_same_config_different_config_and_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run" / "nested"
    cfg = {"preset": "smoke", "seeds": 2, "image_size": (100, 100)}
    assert prepare_out_dir(out, cfg) == out and out.is_dir()
    write_config(out, cfg, datetime.now(timezone.utc))
    append_results(out, [row()])
    (out / "table.md").write_text("t")
    (out / "curve.png").write_bytes(b"png")
    (out / "curves.csv").write_text("epoch\n1\n")
    (out / "notes.txt").write_text("mine")
    (out / "ckpt").mkdir()
    (out / "ckpt" / "last.pt").write_bytes(b"x")

    # same config (tuples read back from JSON as lists): accepted, nothing deleted
    prepare_out_dir(out, {"preset": "smoke", "seeds": 2, "image_size": (100, 100)})
    assert (out / "results.csv").exists()

    with pytest.raises(OutputDirError, match=r"different configuration.*seeds.*--overwrite"):
        prepare_out_dir(out, {**cfg, "seeds": 3})

    prepare_out_dir(out, {**cfg, "seeds": 3}, overwrite=True)
    assert _only(out) == ["ckpt", "notes.txt"]
    assert (out / "ckpt" / "last.pt").exists()


def test_prepare_out_dir_refuses_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputDirError, match="not a folder"):
        prepare_out_dir(f, {})


def test_prepare_out_dir_uncreatable(tmp_path: Path) -> None:
    # A folder under a regular file cannot be created, not even by root.
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="cannot create"):
        prepare_out_dir(tmp_path / "file" / "run", {})


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_prepare_out_dir_unwritable_even_for_root() -> None:
    # /proc refuses new files whatever the user, so this runs where chmod cannot help.
    with pytest.raises(OutputDirError, match="not writable"):
        prepare_out_dir("/proc", {})


def test_prepare_out_dir_unwritable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        probe = locked / "probe"
        try:
            probe.write_text("x")
            probe.unlink()
            chmod_works = False  # e.g. running as root: permissions are not enforced
        except OSError:
            chmod_works = True
        if not chmod_works:
            pytest.skip("chmod 0o500 does not stop writes here (running as root?)")
        with pytest.raises(OutputDirError, match="not writable"):
            prepare_out_dir(locked, {})
        with pytest.raises(OutputDirError, match="cannot create"):
            prepare_out_dir(locked / "sub", {})
    finally:
        os.chmod(locked, stat.S_IRWXU)


def test_write_config_contents(tmp_path: Path) -> None:
    started = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    path = write_config(tmp_path, {"out": tmp_path, "lr": np.float32(0.5)}, started)
    doc = json.loads(path.read_text())
    assert doc["config"] == {"out": str(tmp_path), "lr": 0.5}
    assert doc["started"] == "2025-01-02T03:04:05+00:00" and doc["finished"] is None
    assert doc["provenance"]["torch"] == torch.__version__
    write_config(tmp_path, {"lr": 0.5}, started, finished=started)
    assert json.loads(path.read_text())["finished"] == "2025-01-02T03:04:05+00:00"
    # a later invocation of the same config is a second session; the first one is kept
    later = datetime(2025, 1, 3, tzinfo=timezone.utc)
    write_config(tmp_path, {"lr": 0.5}, later, finished=later)
    doc = json.loads(path.read_text())
    assert [x["started"] for x in doc["sessions"]] == [started.isoformat(), later.isoformat()]
    assert doc["started"] == started.isoformat() and doc["finished"] == later.isoformat()
    assert doc["sessions"][0]["finished"] == started.isoformat()
    write_config(tmp_path, {"lr": 0.7}, later)  # another config starts a new history
    assert len(json.loads(path.read_text())["sessions"]) == 1
    assert _only(tmp_path) == ["config.json"]


def test_provenance_keys() -> None:
    p = provenance()
    expected = {
        "git_commit", "git_dirty", "python", "platform", "torch", "torchvision", "numpy",
        "pandas", "sklearn", "seaborn", "device", "num_threads", "hostname",
    }  # fmt: skip
    assert expected <= set(p)
    assert p["num_threads"] == torch.get_num_threads()
    assert isinstance(p["device"], str) and p["device"]
    assert p["git_commit"] is None or len(p["git_commit"]) == 40
    json.dumps(p)  # must be storable as is


# --------------------------------------------------------------------------- summaries and tables


def test_summarize_mean_std_n() -> None:
    df = pd.DataFrame(
        [row(model="a", seed=s, value=v) for s, v in enumerate([1.0, 2.0, 6.0])]
        + [row(model="b", seed=0, value=4.0)]
        + [row(model="a", seed=0, metric="wall_s", value=100.0)]
    )
    s = summarize(df, "test_error_pct").set_index("model")
    assert list(s.columns) == ["variant", "mean", "std", "n"]
    assert s.loc["a", "mean"] == pytest.approx(3.0)
    assert s.loc["a", "std"] == pytest.approx(np.std([1.0, 2.0, 6.0], ddof=1))
    assert s.loc["a", "n"] == 3
    assert s.loc["b", "std"] == 0.0 and s.loc["b", "n"] == 1  # one seed: std reported as 0
    assert summarize(df, "nll_is_nats").empty


def test_markdown_table() -> None:
    df = pd.DataFrame({"model": ["conv2", "a|b"], "error": [14.3456, np.nan], "n": [3, 1]})
    lines = markdown_table(df).strip().splitlines()
    assert lines[0] == "| model | error | n |"
    assert lines[1] == "|---|---:|---:|"
    assert lines[2] == "| conv2 | 14.35 | 3 |"
    assert lines[3] == "| a\\|b |  | 1 |"
    assert len(lines) == 4
    assert markdown_table(df, floatfmt=".1f").splitlines()[2] == "| conv2 | 14.3 | 3 |"


def test_save_figure_atomic(tmp_path: Path) -> None:
    set_plot_style()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "line.png")
    assert (tmp_path / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _only(tmp_path) == ["line.png"]
    assert not plt.fignum_exists(fig.number)


# --------------------------------------------------------------------------- paper numbers


def test_paper_tables() -> None:
    t1 = paper.table1()
    assert list(t1.columns) == ["model", "glimpses", "test_error_pct", "source"]
    dram8 = t1[t1["model"].str.startswith("Differentiable RAM") & (t1["glimpses"] == 8)]
    assert dram8["test_error_pct"].tolist() == [3.36]
    assert 14.35 in t1["test_error_pct"].tolist()

    t2 = paper.table2()
    assert list(t2.columns) == ["model", "qualifier", "nll_nats", "source", "checked"]
    # the values we could not check against a second source are the four we recall only
    assert set(t2.loc[~t2["checked"], "model"]) == {"DBM 2hl", "EoNADE 2hl (128 orderings)", "DLGM", "DARN 12hl"}
    draw = t2.set_index("model").loc["DRAW"]
    assert draw["nll_nats"] == 80.97 and draw["qualifier"] == "≤"
    assert t2.set_index("model").loc["DRAW without attention", "nll_nats"] == 87.40
    assert len(t2) == 11 and t2["source"].str.contains("1502.04623").all()

    t3 = paper.table3().set_index("dataset")
    assert t3.loc["mnist", ["glimpses", "lstm_size", "z_size", "read_size", "write_size"]].tolist() == [
        64, 256, 100, 2, 5,
    ]  # fmt: skip
    assert t3.loc["cluttered_mnist_100", "read_size"] == 12
