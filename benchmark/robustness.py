"""``bench robustness``: how each classifier's error grows as cluttered MNIST degrades.

Trains the attention classifier and the conv baselines exactly as ``bench cluttered``
does (into ``OUT/train``, resumable), or reuses the checkpoints of a finished ``bench
cluttered`` folder (``--from``), then evaluates every model and training seed on one fixed
set of test scenes (:class:`datasets.degrade.Scenes`, seeded) degraded along six axes at
six or seven severities each (:data:`datasets.degrade.AXES`). The same images are used
for every model and seed, so differences between models are paired comparisons.

Outputs in OUT: results.csv (one row per model, seed, setting ``axis=severity`` and
metric: test error, expected calibration error, mean confidence; per-class error at the
clean setting), calibration.csv (reliability-diagram bins at the clean setting),
table.md, config.json, and the plots robustness.png (error against severity per axis,
band: spread over seeds), calibration.png, per_class.png, examples.png (one image per
axis and severity) and glimpses_hardest.png (the attention model's glimpses at the
hardest severity of each axis where it is still right more often than not).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmark import cluttered
from benchmark.report import (
    _normalize_config,
    append_csv,
    append_results,
    atomic_write_text,
    markdown_table,
    prepare_out_dir,
    read_results,
    save_figure,
    set_plot_style,
    write_config,
)
from datasets.degrade import AXES
from draw.train import TensorData, load_model

# Which bench-cluttered preset trains the models, and how many test scenes are degraded.
PRESETS: dict[str, dict] = {
    "smoke": {"train": "smoke", "n_eval": 96},
    "quick": {"train": "quick", "n_eval": 5000},
    "paper": {"train": "paper", "n_eval": 10000},
}
ECE_BINS = 15
SHORT = {"distractor_size": "distractor size", "salt_pepper": "salt & pepper", "gaussian": "noise sigma"}
CHANCE_PCT = 90.0


class RobustnessError(ValueError):
    """A bad request: e.g. a --from folder that is not a finished bench-cluttered folder."""


def _stored_config(folder: Path) -> object:
    try:
        return json.loads((folder / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _model_cfg_from(from_dir: Path) -> dict:
    cfg = _stored_config(from_dir)
    if not isinstance(cfg, dict):
        raise RobustnessError(f"{from_dir} has no readable config.json; give a `bench cluttered` output folder")
    if cfg.get("bench") != "cluttered":
        raise RobustnessError(f"{from_dir} holds {cfg.get('bench')!r} results, not `bench cluttered` results")
    missing = [f"{m}-seed{s}" for s in cfg["seeds"] for m in cfg["models"]
               if not (from_dir / "runs" / f"{m}-seed{s}" / "best.pt").exists()]
    if missing:
        raise RobustnessError(f"{from_dir}/runs lacks the checkpoints of {', '.join(missing)} "
                              "(finish that bench first, or train here without --from)")
    return cfg


def bench_config(preset: str, *, seeds: int = 1, models: list[str] | None = None, axes: list[str] | None = None,
                 from_dir: str | Path | None = None, glimpses: int = 8) -> dict:
    """The full, JSON-serialisable configuration of one run. With ``from_dir`` the models,
    seeds and training data are those of that ``bench cluttered`` folder."""
    p = PRESETS[preset]
    if from_dir is not None:
        train = _model_cfg_from(Path(from_dir))
    else:
        train = cluttered.bench_config(p["train"], glimpses=glimpses, seeds=seeds, models=models)
    axes = list(axes or AXES)
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise RobustnessError(f"unknown axis {', '.join(unknown)}; choose from {', '.join(AXES)}")
    d = train["data"]
    values = {a: [v for v in AXES[a].values if a != "distractor_size" or v <= min(28, d["canvas"])] for a in axes}
    return {
        "bench": "robustness",
        "preset": preset,
        "models": train["models"],
        "seeds": train["seeds"],
        "from": str(from_dir) if from_dir is not None else None,
        "train": train,
        "eval": {"n": p["n_eval"], "seed": 0, "split": "test", "max_distractors": max(AXES["clutter"].values),
                 "distractors": d["distractors"], "distractor_size": d["distractor_size"], "canvas": d["canvas"],
                 "axes": values, "ece_bins": ECE_BINS},
    }


# --------------------------------------------------------------------------- metrics


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


def _setting(axis: str, value: float) -> str:
    return f"{axis}={value:g}"


def _parse_settings(df: pd.DataFrame) -> pd.DataFrame:
    """results.csv rows of degraded settings, with ``axis`` and ``severity`` columns."""
    df = df[df.split.str.contains("=", regex=False)].copy()
    parts = df.split.str.split("=", n=1, expand=True)
    df["axis"] = parts[0]
    df["severity"] = parts[1].astype(float)
    return df


# --------------------------------------------------------------------------- run


def _load_models(train_dir: Path, cfg: dict, dev: torch.device) -> dict[tuple[str, int], nn.Module]:
    nets = {}
    for seed in cfg["seeds"]:
        for name in cfg["models"]:
            net, _ = load_model(train_dir / "runs" / f"{name}-seed{seed}" / "best.pt", dev)
            nets[(name, seed)] = net.eval()
    return nets


def _scenes(cfg: dict, data_dir: str | Path | None, n: int | None = None):
    from datasets.degrade import Scenes
    from datasets.mnist import load_mnist

    e = cfg["eval"]
    digits, labels = load_mnist(e["split"], data_dir=data_dir)
    return Scenes(digits, labels, e["n"] if n is None else n, e["canvas"], e["seed"], e["max_distractors"])


def _settings(cfg: dict) -> list[tuple[str, float]]:
    return [(a, float(v)) for a, values in cfg["eval"]["axes"].items() for v in values]


def run(cfg: dict, out: str | Path, *, overwrite: bool = False, device: str = "cpu",
        data_dir: str | Path | None = None, echo: Callable[[str], None] = print, progress: bool = True) -> pd.DataFrame:
    """Train (or reuse) the models of ``cfg`` (see :func:`bench_config`) and evaluate them on
    every degraded test set; resumable: finished settings are skipped on a rerun."""
    from tqdm.auto import tqdm

    out = prepare_out_dir(out, cfg, overwrite)
    started = datetime.now(timezone.utc)
    write_config(out, cfg, started)
    dev = torch.device(device)
    if cfg["from"]:
        train_dir = Path(cfg["from"])
        echo(f"models: reusing the checkpoints in {train_dir / 'runs'}")
    else:
        train_dir = out / "train"
        echo(f"models: training as `bench cluttered --preset {cfg['train']['preset']}` into {train_dir}")
        # --overwrite retrains only when the training config itself changed (not, e.g., the axes)
        retrain = overwrite and _stored_config(train_dir) != _normalize_config(cfg["train"])
        cluttered.run(cfg["train"], train_dir, overwrite=retrain, device=device, data_dir=data_dir, echo=echo,
                      progress=progress)
    nets = _load_models(train_dir, cfg, dev)
    e = cfg["eval"]
    D, S = e["distractors"], e["distractor_size"]
    settings = _settings(cfg)
    previous = read_results(out)
    done = set(previous.query("metric == 'test_error_pct'").split)
    clean_done = "clean" in set(previous.split)
    todo = [s for s in settings if _setting(*s) not in done]
    echo(f"evaluation: {e['n']} test scenes ({e['canvas']}x{e['canvas']}, seed {e['seed']}), {len(settings)} settings "
         f"over {len(e['axes'])} axes, {len(nets)} model(s); {len(settings) - len(todo)} already done")
    if todo:
        scenes = _scenes(cfg, data_dir)
        labels = scenes.labels
        clean = scenes.render(D, S)
        for axis, value in tqdm(todo, desc="robustness", disable=not progress):
            is_clean = value == AXES[axis].clean_value(D, S)
            images = clean if is_clean else scenes.degrade(axis, value, distractors=D, distractor_size=S, clean=clean)
            data = TensorData(torch.from_numpy(images), torch.from_numpy(labels)).to(dev)
            rows, bins = [], []
            for (name, seed), net in nets.items():
                pred, conf, _ = cluttered.predict(net, data)
                correct = pred == labels
                base = {"bench": "robustness", "model": name, "variant": cluttered._variant(name, cfg["train"]),
                        "preset": cfg["preset"], "seed": seed, "split": _setting(axis, value)}
                summary = [{**base, "metric": "test_error_pct", "value": 100.0 * (1 - correct.mean())},
                           {**base, "metric": "ece_pct", "value": 100.0 * expected_calibration_error(conf, correct)},
                           {**base, "metric": "confidence_pct", "value": 100.0 * conf.mean()}]
                rows += summary
                if is_clean and not clean_done:  # every axis has the clean images once: report them once
                    rows += [{**r, "split": "clean"} for r in summary]
                    rows += [{**base, "split": "clean", "metric": f"class_{c}_error_pct", "value": v}
                             for c, v in enumerate(per_class_error(labels, pred))]
                    bins.append(calibration_bins(conf, correct).assign(model=name, seed=seed))
            if bins:
                append_csv(out / "calibration.csv", pd.concat(bins, ignore_index=True), key=["model", "seed", "bin"])
                clean_done = True
            append_results(out, rows)  # one setting at a time: a killed run loses at most one
    write_report(out, cfg)
    echo("drawing examples and glimpses")
    _example_figure(out, cfg, data_dir)
    if "attention" in cfg["models"]:
        _glimpse_figure(out, cfg, nets, data_dir, dev)
    write_config(out, cfg, started, datetime.now(timezone.utc))
    echo(f"wrote {out / 'results.csv'}, {out / 'table.md'} and plots in {out}")
    return read_results(out)


# --------------------------------------------------------------------------- figures from images


def _example_figure(out: Path, cfg: dict, data_dir: str | Path | None, index: int = 0) -> Path:
    """One test scene (the same one throughout) at every axis and severity."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from datasets.degrade import occluder_boxes

    e = cfg["eval"]
    scenes = _scenes(cfg, data_dir, n=index + 1)
    D, S = e["distractors"], e["distractor_size"]
    clean = scenes.render(D, S)
    axes = list(e["axes"])
    ncol = max(len(v) for v in e["axes"].values())
    fig, grid = plt.subplots(len(axes), ncol, figsize=(1.6 * ncol, 1.75 * len(axes)), squeeze=False)
    for r, axis in enumerate(axes):
        for c in range(ncol):
            ax = grid[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(e["axes"][axis]):
                ax.axis("off")
                continue
            value = e["axes"][axis][c]
            img = scenes.degrade(axis, value, distractors=D, distractor_size=S, clean=clean)[index]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if axis == "occlusion" and value > 0:  # the occluder is black on black: outline it
                rows, cols, side = occluder_boxes(index + 1, e["canvas"], e["canvas"], value, e["seed"])
                ax.add_patch(Rectangle((cols[index] - 0.5, rows[index] - 0.5), side, side, fill=False,
                                       edgecolor="#DD8452", linewidth=1, linestyle="--"))
            clean_here = value == AXES[axis].clean_value(D, S)
            ax.set_title(f"{value:g}" + (" (trained)" if clean_here else ""), fontsize=8)
            for s in ax.spines.values():
                s.set_color("#C44E52" if clean_here else "#999999")
                s.set_linewidth(2 if clean_here else 0.5)
        grid[r, 0].set_ylabel(AXES[axis].name.replace("_", " "), fontsize=9)
    fig.suptitle(f"One test scene (label {scenes.labels[index]}) at every severity; red frame: the training setting; "
                 "dashed: the (black) occluder",
                 fontsize=10)
    fig.tight_layout()
    path = out / "examples.png"
    save_figure(fig, path)
    return path


def _hardest_level(df: pd.DataFrame, axis: str, values: list[float], limit: float = 50.0) -> float:
    """The most severe value of ``axis`` at which the attention model's mean error is <= limit."""
    err = df[(df.model == "attention") & (df.metric == "test_error_pct") & (df.axis == axis)]
    mean = err.groupby("severity").value.mean()
    ok = [v for v in values if v in mean.index and mean[v] <= limit]
    return ok[-1] if ok else values[0]


def _glimpse_figure(out: Path, cfg: dict, nets: dict, data_dir: str | Path | None, dev: torch.device,
                    per_kind: int = 3, pool: int = 200) -> Path | None:
    """Glimpse boxes (first training seed) on successes and failures at the hardest severity
    of each axis where the attention model is still right at least half the time."""
    from draw.visualize import plot_glimpses

    e = cfg["eval"]
    seed = cfg["seeds"][0]
    net = nets[("attention", seed)]
    df = _parse_settings(read_results(out))
    scenes = _scenes(cfg, data_dir, n=min(pool, e["n"]))
    D, S = e["distractors"], e["distractor_size"]
    clean = scenes.render(D, S)
    images, windows, titles = [], [], []
    for axis, values in e["axes"].items():
        value = _hardest_level(df, axis, values)
        x = scenes.degrade(axis, value, distractors=D, distractor_size=S, clean=clean)
        data = TensorData(torch.from_numpy(x), torch.from_numpy(scenes.labels)).to(dev)
        pred, _, w = cluttered.predict(net, data)
        right = np.flatnonzero(pred == scenes.labels)[:per_kind]
        wrong = np.flatnonzero(pred != scenes.labels)[:per_kind]
        for kind, idx in (("right", right), ("wrong", wrong)):
            for i in idx:
                images.append(x[i])
                windows.append(w[i])
                titles.append(f"{SHORT.get(axis, axis)} {value:g}: true {scenes.labels[i]}, said {pred[i]}"
                              + (" (wrong)" if kind == "wrong" else ""))
    if not images:
        return None
    path = out / "glimpses_hardest.png"
    x = torch.from_numpy(np.stack(images)).float()[:, None] / 255
    plot_glimpses(x, np.stack(windows), cfg["train"]["attention"]["read_n"], path, titles=titles, ncol=2 * per_kind,
                  title=f"Each row: an axis at its hardest severity with error <= 50%; {per_kind} right, {per_kind} wrong")
    return path


# --------------------------------------------------------------------------- report from CSV files


def _label(model: str) -> str:
    return cluttered.MODEL_LABELS.get(model, model)


def write_report(out: str | Path, cfg: dict) -> list[Path]:
    """table.md and the CSV-based plots (robustness, calibration, per-class) from ``out``'s files."""
    out = Path(out)
    df = read_results(out)
    written = [_write_table(out, df, cfg)]
    sev = _parse_settings(df)
    if sev.empty:
        return written
    import matplotlib.pyplot as plt
    import seaborn as sns

    set_plot_style()
    e = cfg["eval"]
    D, S = e["distractors"], e["distractor_size"]
    err = sev[sev.metric == "test_error_pct"].copy()
    err["label"] = err.model.map(_label)
    order = [_label(m) for m in cfg["models"] if m in set(err.model)]
    palette = dict(zip(order, sns.color_palette("deep", len(order)), strict=True))
    axes = list(e["axes"])
    ncol = 3
    nrow = -(-len(axes) // ncol)
    fig, grid = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.6 * nrow), squeeze=False)
    for ax, axis in zip(grid.flat, axes, strict=False):
        a = err[err.axis == axis]
        sns.lineplot(data=a, x="severity", y="value", hue="label", hue_order=order, palette=palette, marker="o",
                     errorbar="sd", ax=ax, legend=False)
        ax.axvline(AXES[axis].clean_value(D, S), color="gray", ls=":", lw=1.2)
        ax.axhline(CHANCE_PCT, color="gray", ls="--", lw=0.8)
        ax.set_ylim(0, 100)
        ax.set_xlabel(AXES[axis].label)
        ax.set_ylabel("test error (%)")
        ax.set_title(axis.replace("_", " "))
        if axis == "contrast":
            ax.invert_xaxis()  # lower contrast is harder: severity grows to the right everywhere
    for ax in list(grid.flat)[len(axes):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=palette[lbl], marker="o", label=lbl) for lbl in order]
    handles += [plt.Line2D([], [], color="gray", ls=":", label="training setting"),
                plt.Line2D([], [], color="gray", ls="--", label="chance (90%)")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.02))
    seeds = df.seed.nunique()
    fig.suptitle(f"Error as the test images degrade: preset {cfg['preset']}, {e['n']} test scenes per setting, "
                 f"{seeds} training seed(s)" + (" (band: sd over seeds)" if seeds > 1 else ""), fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    written.append(out / "robustness.png")
    save_figure(fig, written[-1])

    calib_path = out / "calibration.csv"
    if calib_path.exists():
        cal = pd.read_csv(calib_path)
        cal = cal[cal["count"] > 0]
        cal["label"] = cal.model.map(_label)
        ece_by = df[(df.split == "clean") & (df.metric == "ece_pct")].groupby("model").value.mean()
        fig, ax = plt.subplots(figsize=(5.4, 5))
        ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="perfect calibration")
        for m in [m for m in cfg["models"] if m in set(cal.model)]:
            c = cal[(cal.model == m) & (cal.seed == cal.seed.min())]
            ax.plot(c.confidence, c.accuracy, marker="o", color=palette.get(_label(m)),
                    label=f"{_label(m)} (ECE {ece_by.get(m, float('nan')):.2f}%)")
        ax.set_xlabel("confidence (mean of the bin)")
        ax.set_ylabel("accuracy in the bin")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"Reliability at the training setting ({ECE_BINS} bins, first seed)", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        written.append(out / "calibration.png")
        save_figure(fig, written[-1])

    pc = df[(df.split == "clean") & df.metric.str.startswith("class_")].copy()
    if not pc.empty:
        pc["class"] = pc.metric.str.extract(r"class_(\d+)_")[0].astype(int)
        pc["label"] = pc.model.map(_label)
        fig, ax = plt.subplots(figsize=(8, 3.8))
        sns.barplot(data=pc, x="class", y="value", hue="label", hue_order=order, palette=palette, errorbar="sd", ax=ax)
        ax.set_xlabel("true class")
        ax.set_ylabel("error (%)")
        ax.set_title("Per-class test error at the training setting")
        ax.set_ylim(0, 1.3 * float(np.nanmax(pc.value)) + 1)  # room for the legend above the bars
        ax.legend(title="", fontsize=8, ncol=len(order), loc="upper center")
        written.append(out / "per_class.png")
        save_figure(fig, written[-1])
    return written


def _mean_sd(values: pd.Series) -> str:
    return f"{values.mean():.1f}" + (f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else "")


def _write_table(out: Path, df: pd.DataFrame, cfg: dict) -> Path:
    """table.md: error per model at each severity of each axis (mean ± sd over seeds)."""
    e = cfg["eval"]
    D, S = e["distractors"], e["distractor_size"]
    d = cfg["train"]["data"]
    lines = ["# Robustness of the cluttered-MNIST classifiers, preset `" + cfg["preset"] + "`", "",
             f"Trained on {d['canvas']}x{d['canvas']} cluttered MNIST with {d['distractors']} distractors of "
             f"{d['distractor_size']}x{d['distractor_size']} ({d['n_train']} images; "
             + (f"checkpoints from `{cfg['from']}`" if cfg["from"] else "trained in `train/`") + "). "
             f"Evaluated on {e['n']} test scenes (MNIST test digits, seed {e['seed']}), the same images for every "
             f"model and seed; training seeds: {len(cfg['seeds'])}. Cells: test error (%), mean ± sd over seeds. "
             f"Chance is {CHANCE_PCT:.0f}%.", ""]
    sev = _parse_settings(df)
    err = sev[sev.metric == "test_error_pct"]
    if not err.empty:
        models = [m for m in cfg["models"] if m in set(err.model)]
        lines += ["## Mean error over each axis's severities", ""]
        rows = []
        for m in models:
            row = {"model": _label(m)}
            for axis in e["axes"]:
                per_seed = err[(err.model == m) & (err.axis == axis)].groupby("seed").value.mean()
                row[axis.replace("_", " ")] = _mean_sd(per_seed) if len(per_seed) else ""
            rows.append(row)
        lines += [markdown_table(pd.DataFrame(rows)), ""]
        for axis, values in e["axes"].items():
            a = err[err.axis == axis]
            if a.empty:
                continue
            lines += [f"## {axis.replace('_', ' ')}: {AXES[axis].label}", ""]
            rows = []
            for m in models:
                row = {"model": _label(m)}
                for v in values:
                    cell = a[(a.model == m) & np.isclose(a.severity, v)].value
                    mark = " (trained)" if v == AXES[axis].clean_value(D, S) else ""
                    row[f"{v:g}{mark}"] = _mean_sd(cell) if len(cell) else ""
                rows.append(row)
            lines += [markdown_table(pd.DataFrame(rows)), ""]
        clean = df[df.split == "clean"]
        pc = clean[clean.metric.str.startswith("class_")]
        lines += ["## At the training setting: calibration and per-class error", "",
                  f"ECE: expected calibration error over {ECE_BINS} equal-width confidence bins (Guo et al., 2017).", ""]
        rows = []
        for m in models:
            c = clean[clean.model == m]
            row = {"model": _label(m), "error (%)": _mean_sd(c[c.metric == "test_error_pct"].value),
                   "ECE (%)": _mean_sd(c[c.metric == "ece_pct"].value),
                   "mean confidence (%)": _mean_sd(c[c.metric == "confidence_pct"].value)}
            for k in range(10):
                row[f"class {k}"] = _mean_sd(pc[(pc.model == m) & (pc.metric == f"class_{k}_error_pct")].value)
            rows.append(row)
        lines += [markdown_table(pd.DataFrame(rows)), ""]
    if cfg["preset"] != "paper":
        lines.append(f"The `{cfg['preset']}` preset trains each model for a small fixed budget (see config.json) so "
                     "that it runs on a 2-core CPU; errors are higher than at convergence, and the ranking of models "
                     "may differ from a `--preset paper` run.")
    path = out / "table.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
