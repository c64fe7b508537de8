"""``bench speed``: training throughput of DRAW and the attention classifier for each speed
switch (:class:`draw.fast.SpeedConfig`), against the plain eager implementation.

A step here is exactly a training step of :func:`draw.train.train`: the loss (forward),
backward, gradient clipping and Adam. Each variant starts from the same weights; warm-up
steps (which hold the compile time) are timed apart; then the variants take turns, round
after round, so that a machine whose load drifts slows them all alike; the step time is
the median over rounds, timed between synchronisations on a GPU. Reported per variant:
images/s, wall ms per step, CPU ms per step (process time: what the step cost, whatever
else the machine runs), peak memory (CUDA: allocator peak; CPU: peak resident set growth),
compile seconds, and the loss's relative difference from the eager reference on the same
weights, batch and noise; and where the step's time goes (:mod:`benchmark.step_profile`:
the forward / backward / optimizer phases, operators per glimpse, the matrix products'
own time). Writes results.csv, table.md, config.json and speedup.png.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from benchmark.report import markdown_table, save_figure
from benchmark.runner import Bench, Job, RunContext
from benchmark.step_profile import census, phase_seconds, products_seconds, sync
from draw.classifier import AttentionClassifier, ClassifierConfig
from draw.fast import SpeedConfig, matmul_precision
from draw.model import DRAW, DrawConfig
from draw.step import TrainStep

MODELS = ("draw", "classifier")
MODEL_LABELS = {"draw": "DRAW", "classifier": "attention classifier"}
METRICS = ("images_per_s", "step_ms", "cpu_ms", "peak_mem_mb", "compile_s", "loss_rel_err", "epoch_s",
           "forward_ms", "backward_ms", "optimizer_ms", "ops_per_glimpse", "products_ms", "products_share")
# Training images per epoch: binarized MNIST (DRAW) and cluttered MNIST (the classifier).
EPOCH_IMAGES = {"draw": 50_000, "classifier": 60_000}
MACHINE = "(machine)"  # the variant name of the rows that describe the machine, not a switch set


@dataclass
class Variant:
    """One switch set to time; ``batch_factor`` multiplies the bench's batch size."""

    name: str
    speed: SpeedConfig
    batch_factor: int = 1


def _v(name: str, batch_factor: int = 1, **kw: object) -> Variant:
    return Variant(name, SpeedConfig(**kw), batch_factor)


_CPU_VARIANTS = [
    _v("eager"),
    _v("fused", fused=True),
    _v("fused+compile(8)", fused=True, compile=True, compile_unroll=8),
    _v("fused+compile(8)+bf16", fused=True, compile=True, compile_unroll=8, amp="bf16"),
]
_GPU_VARIANTS = [
    _v("eager"),
    _v("eager+tf32", tf32=True),
    _v("fused+tf32", fused=True, tf32=True),
    _v("fused+compile(T)+tf32", fused=True, compile=True, tf32=True),
    _v("fused+compile(T)+cudagraphs+tf32", fused=True, cuda_graphs=True, tf32=True),
    _v("fused+compile(T)+cudagraphs+bf16", fused=True, cuda_graphs=True, amp="bf16"),
    _v("fused+compile(T)+cudagraphs+bf16, 4x batch", 4, fused=True, cuda_graphs=True, amp="bf16"),
]


@dataclass
class SpeedPreset:
    draw: DrawConfig
    classifier: ClassifierConfig
    batch_size: int
    steps: int  # timed steps per round
    warmup: int
    rounds: int
    variants: dict[str, list[Variant]]  # per device type


# "smoke": tiny models, seconds, for tests. "quick": the paper's models on a 2-core CPU,
# a few minutes. "paper": the paper's models with the full-unroll compile (long on a CPU),
# meant for a GPU.
PRESETS: dict[str, SpeedPreset] = {
    "smoke": SpeedPreset(DrawConfig(T=4, read_n=2, write_n=3, lstm_size=32, z_size=8),
                         ClassifierConfig(image_shape=(1, 40, 40), glimpses=3, read_n=6, lstm_size=32),
                         16, 2, 1, 2, {"cpu": [_v("eager"), _v("fused", fused=True)],
                                       "cuda": [_v("eager"), _v("fused", fused=True)]}),
    "quick": SpeedPreset(DrawConfig(), ClassifierConfig(), 64, 2, 2, 5, {"cpu": _CPU_VARIANTS, "cuda": _GPU_VARIANTS}),
    "paper": SpeedPreset(DrawConfig(), ClassifierConfig(), 64, 5, 3, 7,
                         {"cpu": _CPU_VARIANTS + [_v("fused+compile(T)", fused=True, compile=True, compile_unroll=0)],
                          "cuda": _GPU_VARIANTS}),
}


@dataclass
class SpeedBenchConfig:
    """Everything one ``bench speed`` run depends on (written to config.json)."""

    preset: str
    device: str
    models: list[str]
    draw: DrawConfig
    classifier: ClassifierConfig
    batch_size: int
    steps: int
    warmup: int
    rounds: int
    threads: int
    variants: list[Variant] = field(default_factory=list)
    lr: float = 1e-3
    grad_clip: float = 10.0
    bench: str = "speed"


def bench_config(preset: str, *, models: list[str] | None = None, device: str = "cpu", steps: int | None = None,
                 batch_size: int | None = None, threads: int | None = None) -> SpeedBenchConfig:
    """The config of ``bench speed --preset P --device D``."""
    p = PRESETS[preset]
    return SpeedBenchConfig(
        preset=preset, device=device, models=list(models or MODELS), draw=copy.deepcopy(p.draw),
        classifier=copy.deepcopy(p.classifier), batch_size=batch_size or p.batch_size, steps=steps or p.steps,
        warmup=p.warmup, rounds=p.rounds, threads=threads or torch.get_num_threads(),
        variants=copy.deepcopy(p.variants["cuda" if device == "cuda" else "cpu"]))


def describe(name: str, cfg: SpeedBenchConfig) -> str:
    """The model's settings in words, e.g. ``DRAW 1x28x28, T=64, read 2x2, write 5x5, LSTM 256, z 100``."""
    if name == "draw":
        d = cfg.draw
        shape = "x".join(str(s) for s in d.image_shape)
        attn = f"read {d.read_n}x{d.read_n}, write {d.write_n}x{d.write_n}" if d.attention else "no attention"
        return f"DRAW {shape}, T={d.T}, {attn}, LSTM {d.lstm_size}, z {d.z_size}"
    c = cfg.classifier
    shape = "x".join(str(s) for s in c.image_shape)
    return f"attention classifier {shape}, {c.glimpses} glimpses of {c.read_n}x{c.read_n}, LSTM {c.lstm_size}"


def _model(name: str, cfg: SpeedBenchConfig) -> nn.Module:
    torch.manual_seed(0)
    return DRAW(cfg.draw) if name == "draw" else AttentionClassifier(cfg.classifier)


def _batch(name: str, model: nn.Module, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A fixed synthetic batch of the model's input shape (speed does not depend on content)."""
    g = torch.Generator().manual_seed(1)
    C, H, W = model.cfg.image_shape
    if name == "draw":
        return (torch.rand(batch, C, H, W, generator=g) < 0.2).float().to(device), None
    y = torch.randint(0, model.cfg.n_classes, (batch,), generator=g)
    return torch.rand(batch, C, H, W, generator=g).to(device), y.to(device)


class _PeakMemory:
    """Peak memory of a block in MB above what was in use before it: the CUDA allocator's
    peak, or on Linux the growth of the peak resident set (freed heap memory handed back with
    glibc's malloc_trim first, the peak reset through /proc/self/clear_refs); NaN where
    neither works. On a CPU it counts every allocation of the process, tensors or not."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @staticmethod
    def _status(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024  # kB -> MB
        raise OSError(key)

    def __enter__(self) -> _PeakMemory:
        self.mb = float("nan")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed heap pages, so they count again
        try:
            Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
            self.base = self._status("VmRSS")
        except OSError:
            self.base = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base
        elif self.base is not None:
            try:
                self.mb = self._status("VmHWM") - self.base
            except OSError:
                pass


class _Variant:
    """One model under one switch set: its own copy of the weights and optimizer, and the
    training loop's own step (:class:`draw.step.TrainStep`)."""

    def __init__(self, name: str, model: nn.Module, speed: SpeedConfig, batch: int, cfg: SpeedBenchConfig,
                 device: torch.device) -> None:
        self.model, self.speed, self.device = model.to(device), speed, device
        self.step_fn = TrainStep(self.model, speed, device, lr=cfg.lr, grad_clip=cfg.grad_clip)
        self.x, self.y = _batch(name, model, batch, device)
        self.batch = batch
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def step(self) -> torch.Tensor:
        with matmul_precision(self.speed, self.device):
            loss, _, _ = self.step_fn(self.x, self.y)
        return loss

    def timed(self, steps: int) -> tuple[float, float]:
        """Wall and CPU seconds per step over ``steps`` steps, between synchronisations."""
        sync(self.device)
        t, c = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return (time.perf_counter() - t) / steps, (time.process_time() - c) / steps


def measure(name: str, cfg: SpeedBenchConfig, device: torch.device, echo: Callable[[str], None] = print) -> list[dict]:
    """Time every variant of ``cfg`` on model ``name``; tidy rows for results.csv."""
    base_model = _model(name, cfg)
    variants: dict[str, _Variant] = {}
    rows: list[dict] = []
    common = {"bench": "speed", "model": name, "preset": cfg.preset, "seed": 0, "split": "train"}
    load_start = _load_average()
    ref_loss: float | None = None
    for v in cfg.variants:
        batch = cfg.batch_size * v.batch_factor
        var = _Variant(name, copy.deepcopy(base_model), v.speed, batch, cfg, device)
        t0 = time.perf_counter()
        torch.manual_seed(123)  # the first step: the same weights, batch and noise for every variant
        loss0 = float(var.step())
        for _ in range(cfg.warmup - 1):
            var.step()
        sync(device)
        warm = time.perf_counter() - t0
        with _PeakMemory(device) as mem:  # one more step, compiled already
            var.step()
            sync(device)
        if ref_loss is None:
            ref_loss = loss0
        rel = abs(loss0 - ref_loss) / max(abs(ref_loss), 1e-12) if v.batch_factor == 1 else float("nan")
        var.first = (warm, mem.mb, rel)
        variants[v.name] = var
        echo(f"  {name} {v.name}: warm-up {warm:.1f} s ({cfg.warmup} steps of {batch})")
    for _ in range(cfg.rounds):  # the variants take turns
        for var in variants.values():
            w, c = var.timed(cfg.steps)
            var.wall.append(w)
            var.cpu.append(c)
    glimpses = cfg.draw.T if name == "draw" else cfg.classifier.glimpses
    for vname, var in variants.items():
        warm, mem, rel = var.first
        step_s, cpu_s = statistics.median(var.wall), statistics.median(var.cpu)
        profile = _profile(var, glimpses, cfg)
        values = {
            "images_per_s": var.batch / step_s,
            "step_ms": 1e3 * step_s,
            "cpu_ms": 1e3 * cpu_s,
            "peak_mem_mb": mem,
            "compile_s": max(0.0, warm - cfg.warmup * step_s),
            "loss_rel_err": rel,
            "epoch_s": EPOCH_IMAGES[name] * step_s / var.batch,  # one epoch at this speed, compile excluded
            **profile,
            "products_share": profile["products_ms"] / (1e3 * step_s),
        }
        rows += [{**common, "variant": vname, "metric": k, "value": float(val)} for k, val in values.items()]
        echo(f"  {name} {vname}: {values['images_per_s']:.0f} images/s, {values['step_ms']:.0f} ms/step "
             f"(CPU {values['cpu_ms']:.0f} ms), compile {values['compile_s']:.1f} s")
    # how busy the machine was (other processes slow every variant alike, but not by the same
    # factor: compare runs made under a similar load)
    rows += [{**common, "variant": MACHINE, "metric": k, "value": v}
             for k, v in (("load_avg_start", load_start), ("load_avg_end", _load_average()))]
    return rows


def _profile(var: _Variant, glimpses: int, cfg: SpeedBenchConfig) -> dict[str, float]:
    """Where ``var``'s step spends its time (:mod:`benchmark.step_profile`): the phases, timed
    on the variant itself; the operators per glimpse and the products' own time, recorded on
    its uncompiled layout (a compiled step runs the same LSTM and linear products, its other
    operators fused; filterbanks of at most ``draw.fused.SMALL_N`` rows become fused sums)."""
    with matmul_precision(var.speed, var.device):
        phases = phase_seconds(var.step_fn, var.x, var.y, cfg.steps)
        plain = replace(var.speed, compile=False, cuda_graphs=False)
        step = TrainStep(copy.deepcopy(var.model), plain, var.device, lr=cfg.lr, grad_clip=cfg.grad_clip)
        seen = census(step, var.x, var.y)
        products_s = products_seconds(seen.products, var.device)
    return {**{f"{k}_ms": 1e3 * v for k, v in phases.items()}, "ops_per_glimpse": seen.ops / glimpses,
            "products_ms": 1e3 * products_s}


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


@contextlib.contextmanager
def fresh_compile_cache() -> Iterator[None]:
    """An empty torch.compile cache for the block, so that ``compile_s`` is a cold compile
    (kernels shared by two variants of one run are still compiled once)."""
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="drawbench-inductor-") as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tmp
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


class SpeedBench(Bench):
    """One job per model: every variant of it timed, round-robin."""

    name = "speed"
    config_class = SpeedBenchConfig

    def jobs(self) -> list[Job]:
        return [Job(m) for m in self.cfg.models]

    def done_metric(self) -> str:
        return "images_per_s"

    def setup(self, ctx: RunContext, todo: list[Job]) -> None:
        cfg = self.cfg
        if ctx.device.type == "cuda" and ctx.device.index is None:
            ctx.device = torch.device("cuda", 0)
        ctx.echo(f"speed: {', '.join(cfg.models)} on {ctx.device} ({cfg.threads} CPU threads), batch "
                 f"{cfg.batch_size}, {cfg.rounds} rounds of {cfg.steps} steps per variant after {cfg.warmup} "
                 "warm-up steps")

    def run_job(self, ctx: RunContext, job: Job) -> list[dict]:
        with fresh_compile_cache():
            return measure(job.model, self.cfg, ctx.device, ctx.echo)

    @classmethod
    def table(cls, out: Path, df: pd.DataFrame, cfg: SpeedBenchConfig) -> str:
        return table(out, df, cfg)

    @classmethod
    def plots(cls, out: Path, df: pd.DataFrame, cfg: SpeedBenchConfig) -> list[Path]:
        return plots(out, df, cfg)


def speedups(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, variant): every metric as a column, plus ``speedup`` (images/s
    over the model's ``eager`` variant)."""
    df = df[df.variant != MACHINE]
    wide = df.pivot_table(index=["model", "variant"], columns="metric", values="value", sort=False).reset_index()
    eager = wide[wide.variant == "eager"].set_index("model")["images_per_s"]
    wide["speedup"] = wide.images_per_s / wide.model.map(eager)
    return wide


def plots(out: Path, df: pd.DataFrame, cfg: SpeedBenchConfig) -> list[Path]:
    """The plots, from the CSV files in ``out`` alone (results.csv is ``df``)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    written: list[Path] = []
    wide = speedups(df)
    order = [v.name for v in cfg.variants if v.name in set(wide.variant)]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(order) * max(1, wide.model.nunique())))
    wide["label"] = wide.model.map(MODEL_LABELS)
    sns.barplot(data=wide, y="variant", x="speedup", hue="label", order=order, ax=ax, orient="h")
    ax.axvline(1.0, color="black", lw=1, ls="--")
    for cont in ax.containers:
        ax.bar_label(cont, fmt="%.2fx", fontsize=8, padding=2)
    ax.set_xlabel(f"training speed-up over the eager reference (images/s), batch {cfg.batch_size}")
    ax.set_ylabel("")
    ax.set_xlim(0, 1.18 * wide.speedup.max())
    ax.legend(title="", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"bench speed, preset {cfg.preset}, {cfg.device}, {cfg.threads} CPU thread(s)")
    written.append(out / "speedup.png")
    save_figure(fig, written[-1])
    return written


def table(out: Path, df: pd.DataFrame, cfg: SpeedBenchConfig) -> str:
    lines = [f"# Training speed, preset `{cfg.preset}`, device `{cfg.device}`", ""]
    lines.append(f"Batch {cfg.batch_size}, "
                 f"{cfg.threads} CPU thread(s); median of {cfg.rounds} rounds of {cfg.steps} steps, "
                 f"after {cfg.warmup} warm-up steps (compile time is reported apart). A step is forward, "
                 "backward, gradient clipping and Adam; compile time is measured from an empty compile cache. "
                 "`loss rel. err.` is the loss's relative difference from "
                 "the eager reference on the same weights, batch and noise. `epoch` is the time of one "
                 f"training epoch at that speed ({EPOCH_IMAGES['draw']:,} MNIST images for DRAW, "
                 f"{EPOCH_IMAGES['classifier']:,} cluttered images for the classifier), compile excluded.")
    lines.append("")
    lines += [f"- {describe(m, cfg)}" for m in cfg.models]
    lines.append("")
    if not df.empty:
        wide = speedups(df)
        table = pd.DataFrame({
            "model": wide.model.map(MODEL_LABELS),
            "variant": wide.variant,
            "images/s": wide.images_per_s.map(lambda v: f"{v:.0f}"),
            "speed-up": wide.speedup.map(lambda v: f"{v:.2f}x"),
            "step (ms)": wide.step_ms.map(lambda v: f"{v:.1f}"),
            "CPU (ms)": wide.cpu_ms.map(lambda v: f"{v:.0f}"),
            "peak memory (MB)": wide.peak_mem_mb.map(lambda v: "" if pd.isna(v) else f"{v:.0f}"),
            "compile (s)": wide.compile_s.map(lambda v: f"{v:.1f}"),
            "epoch (s)": wide.epoch_s.map(lambda v: f"{v:.0f}"),
            "loss rel. err.": wide.loss_rel_err.map(lambda v: "" if pd.isna(v) else f"{v:.1e}"),
        })
        lines.append(markdown_table(table))
        if "products_ms" in wide:  # results written before the step profile have none
            lines += _profile_table(wide, cfg)
        load = df[df.variant == MACHINE].set_index(["model", "metric"]).value
        if len(load):
            lines.append("Machine load (1-minute load average, start -> end): " + "; ".join(
                f"{MODEL_LABELS.get(m, m)} {load.get((m, 'load_avg_start'), float('nan')):.2f} -> "
                f"{load.get((m, 'load_avg_end'), float('nan')):.2f}" for m in cfg.models) + ".")
    return "\n".join(lines) + "\n"


def _profile_table(wide: pd.DataFrame, cfg: SpeedBenchConfig) -> list[str]:
    """Where each variant's step spends its time (:mod:`benchmark.step_profile`)."""
    ms = lambda v: f"{v:.1f}"  # noqa: E731
    table = pd.DataFrame({
        "model": wide.model.map(MODEL_LABELS),
        "variant": wide.variant,
        "forward (ms)": wide.forward_ms.map(ms),
        "backward (ms)": wide.backward_ms.map(ms),
        "clip + Adam (ms)": wide.optimizer_ms.map(ms),
        "operators per glimpse": wide.ops_per_glimpse.map(lambda v: f"{v:.0f}"),
        "products alone (ms)": wide.products_ms.map(ms),
        "products' share of the step": wide.products_share.map(lambda v: f"{100 * v:.0f}%"),
        "ceiling (images/s)": (wide.images_per_s / wide.products_share).map(lambda v: f"{v:.0f}"),
    })
    return ["## Where a step's time goes", "",
            "The phases are timed apart on each variant (synchronised between phases, so they add up to a "
            "little more than the step). `operators per glimpse`: the operators one training step dispatches "
            "(forward, backward, clipping, Adam), divided by the glimpses T, counted on the variant's uncompiled "
            "layout (compiling fuses the pointwise ones into fewer kernels). `products alone`: every matrix "
            "product of one step (LSTMs, linear maps, filterbanks; forward and backward) replayed one at a time "
            "at its own shapes and precision on this machine; `ceiling`: the images/s if everything else were "
            "free. A share near 100% means only faster products (bf16, larger batches) make the step faster.",
            "", markdown_table(table)]
