"""``bench robustness``: how each classifier's error grows as cluttered MNIST degrades.

Trains the attention classifier and the conv baselines exactly as ``bench cluttered``
does (into ``OUT/train``, resumable), or reuses the checkpoints of a finished ``bench
cluttered`` folder (``--from``), then evaluates every model and training seed on one fixed
set of test scenes (:class:`datasets.degrade.Scenes`, seeded) degraded along six axes:
the training setting (severity 0), five harder severities 1-5 and, for clutter and
distractor size, the easier values as extra points (negative severities; see
:mod:`datasets.degrade`). The same images are used for every model and seed, so
differences between models are paired comparisons. Corruption errors (CE, mCE, relative
mCE; ImageNet-C form, relative to the 2-layer conv) come from
:mod:`benchmark.robustness_scores`.

Outputs in OUT: results.csv (one row per model, seed, setting ``axis=value`` and
metric: test error, expected calibration error, mean confidence; per-class error at the
clean setting; CE rows per axis and mCE rows, written at the end of a run and by ``cli.py
report``), calibration.csv (reliability-diagram bins at the clean setting), test_sets.json
(the SHA-256 of every test set evaluated, :func:`datasets.export.arrays_sha256`: compare
with ``cli.py data export robustness``), table.md, config.json, and the plots
robustness.png (error against severity per axis, band: spread over seeds),
calibration.png, calibration_severity.png (ECE against severity), per_class.png,
examples.png (one image per axis and severity) and glimpses_hardest.png (the attention
model's glimpses at the hardest severity of each axis where it is still right more often
than not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmark.classifiers import LABELS, predict
from benchmark.cluttered import ClutteredBench, ClutteredConfig
from benchmark.cluttered import bench_config as cluttered_config
from benchmark.config import to_dict
from benchmark.report import append_csv, markdown_table, read_results, save_figure
from benchmark.robustness_scores import (
    ECE_BINS,
    calibration_bins,
    calibration_severity_plot,
    ce_table,
    ece_tables,
    expected_calibration_error,
    parse_settings,
    per_class_error,
    write_scores,
)
from benchmark.runner import Bench, BenchError, Job, OutOfTime, RunContext, run_bench, weights_path
from datasets.degrade import AXES, MAX_DISTRACTORS, axis_values, severity
from datasets.export import record_test_sets, setting_name
from datasets.tensors import TensorData
from draw.checkpoint import load_model
from draw.fast import SpeedConfig


@dataclass(frozen=True)
class RobustnessPreset:
    """Which ``bench cluttered`` preset trains the models, and how many test scenes are degraded."""

    train: str
    n_eval: int


PRESETS: dict[str, RobustnessPreset] = {
    "smoke": RobustnessPreset("smoke", 96),
    "quick": RobustnessPreset("quick", 5000),
    "paper": RobustnessPreset("paper", 10000),
}
SHORT = {"distractor_size": "distractor size", "salt_pepper": "salt & pepper", "gaussian": "noise sigma"}
CHANCE_PCT = 90.0


class RobustnessError(BenchError):
    """A bad request: e.g. a --from folder that is not a finished bench-cluttered folder."""


@dataclass
class EvalSettings:
    """The degraded test scenes: how many, their seed, and the severities of every axis."""

    n: int
    canvas: int
    distractors: int  # the training setting (severity 0 of the clutter axis)
    distractor_size: int
    max_distractors: int
    axes: dict[str, list[float]] = field(default_factory=dict)
    seed: int = 0
    split: str = "test"
    ece_bins: int = ECE_BINS


@dataclass
class RobustnessConfig:
    """Everything one ``bench robustness`` run depends on (written to config.json)."""

    preset: str
    models: list[str]
    seeds: list[int]
    from_dir: str | None  # a finished `bench cluttered` folder whose models are reused
    train: ClutteredConfig  # how the models are (or were) trained
    eval: EvalSettings
    bench: str = "robustness"


def _model_cfg_from(from_dir: Path) -> ClutteredConfig:
    try:
        bench = ClutteredBench.from_folder(from_dir)
    except (BenchError, ValueError) as e:
        raise RobustnessError(f"{from_dir}: not a `bench cluttered` output folder ({e})") from None
    cfg = bench.cfg
    missing = [f"{m}-seed{s}" for s in cfg.seeds for m in cfg.models if _checkpoint(from_dir, m, s) is None]
    if missing:
        raise RobustnessError(f"{from_dir} lacks the trained weights of {', '.join(missing)} "
                              "(finish that bench first, or train here without --from)")
    return cfg


def _checkpoint(folder: Path, model: str, seed: int) -> Path | None:
    """A bench folder's trained model: its shipped weights, else its best checkpoint."""
    for path in (weights_path(folder, model, seed), folder / "runs" / f"{model}-seed{seed}" / "best.pt"):
        if path.exists():
            return path
    return None


def bench_config(preset: str, *, seeds: int = 1, models: list[str] | None = None, axes: list[str] | None = None,
                 from_dir: str | Path | None = None, glimpses: int = 8,
                 speed: SpeedConfig | None = None, mc_samples: int = 1,
                 user_models: list[tuple[str, str]] | None = None,
                 checkpoints: dict[str, str] | None = None) -> RobustnessConfig:
    """The full configuration of one run. With ``from_dir`` the models, seeds and training
    data are those of that ``bench cluttered`` folder."""
    p = PRESETS[preset]
    if from_dir is not None:
        train = _model_cfg_from(Path(from_dir))
    else:
        train = cluttered_config(p.train, glimpses=glimpses, seeds=seeds, models=models, speed=speed,
                                 mc_samples=mc_samples, user_models=user_models, checkpoints=checkpoints)
    axes = list(axes or AXES)
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise RobustnessError(f"unknown axis {', '.join(unknown)}; choose from {', '.join(AXES)}")
    d = train.data
    try:
        values = {a: axis_values(a, d.distractors, d.distractor_size, d.canvas) for a in axes}
    except ValueError as e:
        raise RobustnessError(f"cannot number the severities of this training setting: {e}") from None
    return RobustnessConfig(
        preset=preset, models=list(train.models), seeds=list(train.seeds),
        from_dir=str(from_dir) if from_dir is not None else None, train=train,
        eval=EvalSettings(n=p.n_eval, canvas=d.canvas, distractors=d.distractors, distractor_size=d.distractor_size,
                          max_distractors=MAX_DISTRACTORS, axes=values))


def _setting(axis: str, value: float) -> str:
    return f"{axis}={value:g}"


# --------------------------------------------------------------------------- run


def _stored_train_config(train_dir: Path) -> object:
    try:
        return json.loads((train_dir / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _scenes(cfg: RobustnessConfig, data_dir: str | Path | None, n: int | None = None):
    from datasets.degrade import Scenes
    from datasets.mnist import load_mnist

    e = cfg.eval
    digits, labels = load_mnist(e.split, data_dir=data_dir)
    return Scenes(digits, labels, e.n if n is None else n, e.canvas, e.seed, e.max_distractors)


def _settings(cfg: RobustnessConfig) -> list[tuple[str, float]]:
    return [(a, float(v)) for a, values in cfg.eval.axes.items() for v in values]


class RobustnessBench(Bench):
    """Trains (or reuses) the models of ``bench cluttered``, then evaluates them on every
    degraded test set: one job per setting ``axis=severity``, all models at once."""

    name = "robustness"
    config_class = RobustnessConfig

    def jobs(self) -> list[Job]:
        return [Job(setting=_setting(a, v)) for a, v in _settings(self.cfg)]

    def is_done(self, results: pd.DataFrame, job: Job) -> bool:
        rows = results[(results.split == job.setting) & (results.metric == "test_error_pct")]
        have = set(zip(rows.model, rows.seed, strict=True))
        return all((m, s) in have for m in self.cfg.models for s in self.cfg.seeds)

    def setup(self, ctx: RunContext, todo: list[Job]) -> None:
        cfg = self.cfg
        if cfg.from_dir:
            train_dir = Path(cfg.from_dir)
            ctx.echo(f"models: reusing the trained models of {train_dir}")
        else:
            train_dir = ctx.out / "train"
            ctx.echo(f"models: training as `bench cluttered --preset {cfg.train.preset}` into {train_dir}")
            # --overwrite replaces the training folder only when the training config itself changed
            retrain = ctx.overwrite and _stored_train_config(train_dir) != json.loads(json.dumps(to_dict(cfg.train)))
            done = run_bench(ClutteredBench(cfg.train), train_dir, overwrite=retrain, device=ctx.device,
                             data_dir=ctx.data_dir, echo=ctx.echo, progress=ctx.progress,
                             max_minutes=None if ctx.deadline is None else max(0.0, (ctx.deadline - _now()) / 60))
            if not done:
                raise OutOfTime()
        self.nets = {}
        for seed in cfg.seeds:
            for name in cfg.models:
                net, _ = load_model(_checkpoint(train_dir, name, seed), ctx.device)
                if hasattr(net, "mc_samples"):  # RAM: the test-time rollouts the training bench used
                    net.mc_samples = cfg.train.mc_samples
                self.nets[(name, seed)] = net.eval()
        e = cfg.eval
        ctx.echo(f"evaluation: {e.n} test scenes ({e.canvas}x{e.canvas}, seed {e.seed}), {len(todo)} of "
                 f"{len(self.jobs())} settings over {len(e.axes)} axes, {len(self.nets)} model(s)")
        self.scenes = _scenes(cfg, ctx.data_dir)
        self.clean = self.scenes.render(e.distractors, e.distractor_size)
        self._record(ctx, "robustness_clean", self.clean)
        results = read_results(ctx.out)
        self.clean_done = "clean" in set(results.split)

    def run_job(self, ctx: RunContext, job: Job) -> list[dict]:
        cfg, e = self.cfg, self.cfg.eval
        axis, value = job.setting.split("=", 1)
        value = float(value)
        labels = self.scenes.labels
        is_clean = value == AXES[axis].clean_value(e.distractors, e.distractor_size)
        images = self.clean if is_clean else self.scenes.degrade(axis, value, distractors=e.distractors,
                                                                 distractor_size=e.distractor_size, clean=self.clean)
        self._record(ctx, setting_name(axis, value), images)
        data = TensorData.from_numpy(images, labels).to(ctx.device)
        rows, bins = [], []
        for (name, seed), net in self.nets.items():
            pred, conf, _ = predict(net, data)
            correct = pred == labels
            base = {"bench": "robustness", "model": name, "variant": cfg.train.models[name].variant,
                    "preset": cfg.preset, "seed": seed, "split": job.setting}
            summary = [{**base, "metric": "test_error_pct", "value": 100.0 * (1 - correct.mean())},
                       {**base, "metric": "ece_pct", "value": 100.0 * expected_calibration_error(conf, correct)},
                       {**base, "metric": "confidence_pct", "value": 100.0 * conf.mean()}]
            rows += summary
            if is_clean and not self.clean_done:  # every axis has the clean images once: report them once
                rows += [{**r, "split": "clean"} for r in summary]
                rows += [{**base, "split": "clean", "metric": f"class_{c}_error_pct", "value": v}
                         for c, v in enumerate(per_class_error(labels, pred))]
                bins.append(calibration_bins(conf, correct).assign(model=name, seed=seed))
        if bins:
            append_csv(ctx.out / "calibration.csv", pd.concat(bins, ignore_index=True), key=["model", "seed", "bin"])
            self.clean_done = True
        return rows

    def _record(self, ctx: RunContext, name: str, images: np.ndarray) -> None:
        """The SHA-256 of a test set evaluated, in test_sets.json (as `data export robustness` hashes it)."""
        e = self.cfg.eval
        identity = {"bench": "robustness", "n": e.n, "canvas": e.canvas, "seed": e.seed, "split": e.split,
                    "distractors": e.distractors, "distractor_size": e.distractor_size,
                    "max_distractors": e.max_distractors}
        record_test_sets(ctx.out, identity, {name: (images, self.scenes.labels)})

    def finish(self, ctx: RunContext) -> None:
        e = self.cfg.eval
        write_scores(ctx.out, e.distractors, e.distractor_size)
        ctx.echo("drawing examples and glimpses")
        _example_figure(ctx.out, self.cfg, ctx.data_dir)
        if "attention" in self.cfg.models:
            _glimpse_figure(ctx.out, self.cfg, self.nets, ctx.data_dir, ctx.device)

    @classmethod
    def write_report(cls, out: str | Path, cfg: RobustnessConfig) -> list[Path]:
        """The CE rows (derived from the per-setting rows, idempotent), then table.md and plots."""
        write_scores(Path(out), cfg.eval.distractors, cfg.eval.distractor_size)
        return super().write_report(out, cfg)

    @classmethod
    def table(cls, out: Path, df: pd.DataFrame, cfg: RobustnessConfig) -> str:
        return table(out, df, cfg)

    @classmethod
    def plots(cls, out: Path, df: pd.DataFrame, cfg: RobustnessConfig) -> list[Path]:
        return plots(out, df, cfg)


def _now() -> float:
    import time

    return time.monotonic()


# --------------------------------------------------------------------------- figures from images


def _example_figure(out: Path, cfg: RobustnessConfig, data_dir: str | Path | None, index: int = 0) -> Path:
    """One test scene (the same one throughout) at every axis and severity."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from datasets.degrade import occluder_boxes

    e = cfg.eval
    scenes = _scenes(cfg, data_dir, n=index + 1)
    D, S = e.distractors, e.distractor_size
    clean = scenes.render(D, S)
    axes = list(e.axes)
    ncol = max(len(v) for v in e.axes.values())
    fig, grid = plt.subplots(len(axes), ncol, figsize=(1.6 * ncol, 1.75 * len(axes)), squeeze=False)
    for r, axis in enumerate(axes):
        for c in range(ncol):
            ax = grid[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(e.axes[axis]):
                ax.axis("off")
                continue
            value = e.axes[axis][c]
            img = scenes.degrade(axis, value, distractors=D, distractor_size=S, clean=clean)[index]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if axis == "occlusion" and value > 0:  # the occluder is black on black: outline it
                rows, cols, side = occluder_boxes(index + 1, e.canvas, e.canvas, value, e.seed)
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
    mean = err.groupby("level").value.mean()
    ok = [v for v in values if v in mean.index and mean[v] <= limit]
    return ok[-1] if ok else values[0]


def _glimpse_figure(out: Path, cfg: RobustnessConfig, nets: dict, data_dir: str | Path | None, dev: torch.device,
                    per_kind: int = 3, pool: int = 200) -> Path | None:
    """Glimpse boxes (first training seed) on successes and failures at the hardest severity
    of each axis where the attention model is still right at least half the time."""
    from benchmark.pictures import plot_glimpses

    e = cfg.eval
    seed = cfg.seeds[0]
    net = nets[("attention", seed)]
    df = parse_settings(read_results(out))
    scenes = _scenes(cfg, data_dir, n=min(pool, e.n))
    D, S = e.distractors, e.distractor_size
    clean = scenes.render(D, S)
    images, windows, titles = [], [], []
    for axis, values in e.axes.items():
        value = _hardest_level(df, axis, values)
        x = scenes.degrade(axis, value, distractors=D, distractor_size=S, clean=clean)
        data = TensorData.from_numpy(x, scenes.labels).to(dev)
        pred, _, w = predict(net, data)
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
    plot_glimpses(x, np.stack(windows), cfg.train.models["attention"].config["read_n"], path, titles=titles, ncol=2 * per_kind,
                  title=f"Each row: an axis at its hardest severity with error <= 50%; {per_kind} right, {per_kind} wrong")
    return path


# --------------------------------------------------------------------------- report from CSV files


def _label(cfg: RobustnessConfig, model: str) -> str:
    spec = cfg.train.models.get(model)
    return spec.label if spec is not None and spec.label else LABELS.get(model, model)


def plots(out: Path, df: pd.DataFrame, cfg: RobustnessConfig) -> list[Path]:
    """The plots, from the CSV files in ``out`` alone (results.csv is ``df``)."""
    sev = parse_settings(df)
    if sev.empty:
        return []
    import matplotlib.pyplot as plt
    import seaborn as sns

    written: list[Path] = []
    e = cfg.eval
    D, S = e.distractors, e.distractor_size
    err = sev[sev.metric == "test_error_pct"].copy()
    err["label"] = err.model.map(lambda m: _label(cfg, m))
    order = [_label(cfg, m) for m in cfg.models if m in set(err.model)]
    palette = dict(zip(order, sns.color_palette("deep", len(order)), strict=True))
    axes = list(e.axes)
    ncol = 3
    nrow = -(-len(axes) // ncol)
    fig, grid = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.6 * nrow), squeeze=False)
    for ax, axis in zip(grid.flat, axes, strict=False):
        a = err[err.axis == axis]
        sns.lineplot(data=a, x="level", y="value", hue="label", hue_order=order, palette=palette, marker="o",
                     errorbar="sd", ax=ax, legend=False)
        values = e.axes.get(axis, [])
        ax.set_xticks(values)
        ax.set_xticklabels([f"{v:g}\n{severity(axis, v, D, S):+d}".replace("+0", "0") for v in values], fontsize=8)
        ax.axvline(AXES[axis].clean_value(D, S), color="gray", ls=":", lw=1.2)
        ax.axhline(CHANCE_PCT, color="gray", ls="--", lw=0.8)
        ax.set_ylim(0, 100)
        ax.set_xlabel(AXES[axis].label + " / severity")
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
    fig.suptitle(f"Error as the test images degrade: preset {cfg.preset}, {e.n} test scenes per setting, "
                 f"{seeds} training seed(s)" + (" (band: sd over seeds)" if seeds > 1 else ""), fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    written.append(out / "robustness.png")
    save_figure(fig, written[-1])
    written += calibration_severity_plot(out, df, D, S, list(cfg.models), lambda m: _label(cfg, m))

    calib_path = out / "calibration.csv"
    if calib_path.exists():
        cal = pd.read_csv(calib_path)
        cal = cal[cal["count"] > 0]
        cal["label"] = cal.model.map(lambda m: _label(cfg, m))
        ece_by = df[(df.split == "clean") & (df.metric == "ece_pct")].groupby("model").value.mean()
        fig, ax = plt.subplots(figsize=(5.4, 5))
        ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="perfect calibration")
        for m in [m for m in cfg.models if m in set(cal.model)]:
            c = cal[(cal.model == m) & (cal.seed == cal.seed.min())]
            ax.plot(c.confidence, c.accuracy, marker="o", color=palette.get(_label(cfg, m)),
                    label=f"{_label(cfg, m)} (ECE {ece_by.get(m, float('nan')):.2f}%)")
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
        pc["label"] = pc.model.map(lambda m: _label(cfg, m))
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


def table(out: Path, df: pd.DataFrame, cfg: RobustnessConfig) -> str:
    """table.md: error per model at each severity of each axis (mean ± sd over seeds)."""
    e = cfg.eval
    D, S = e.distractors, e.distractor_size
    d = cfg.train.data
    lines = ["# Robustness of the cluttered-MNIST classifiers, preset `" + cfg.preset + "`", "",
             f"Trained on {d.canvas}x{d.canvas} cluttered MNIST with {d.distractors} distractors of "
             f"{d.distractor_size}x{d.distractor_size} ({d.n_train} images; "
             + (f"models from `{cfg.from_dir}`" if cfg.from_dir else "trained in `train/`") + "). "
             f"Evaluated on {e.n} test scenes (MNIST test digits, seed {e.seed}), the same images for every "
             f"model and seed; training seeds: {len(cfg.seeds)}. Cells: test error (%), mean ± sd over seeds. "
             f"Chance is {CHANCE_PCT:.0f}%.", ""]
    sev = parse_settings(df)
    err = sev[sev.metric == "test_error_pct"]
    if not err.empty:
        models = [m for m in cfg.models if m in set(err.model)]
        lines += ce_table(df, D, S, list(cfg.models), lambda m: _label(cfg, m))
        lines += ["## Mean error over each axis's settings", "",
                  "Mean over every value evaluated (easier ones and the training setting included).", ""]
        rows = []
        for m in models:
            row = {"model": _label(cfg, m)}
            for axis in e.axes:
                per_seed = err[(err.model == m) & (err.axis == axis)].groupby("seed").value.mean()
                row[axis.replace("_", " ")] = _mean_sd(per_seed) if len(per_seed) else ""
            rows.append(row)
        lines += [markdown_table(pd.DataFrame(rows)), ""]
        for axis, values in e.axes.items():
            a = err[err.axis == axis]
            if a.empty:
                continue
            lines += [f"## {axis.replace('_', ' ')}: {AXES[axis].label}", ""]
            rows = []
            for m in models:
                row = {"model": _label(cfg, m)}
                for v in values:
                    cell = a[(a.model == m) & np.isclose(a.level, v)].value
                    s = severity(axis, v, D, S)
                    row[f"{v:g} (trained)" if s == 0 else f"{v:g} (s{s:+d})"] = _mean_sd(cell) if len(cell) else ""
                rows.append(row)
            lines += [markdown_table(pd.DataFrame(rows)), ""]
        clean = df[df.split == "clean"]
        pc = clean[clean.metric.str.startswith("class_")]
        lines += ["## At the training setting: calibration and per-class error", "",
                  f"ECE: expected calibration error over {ECE_BINS} equal-width confidence bins (Guo et al., 2017).", ""]
        rows = []
        for m in models:
            c = clean[clean.model == m]
            row = {"model": _label(cfg, m), "error (%)": _mean_sd(c[c.metric == "test_error_pct"].value),
                   "ECE (%)": _mean_sd(c[c.metric == "ece_pct"].value),
                   "mean confidence (%)": _mean_sd(c[c.metric == "confidence_pct"].value)}
            for k in range(10):
                row[f"class {k}"] = _mean_sd(pc[(pc.model == m) & (pc.metric == f"class_{k}_error_pct")].value)
            rows.append(row)
        lines += [markdown_table(pd.DataFrame(rows)), ""]
        lines += ece_tables(df, D, S, list(cfg.models), lambda m: _label(cfg, m))
    if cfg.preset != "paper":
        lines.append(f"The `{cfg.preset}` preset trains each model for a small fixed budget (see config.json) so "
                     "that it runs on a 2-core CPU; errors are higher than at convergence, and the ranking of models "
                     "may differ from a `--preset paper` run.")
    return "\n".join(lines) + "\n"
