"""Robustness scores in the ImageNet-C form (Hendrycks & Dietterich, 2019), from results.csv
alone, and the per-setting metrics they build on (ECE, reliability bins, per-class error).

Severities: 0 is the training setting, 1-5 the five harder values of each axis
(:func:`datasets.degrade.severity`); negative severities (easier than training) are extra
points on the curves only.

Corruption error of model ``m`` on axis ``f``, normalised by the reference model
(``conv2``, the RAM paper's 2-layer conv baseline, as AlexNet is for ImageNet-C)::

    CE_f^m          = 100 * sum_{s=1..5} E_{s,f}^m / sum_{s=1..5} E_{s,f}^ref
    relative CE_f^m = 100 * sum_{s=1..5} (E_{s,f}^m - E_clean^m) / sum_{s=1..5} (E_{s,f}^ref - E_clean^ref)

and mCE, relative mCE: their means over the axes (all six in a full run). ``E`` is the
test error in percent; ``E_clean`` the error at the training setting, the mean of the
severity-0 rows over the axes (the same images on every axis). Scores are per training
seed of ``m`` (the numerator of that seed) over the reference's errors averaged over its
seeds (the denominator); a model's score is then mean ± sd over its seeds. CE is in percent
of the reference, which therefore scores 100 (its seeds spread around it).

The rows (split ``<axis>`` or ``all``; metrics :data:`SCORE_METRICS`) are a pure function
of the per-setting rows (:func:`corruption_errors`), rewritten at the end of a run and by
``cli.py report`` (:func:`write_scores`); without the reference there are none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.report import (
    RESULT_COLUMNS,
    markdown_table,
    read_results,
    replace_results,
    save_figure,
)
from datasets.degrade import AXES, SEVERITIES, severity

ECE_BINS = 15
REFERENCE = "conv2"
SCORE_METRICS = ("ce_pct", "relative_ce_pct", "mce_pct", "relative_mce_pct")
_HARD = list(range(1, SEVERITIES + 1))


def _axis_order(axis: str) -> int:
    return list(AXES).index(axis) if axis in AXES else len(AXES)


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Equal-width confidence bins over [0, 1]: count, mean confidence and accuracy per bin."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    idx = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, confidence, minlength=bins) / count
        acc = np.bincount(idx, correct, minlength=bins) / count
    return pd.DataFrame({"bin": np.arange(bins), "lower": np.arange(bins) / bins, "count": count,
                         "confidence": conf, "accuracy": acc})


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE (Guo et al., 2017): sum over bins of (bin share) * |accuracy - mean confidence|, in [0, 1]."""
    b = calibration_bins(confidence, correct, bins)
    b = b[b["count"] > 0]
    n = b["count"].sum()
    return float((b["count"] / n * (b["accuracy"] - b["confidence"]).abs()).sum()) if n else float("nan")


def per_class_error(labels: np.ndarray, pred: np.ndarray, classes: int = 10) -> np.ndarray:
    """Error (%) of each true class: 100 * (1 - recall), from scikit-learn; NaN for a class absent from labels."""
    from sklearn.metrics import recall_score

    return 100.0 * (1.0 - recall_score(labels, pred, labels=list(range(classes)), average=None, zero_division=np.nan))


def parse_settings(df: pd.DataFrame, distractors: int | None = None, distractor_size: int | None = None
                   ) -> pd.DataFrame:
    """The results.csv rows of degraded settings (split ``axis=value``), with columns ``axis``,
    ``level`` (the axis's value) and, given the training setting, ``severity`` (an integer;
    missing for a value not on the axis's list)."""
    df = df[df.split.astype(str).str.contains("=", regex=False)].copy()
    parts = df.split.str.split("=", n=1, expand=True) if len(df) else pd.DataFrame({0: [], 1: []})
    df["axis"] = parts[0]
    df["level"] = parts[1].astype(float)
    if distractors is not None:
        def sev(axis: str, level: float) -> float:
            try:
                return severity(axis, level, distractors, distractor_size)
            except ValueError:
                return np.nan

        df["severity"] = pd.array([sev(a, v) for a, v in zip(df.axis, df.level, strict=True)], dtype="Int64")
    return df


def _errors(df: pd.DataFrame, distractors: int, distractor_size: int) -> pd.Series:
    """Test error per (model, seed, axis, severity) for severities 0..5."""
    e = parse_settings(df[df.metric == "test_error_pct"], distractors, distractor_size).dropna(subset=["severity"])
    e = e[(e.severity >= 0) & (e.severity <= SEVERITIES)]
    return e.groupby(["model", "seed", "axis", "severity"]).value.mean()


def _complete(e: pd.Series) -> pd.Series:
    """(model, seed, axis) -> sum of the errors at severities 1..5, where all five are present."""
    hard = e[e.index.get_level_values("severity").isin(_HARD)]
    g = hard.groupby(level=["model", "seed", "axis"])
    return g.sum()[g.count() == SEVERITIES]


def corruption_errors(df: pd.DataFrame, distractors: int, distractor_size: int,
                      reference: str = REFERENCE) -> pd.DataFrame:
    """CE and relative CE per model, seed and axis, mCE and relative mCE per model and seed, as
    results.csv rows (split ``<axis>`` or ``all``), from the per-setting rows of ``df``. Empty
    when the reference has no complete axis. mCE needs the model's CE on every axis the
    reference completed (the axes are named by the rows)."""
    e = _errors(df, distractors, distractor_size)
    if e.empty or reference not in e.index.get_level_values("model"):
        return pd.DataFrame(columns=RESULT_COLUMNS)
    sums = _complete(e)
    clean = e[e.index.get_level_values("severity") == 0].groupby(level=["model", "seed"]).mean()
    if reference not in sums.index.get_level_values("model"):
        return pd.DataFrame(columns=RESULT_COLUMNS)
    ref_sum = sums.loc[reference].groupby(level="axis").mean()  # mean over the reference's seeds
    ref_clean = clean.loc[reference].mean() if reference in clean.index.get_level_values("model") else np.nan
    axes = sorted(ref_sum.index, key=_axis_order)
    meta = df[df.metric == "test_error_pct"].drop_duplicates("model").set_index("model")
    rows = []
    for (model, seed), per_axis in sums.groupby(level=["model", "seed"]):
        per_axis = per_axis.droplevel(["model", "seed"])
        e_clean = clean.get((model, seed), np.nan)
        base = {"bench": "robustness", "model": model, "variant": meta.variant.get(model, ""),
                "preset": meta.preset.get(model, ""), "seed": seed}
        ce, rel = {}, {}
        for axis in [a for a in axes if a in per_axis.index]:
            ce[axis] = 100.0 * per_axis[axis] / ref_sum[axis]
            den = ref_sum[axis] - SEVERITIES * ref_clean
            rel[axis] = 100.0 * (per_axis[axis] - SEVERITIES * e_clean) / den if den > 0 else np.nan
            rows.append({**base, "split": axis, "metric": "ce_pct", "value": ce[axis]})
            if np.isfinite(rel[axis]):
                rows.append({**base, "split": axis, "metric": "relative_ce_pct", "value": rel[axis]})
        if len(ce) == len(axes):
            rows.append({**base, "split": "all", "metric": "mce_pct", "value": float(np.mean(list(ce.values())))})
            if all(np.isfinite(v) for v in rel.values()):
                rows.append({**base, "split": "all", "metric": "relative_mce_pct",
                             "value": float(np.mean(list(rel.values())))})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def write_scores(out: Path, distractors: int, distractor_size: int, reference: str = REFERENCE) -> bool:
    """Make results.csv's CE rows those :func:`corruption_errors` derives from its per-setting
    rows (idempotent: the file is rewritten only when they change). Returns whether it was."""
    df = read_results(out)
    if df.empty:
        return False
    return replace_results(out, SCORE_METRICS, corruption_errors(df, distractors, distractor_size, reference))


def _mean_sd(values: pd.Series, fmt: str = ".1f") -> str:
    values = values.dropna()
    if values.empty:
        return ""
    return format(values.mean(), fmt) + (f" ± {values.std(ddof=1):{fmt}}" if len(values) > 1 else "")


def ce_table(df: pd.DataFrame, distractors: int, distractor_size: int, models: list[str],
             label: Callable[[str], str], reference: str = REFERENCE) -> list[str]:
    """table.md's section: CE per axis, mCE and relative mCE per model (mean ± sd over seeds)."""
    lines = ["## Corruption error (ImageNet-C form), relative to the 2-layer conv", ""]
    if reference not in set(df.model):
        return lines + [f"CE needs the reference model `{reference}` (the RAM paper's 2-layer conv baseline) among "
                        "the models; rerun with it in `--models` to score. No CE rows are written.", ""]
    ce = corruption_errors(df, distractors, distractor_size, reference)
    if ce.empty:
        return lines + [f"No axis has all {SEVERITIES} severities for `{reference}` yet.", ""]
    axes = list(dict.fromkeys(ce[ce.metric == "ce_pct"].split))
    lines += [f"CE_f = 100 × Σ_s E_s,f / Σ_s E_s,f(conv2) over severities s = 1..{SEVERITIES} of axis f; "
              "relative CE subtracts each model's clean error first; mCE and relative mCE are the means over "
              f"the axes ({len(axes)}: {', '.join(axes)}). Per training seed over conv2's errors averaged over its "
              "seeds; cells: mean ± sd over seeds. Lower is better; conv2 is 100 by construction.", ""]
    rows = []
    for m in [m for m in models if m in set(ce.model)]:
        c = ce[ce.model == m]
        row = {"model": label(m)}
        for axis in axes:
            row[axis.replace("_", " ")] = _mean_sd(c[(c.split == axis) & (c.metric == "ce_pct")].value)
        row["mCE"] = _mean_sd(c[c.metric == "mce_pct"].value)
        row["relative mCE"] = _mean_sd(c[c.metric == "relative_mce_pct"].value)
        rows.append(row)
    return lines + [markdown_table(pd.DataFrame(rows)), ""]


def ece_by_severity(df: pd.DataFrame, distractors: int, distractor_size: int) -> pd.DataFrame:
    """ECE (%) per model, seed, axis and severity (every severity on the curves)."""
    e = parse_settings(df[df.metric == "ece_pct"], distractors, distractor_size).dropna(subset=["severity"])
    return e.groupby(["model", "seed", "axis", "severity"]).value.mean().reset_index()


def _mean_over_axes(ece: pd.DataFrame) -> pd.DataFrame:
    """Per model, seed and severity 0..5: the mean ECE over the axes."""
    e = ece[(ece.severity >= 0) & (ece.severity <= SEVERITIES)]
    return e.groupby(["model", "seed", "severity"]).value.mean().reset_index()


def ece_tables(df: pd.DataFrame, distractors: int, distractor_size: int, models: list[str],
               label: Callable[[str], str]) -> list[str]:
    """table.md's section: ECE by severity, the mean over axes and per axis."""
    ece = ece_by_severity(df, distractors, distractor_size)
    if ece.empty:
        return []
    models = [m for m in models if m in set(ece.model)]
    mean = _mean_over_axes(ece)
    lines = ["## Calibration by severity", "",
             "ECE (%) over 15 confidence bins at each severity (0: the training setting); first the mean over the "
             "axes (per seed, then mean ± sd over seeds), then each axis (negative severities: easier than "
             "training).", ""]
    sevs = sorted(int(s) for s in set(mean.severity))
    rows = [{"model": label(m), **{str(s): _mean_sd(mean[(mean.model == m) & (mean.severity == s)].value, ".2f")
                                   for s in sevs}} for m in models]
    lines += [markdown_table(pd.DataFrame(rows)), ""]
    sevs = sorted(int(s) for s in set(ece.severity))
    rows = []
    for axis in sorted(set(ece.axis), key=_axis_order):
        for m in models:
            a = ece[(ece.model == m) & (ece.axis == axis)]
            rows.append({"axis": axis.replace("_", " "), "model": label(m),
                         **{str(s): _mean_sd(a[a.severity == s].value, ".2f") for s in sevs}})
    return lines + [markdown_table(pd.DataFrame(rows)), ""]


def calibration_severity_plot(out: Path, df: pd.DataFrame, distractors: int, distractor_size: int,
                              models: list[str], label: Callable[[str], str]) -> list[Path]:
    """``calibration_severity.png``: ECE (mean over axes) against severity 0-5, one line per
    model, band: sd over seeds."""
    ece = ece_by_severity(df, distractors, distractor_size)
    if ece.empty:
        return []
    import matplotlib.pyplot as plt
    import seaborn as sns

    mean = _mean_over_axes(ece)
    mean["label"] = mean.model.map(label)
    order = [label(m) for m in models if m in set(mean.model)]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sns.lineplot(data=mean, x="severity", y="value", hue="label", hue_order=order, marker="o", errorbar="sd", ax=ax,
                 palette=dict(zip(order, sns.color_palette("deep", len(order)), strict=True)))
    ax.set_xticks(range(SEVERITIES + 1))
    ax.set_xlabel("severity (0: the training setting)")
    ax.set_ylabel("ECE (%), mean over the axes")
    seeds = mean.seed.nunique()
    ax.set_title("Calibration as the test images degrade" + (" (band: sd over seeds)" if seeds > 1 else ""),
                 fontsize=10)
    ax.legend(title="", fontsize=8)
    path = out / "calibration_severity.png"
    save_figure(fig, path)
    return [path]
