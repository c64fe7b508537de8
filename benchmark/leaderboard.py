"""A leaderboard across bench folders: one ranking per bench (``cli.py report --leaderboard``).

Each folder is a bench output folder (``config.json`` with ``config.bench`` and a
``results.csv``), e.g. yours beside the committed ones in ``results/``:

- ``cluttered``: every (folder, preset, glimpses, model) with its test error (mean ± sd over
  seeds), multiply-adds per image where measured, and seeds; ranked by mean test error;
- ``robustness``: every (folder, preset, model) with mCE and relative mCE (ImageNet-C form,
  relative to the 2-layer conv: :mod:`benchmark.robustness_scores`), the clean error and
  the number of axes scored (6 in a full run; each folder is scored against its own conv2);
  ranked by mCE, then relative mCE, then clean error (a folder without the reference has no
  mCE: its models rank last, by clean error);
- ``nll``: every (folder, preset, data set, model) with the importance-sampled NLL of the
  whole test set (and the bound), estimated where the bench sampled only some test images
  (``nll_is_test_nats``; folders of older versions give the mean over their first images,
  and say so); ranked by it.

Only the files are read (no config is rebuilt), so folders of older versions rank too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.report import CONFIG_FILE, RESULTS_FILE, markdown_table, read_results

RANKED = ("cluttered", "robustness", "nll")


class LeaderboardError(ValueError):
    """A folder that cannot be ranked; ``folder`` names it."""

    def __init__(self, folder: Path, message: str) -> None:
        super().__init__(f"{folder}: {message}")
        self.folder = folder


def read_folder(folder: str | Path) -> tuple[str, dict, pd.DataFrame]:
    """``(bench name, stored config, results)`` of one bench folder; :class:`LeaderboardError`
    when it is not one, or holds a bench without a ranking."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))["config"]
        name = cfg["bench"]
    except (OSError, ValueError, KeyError, TypeError):
        raise LeaderboardError(folder, "no readable config.json with config.bench; is it a bench folder?") from None
    if name not in RANKED:
        raise LeaderboardError(folder, f"holds a {name!r} bench, which has no ranking; "
                                       f"choose folders of {', '.join(RANKED)}")
    if not (folder / RESULTS_FILE).exists():
        raise LeaderboardError(folder, f"has no {RESULTS_FILE} yet")
    try:
        df = read_results(folder)
    except (ValueError, OSError) as e:
        raise LeaderboardError(folder, f"unreadable {RESULTS_FILE} ({e})") from None
    return name, cfg, df


def _stats(values: pd.Series) -> tuple[float, float, int]:
    values = values.dropna()
    n = len(values)
    return (float(values.mean()) if n else np.nan, float(values.std(ddof=1)) if n > 1 else np.nan, n)


def _fmt(mean: float, sd: float, fmt: str = ".2f") -> str:
    if not np.isfinite(mean):
        return ""
    return format(mean, fmt) + (f" ± {sd:{fmt}}" if np.isfinite(sd) else "")


def _cluttered(folder: Path, cfg: dict, df: pd.DataFrame) -> list[dict]:
    rows = []
    for model in dict.fromkeys(df[df.metric == "test_error_pct"].model):
        m = df[df.model == model]
        err, sd, n = _stats(m[m.metric == "test_error_pct"].value)
        macs = m[m.metric == "macs_per_image"].value
        rows.append({"folder": str(folder), "preset": cfg.get("preset", ""), "glimpses": cfg.get("glimpses"),
                     "model": model, "test_error_pct": err, "sd": sd, "seeds": n,
                     "macs_per_image": float(macs.mean()) if len(macs) else np.nan})
    return rows


def _robustness(folder: Path, cfg: dict, df: pd.DataFrame) -> list[dict]:
    from benchmark.robustness_scores import SCORE_METRICS, corruption_errors

    scores = df[df.metric.isin(SCORE_METRICS)]
    if scores.empty and isinstance(cfg.get("eval"), dict):  # a folder written before the CE rows existed
        e = cfg["eval"]
        scores = corruption_errors(df, int(e["distractors"]), int(e["distractor_size"]))
    clean = df[(df.split == "clean") & (df.metric == "test_error_pct")]
    rows = []
    for model in dict.fromkeys(df[df.metric == "test_error_pct"].model):
        s = scores[scores.model == model]
        mce, mce_sd, n = _stats(s[s.metric == "mce_pct"].value)
        rel, rel_sd, _ = _stats(s[s.metric == "relative_mce_pct"].value)
        err, err_sd, n_clean = _stats(clean[clean.model == model].value)
        rows.append({"folder": str(folder), "preset": cfg.get("preset", ""), "model": model, "mce_pct": mce,
                     "mce_sd": mce_sd, "relative_mce_pct": rel, "relative_mce_sd": rel_sd, "clean_error_pct": err,
                     "clean_error_sd": err_sd, "n_axes": s[s.metric == "ce_pct"].split.nunique(),
                     "seeds": max(n, n_clean)})
    return rows


def _nll(folder: Path, cfg: dict, df: pd.DataFrame) -> list[dict]:
    rows = []
    for model in dict.fromkeys(df[df.metric == "nll_is_nats"].model):
        m = df[df.model == model]
        sample = m[m.metric == "nll_is_nats"]  # the mean over the sampled images, split names them
        split = sample.split.iloc[0]
        whole = m[m.metric == "nll_is_test_nats"]  # the whole test set (estimated from a random sample)
        est, sd, n = _stats((whole if len(whole) else sample).value)
        count = re.sub(r"\D", "", split)  # test, test[1000 random] (a sample) or test[:1000] (older versions)
        images = "all" if split == "test" else f"{count} random, all estimated" if len(whole) else f"first {count} only"
        bound, _, _ = _stats(m[(m.metric == "nll_bound_nats") & (m.split == "test")].value)
        rows.append({"folder": str(folder), "preset": cfg.get("preset", ""), "dataset": cfg.get("dataset", "mnist"),
                     "model": model, "nll_is_nats": est, "sd": sd, "is_images": images, "nll_bound_nats": bound,
                     "seeds": n})
    return rows


_ROWS = {"cluttered": _cluttered, "robustness": _robustness, "nll": _nll}
_ORDER = {"cluttered": ["test_error_pct"], "robustness": ["mce_pct", "relative_mce_pct", "clean_error_pct"],
          "nll": ["nll_is_nats"]}


def leaderboards(folders: list[str | Path]) -> dict[str, pd.DataFrame]:
    """One ranking per bench among ``folders``: a frame per bench name, best first, with a
    ``rank`` column (1 = best). :class:`LeaderboardError` names the first bad folder."""
    rows: dict[str, list[dict]] = {}
    for folder in folders:
        name, cfg, df = read_folder(folder)
        rows.setdefault(name, []).extend(_ROWS[name](Path(folder), cfg, df))
    boards = {}
    for name in RANKED:
        if name not in rows:
            continue
        board = pd.DataFrame(rows[name])
        if not board.empty:
            board = board.sort_values(_ORDER[name], na_position="last", kind="stable").reset_index(drop=True)
        board.insert(0, "rank", np.arange(1, len(board) + 1))
        boards[name] = board
    return boards


def _display(name: str, board: pd.DataFrame) -> pd.DataFrame:
    if name == "cluttered":
        return pd.DataFrame({
            "rank": board["rank"], "model": board.model, "preset": board.preset,
            "glimpses": [("" if pd.isna(g) else f"{int(g)}") for g in board.glimpses],
            "test error (%)": [_fmt(m, s) for m, s in zip(board.test_error_pct, board.sd, strict=True)],
            "M multiply-adds / image": ["" if not np.isfinite(v) else f"{v / 1e6:.2f}" for v in board.macs_per_image],
            "seeds": board.seeds, "folder": board.folder})
    if name == "robustness":
        return pd.DataFrame({
            "rank": board["rank"], "model": board.model, "preset": board.preset,
            "mCE (%)": [_fmt(m, s, ".1f") for m, s in zip(board.mce_pct, board.mce_sd, strict=True)],
            "relative mCE (%)": [_fmt(m, s, ".1f") for m, s in zip(board.relative_mce_pct, board.relative_mce_sd,
                                                                    strict=True)],
            "clean error (%)": [_fmt(m, s) for m, s in zip(board.clean_error_pct, board.clean_error_sd, strict=True)],
            "axes scored": board.n_axes, "seeds": board.seeds, "folder": board.folder})
    return pd.DataFrame({
        "rank": board["rank"], "model": board.model, "preset": board.preset, "data set": board.dataset,
        "NLL, importance-sampled (nats)": [_fmt(m, s) for m, s in zip(board.nll_is_nats, board.sd, strict=True)],
        "NLL bound (nats)": [_fmt(v, np.nan) for v in board.nll_bound_nats], "test images sampled": board.is_images,
        "seeds": board.seeds, "folder": board.folder})


_TITLES = {
    "cluttered": ("Cluttered MNIST classification", "Ranked by test error (mean over seeds, ± sd); lower is better."),
    "robustness": ("Robustness to degraded test images", "Ranked by mCE, then relative mCE, then clean error (ImageNet-C "
                   "form; 100 = the 2-layer conv baseline; mean over seeds, ± sd); lower is better. Each folder's "
                   "models are scored against that folder's conv baseline (a folder without it has no mCE); compare "
                   "mCE between rows with the same axes scored."),
    "nll": ("Negative log-likelihood", "Ranked by the importance-sampled NLL of the whole test set (nats per image, mean "
            "over seeds, ± sd), estimated from the random sample where only some test images were sampled; lower is "
            "better. Compare only within one data set."),
}


def leaderboard_markdown(folders: list[str | Path]) -> str:
    """The rankings of :func:`leaderboards` as markdown: one section per bench."""
    lines = ["# Leaderboard", "", f"Merged from {len(folders)} bench folder(s).", ""]
    for name, board in leaderboards(folders).items():
        title, how = _TITLES[name]
        lines += [f"## {title} (`bench {name}`)", "", how, ""]
        lines += [markdown_table(_display(name, board)).rstrip() if len(board) else "No finished models yet.", ""]
    return "\n".join(lines).rstrip() + "\n"
