"""The one report writer every benchmark uses.

A benchmark's output folder holds:

- ``results.csv``: tidy rows with the columns ``RESULT_COLUMNS``, one row per
  measurement, keyed by (bench, model, variant, preset, seed, split, metric);
- ``config.json``: ``{"config", "provenance", "started", "finished"}``;
- ``table.md`` and ``*.png``: regenerated from ``results.csv`` alone.

Every file is written atomically (:mod:`datasets.files`), so an interrupted run
never leaves a half written CSV or figure behind.

Usage from a benchmark::

    out = prepare_out_dir(out_dir, config, overwrite=overwrite)
    started = datetime.now(timezone.utc)
    write_config(out, config, started)
    ... append_results(out, rows) as measurements arrive ...
    write_config(out, config, started, finished=datetime.now(timezone.utc))
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datasets.files import atomic_open, atomic_write_text, folder_lock

RESULT_COLUMNS = ["bench", "model", "variant", "preset", "seed", "split", "metric", "value"]
KEY_COLUMNS = RESULT_COLUMNS[:-1]
_TEXT_COLUMNS = ["bench", "model", "variant", "preset", "split", "metric"]

RESULTS_FILE = "results.csv"
TABLE_FILE = "table.md"
CONFIG_FILE = "config.json"
FIGURE_DPI = 130


# --------------------------------------------------------------------------- output folder


class OutputDirError(Exception):
    """The output folder cannot be used as asked; the message says why and what to do."""


def _jsonable(obj: Any) -> Any:
    """``json.dumps`` default: paths, dates, dataclasses, numpy scalars and arrays, sets."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    raise TypeError(f"cannot store {type(obj).__name__} in config.json: {obj!r}")


def normalize_config(config: dict) -> Any:
    """The config as it reads back from JSON (tuples become lists, paths strings, ...)."""
    return json.loads(json.dumps(config, default=_jsonable))


def _config_diff(old: Any, new: Any) -> list[str]:
    """Top-level keys whose values differ, for the error message."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return ["<whole config>"]
    keys = sorted(set(old) | set(new), key=str)
    return [
        f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
        for k in keys
        if old.get(k, "<absent>") != new.get(k, "<absent>")
    ]


def prepare_out_dir(out_dir: str | os.PathLike, config: dict, overwrite: bool = False,
                    complete: Callable[[Any], Any] | None = None) -> Path:
    """Create (or reuse) a benchmark output folder and return it.

    - The folder is created with its parents; OutputDirError if that fails or
      if a file cannot be created and removed in it.
    - If it already holds a ``config.json`` whose ``"config"`` differs from
      ``config``, OutputDirError, unless ``overwrite``: results of different
      configurations never mix in one ``results.csv``. The same config is
      accepted, and new rows are then merged into the existing results.
      ``complete`` maps the stored config to the same config as the code reads it
      today (settings added since, at their defaults) before the comparison.
    - With ``overwrite=True`` and a different config, ``results.csv`` and the other
      ``*.csv`` a bench writes beside it, ``table.md``, the figures, ``config.json``
      and the shipped weights are deleted first. Run folders (checkpoints) are
      kept: the runner resumes only those trained with the same settings
      (:meth:`benchmark.runner.RunContext.claim_run_dir`).
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output path {out} exists and is not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(
            f"cannot create output folder {out}: {e.strerror or e}; choose another --out"
        ) from e
    probe = out / f".write-test.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        with contextlib.suppress(OSError):
            probe.unlink()
        raise OutputDirError(
            f"output folder {out} is not writable: {e.strerror or e}; choose another --out"
        ) from e

    config_path = out / CONFIG_FILE
    if not config_path.exists():
        return out
    new = normalize_config(config)
    try:
        old = json.loads(config_path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        if not overwrite:
            raise OutputDirError(
                f"{config_path} exists but cannot be read ({e}); pass --overwrite to start "
                f"afresh in {out}, or choose another --out"
            ) from e
        old = None
    if old is not None and complete is not None:
        old = normalize_config(complete(old))
    if old == new:
        return out
    if not overwrite:
        diff = "; ".join(_config_diff(old, new)[:8])
        raise OutputDirError(
            f"{out} holds results of a different configuration ({diff}). Pass --overwrite "
            f"to replace them, or choose another --out"
        )
    doomed = [out / TABLE_FILE, out / CONFIG_FILE, *out.glob("*.csv"), *out.glob("*.png"), *out.glob("*.gif"),
              *out.glob("weights/*.safetensors")]
    for f in doomed:
        if f.is_file() or f.is_symlink():
            f.unlink()
    return out


# --------------------------------------------------------------------------- provenance


def _git_info() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding this file; (None, None) if there is none."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(
                ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# The instruction sets that decide a CPU's speed here (bf16 products need avx512_bf16 or amx_bf16).
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpu_name() -> str:
    """The CPU model, with its family/model numbers and vector instruction sets where the
    model name alone is vague (virtual machines often say just "AMD EPYC"), e.g.
    ``AMD EPYC (family 23, model 49; avx2)``."""
    from draw.fast import cpu_info

    info = cpu_info()
    if "model name" not in info:
        return platform.processor() or platform.machine() or "unknown CPU"
    flags = set(info.get("flags", "").split())
    isa = ", ".join(f for f in _CPU_FLAGS if f in flags) or "no AVX2"
    return f"{info['model name']} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}; {isa})"


def provenance() -> dict[str, Any]:
    """Where and with what a result was produced.

    Keys: git_commit, git_dirty (None for both outside a git checkout), python,
    platform, torch, torchvision, numpy, pandas, sklearn, seaborn, cuda (the
    CUDA version torch was built with, or None), device (GPU name when CUDA is
    available, else the CPU model), num_threads (torch.get_num_threads()),
    hostname.
    """
    import torch

    commit, dirty = _git_info()
    cuda = torch.cuda.is_available()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "sklearn": _version("scikit-learn"),
        "seaborn": _version("seaborn"),
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else _cpu_name(),
        "num_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
    }


def write_config(
    out_dir: str | os.PathLike,
    config: dict,
    started: datetime,
    finished: datetime | None = None,
    complete: bool | None = None,
    data: dict | None = None,
    as_read_today: Callable[[Any], Any] | None = None,
) -> Path:
    """Write ``config.json`` = {config, provenance, started, finished, complete, sessions}
    atomically; return its path.

    Call it once when the run starts (``finished=None``) and again at the end. A resumed or
    repeated run of the same config appends to ``sessions`` (start, end, git commit and
    machine of each invocation) instead of forgetting the earlier ones; ``started`` is the
    first session's. ``complete``: False when a time budget stopped the run before its last
    job (rerun to continue). ``data``: what data the run read, when the config alone does
    not say (kept from the previous write when not given). ``as_read_today`` maps the stored
    config to how the code reads it today (see :func:`prepare_out_dir`'s ``complete``) before
    the comparison, so that a setting added or retired since keeps the history.
    """
    path = Path(out_dir) / CONFIG_FILE
    cfg, prov = normalize_config(config), provenance()
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        same = (old["config"] if as_read_today is None else as_read_today(old["config"])) == cfg
        sessions = list(old["sessions"]) if same else []
        data = data if data is not None or not same else old.get("data")
    except (OSError, ValueError, KeyError, TypeError):
        sessions = []
    me = {"started": started.isoformat(), "finished": None if finished is None else finished.isoformat(),
          "git_commit": prov["git_commit"], "git_dirty": prov["git_dirty"], "device": prov["device"],
          "num_threads": prov["num_threads"]}
    sessions = [x for x in sessions if x.get("started") != me["started"]] + [me]
    doc = {
        "config": cfg,
        "provenance": prov,
        "started": sessions[0]["started"],
        "finished": me["finished"],
        "complete": complete,
        "sessions": sessions,
        **({"data": data} if data is not None else {}),
    }
    atomic_write_text(path, json.dumps(doc, indent=2, default=_jsonable) + "\n")
    return path


# --------------------------------------------------------------------------- results.csv


def _empty_results() -> pd.DataFrame:
    return _tidy(pd.DataFrame({c: [] for c in RESULT_COLUMNS}))


def _is_missing(v: Any) -> bool:
    return v is None or (not isinstance(v, str) and pd.api.types.is_scalar(v) and bool(pd.isna(v)))


def _blank_to_nan(v: Any) -> Any:
    return np.nan if _is_missing(v) or (isinstance(v, str) and not v.strip()) else v


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Check the columns and give them stable types, so that rows compare equal after a CSV round trip.

    Text columns are strings with "" for missing; seed is a nullable integer
    when every seed is whole (else float); value is float.
    """
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in RESULT_COLUMNS]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra} (put extra information in 'variant')")
        raise ValueError(f"results rows: {'; '.join(parts)}; expected exactly {RESULT_COLUMNS}")
    df = df.loc[:, RESULT_COLUMNS].copy()
    for c in _TEXT_COLUMNS:
        df[c] = df[c].map(lambda v: "" if _is_missing(v) else str(v)).astype(object)
    try:
        value = pd.to_numeric(df["value"].map(_blank_to_nan), errors="raise").astype(float)
        seed = pd.to_numeric(df["seed"].map(_blank_to_nan), errors="raise")
    except (ValueError, TypeError) as e:
        raise ValueError(f"results rows: 'seed' and 'value' must be numeric ({e})") from e
    df["value"] = value
    whole = seed.dropna()
    df["seed"] = (
        seed.astype("Int64") if bool((whole == whole.round()).all()) else seed.astype(float)
    )
    return df.reset_index(drop=True)


def read_results(out_dir: str | os.PathLike) -> pd.DataFrame:
    """``results.csv`` of ``out_dir`` as a frame with RESULT_COLUMNS (empty if there is none yet)."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.exists():
        return _empty_results()
    df = pd.read_csv(
        path,
        dtype={c: str for c in _TEXT_COLUMNS},
        keep_default_na=False,  # "" stays "" in text columns; "NA" stays a name
    )
    return _tidy(df)


def append_results(out_dir: str | os.PathLike, rows: Iterable[dict] | pd.DataFrame) -> pd.DataFrame:
    """Merge ``rows`` into ``out_dir/results.csv`` and return the full frame.

    Rows must have exactly RESULT_COLUMNS (ValueError naming what is missing or
    unexpected). A row whose key (bench, model, variant, preset, seed, split,
    metric) is already present replaces the older one; the newest wins, also
    among ``rows`` themselves. Rows with other keys are kept. The file is
    rewritten atomically under an advisory lock.
    """
    folder = Path(out_dir)
    new = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if new.empty and len(new.columns) == 0:
        new = pd.DataFrame({c: [] for c in RESULT_COLUMNS})
    new = _tidy(new)
    with folder_lock(folder):
        old = read_results(folder)
        frames = [f for f in (old, new) if len(f)]
        merged = pd.concat(frames, ignore_index=True) if frames else _empty_results()
        merged = _tidy(merged.drop_duplicates(subset=KEY_COLUMNS, keep="last"))
        atomic_write_text(folder / RESULTS_FILE, merged.to_csv(index=False))
    return merged


def replace_results(out_dir: str | os.PathLike, metrics: Iterable[str], rows: pd.DataFrame) -> bool:
    """Make ``rows`` the only rows of ``metrics`` in ``out_dir/results.csv`` (derived rows,
    e.g. scores computed from the others: stale ones go, the rest stay). Rewrites the file
    (atomically, under the lock) only when that changes it; returns whether it did."""
    folder = Path(out_dir)
    metrics = set(metrics)
    new = _tidy(rows) if len(rows) else _empty_results()
    with folder_lock(folder):
        old = read_results(folder)
        mine = old[old.metric.isin(metrics)]
        both = mine.merge(new, on=KEY_COLUMNS, suffixes=("_old", ""))
        if len(both) == len(mine) == len(new) and np.allclose(both.value_old, both.value, rtol=1e-12, atol=0,
                                                               equal_nan=True):
            return False  # unchanged (up to the CSV round trip of floats)
        frames = [f for f in (old[~old.metric.isin(metrics)], new) if len(f)]
        merged = _tidy(pd.concat(frames, ignore_index=True)) if frames else _empty_results()
        atomic_write_text(folder / RESULTS_FILE, merged.drop_duplicates(subset=KEY_COLUMNS, keep="last")
                          .to_csv(index=False))
    return True


def append_csv(path: str | os.PathLike, frame: pd.DataFrame, key: list[str]) -> None:
    """Merge ``frame`` into the side CSV at ``path`` (curves, predictions, ...), newest rows
    winning on ``key``; atomic. For results.csv use :func:`append_results`."""
    path = Path(path)
    if path.exists():
        frame = pd.concat([pd.read_csv(path), frame], ignore_index=True).drop_duplicates(key, keep="last")
    atomic_write_text(path, frame.to_csv(index=False))


# --------------------------------------------------------------------------- summaries and tables


def summarize(
    df: pd.DataFrame, metric: str, by: Iterable[str] = ("model", "variant")
) -> pd.DataFrame:
    """Mean, standard deviation and count of ``metric`` over seeds, per group ``by``.

    Returns columns [*by, "mean", "std", "n"], sorted by ``by``. ``std`` is the
    sample standard deviation (ddof=1); with a single seed it is undefined and
    reported as 0.0, so read it together with ``n``. Rows of every split are
    pooled: filter ``df`` to one split first when it holds several.
    """
    by = list(by)
    sel = df.loc[df["metric"] == metric]
    if sel.empty:
        return pd.DataFrame({**{c: [] for c in by}, "mean": [], "std": [], "n": []})
    g = sel.groupby(by, dropna=False, sort=True)["value"]
    out = g.agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()
    out["std"] = out["std"].where(out["n"] != 1, 0.0).astype(float)  # n == 1: 0.0, not NaN
    out["n"] = out["n"].astype(int)
    return out


def _cell(v: Any, floatfmt: str) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return format(float(v), floatfmt)
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """``df`` as a GitHub markdown table (header, separator, one line per row; index dropped).

    Floats use ``floatfmt``, missing values are blank, numeric columns are
    right aligned. Needs no ``tabulate``.
    """
    cols = [str(c) for c in df.columns]
    if not cols:
        return ""
    numeric = [
        pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        for c in df.columns
    ]
    lines = [
        "| " + " | ".join(_cell(c, floatfmt) for c in cols) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    for row in df.itertuples(index=False, name=None):
        lines.append("| " + " | ".join(_cell(v, floatfmt) for v in row) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figures


def set_plot_style() -> None:
    """Non-interactive Agg backend and a seaborn theme with readable font sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update(
        {
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "xtick.labelsize": 10,
            "ytick.labelsize": 10,
            "legend.fontsize": 10,
            "figure.dpi": 100,
            "savefig.dpi": FIGURE_DPI,
        }
    )


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Save a matplotlib figure atomically (tight bbox, dpi 130; format from the suffix), then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        with atomic_open(path) as fh:
            fig.savefig(fh, format=fmt, dpi=FIGURE_DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
