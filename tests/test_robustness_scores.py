"""CE, relative CE, mCE and relative mCE (ImageNet-C form) checked by hand on a small results
frame; ECE by severity; the CE rows written idempotently into results.csv."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.report import append_results, read_results
from benchmark.robustness_scores import (
    SCORE_METRICS,
    ce_table,
    corruption_errors,
    ece_by_severity,
    ece_tables,
    write_scores,
)

D, S = 8, 8  # the training setting: severities of gaussian and occlusion are fixed (0 at 0, 1..5 at 0.1..0.5)
LEVELS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
# test error (%) at severities 0..5: (model, seed) -> axis -> errors
ERRORS = {
    ("conv2", 0): {"gaussian": [10, 20, 30, 40, 50, 50], "occlusion": [10, 10, 12, 14, 16, 18]},
    ("conv2", 1): {"gaussian": [12, 22, 32, 42, 52, 62], "occlusion": [12, 14, 16, 18, 20, 22]},
    ("attention", 0): {"gaussian": [4, 10, 15, 20, 25, 30], "occlusion": [4, 8, 10, 12, 14, 16]},
    ("attention", 1): {"gaussian": [6, 14, 18, 22, 26, 30], "occlusion": [6, 6, 8, 10, 12, 14]},
}


def _frame() -> pd.DataFrame:
    rows = []
    for (model, seed), axes in ERRORS.items():
        base = {"bench": "robustness", "model": model, "variant": "", "preset": "smoke", "seed": seed}
        for axis, errors in axes.items():
            for level, err in zip(LEVELS, errors, strict=True):
                rows.append({**base, "split": f"{axis}={level:g}", "metric": "test_error_pct", "value": float(err)})
                rows.append({**base, "split": f"{axis}={level:g}", "metric": "ece_pct", "value": float(err) / 10})
        rows.append({**base, "split": "clean", "metric": "test_error_pct", "value": float(axes["gaussian"][0])})
    return pd.DataFrame(rows)


def _score(ce: pd.DataFrame, model: str, seed: int, split: str, metric: str) -> float:
    sel = ce[(ce.model == model) & (ce.seed == seed) & (ce.split == split) & (ce.metric == metric)]
    assert len(sel) == 1, (model, seed, split, metric)
    return float(sel.value.iloc[0])


def test_corruption_errors_by_hand():
    ce = corruption_errors(_frame(), D, S)
    # the reference's error per severity 1..5, averaged over its two seeds, and its clean error
    ref = {a: [(x + y) / 2 for x, y in zip(ERRORS[("conv2", 0)][a][1:], ERRORS[("conv2", 1)][a][1:], strict=True)]
           for a in ("gaussian", "occlusion")}
    assert ref == {"gaussian": [21, 31, 41, 51, 56], "occlusion": [12, 14, 16, 18, 20]}
    ref_clean = (10 + 12) / 2
    # sums over severities by hand: reference 200 and 80; its clean-subtracted sums 145 and 25
    assert sum(ref["gaussian"]) == 200 and sum(ref["occlusion"]) == 80
    assert sum(e - ref_clean for e in ref["gaussian"]) == 145 and sum(e - ref_clean for e in ref["occlusion"]) == 25
    expected = {
        # attention seed 0: gaussian errors sum to 100, occlusion 60; clean 4
        ("attention", 0): {"gaussian": (100 * 100 / 200, 100 * (100 - 5 * 4) / 145),
                           "occlusion": (100 * 60 / 80, 100 * (60 - 5 * 4) / 25)},
        # attention seed 1: 110 and 50; clean 6
        ("attention", 1): {"gaussian": (100 * 110 / 200, 100 * (110 - 5 * 6) / 145),
                           "occlusion": (100 * 50 / 80, 100 * (50 - 5 * 6) / 25)},
        # the reference itself, per seed against its own mean: 190 and 70 (clean 10), 210 and 90 (clean 12)
        ("conv2", 0): {"gaussian": (100 * 190 / 200, 100 * (190 - 5 * 10) / 145),
                       "occlusion": (100 * 70 / 80, 100 * (70 - 5 * 10) / 25)},
        ("conv2", 1): {"gaussian": (100 * 210 / 200, 100 * (210 - 5 * 12) / 145),
                       "occlusion": (100 * 90 / 80, 100 * (90 - 5 * 12) / 25)},
    }
    assert expected[("attention", 0)]["gaussian"][0] == 50.0 and expected[("attention", 0)]["occlusion"] == (75.0, 160.0)
    for (model, seed), axes in expected.items():
        for axis, (ce_value, rel_value) in axes.items():
            assert _score(ce, model, seed, axis, "ce_pct") == ce_value
            assert _score(ce, model, seed, axis, "relative_ce_pct") == rel_value
        assert _score(ce, model, seed, "all", "mce_pct") == (axes["gaussian"][0] + axes["occlusion"][0]) / 2
        assert _score(ce, model, seed, "all", "relative_mce_pct") == (axes["gaussian"][1] + axes["occlusion"][1]) / 2
    assert _score(ce, "attention", 0, "all", "mce_pct") == 62.5
    assert _score(ce, "attention", 1, "all", "mce_pct") == (55.0 + 62.5) / 2
    # the reference's seeds average to exactly 100
    assert ce[(ce.model == "conv2") & (ce.metric == "ce_pct")].groupby("split").value.mean().tolist() == [100.0, 100.0]
    assert len(ce) == 4 * (2 * 2 + 2) and set(ce.metric) == set(SCORE_METRICS)


def test_ce_needs_the_reference_and_all_five_severities():
    df = _frame()
    assert corruption_errors(df[df.model != "conv2"], D, S).empty
    text = "\n".join(ce_table(df[df.model != "conv2"], D, S, ["attention"], str))
    assert "needs the reference model `conv2`" in text and "No CE rows" in text
    # occlusion severity 5 missing for the attention model, seed 1: no occlusion CE and no mCE for that seed
    partial = df[~((df.model == "attention") & (df.seed == 1) & (df.split == "occlusion=0.5"))]
    ce = corruption_errors(partial, D, S)
    a1 = ce[(ce.model == "attention") & (ce.seed == 1)]
    assert set(a1.split) == {"gaussian"}
    assert len(ce[(ce.model == "attention") & (ce.metric == "mce_pct")]) == 1


def test_ce_table_shows_mean_and_sd_over_seeds():
    text = "\n".join(ce_table(_frame(), D, S, ["attention", "conv2"], lambda m: {"conv2": "Conv"}.get(m, m)))
    mce = pd.Series([62.5, 58.75])
    assert f"| attention | 52.5 ± {np.std([50, 55], ddof=1):.1f} |" in text  # gaussian CE: 50 and 55
    assert f"{mce.mean():.1f} ± {mce.std(ddof=1):.1f}" in text
    assert "| Conv | 100.0 ± " in text


def test_ece_by_severity_and_its_tables():
    df = _frame()
    ece = ece_by_severity(df, D, S)
    a0 = ece[(ece.model == "attention") & (ece.seed == 0) & (ece.axis == "gaussian")]
    assert a0.severity.tolist() == [0, 1, 2, 3, 4, 5] and a0.value.tolist() == pytest.approx([0.4, 1, 1.5, 2, 2.5, 3])
    text = "\n".join(ece_tables(df, D, S, ["attention", "conv2"], str))
    # severity 1, attention: per seed the mean over the axes, (1.0 + 0.8) / 2 and (1.4 + 0.6) / 2; then mean ± sd
    per_seed = pd.Series([(1.0 + 0.8) / 2, (1.4 + 0.6) / 2])
    assert f"{per_seed.mean():.2f} ± {per_seed.std(ddof=1):.2f}" in text
    assert "| occlusion | conv2 |" in text


def test_write_scores_is_idempotent_and_drops_stale_rows(tmp_path):
    append_results(tmp_path, _frame())
    assert write_scores(tmp_path, D, S) is True
    first = (tmp_path / "results.csv").read_bytes()
    assert write_scores(tmp_path, D, S) is False  # nothing changed: the file is not rewritten
    assert (tmp_path / "results.csv").read_bytes() == first
    df = read_results(tmp_path)
    assert len(df[df.metric.isin(SCORE_METRICS)]) == 24
    # without the reference's rows, its CE rows and everyone's go
    df[df.model != "conv2"].to_csv(tmp_path / "results.csv", index=False)
    assert write_scores(tmp_path, D, S) is True
    assert read_results(tmp_path).metric.isin(SCORE_METRICS).sum() == 0
