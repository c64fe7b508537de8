"""``bench robustness``: calibration and per-class metrics, and the command at the smoke preset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from benchmark.robustness import (
    _hardest_level,
    _parse_settings,
    bench_config,
    calibration_bins,
    expected_calibration_error,
    per_class_error,
)
from cli import AXIS_NAMES, cli
from datasets.degrade import AXES


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
                       "severity": [0.0, 0.1, 0.2, 0.3], "value": [5.0, 20.0, 49.0, 70.0]})
    assert _hardest_level(df, "gaussian", [0.0, 0.1, 0.2, 0.3]) == 0.2
    assert _hardest_level(df.assign(value=80.0), "gaussian", [0.0, 0.1, 0.2, 0.3]) == 0.0


def test_config_keeps_distractor_sizes_that_fit_and_rejects_unknown_axes():
    cfg = bench_config("smoke")
    assert cfg.eval.axes["clutter"] == list(AXES["clutter"].values)
    assert cfg.eval.distractors == cfg.train.data.distractors
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
    sev = _parse_settings(df.fillna(""))
    cfg = json.loads((out / "config.json").read_text())["config"]
    n_settings = sum(len(v) for v in cfg["eval"]["axes"].values())
    assert n_settings >= 6 * 5
    err = sev[sev.metric == "test_error_pct"]
    assert len(err) == 2 * n_settings  # one row per model, axis, severity, seed
    assert set(err.axis) == set(AXES) and ((err.value >= 0) & (err.value <= 100)).all()
    ece = sev[sev.metric == "ece_pct"]
    assert ((ece.value >= 0) & (ece.value <= 100)).all()
    per_class = df[(df.split == "clean") & df.metric.str.startswith("class_")]
    assert len(per_class) == 2 * 10
    table = (out / "table.md").read_text()
    for name in ("clutter", "salt pepper", "occlusion", "ECE", "class 9", "(trained)"):
        assert name in table
    for png in ("robustness.png", "calibration.png", "per_class.png", "examples.png", "glimpses_hardest.png"):
        assert (out / png).stat().st_size > 5000, png
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
    key = ["model", "seed", "split", "metric"]
    both = df2.merge(df, on=key, suffixes=("", "_first"))
    assert len(both) == len(df2) and np.allclose(both.value, both.value_first)
    assert not (out2 / "train").exists()

    r = runner.invoke(cli, ["report", str(out)])
    assert r.exit_code == 0 and "robustness.png" in r.output

    # another config needs --overwrite; a change of axes alone re-evaluates without retraining
    r = runner.invoke(cli, [*args, "--axes", "occlusion"])
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = runner.invoke(cli, [*args, "--axes", "occlusion", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "nothing to do" in r.output and "epoch 1/" not in r.output  # the training folder is untouched
    assert set(_parse_settings(pd.read_csv(out / "results.csv").fillna("")).axis) == {"occlusion"}


@pytest.mark.parametrize(("extra", "hint"), [
    (["--axes", "clutter,blur"], "--axes"),
    (["--models", "vgg"], "--models"),
    (["--from", "."], "--from"),
])
def test_bench_robustness_usage_errors(extra, hint, tmp_path):
    r = CliRunner().invoke(cli, ["bench", "robustness", "--preset", "smoke", "--out", str(tmp_path / "o"), *extra])
    assert r.exit_code == 2, r.output
    assert hint in r.output and "Traceback" not in r.output
