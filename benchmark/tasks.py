"""The plain functions behind ``cli.py train draw | classifier``, ``eval nll | classifier`` and ``sample``.

They load data, build models, call :func:`draw.train.train`, and write files; the CLI only
parses options. :func:`like` reads a bench folder's config so that ``train ... --like DIR
--model NAME`` trains exactly the model that bench trains.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from benchmark.data import binarized_mnist, cluttered_data, cluttered_split, fresh_cluttered
from datasets.files import atomic_write_text
from draw.checkpoint import load_model
from draw.distributed import is_main_process, resolve_device
from draw.fast import SpeedConfig
from draw.model import DRAW, DrawConfig
from draw.train import TrainConfig, TrainResult, evaluate, train


def write_run_config(out: Path, **sections: object) -> None:
    """``config.json`` in a run folder: the model and training configs as JSON."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(sections, indent=2, default=str) + "\n")


def train_classifier(
    model: nn.Module,
    train_cfg: TrainConfig,
    out: str | Path,
    params: object,
    *,
    data_seed: int = 0,
    n_train: int | None = None,
    n_valid: int | None = None,
    resume: bool = False,
    data_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    speed: SpeedConfig | None = None,
    fresh_clutter: bool = False,
    max_minutes: float | None = None,
) -> TrainResult:
    """Train a classifier on cluttered MNIST; validation error picks ``best.pt``.
    ``speed``: the speed switches (default: the plain eager reference). ``fresh_clutter``:
    new clutter every epoch (see :func:`benchmark.data.fresh_cluttered`) instead of one
    fixed set. ``max_minutes``: stop (checkpointed) after this long; ``resume`` continues."""
    dev = resolve_device(device)
    speed = speed or SpeedConfig()
    train_data = cluttered_data("train", params, data_seed, n_train, data_dir).to(dev)
    valid_data = cluttered_data("valid", params, data_seed, n_valid, data_dir).to(dev)
    if not (resume and (Path(out) / "config.json").exists()) and is_main_process():  # a refused resume must not rewrite it
        write_run_config(Path(out), kind=type(model).__name__, model=asdict(model.cfg), train=asdict(train_cfg),
                         data={"clutter": asdict(params), "seed": data_seed, "n_train": len(train_data),
                               "n_valid": len(valid_data), "fresh_clutter": fresh_clutter}, speed=asdict(speed))
    epoch_data = fresh_cluttered(params, data_seed, len(train_data), data_dir, dev) if fresh_clutter else None
    return train(model, train_data, valid_data, train_cfg, out, resume=resume, device=dev, select="error",
                 progress=progress, desc=type(model).__name__, speed=speed, epoch_data=epoch_data,
                 deadline=_deadline(max_minutes))


def train_draw(
    model_cfg: DrawConfig,
    train_cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    data_dir: str | Path | None = None,
    device: str | None = None,
    n_train: int | None = None,
    n_valid: int | None = None,
    dataset: str = "mnist",
    data_seed: int = 0,
    progress: bool = True,
    speed: SpeedConfig | None = None,
    max_minutes: float | None = None,
) -> TrainResult:
    """Train DRAW on a generation data set (default binarized MNIST, 50k train; the bound on
    the validation images picks ``best.pt``; see :func:`benchmark.data.generation_split`).
    ``speed``: the speed switches (default: the plain eager reference)."""
    from benchmark.data import generation_split

    out = Path(out)
    kw = {"seed": data_seed, "canvas": model_cfg.image_shape[1], "data_dir": data_dir}
    train_data, source = generation_split(dataset, "train", n_train, **kw)
    valid_data, _ = generation_split(dataset, "valid", n_valid, **kw)
    dev = resolve_device(device)
    speed = speed or SpeedConfig()
    if not (resume and (out / "config.json").exists()) and is_main_process():  # a refused resume must not rewrite it
        write_run_config(out, kind="draw", model=asdict(model_cfg), train=asdict(train_cfg),
                         data={"dataset": dataset, "source": source, "n_train": len(train_data),
                               "n_valid": len(valid_data)},
                         speed=asdict(speed))
    torch.manual_seed(train_cfg.seed)  # the initial weights, too, are a function of --seed
    model = DRAW(model_cfg)
    return train(model, train_data.to(dev), valid_data.to(dev), train_cfg, out, resume=resume, device=dev,
                 select="loss", progress=progress, desc="DRAW" if model_cfg.attention else "DRAW (no attention)",
                 speed=speed, deadline=_deadline(max_minutes))


def _deadline(max_minutes: float | None) -> float | None:
    import time

    return None if max_minutes is None else time.monotonic() + 60 * max_minutes


@dataclass
class Recipe:
    """What a bench trained one of its models with: enough for ``train`` to do it again."""

    bench: str
    kind: str
    model_config: dict
    train: TrainConfig
    speed: SpeedConfig
    data: dict  # the bench's data settings


class LikeError(ValueError):
    """``--like DIR --model NAME`` names no model of a bench folder."""


def like(bench_dir: str | Path, model: str) -> Recipe:
    """The recipe of ``model`` in the bench folder ``bench_dir`` (``bench cluttered`` or
    ``bench nll``; a ``bench robustness`` folder trains through ``bench cluttered``)."""
    from benchmark.cluttered import ClutteredBench
    from benchmark.nll import NllBench
    from benchmark.robustness import RobustnessBench
    from benchmark.runner import BenchError, _stored_config

    bench_dir = Path(bench_dir)
    try:
        name = _stored_config(bench_dir).get("bench")
    except BenchError as e:
        raise LikeError(str(e)) from None
    benches = {"cluttered": ClutteredBench, "nll": NllBench, "robustness": RobustnessBench}
    if name not in benches:
        raise LikeError(f"{bench_dir} holds `bench {name}` results; --like takes a cluttered, nll or robustness folder")
    cfg = benches[name].from_folder(bench_dir).cfg
    if name == "robustness":
        cfg, name = cfg.train, "cluttered"
    if model not in cfg.models:
        raise LikeError(f"{bench_dir} trains no model {model!r}; its models: {', '.join(cfg.models)}")
    if name == "cluttered":
        spec = cfg.models[model]
        return Recipe(name, spec.kind, spec.config, spec.train, cfg.speed, asdict(cfg.data))
    return Recipe(name, "draw", asdict(cfg.models[model]), replace(cfg.train), cfg.speed,
                  {"dataset": cfg.dataset, **asdict(cfg.data)})


def eval_nll(
    checkpoint: str | Path,
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    device: str | None = None,
    batch_size: int = 500,
    seed: int = 0,
    importance_samples: int = 0,
) -> dict[str, float]:
    """The variational bound (nats per image) of a DRAW checkpoint or weights file on
    binarized MNIST ``split``, and with ``importance_samples`` K > 0 the importance-sampled
    NLL estimate ``nll_is_nats``."""
    dev = resolve_device(device)
    model, _ = load_model(checkpoint, dev, kind="draw")
    data, source = binarized_mnist(split, data_dir)
    torch.manual_seed(seed)
    metrics = evaluate(model, data.to(dev), batch_size)
    result = {"nll_bound_nats": metrics["loss"], "recon_nats": metrics["recon"], "kl_nats": metrics["kl"],
              "n_images": float(len(data)), "binarization": source}
    if importance_samples:
        from draw.likelihood import importance_sampled_nll

        result["nll_is_nats"] = importance_sampled_nll(model, data.to(dev), importance_samples)
    return result


class EvalError(ValueError):
    """``eval classifier`` cannot evaluate as asked; ``param`` names the option at fault."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _trained_on(path: Path, record: dict) -> tuple[object, int, int | None, int]:
    """The cluttered data a classifier file was trained on: generator options, data seed, the
    test set's size (None: the whole cached split) and the training seed. A weights file
    written by ``bench cluttered`` holds them; a checkpoint reads them beside it (``run.json``
    of a bench's run folder, ``config.json`` of a ``train classifier`` folder)."""
    from benchmark.cluttered import ClutteredData
    from datasets.cluttered import ClutterParams

    train_seed = int((record.get("train") or record.get("train_config") or {}).get("seed", 0))
    def beside(name: str) -> dict | None:
        try:
            return json.loads((path.parent / name).read_text())["data"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    found = [record.get("data")] if path.suffix == ".safetensors" else [beside("run.json"), beside("config.json")]
    for data in filter(None, found):
        try:
            if "clutter" in data:  # a `train classifier` folder
                return ClutterParams(**data["clutter"]), int(data["seed"]), None, train_seed
            d = ClutteredData(**data)  # a bench's weights or run folder
            return d.params(), d.seed, d.n_test, train_seed
        except (KeyError, TypeError, ValueError):
            continue
    raise EvalError("CHECKPOINT", f"{path} does not say which cluttered data it was trained on (a bench's weights "
                                  "file, or a checkpoint beside its run.json or config.json, does)")


def eval_classifier(
    weights: str | Path,
    *,
    n: int | None = None,
    mc_samples: int = 1,
    seed: int | None = None,
    data_dir: str | Path | None = None,
    device: str | None = None,
    batch_size: int = 500,
) -> dict[str, object]:
    """Test error of a trained classifier (attention, RAM or a convolutional baseline: a
    bench's weights file or a checkpoint) on the cluttered MNIST it was trained on: the
    images of its bench's test set. ``n``: the first n images (default: the bench's
    test-set size). ``mc_samples``: RAM's location rollouts averaged per image.
    ``seed``: the RNG seed of RAM's sampled glimpses (default: the bench's, so that the
    bench's test error is reproduced)."""
    from benchmark.classifiers import eval_seed, on_target_pct, predict

    path = Path(weights)
    dev = resolve_device(device)
    model, record = load_model(path, dev)
    if record["kind"] not in ("classifier", "ram", "conv"):
        raise EvalError("CHECKPOINT", f"{path} holds a {record['kind']!r} model, not a classifier "
                                      "(`eval nll` evaluates DRAW)")
    if mc_samples != 1 and record["kind"] != "ram":
        raise EvalError("--mc-samples", f"{mc_samples} rollouts: only RAM samples its glimpses; {path} holds a "
                                        f"{record['kind']!r} model, which is deterministic")
    params, data_seed, n_default, train_seed = _trained_on(path, record)
    data, positions = cluttered_split("test", params, data_seed, n if n is not None else n_default, data_dir)
    if record["kind"] == "ram":
        model.mc_samples = mc_samples
    seed = eval_seed(train_seed) if seed is None else seed
    torch.manual_seed(seed)
    pred, _, windows = predict(model, data.to(dev), batch_size)
    labels = data.y.numpy()
    return {"kind": record["kind"], "n_images": len(labels), "mc_samples": mc_samples, "seed": seed,
            "error_pct": 100.0 * float((pred != labels).mean()),
            "on_target_pct": None if windows is None else on_target_pct(windows, positions, params.digit_size)}


def sample(checkpoint: str | Path, out: str | Path, *, n: int = 64, seed: int = 0,
           device: str | None = None) -> dict[str, Path]:
    """Draw ``n`` samples from a DRAW checkpoint or weights file: a PNG grid, a GIF of the
    drawing and the step-by-step figure with write windows."""
    from benchmark.pictures import drawing_sequence, save_drawing_gif, save_grid

    dev = resolve_device(device)
    model, _ = load_model(checkpoint, dev, kind="draw")
    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator(device=dev).manual_seed(seed)
    gen = model.generate(n, device=dev, generator=g)
    k = min(n, 8)
    return {
        "grid": save_grid(gen.canvases[-1], out / "samples.png"),
        "gif": save_drawing_gif(gen.canvases, out / "drawing.gif"),
        "sequence": drawing_sequence(gen.canvases[:, :k], gen.write_params[:, :k] if gen.write_params is not None
                                     else None, model.cfg.write_n, out / "drawing_steps.png"),
    }
