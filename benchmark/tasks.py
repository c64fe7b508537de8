"""Plain functions behind ``cli.py train draw | classifier``, ``eval nll`` and ``sample``.

They load data, build models, call :func:`draw.train.train`, and write files; the CLI
only parses options.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from draw.config import DrawConfig, TrainConfig
from draw.fast import SpeedConfig
from draw.model import DRAW
from draw.train import (
    TensorData,
    TrainResult,
    default_device,
    evaluate,
    is_main_process,
    load_model,
    resolve_device,
    train,
)


def binarized_mnist(split: str, data_dir: str | Path | None = None) -> tuple[TensorData, str]:
    """Binarized MNIST ``split`` as tensors (values 0/1, scale 1) and the binarization source."""
    from datasets.mnist import load_binarized_mnist

    x, source = load_binarized_mnist(split, data_dir)
    return TensorData(torch.from_numpy(x), None, scale=1.0), source


def write_run_config(out: Path, **sections: object) -> None:
    """``config.json`` in a run folder: the model and training configs as JSON."""
    from benchmark.report import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(sections, indent=2, default=str) + "\n")


def cluttered_data(
    split: str, params: object, seed: int = 0, n: int | None = None, data_dir: str | Path | None = None
) -> TensorData:
    """A cached cluttered-MNIST split (see :mod:`datasets.cluttered`) as tensors."""
    from datasets.cluttered import cached_split

    ds = cached_split(split, params, seed=seed, n=n, data_dir=data_dir)
    return TensorData(torch.from_numpy(ds.images), torch.from_numpy(ds.labels))


def fresh_cluttered(
    params: object, seed: int = 0, n: int | None = None, data_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> Callable[[int], TensorData]:
    """``epoch -> TensorData``: new clutter for every training epoch (for ``train(epoch_data=...)``).

    Epoch ``e`` re-draws targets' order and positions and the distractors from the same
    50,000 training digits, from the stream of split name ``"train/epoch<e>"``: a
    deterministic function of (seed, e), never the validation or test digits. A fixed
    set of 60,000 images lets a large model memorise its clutter (the RAM paper's conv
    baseline reached train loss 0.03 at 56% validation error on one here).
    """
    from datasets.cluttered import SPLIT_SIZES, make_cluttered
    from datasets.mnist import load_mnist

    digits, labels = load_mnist("train", data_dir=data_dir)
    size = SPLIT_SIZES["train"] if n is None else n

    def data(epoch: int) -> TensorData:
        ds = make_cluttered(digits, labels, size, params, seed, split=f"train/epoch{epoch}")
        return TensorData(torch.from_numpy(ds.images), torch.from_numpy(ds.labels)).to(device)

    return data


def train_classifier(
    model: torch.nn.Module,
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
) -> TrainResult:
    """Train a classifier (attention or conv) on cluttered MNIST; validation error picks ``best.pt``.
    ``speed``: the speed switches (default: the plain eager reference). ``fresh_clutter``:
    new clutter every epoch (see :func:`fresh_cluttered`) instead of one fixed set."""
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
                 progress=progress, desc=type(model).__name__, speed=speed, epoch_data=epoch_data)


def train_draw(
    model_cfg: DrawConfig,
    train_cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    data_dir: str | Path | None = None,
    device: str | None = None,
    n_train: int | None = None,
    progress: bool = True,
    speed: SpeedConfig | None = None,
) -> TrainResult:
    """Train DRAW on binarized MNIST (50k train, bound on 10k validation picks ``best.pt``).
    ``speed``: the speed switches (default: the plain eager reference)."""
    out = Path(out)
    train_data, source = binarized_mnist("train", data_dir)
    valid_data, _ = binarized_mnist("valid", data_dir)
    if n_train is not None:
        train_data = TensorData(train_data.x[:n_train], None, 1.0)
    dev = resolve_device(device)
    speed = speed or SpeedConfig()
    if not (resume and (out / "config.json").exists()) and is_main_process():  # a refused resume must not rewrite it
        write_run_config(out, kind="draw", model=asdict(model_cfg), train=asdict(train_cfg), data={"binarization": source},
                         speed=asdict(speed))
    torch.manual_seed(train_cfg.seed)  # the initial weights, too, are a function of --seed
    model = DRAW(model_cfg)
    return train(model, train_data.to(dev), valid_data.to(dev), train_cfg, out, resume=resume, device=dev,
                 select="loss", progress=progress, desc="DRAW" if model_cfg.attention else "DRAW (no attention)",
                 speed=speed)


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
    """The variational bound (nats per image) of a DRAW checkpoint on binarized MNIST ``split``,
    and with ``importance_samples`` K > 0 the importance-sampled NLL estimate ``nll_is_nats``."""
    dev = torch.device(device) if device else default_device()
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


def sample(checkpoint: str | Path, out: str | Path, *, n: int = 64, seed: int = 0, device: str | None = None) -> dict[str, Path]:
    """Draw ``n`` samples from a DRAW checkpoint: a PNG grid, a GIF of the drawing and the
    step-by-step figure with write windows."""
    from draw.visualize import drawing_sequence, save_drawing_gif, save_grid

    dev = torch.device(device) if device else default_device()
    model, _ = load_model(checkpoint, dev, kind="draw")
    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator(device=dev).manual_seed(seed)
    gen = model.generate(n, device=dev, generator=g)
    paths = {
        "grid": save_grid(gen.canvases[-1], out / "samples.png"),
        "gif": save_drawing_gif(gen.canvases, out / "drawing.gif"),
        "sequence": drawing_sequence(gen.canvases[:, : min(n, 8)],
                                     gen.write_params[:, : min(n, 8)] if gen.write_params is not None else None,
                                     model.cfg.write_n, out / "drawing_steps.png"),
    }
    return paths
