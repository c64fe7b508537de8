"""``bench cluttered``: the paper's Table 1 on 100x100 cluttered translated MNIST.

Trains the read-only attention classifier ("Differentiable RAM", section 4.1) and the
convolutional baselines on the same generated data, evaluates each on the 10,000-image
test set, and writes results.csv, curves.csv, predictions.csv, table.md, config.json and
plots into one folder. Every model trains in its own checkpointed run folder, so a killed
bench rerun with the same command resumes the unfinished model and skips finished ones.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmark import paper
from benchmark.report import (
    append_csv,
    append_results,
    atomic_write_text,
    markdown_table,
    prepare_out_dir,
    read_results,
    save_figure,
    set_plot_style,
    stale_runs,
    summarize,
    write_config,
)
from draw.baselines import ConvBaseline, ConvConfig
from draw.classifier import AttentionClassifier
from draw.config import ClassifierConfig, TrainConfig
from draw.train import TensorData, load_model, train

MODELS = ("attention", "conv2", "resnet", "resnet18")
MODEL_LABELS = {
    "attention": "Differentiable RAM (ours)",
    "conv2": "Convolutional, 2 layers (ours)",
    "resnet": "Small ResNet (ours)",
    "resnet18": "ResNet-18 (ours)",
}

# Data and model sizes per preset. "quick" is sized for a 2-core CPU (the whole command
# within 15 minutes); "paper" is the paper's setting (full data, 8 glimpses of 12x12,
# LSTM 256) with a GPU training budget; "smoke" runs in seconds for tests.
PRESETS: dict[str, dict] = {
    "smoke": {
        "data": {"canvas": 40, "distractors": 4, "distractor_size": 6, "n_train": 256, "n_valid": 64, "n_test": 128,
                 "fresh_clutter": True},
        "attention": {"read_n": 6, "hidden": 32},
        "resnet_width": 8,
        "train": {
            "attention": {"epochs": 2, "batch_size": 32, "lr": 3e-3},
            "conv2": {"epochs": 2, "batch_size": 32, "lr": 1e-3},
            "resnet": {"epochs": 2, "batch_size": 32, "lr": 1e-3},
            "resnet18": {"epochs": 1, "batch_size": 32, "lr": 1e-3},
        },
    },
    "quick": {
        "data": {"canvas": 100, "distractors": 8, "distractor_size": 8, "n_train": 60000, "n_valid": 2000, "n_test": 10000,
                 "fresh_clutter": True},
        "attention": {"read_n": 12, "hidden": 256},
        "resnet_width": 16,
        "train": {
            # lr 2e-3 collapsed to chance mid-run twice on this data (a loss spike, then windows
            # stuck); 1e-3 with a longer warm-up and tighter clipping trains stably.
            "attention": {"epochs": 16, "batch_size": 64, "lr": 1e-3, "schedule": "cosine", "warmup_steps": 500,
                          "grad_clip": 2.0},
            # with new clutter every epoch: 25.8% test error after 20 epochs at lr 3e-3 (33.4% after 12 at
            # 1e-3); on one fixed set it memorised the clutter instead (56% validation error, train loss 0.03)
            "conv2": {"epochs": 20, "batch_size": 64, "lr": 3e-3, "schedule": "cosine"},
            "resnet": {"epochs": 2, "batch_size": 64, "lr": 2e-3, "schedule": "cosine", "warmup_steps": 100},
            "resnet18": {"epochs": 1, "batch_size": 64, "lr": 1e-3, "schedule": "cosine"},
        },
    },
    "paper": {
        "data": {"canvas": 100, "distractors": 8, "distractor_size": 8, "n_train": 60000, "n_valid": 10000, "n_test": 10000,
                 "fresh_clutter": True},
        "attention": {"read_n": 12, "hidden": 256},
        "resnet_width": 32,
        "train": {
            "attention": {"epochs": 100, "batch_size": 128, "lr": 1e-3, "schedule": "cosine", "warmup_steps": 1000,
                          "grad_clip": 2.0},
            "conv2": {"epochs": 100, "batch_size": 128, "lr": 3e-3, "schedule": "cosine"},
            "resnet": {"epochs": 30, "batch_size": 128, "lr": 2e-3, "schedule": "cosine", "warmup_steps": 500},
            "resnet18": {"epochs": 30, "batch_size": 128, "lr": 1e-3, "schedule": "cosine", "warmup_steps": 500},
        },
    },
}


def build_classifier(name: str, image_shape: tuple[int, int, int], *, glimpses: int = 8, read_n: int = 12,
                     hidden: int = 256, width: int = 32) -> nn.Module:
    """A fresh classifier by bench name: the attention model or a conv baseline."""
    if name == "attention":
        return AttentionClassifier(ClassifierConfig(image_shape=image_shape, glimpses=glimpses, read_n=read_n, hidden=hidden))
    if name in ("conv2", "resnet", "resnet18"):
        C, H, W = image_shape
        return ConvBaseline(ConvConfig(arch=name, in_channels=C, image_size=(H, W), width=width))
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def bench_config(preset: str, *, glimpses: int = 8, seeds: int = 1, models: list[str] | None = None) -> dict:
    """The full, JSON-serialisable configuration of one bench run."""
    p = copy.deepcopy(PRESETS[preset])
    models = list(models or ["attention", "conv2", "resnet"])
    return {
        "bench": "cluttered",
        "preset": preset,
        "glimpses": glimpses,
        "seeds": list(range(seeds)),
        "models": models,
        "data": {**p["data"], "seed": 0},
        "attention": {**p["attention"], "glimpses": glimpses},
        "resnet_width": p["resnet_width"],
        "train": {m: asdict(TrainConfig(**p["train"][m], log_every=50, checkpoint_every=500)) for m in models},
    }


def _variant(name: str, cfg: dict) -> str:
    a = cfg["attention"]
    if name == "attention":
        return f"T={a['glimpses']}, read {a['read_n']}x{a['read_n']}, LSTM {a['hidden']}"
    if name == "resnet":
        return f"width {cfg['resnet_width']}"
    return ""


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Predicted classes ``(n,)``, their softmax confidence ``(n,)`` and, for the attention
    model, the glimpse windows ``(n, T, 5)``."""
    model.eval()
    device = next(model.parameters()).device
    preds, confs, windows = [], [], []
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)), device=data.x.device)
        x, _ = data.batch(idx)
        out = model(x.to(device))
        logits, w = out if isinstance(out, tuple) else (out, None)
        p = logits.softmax(1)
        conf, pred = p.max(1)
        preds.append(pred.cpu())
        confs.append(conf.cpu())
        if w is not None:
            windows.append(w.cpu())
    return (torch.cat(preds).numpy(), torch.cat(confs).numpy(),
            torch.cat(windows).numpy() if windows else None)


def run(cfg: dict, out: str | Path, *, overwrite: bool = False, device: str = "cpu",
        data_dir: str | Path | None = None, echo: Callable[[str], None] = print, progress: bool = True) -> pd.DataFrame:
    """Run the bench described by ``cfg`` (see :func:`bench_config`) into ``out``; returns results."""
    from datasets.cluttered import ClutterParams
    from draw.run import cluttered_data

    stale = stale_runs(out, cfg, per_model="train") if overwrite else []
    out = prepare_out_dir(out, cfg, overwrite)
    for run_dir in stale:  # checkpoints of a replaced config must not be resumed
        shutil.rmtree(run_dir)
    started = datetime.now(timezone.utc)
    write_config(out, cfg, started)
    d = cfg["data"]
    params = ClutterParams(canvas=d["canvas"], distractors=d["distractors"], distractor_size=d["distractor_size"])
    params.validate()
    dev = torch.device(device)
    echo(f"data: {d['canvas']}x{d['canvas']} cluttered MNIST, {d['distractors']} distractors of "
         f"{d['distractor_size']}x{d['distractor_size']}; {d['n_train']} train / {d['n_valid']} valid / {d['n_test']} test")
    train_data = cluttered_data("train", params, d["seed"], d["n_train"], data_dir).to(dev)
    valid_data = cluttered_data("valid", params, d["seed"], d["n_valid"], data_dir).to(dev)
    test_data = cluttered_data("test", params, d["seed"], d["n_test"], data_dir).to(dev)
    image_shape = tuple(train_data.x.shape[1:])
    labels = test_data.y.cpu().numpy()
    epoch_data = None
    if d.get("fresh_clutter"):
        from draw.run import fresh_cluttered

        echo("training data: new clutter from the training digits every epoch (the first epoch: the cached set)")
        epoch_data = fresh_cluttered(params, d["seed"], d["n_train"], data_dir, dev)

    for seed in cfg["seeds"]:
        for name in cfg["models"]:
            done = read_results(out)
            if ((done["model"] == name) & (done["seed"] == seed) & (done["metric"] == "test_error_pct")).any():
                echo(f"{name} seed {seed}: already in {out / 'results.csv'}, skipped")
                continue
            a = cfg["attention"]
            torch.manual_seed(seed)
            net = build_classifier(name, image_shape, glimpses=a["glimpses"], read_n=a["read_n"], hidden=a["hidden"],
                                   width=cfg["resnet_width"])
            tcfg = TrainConfig(**{**cfg["train"][name], "seed": seed})
            run_dir = out / "runs" / f"{name}-seed{seed}"
            n_params = sum(p.numel() for p in net.parameters())
            echo(f"{name} seed {seed}: {n_params:,} parameters, {tcfg.epochs} epochs -> {run_dir}")
            def report_epoch(row: dict, name: str = name, epochs: int = tcfg.epochs) -> None:
                echo(f"  {name} epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.3f}, "
                     f"valid error {100 * row['valid_error']:.2f}% ({row['seconds']:.0f} s)")

            result = train(net, train_data, valid_data, tcfg, run_dir, resume=True, device=dev, select="error",
                           progress=progress, desc=name, on_epoch_end=report_epoch, epoch_data=epoch_data)
            best, _ = load_model(run_dir / "best.pt", dev)
            pred, conf, windows = predict(best, test_data)
            err = 100.0 * float((pred != labels).mean())
            echo(f"{name} seed {seed}: test error {err:.2f}% (best epoch {result.best.get('epoch')}, "
                 f"{result.images_per_s:.0f} images/s)")
            variant = _variant(name, cfg)
            base = {"bench": "cluttered", "model": name, "variant": variant, "preset": cfg["preset"], "seed": seed}
            best_epoch = next(r for r in result.history if r["epoch"] == result.best["epoch"])
            rows = [
                {**base, "split": "test", "metric": "test_error_pct", "value": err},
                {**base, "split": "valid", "metric": "valid_error_pct", "value": 100 * best_epoch["valid_error"]},
                {**base, "split": "train", "metric": "train_s", "value": result.train_seconds},
                {**base, "split": "train", "metric": "images_per_s", "value": result.images_per_s},
                {**base, "split": "train", "metric": "epochs", "value": float(len(result.history))},
                {**base, "split": "train", "metric": "n_params", "value": float(n_params)},
            ]
            curves = pd.DataFrame([
                {"model": name, "seed": seed, "epoch": r["epoch"], "train_error_pct": 100 * r["train_error"],
                 "valid_error_pct": 100 * r["valid_error"], "train_loss": r["train_loss"], "valid_loss": r["valid_loss"]}
                for r in result.history
            ])
            append_csv(out / "curves.csv", curves, key=["model", "seed", "epoch"])
            predictions = pd.DataFrame({"model": name, "seed": seed, "index": np.arange(len(labels)),
                                        "label": labels, "pred": pred, "confidence": conf})
            append_csv(out / "predictions.csv", predictions, key=["model", "seed", "index"])
            if windows is not None:
                append_csv(out / "glimpses.csv", glimpse_frame(name, seed, windows[:16]), key=["model", "seed", "index", "t"])
                if seed == cfg["seeds"][0]:
                    _glimpse_figure(out, test_data, labels, pred, windows, a["read_n"])
            append_results(out, rows)  # last: a row in results.csv means this model is done
    write_report(out, cfg)
    write_config(out, cfg, started, datetime.now(timezone.utc))
    echo(f"wrote {out / 'results.csv'}, {out / 'table.md'}, {out / 'config.json'} and plots in {out}")
    return read_results(out)


def glimpse_frame(model: str, seed: int, windows: np.ndarray) -> pd.DataFrame:
    """Tidy rows of glimpse windows ``(n, T, 5)``: model, seed, index, t, g_x, g_y, delta, sigma, gamma."""
    n, T, _ = windows.shape
    idx, t = np.meshgrid(np.arange(n), np.arange(T), indexing="ij")
    frame = pd.DataFrame(windows.reshape(n * T, 5), columns=["g_x", "g_y", "delta", "sigma", "gamma"])
    frame.insert(0, "t", t.ravel() + 1)
    frame.insert(0, "index", idx.ravel())
    frame.insert(0, "seed", seed)
    frame.insert(0, "model", model)
    return frame


def _glimpse_figure(out: Path, test_data: TensorData, labels: np.ndarray, pred: np.ndarray,
                    windows: np.ndarray, read_n: int, n: int = 12) -> Path:
    from draw.visualize import plot_glimpses

    idx = torch.arange(n)
    x, _ = test_data.batch(idx.to(test_data.x.device))
    titles = [f"label {labels[i]}, predicted {pred[i]}" + ("" if labels[i] == pred[i] else " (wrong)") for i in range(n)]
    return plot_glimpses(x.cpu(), windows[:n], read_n, out / "glimpses.png", titles=titles)


def write_report(out: str | Path, cfg: dict) -> list[Path]:
    """table.md and the plots, from the CSV files in ``out`` alone."""
    out = Path(out)
    df = read_results(out)
    written = [_write_table(out, df, cfg)]
    if df.empty:
        return written
    import matplotlib.pyplot as plt
    import seaborn as sns
    from sklearn.metrics import confusion_matrix

    set_plot_style()
    err = df[df.metric == "test_error_pct"].copy()
    err["label"] = err.model.map(MODEL_LABELS)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    order = [MODEL_LABELS[m] for m in cfg["models"] if m in set(err.model)]
    sns.barplot(data=err, y="label", x="value", order=order, errorbar="sd", ax=ax, color="#4C72B0", alpha=0.85)
    if err.seed.nunique() > 1:
        sns.stripplot(data=err, y="label", x="value", order=order, ax=ax, color="black", size=4)
    palette = sns.color_palette("Set2", len(paper.table1()))
    for color, (_, row) in zip(palette, paper.table1().iterrows(), strict=True):
        ax.axvline(row.test_error_pct, ls="--", lw=1.5, color=color, label=f"paper: {row.model} ({row.test_error_pct}%)")
    ax.legend(fontsize=7, loc="best", framealpha=0.9)
    for i, label in enumerate(order):
        v = err[err.label == label].value.mean()
        ax.text(v, i, f" {v:.2f}%", va="center", fontsize=9)
    ax.set_xlabel("test error (%), lower is better; dashed: the paper's Table 1")
    ax.set_ylabel("")
    ax.set_title(f"{cfg['data']['canvas']}x{cfg['data']['canvas']} cluttered MNIST, preset {cfg['preset']}, "
                 f"{len(cfg['seeds'])} seed(s)")
    written.append(out / "test_error.png")
    save_figure(fig, written[-1])

    curves_path = out / "curves.csv"
    if curves_path.exists():
        curves = pd.read_csv(curves_path)
        curves["label"] = curves.model.map(MODEL_LABELS)
        fig, ax = plt.subplots(figsize=(7, 4.2))
        sns.lineplot(data=curves, x="epoch", y="valid_error_pct", hue="label", marker="o", errorbar="sd", ax=ax)
        ax.set_yscale("log")
        ax.set_ylabel("validation error (%), log scale")
        ax.set_title("Learning curves (band: spread over seeds)")
        ax.legend(title="")
        written.append(out / "learning_curves.png")
        save_figure(fig, written[-1])

    pred_path = out / "predictions.csv"
    if pred_path.exists():
        preds = pd.read_csv(pred_path)
        first = preds[preds.seed == preds.seed.min()]
        models = [m for m in cfg["models"] if m in set(first.model)]
        fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 4), squeeze=False)
        for ax, m in zip(axes[0], models, strict=True):
            p = first[first.model == m]
            cm = confusion_matrix(p.label, p.pred, labels=list(range(10)), normalize="true") * 100
            sns.heatmap(cm, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, cbar=False, ax=ax,
                        annot_kws={"fontsize": 7})
            ax.set_title(f"{MODEL_LABELS[m]}\nerror {100 * (p.label != p.pred).mean():.2f}%", fontsize=9)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
        fig.suptitle("Confusion matrices (% of each true class), first seed", fontsize=10, y=1.04)
        written.append(out / "confusion.png")
        save_figure(fig, written[-1])
    return written


def _write_table(out: Path, df: pd.DataFrame, cfg: dict) -> Path:
    """table.md: our test error (mean +- sd over seeds) beside the paper's Table 1."""
    d = cfg["data"]
    lines = [f"# {d['canvas']}x{d['canvas']} cluttered translated MNIST (Table 1), preset `{cfg['preset']}`", ""]
    lines.append(f"Data: {d['n_train']} training images, {d['n_test']} test images, {d['distractors']} distractors of "
                 f"{d['distractor_size']}x{d['distractor_size']}"
                 + ("; new clutter from the training digits every epoch" if d.get("fresh_clutter") else "")
                 + f"; seeds: {len(cfg['seeds'])}.")
    lines.append("")
    rows = []
    err = df[df.metric == "test_error_pct"]
    if not err.empty:
        s = summarize(df, "test_error_pct", by=("model", "variant"))
        extra = {}
        for metric in ("train_s", "images_per_s", "epochs", "n_params"):
            m = df[df.metric == metric].groupby("model").value.mean()
            extra[metric] = m
        for _, r in s.iterrows():
            rows.append({
                "model": MODEL_LABELS.get(r["model"], r["model"]),
                "setting": r["variant"] if isinstance(r["variant"], str) else "",
                "test error (%)": f"{r['mean']:.2f} ± {r['std']:.2f} (n={int(r['n'])})",
                "parameters": f"{int(extra['n_params'].get(r['model'], 0)):,}",
                "epochs": f"{extra['epochs'].get(r['model'], float('nan')):.0f}",
                "train time (s)": f"{extra['train_s'].get(r['model'], float('nan')):.0f}",
                "source": "this run",
            })
    for _, r in paper.table1().iterrows():
        rows.append({"model": r.model, "setting": "", "test error (%)": f"{r.test_error_pct:.2f}", "parameters": "",
                     "epochs": "", "train time (s)": "", "source": r.source})
    lines.append(markdown_table(pd.DataFrame(rows)))
    lines.append("")
    if cfg["preset"] != "paper":
        lines.append(f"The `{cfg['preset']}` preset trains for a fixed, small budget (see config.json) so that it runs on a "
                     "2-core CPU; the paper's numbers come from full training. Run `--preset paper` on a GPU to compare "
                     "like with like.")
    path = out / "table.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
