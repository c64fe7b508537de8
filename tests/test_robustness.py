"""``bench robustness``: calibration and per-class metrics, and the command at the smoke preset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from benchmark.robustness import (
    _hardest_level,
    bench_config,
    calibration_bins,
    expected_calibration_error,
    per_class_error,
)
from benchmark.robustness_scores import SCORE_METRICS, parse_settings
from cli import AXIS_NAMES, cli
from datasets.degrade import AXES
from datasets.export import arrays_sha256, read_npz


def test_cli_axis_names_match_the_library():
    assert tuple(AXES) == AXIS_NAMES


def test_ece_of_a_calibrated_and_of_an_overconfident_model():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 200_000)
    calibrated = rng.random(conf.size) < conf
    assert expected_calibration_error(conf, calibrated) < 0.01
    # always 90% sure, right half the time: ECE = |0.5 - 0.9| = 0.4
    assert expected_calibration_error(np.full(1000, 0.9), np.arange(1000) % 2 == 0) == pytest.approx(0.4)
    # by hand: two bins (15 bins: 0.2 falls in bin 3, 0.95 in bin 14)
    conf = np.array([0.2, 0.2, 0.95, 0.95])
    correct = np.array([1, 0, 1, 1])
    expected = 0.5 * abs(0.5 - 0.2) + 0.5 * abs(1.0 - 0.95)
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)
    b = calibration_bins(conf, correct)
    assert b["count"].sum() == 4 and b.loc[3, "count"] == 2 and b.loc[14, "accuracy"] == 1.0
    assert calibration_bins(np.array([1.0]), np.array([1]))["count"].iloc[-1] == 1  # confidence 1 is in the last bin


def test_per_class_error():
    labels = np.array([0, 0, 1, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0, 1, 0])
    err = per_class_error(labels, pred, classes=4)
    assert err[:3] == pytest.approx([50.0, 25.0, 100.0]) and np.isnan(err[3])  # class 3 never occurs


def test_hardest_level_is_the_most_severe_setting_still_below_half_error():
    df = pd.DataFrame({"model": "attention", "metric": "test_error_pct", "axis": "gaussian",
                       "level": [0.0, 0.1, 0.2, 0.3], "value": [5.0, 20.0, 49.0, 70.0]})
    assert _hardest_level(df, "gaussian", [0.0, 0.1, 0.2, 0.3]) == 0.2
    assert _hardest_level(df.assign(value=80.0), "gaussian", [0.0, 0.1, 0.2, 0.3]) == 0.0


def test_config_evaluates_up_to_severity_5_and_rejects_unknown_axes():
    cfg = bench_config("smoke")  # trained with 4 distractors of 6x6: severities relative to that
    assert (cfg.eval.distractors, cfg.eval.distractor_size) == (4, 6)
    assert cfg.eval.axes["clutter"] == [0, 4, 8, 12, 16, 20, 24]
    assert cfg.eval.axes["distractor_size"] == [4, 6, 8, 10, 12, 14, 16]
    assert cfg.eval.axes["occlusion"] == [0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert cfg.eval.max_distractors == 28
    paper = bench_config("paper", models=["conv2"])
    assert paper.eval.axes["clutter"] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert paper.eval.axes["distractor_size"] == [4, 6, 8, 10, 12, 14, 16, 18]
    with pytest.raises(ValueError, match="blur"):
        bench_config("smoke", axes=["blur"])


@pytest.mark.slow
def test_bench_robustness_smoke(fake_mnist_dir, tmp_path):
    out = tmp_path / "rob"
    runner = CliRunner()
    args = ["bench", "robustness", "--preset", "smoke", "--models", "attention,conv2", "--eager", "--out", str(out),
            "--device", "cpu"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "results.csv")
    sev = parse_settings(df.fillna(""))
    cfg = json.loads((out / "config.json").read_text())["config"]
    n_settings = sum(len(v) for v in cfg["eval"]["axes"].values())
    assert n_settings == 6 * 6 + 2  # training setting and severities 1-5 per axis, clutter 0 and size 4 below
    err = sev[sev.metric == "test_error_pct"]
    assert len(err) == 2 * n_settings  # one row per model, axis, severity, seed
    assert set(err.axis) == set(AXES) and ((err.value >= 0) & (err.value <= 100)).all()
    ece = sev[sev.metric == "ece_pct"]
    assert ((ece.value >= 0) & (ece.value <= 100)).all()
    per_class = df[(df.split == "clean") & df.metric.str.startswith("class_")]
    assert len(per_class) == 2 * 10
    table = (out / "table.md").read_text()
    for name in ("clutter", "salt pepper", "occlusion", "ECE", "class 9", "(trained)", "(s+5)", "(s-1)",
                 "Corruption error", "relative mCE", "Calibration by severity"):
        assert name in table, name
    for png in ("robustness.png", "calibration.png", "calibration_severity.png", "per_class.png", "examples.png",
                "glimpses_hardest.png"):
        assert (out / png).stat().st_size > 5000, png
    # CE rows: per model and axis, mCE per model; conv2 (the reference, one seed) scores exactly 100
    scores = df[df.metric.isin(SCORE_METRICS)]
    assert len(scores[scores.metric == "ce_pct"]) == 2 * 6 and set(scores[scores.metric == "ce_pct"].split) == set(AXES)
    mce = scores[scores.metric == "mce_pct"].set_index("model").value
    assert mce["conv2"] == pytest.approx(100.0) and np.isfinite(mce["attention"])
    # the test sets evaluated are recorded, hashed as `data export robustness` hashes them
    sets = json.loads((out / "test_sets.json").read_text())["sets"]
    assert len(sets) == n_settings + 1 and "robustness_clean" in sets and "robustness_clutter_24" in sets
    assert (out / "train" / "results.csv").exists()  # the models were trained as `bench cluttered` does

    # rerun: nothing is retrained or re-evaluated
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert f"every job ({n_settings}) is already in" in r.output and "nothing to do" in r.output
    assert len(pd.read_csv(out / "results.csv")) == len(df)

    # reuse the trained models through --from: same images, same models, same errors
    out2 = tmp_path / "rob2"
    r = runner.invoke(cli, ["bench", "robustness", "--preset", "smoke", "--from", str(out / "train"), "--axes",
                            "gaussian,clutter", "--out", str(out2), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "reusing" in r.output and "epoch 1/" not in r.output
    df2 = pd.read_csv(out2 / "results.csv")
    df2 = df2[~df2.metric.isin(["mce_pct", "relative_mce_pct"])]  # the means over 2 axes, not 6
    key = ["model", "seed", "split", "metric"]
    both = df2.merge(df, on=key, suffixes=("", "_first"))
    assert len(both) == len(df2) and np.allclose(both.value, both.value_first)
    assert not (out2 / "train").exists()

    # the frozen test sets: `data export robustness` writes the images the bench evaluated
    export = tmp_path / "export"
    r = runner.invoke(cli, ["data", "export", "robustness", "--preset", "smoke", "--out", str(export)])
    assert r.exit_code == 0, r.output
    manifest = json.loads((export / "manifest.json").read_text())
    assert len(manifest["files"]) == n_settings + 1
    for f in manifest["files"]:
        images, labels = read_npz(export / f["file"])
        assert arrays_sha256(images, labels) == f["arrays_sha256"] == sets[f["file"][:-4]]["arrays_sha256"]
    assert {f["severity"] for f in manifest["files"] if "severity" in f} == {-1, 0, 1, 2, 3, 4, 5}

    # report redraws the CE rows from the per-setting rows: the same rows, results.csv untouched
    before = (out / "results.csv").read_bytes()
    r = runner.invoke(cli, ["report", str(out)])
    assert r.exit_code == 0 and "robustness.png" in r.output
    assert (out / "results.csv").read_bytes() == before
    stripped = df[~df.metric.isin(SCORE_METRICS)]
    stripped.to_csv(out / "results.csv", index=False)
    r = runner.invoke(cli, ["report", str(out)])
    assert r.exit_code == 0, r.output
    again = pd.read_csv(out / "results.csv")
    assert len(again) == len(df) and len(again[again.metric.isin(SCORE_METRICS)]) == len(scores)

    # another config needs --overwrite; a change of axes alone re-evaluates without retraining
    r = runner.invoke(cli, [*args, "--axes", "occlusion"])
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = runner.invoke(cli, [*args, "--axes", "occlusion", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "nothing to do" in r.output and "epoch 1/" not in r.output  # the training folder is untouched
    assert set(parse_settings(pd.read_csv(out / "results.csv").fillna("")).axis) == {"occlusion"}


@pytest.mark.parametrize(("extra", "hint"), [
    (["--axes", "clutter,blur"], "--axes"),
    (["--models", "vgg"], "--models"),
    (["--from", "."], "--from"),
])
def test_bench_robustness_usage_errors(extra, hint, tmp_path):
    r = CliRunner().invoke(cli, ["bench", "robustness", "--preset", "smoke", "--out", str(tmp_path / "o"), *extra])
    assert r.exit_code == 2, r.output
    assert hint in r.output and "Traceback" not in r.output
