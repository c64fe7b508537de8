"""drawbench command line: ``python cli.py --help``.

This file declares options and turns library errors into clear messages; the work is
done by plain functions in ``draw``, ``datasets`` and ``benchmark``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
from pathlib import Path

import click

# OpenMP threads spin while they wait for work. When another process holds a core of a
# 2-core machine, the default spinning made a small training step ~100x slower (2 s instead
# of 19 ms); fully passive waiting halved the speed on an idle machine (1161 vs 2323
# images/s, attention classifier, batch 64). A short spin keeps ~97% of the idle speed
# (2243 images/s) and cut the loaded step to ~120 ms. Set before torch is imported; a
# user's own setting wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# torch.compile on a machine without CUDA logs "No CUDA runtime is found" from
# torch.utils.cpp_extension at every first compile: true, expected, and not the user's concern.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

PRESETS = ("smoke", "quick", "paper")
# The degradations of `bench robustness` (datasets.degrade.AXES; kept here so --help imports no numpy).
AXIS_NAMES = ("clutter", "distractor_size", "contrast", "gaussian", "salt_pepper", "occlusion")


def _comma_list(text: str, allowed, what: str, hint: str, allow_empty: bool = False) -> list[str]:
    """Split a comma-separated option into names, each one of ``allowed`` (a usage error otherwise)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = sorted(set(names) - set(allowed)) or ([] if names or allow_empty else ["(none)"])
    if bad:
        raise click.BadParameter(f"unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}", param_hint=hint)
    return names


def _data_dir_option(f):
    return click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="DRAWBENCH_DATA", default=None,
        help="Folder with MNIST files placed by hand, and where caches go [env DRAWBENCH_DATA; default ~/.cache/drawbench].",
    )(f)


def _user_model_options(f):
    f = click.option("--checkpoint", "checkpoints", multiple=True, metavar="NAME=PATH",
                     help="Evaluate the user model NAME with these weights (its module's state dict, .pt or "
                          ".safetensors) instead of training it. Repeatable.")(f)
    return click.option("--model-spec", "model_specs", multiple=True, metavar="[NAME=]module.path:factory",
                        help="A classifier of your own, trained and tested like the shipped ones: "
                             "factory(image_shape, n_classes) returns a torch.nn.Module mapping a (batch, C, H, W) "
                             "float batch to logits. Or the name of a 'drawbench.models' entry point of an "
                             "installed package. Repeatable; NAME labels it in the tables.")(f)


def _user_models(model_specs, checkpoints):
    """(name, factory) pairs and {name: weights} from --model-spec and --checkpoint."""
    from benchmark.classifiers import parse_model_specs

    try:
        pairs = parse_model_specs(list(model_specs))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--model-spec") from None
    weights = {}
    for c in checkpoints:
        name, sep, path = c.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise click.BadParameter(f"{c!r}: give NAME=PATH of an existing weights file", param_hint="--checkpoint")
        weights[name] = path
    return pairs, weights


def _classifier_models_option(f):
    f = _user_model_options(f)
    f = click.option("--mc-samples", type=click.IntRange(1, 100), default=1,
                     help="RAM's location rollouts averaged per test image (test time only; the table says which).")(f)
    return click.option("--models", default="attention,ram,conv2,resnet",
                        help="Comma-separated subset of: attention, ram, conv2, resnet, resnet18 (Table 1's "
                             "Differentiable RAM and RAM, the RAM paper's 2-layer conv, a small ResNet).")(f)


def _device_option(f):
    return click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                        help="Where to run [default: cuda when available, else cpu].")(f)


def _friendly_errors(f):
    """Library errors become one-line messages with a non-zero exit, never a traceback."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        from benchmark.config import ConfigError
        from benchmark.report import OutputDirError
        from benchmark.runner import BenchError
        from benchmark.tasks import EvalError, LikeError
        from datasets.cluttered import ClutterParamError, CorruptDatasetError
        from datasets.mnist import MnistDataFolderError, MnistNotFoundError
        from datasets.natural import NaturalDataNotFoundError
        from draw.checkpoint import CheckpointError
        from draw.interrupt import Interrupted
        from draw.plugin import PluginError
        from draw.train import NonFiniteError, TrainSettingError

        try:
            return f(*args, **kwargs)
        except ClutterParamError as e:
            raise click.BadParameter(str(e), param_hint="--" + e.param.replace("_", "-")) from None
        except (OutputDirError, BenchError) as e:
            raise click.BadParameter(str(e), param_hint="--out") from None
        except (LikeError, ConfigError) as e:
            raise click.BadParameter(str(e), param_hint="--like") from None
        except PluginError as e:
            raise click.BadParameter(str(e), param_hint="--model-spec") from None
        except CheckpointError as e:
            raise click.BadParameter(str(e), param_hint="CHECKPOINT") from None
        except EvalError as e:
            raise click.BadParameter(str(e), param_hint=e.param) from None
        except TrainSettingError as e:
            raise click.BadParameter(str(e), param_hint="--" + e.param.replace("_", "-")) from None
        except (MnistNotFoundError, MnistDataFolderError, NaturalDataNotFoundError, CorruptDatasetError,
                NonFiniteError) as e:
            raise click.ClickException(str(e)) from None
        except Interrupted as e:  # SIGTERM / Ctrl-C: checkpointed; exit as the signal would
            err = click.ClickException(str(e))
            err.exit_code = 128 + e.signum
            raise err from None
        except OSError as e:  # full disk, unwritable folder, ...
            where = f"{e.filename}: " if e.filename else ""
            hint = ("; free some space, then rerun the same command (train: add --resume)"
                    if e.errno == errno.ENOSPC else "")
            raise click.ClickException(f"{where}{e.strerror or e}{hint}") from None

    return wrapper


def _writable_dir(folder: Path, hint: str) -> None:
    """Create ``folder`` (with parents) and check that a file can be written in it: a usage
    error naming ``hint`` before any work, instead of a failure at the first save."""
    import tempfile

    if folder.exists() and not folder.is_dir():
        raise click.BadParameter(f"{folder} is a file, not a folder", param_hint=hint)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise click.BadParameter(f"cannot write into {folder}: {e.strerror or e}", param_hint=hint) from None


def _run_dir(out: Path, resume: bool) -> None:
    """A writable run folder; one that holds a checkpoint needs --resume (a fresh run would
    overwrite the work of the run that was killed)."""
    _writable_dir(out, "--out")
    if not resume and (out / "last.pt").exists():
        raise click.BadParameter(f"{out} already holds a run ({out / 'last.pt'}); add --resume to continue it, "
                                 "or choose another --out (or delete that folder) to start afresh", param_hint="--out")


def _check_device(device: str | None) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _choose_preset(preset: str | None, device: str) -> str:
    chosen = preset or ("paper" if device == "cuda" else "quick")
    how = "chosen" if preset else "default for this device"
    click.echo(f"preset: {chosen} ({how}); device: {device}")
    return chosen


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def cli() -> None:
    """drawbench: DRAW (Gregor et al., 2015), attention classifiers on cluttered MNIST,
    and benchmarks against convolutional baselines."""
    import torch

    torch.set_num_threads(int(os.environ.get("DRAWBENCH_THREADS", torch.get_num_threads())))


# -- data ----------------------------------------------------------------------------------
@cli.group()
def data() -> None:
    """Fetch, verify and generate data sets."""


@data.command("mnist")
@_data_dir_option
@click.option("--force", is_flag=True, help="Ignore the cache and fetch again.")
@_friendly_errors
def data_mnist(data_dir: Path | None, force: bool) -> None:
    """Fetch and verify MNIST (50k train / 10k valid / 10k test); print source and checksums."""
    from datasets.mnist import fetch_mnist

    info = fetch_mnist(data_dir, force=force)
    click.echo(f"source: {info.source}")
    click.echo(f"cache:  {info.cache_path}")
    for split, size in info.sizes.items():
        click.echo(f"{split:>6}: {size} images")
    for name, digest in info.sha256.items():
        click.echo(f"sha256 {name}: {digest}")


@data.command("cluttered")
@click.option("--canvas", type=int, default=100, help="Canvas side in pixels (>= 28).")
@click.option("--distractors", type=int, default=8, help="Number of distractor crops per image.")
@click.option("--distractor-size", type=int, default=8, help="Side of each distractor crop (1..28).")
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test")
@click.option("--seed", type=click.IntRange(min=0), default=0)
@click.option("--n", "n", type=click.IntRange(min=1), default=None, help="Number of images [default: 60000 train, 10000 valid/test].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output .npz file.")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write a PNG grid.")
@_data_dir_option
@_friendly_errors
def data_cluttered(canvas, distractors, distractor_size, split, seed, n, out, preview, data_dir) -> None:
    """Generate cluttered (or, with --distractors 0, translated) MNIST into an .npz file."""
    from datasets.cluttered import ClutterParams, make_split, preview_grid, save_npz

    params = ClutterParams(canvas=canvas, distractors=distractors, distractor_size=distractor_size)
    params.validate()
    _writable_dir(out.parent, "--out")
    if preview is not None:
        _writable_dir(preview.parent, "--preview")
    ds = make_split(split, params, seed=seed, n=n, data_dir=data_dir)
    digest = save_npz(ds, out)
    click.echo(f"wrote {out}: {len(ds.labels)} images {canvas}x{canvas}, sha256 {digest}")
    if preview is not None:
        preview_grid(ds, preview)
        click.echo(f"wrote {preview}")


@data.command("export")
@click.argument("bench_name", metavar="cluttered|robustness", type=click.Choice(["cluttered", "robustness"]))
@click.option("--preset", type=click.Choice(PRESETS), default="paper",
              help="The bench preset whose test sets to write (cluttered: quick and paper share theirs).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@_data_dir_option
@_friendly_errors
def data_export(bench_name, preset, out, data_dir) -> None:
    """Write the exact test images a bench evaluates on (frozen test sets: uint8 images and int64
    labels in .npz files numpy.load reads) and manifest.json (generator parameters, seeds, the
    MNIST hashes, each file's SHA-256 and its arrays' SHA-256, as the bench records them in
    test_sets.json). The test sets do not depend on --glimpses or the models."""
    from datasets import export

    _writable_dir(out, "--out")
    if bench_name == "cluttered":
        from benchmark.cluttered import PRESETS as CLUTTERED

        d = CLUTTERED[preset].data
        doc = export.export_cluttered(out, canvas=d.canvas, distractors=d.distractors,
                                      distractor_size=d.distractor_size, seed=d.seed, n=d.n_test, preset=preset,
                                      data_dir=data_dir)
    else:
        from benchmark.robustness import bench_config

        e = bench_config(preset, models=["conv2"]).eval
        doc = export.export_robustness(out, n=e.n, canvas=e.canvas, seed=e.seed, split=e.split,
                                       distractors=e.distractors, distractor_size=e.distractor_size,
                                       max_distractors=e.max_distractors, axes=e.axes, preset=preset,
                                       data_dir=data_dir)
    for f in doc["files"]:
        click.echo(f"wrote {out / f['file']}: {f['n']} images, arrays sha256 {f['arrays_sha256']}")
    click.echo(f"wrote {out / export.MANIFEST_FILE}")


# -- train ---------------------------------------------------------------------------------
def _train_options(f):
    for opt in reversed([
        click.option("--epochs", type=click.IntRange(min=1), default=10),
        click.option("--batch-size", type=click.IntRange(min=1), default=64),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3),
        click.option("--schedule", type=click.Choice(["constant", "cosine"]), default="constant"),
        click.option("--warmup-steps", type=click.IntRange(min=0), default=0, help="Linear learning-rate warm-up."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0),
        click.option("--adam-beta2", type=click.FloatRange(0, 1, max_open=True), default=0.999,
                     help="Adam's second-moment decay (the attention classifier's presets use 0.99)."),
        click.option("--grad-clip", type=click.FloatRange(min=0), default=10.0, help="Max gradient norm (0: off)."),
        click.option("--seed", type=click.IntRange(min=0), default=0),
        click.option("--checkpoint-every", type=click.IntRange(min=0), default=500, help="Steps between checkpoints (and one per epoch)."),
        click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps (smoke runs; the schedule ends there)."),
        click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Stop after this many minutes of this invocation, checkpointed; --resume continues."),
        click.option("--like", "like_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                     help="Train exactly as the bench folder LIKE trained --model (its model, training, data and "
                          "speed settings; --seed, --out, --resume, --device, --max-minutes still apply)."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder for checkpoints and config."),
        click.option("--resume", is_flag=True, help="Continue from OUT/last.pt exactly where it stopped."),
        _device_option,
        _data_dir_option,
    ]):
        f = opt(f)
    return f


def _speed_options(f):
    for opt in reversed([
        click.option("--fused/--no-fused", default=True,
                     help="Fused kernels: packed matrix products, one-pass filterbanks, hand-written LSTM cell, "
                          "fused Adam (same mathematics; --no-fused runs the plain eager reference)."),
        click.option("--compile/--no-compile", "compile_", default=False,
                     help="torch.compile the unrolled glimpse loop (the first step compiles: about a minute "
                          "for DRAW on a 2-core CPU)."),
        click.option("--compile-unroll", type=click.IntRange(min=0), default=8,
                     help="Time steps per compiled region (0: all T in one graph, the longest compile)."),
        click.option("--cuda-graphs", is_flag=True, help="Replay the compiled steps as CUDA graphs (CUDA only; implies --compile)."),
        click.option("--amp", type=click.Choice(["off", "bf16"]), default="off",
                     help="bf16 autocast for the matrix products (state and losses stay float32)."),
        click.option("--tf32", is_flag=True, help="TF32 matrix products (CUDA only)."),
    ]):
        f = opt(f)
    return f


# The options --like replaces (the others stay the user's).
_LIKE_KEEPS = {"seed", "out", "resume", "device", "data_dir", "max_minutes", "like_dir", "model", "checkpoint_every"}


def _check_like(like_dir: Path | None) -> None:
    """With --like, no option that --like sets may be given too (a usage error naming it)."""
    if like_dir is None:
        return
    ctx = click.get_current_context()
    given = sorted(name for name in ctx.params if name not in _LIKE_KEEPS
                   and ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None))
    if given:
        raise click.BadParameter(f"--like takes these settings from {like_dir}; drop "
                                 + ", ".join("--" + g.replace("_", "-") for g in given), param_hint="--like")


def _speed_config(device: str, fused, compile_, compile_unroll, cuda_graphs, amp, tf32):
    from draw.fast import SpeedConfig

    if cuda_graphs and device != "cuda":
        raise click.BadParameter("CUDA graphs need --device cuda", param_hint="--cuda-graphs")
    return SpeedConfig(fused=fused, compile=compile_, compile_unroll=compile_unroll, cuda_graphs=cuda_graphs,
                       amp=amp, tf32=tf32)


def _echo(message: str) -> None:
    """click.echo on rank 0 only (under torchrun every rank runs the command)."""
    from draw.distributed import is_main_process

    if is_main_process():
        click.echo(message)


def _train_config(epochs, batch_size, lr, schedule, warmup_steps, weight_decay, adam_beta2, grad_clip, seed,
                  checkpoint_every, max_steps):
    from draw.train import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, schedule=schedule, warmup_steps=warmup_steps,
                       weight_decay=weight_decay, betas=(0.9, adam_beta2), grad_clip=grad_clip, seed=seed,
                       checkpoint_every=checkpoint_every, max_steps=max_steps)


def _report_training(result, out: Path) -> None:
    if result.history:
        last = result.history[-1]
        shown = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k.startswith(("train_", "valid_")))
        _echo(f"epoch {last['epoch']}: {shown}")
    _echo(f"{result.images_per_s:.0f} images/s over {result.train_seconds:.0f} s")
    if not result.finished:
        _echo(f"stopped by --max-minutes at step {result.steps}; add --resume to continue")
    _echo(f"wrote {result.last_path} and {result.best_path} (best {result.best.get('metric')} "
          f"{result.best.get('value', float('nan')):.4g} at epoch {result.best.get('epoch')})")


@cli.group("train")
def train_group() -> None:
    """Train a model (checkpointed; --resume continues a killed run)."""


@train_group.command("draw")
@click.option("--T", "T", type=click.IntRange(min=1), default=64, help="Glimpses (time steps).")
@click.option("--read-n", type=click.IntRange(min=1), default=2, help="Read patch N x N.")
@click.option("--write-n", type=click.IntRange(min=1), default=5, help="Write patch N x N.")
@click.option("--lstm-size", type=click.IntRange(min=1), default=256, help="Units of LSTM_enc and LSTM_dec.")
@click.option("--z-size", type=click.IntRange(min=1), default=100)
@click.option("--no-attention", is_flag=True, help="DRAW without attention: read [x, x^], write W(h_dec).")
@click.option("--window-init", type=click.Choice(["zero", "smooth"]), default="zero",
              help="Initial attention windows (see DrawConfig.window_init; the benches use smooth).")
@click.option("--n-train", type=click.IntRange(min=1), default=None, help="Training images [default: all 50,000].")
@click.option("--n-valid", type=click.IntRange(min=1), default=None, help="Validation images [default: all 10,000].")
@click.option("--model", default=None, help="With --like: the bench's model to train again (draw, draw-noattn).")
@_train_options
@_speed_options
@_friendly_errors
def train_draw_cmd(T, read_n, write_n, lstm_size, z_size, no_attention, window_init, n_train, n_valid, model, out,
                   resume, device, data_dir, max_minutes, like_dir, fused, compile_, compile_unroll, cuda_graphs, amp,
                   tf32, **train_kw) -> None:
    """Train DRAW on binarized MNIST (defaults: the paper's MNIST model, Table 3), or with
    --like any DRAW a `bench nll` folder trained."""
    from dataclasses import replace

    from benchmark.tasks import like, train_draw
    from draw.model import DrawConfig

    _check_like(like_dir)
    dev = _check_device(device)
    dataset, data_seed = "mnist", 0
    if like_dir is not None:
        r = like(like_dir, model or "draw")
        if r.kind != "draw":
            raise click.BadParameter(f"{like_dir} model {model!r} is a {r.kind} model; use `train classifier`",
                                     param_hint="--model")
        cfg, tcfg, speed = DrawConfig(**r.model_config), replace(r.train, seed=train_kw["seed"]), r.speed
        dataset, n_train, n_valid, data_seed = r.data["dataset"], r.data["n_train"], r.data["n_valid"], r.data["seed"]
        tcfg = replace(tcfg, checkpoint_every=train_kw["checkpoint_every"])
    else:
        if model is not None:
            raise click.BadParameter("--model needs --like", param_hint="--model")
        speed = _speed_config(dev, fused, compile_, compile_unroll, cuda_graphs, amp, tf32)
        cfg = DrawConfig(T=T, read_n=read_n, write_n=write_n, lstm_size=lstm_size, z_size=z_size,
                         attention=not no_attention, window_init=window_init)
        tcfg = _train_config(**train_kw)
    _echo(f"DRAW {'with' if cfg.attention else 'without'} attention on {dataset}: {cfg.describe()}; device {dev}; "
          f"speed {speed.label()}")
    _run_dir(out, resume)
    result = train_draw(cfg, tcfg, out, resume=resume, data_dir=data_dir, device=dev, speed=speed, n_train=n_train,
                        n_valid=n_valid, dataset=dataset, data_seed=data_seed, max_minutes=max_minutes)
    _report_training(result, out)


@train_group.command("classifier")
@click.option("--model", default="attention",
              help="attention, ram, conv2, resnet or resnet18; with --like, any model of that bench folder.")
@click.option("--glimpses", type=click.IntRange(min=1), default=8)
@click.option("--read-n", type=click.IntRange(min=1), default=12)
@click.option("--lstm-size", type=click.IntRange(min=1), default=256, help="LSTM units.")
@click.option("--width", type=click.IntRange(min=1), default=24, help="Base width of the small ResNet.")
@click.option("--loc-std", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="RAM: the std of its Gaussian location policy, in units of half the image side.")
@click.option("--reinforce-into-core", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="RAM: the share of REINFORCE's gradient let into the core and glimpse networks (0: the location "
                   "network alone learns from it; 1: the RAM paper's hybrid loss; the paper preset of `bench "
                   "cluttered` uses 0.1).")
@click.option("--core", type=click.Choice(["rnn", "lstm"]), default="rnn", show_default=True,
              help="RAM: its core network, the RAM paper's rectifier units (rnn) or an LSTM (the paper preset of "
                   "`bench cluttered` uses lstm).")
@click.option("--canvas", type=int, default=100)
@click.option("--distractors", type=int, default=8)
@click.option("--distractor-size", type=int, default=8)
@click.option("--n-train", type=click.IntRange(min=1), default=None, help="Training images [default 60000].")
@click.option("--n-valid", type=click.IntRange(min=1), default=None, help="Validation images [default 10000].")
@click.option("--data-seed", type=click.IntRange(min=0), default=0, help="Seed of the generated cluttered sets.")
@click.option("--fresh-clutter/--fixed-clutter", default=True,
              help="Draw new clutter (positions, distractors) from the training digits every epoch, or train on "
                   "one fixed set.")
@_train_options
@_speed_options
@_friendly_errors
def train_classifier_cmd(model, glimpses, read_n, lstm_size, width, loc_std, reinforce_into_core, core, canvas, distractors,
                         distractor_size, n_train, n_valid, data_seed, fresh_clutter, out, resume, device, data_dir,
                         max_minutes, like_dir, fused, compile_, compile_unroll, cuda_graphs, amp, tf32, **train_kw) -> None:
    """Train a classifier on cluttered MNIST (the attention model of section 4.1, or a conv
    baseline), or with --like any model a `bench cluttered` folder trained."""
    from dataclasses import replace

    import torch

    from benchmark.classifiers import NAMES, Sizes, classifier_spec
    from benchmark.tasks import like, train_classifier
    from datasets.cluttered import ClutterParams
    from draw.registry import build_model

    _check_like(like_dir)
    dev = _check_device(device)
    ctx = click.get_current_context()
    for name in ("loc_std", "reinforce_into_core", "core"):  # with --like, _check_like refuses them
        if model != "ram" and ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None):
            raise click.BadParameter(f"sets RAM's networks, not {model}'s; give it with --model ram",
                                     param_hint="--" + name.replace("_", "-"))
    if like_dir is not None:
        r = like(like_dir, model)
        if r.kind == "draw":
            raise click.BadParameter(f"{like_dir} model {model!r} is a DRAW model; use `train draw`", param_hint="--model")
        d = r.data
        kind, config, speed = r.kind, r.model_config, r.speed
        tcfg = replace(r.train, seed=train_kw["seed"], checkpoint_every=train_kw["checkpoint_every"])
        canvas, distractors, distractor_size = d["canvas"], d["distractors"], d["distractor_size"]
        n_train, n_valid, data_seed, fresh_clutter = d["n_train"], d["n_valid"], d["seed"], d["fresh_clutter"]
    else:
        if model not in NAMES:
            raise click.BadParameter(f"unknown model {model!r}; choose from {', '.join(NAMES)}", param_hint="--model")
        speed = _speed_config(dev, fused, compile_, compile_unroll, cuda_graphs, amp, tf32)
        tcfg = _train_config(**train_kw)
        spec = classifier_spec(model, (1, canvas, canvas), tcfg, glimpses=glimpses,
                               sizes=Sizes(read_n=read_n, lstm_size=lstm_size, resnet_width=width,
                                           ram_loc_std=loc_std, ram_reinforce_into_core=reinforce_into_core,
                                           ram_core=core))
        kind, config = spec.kind, spec.config
    params = ClutterParams(canvas=canvas, distractors=distractors, distractor_size=distractor_size)
    torch.manual_seed(tcfg.seed)  # the initial weights, too, are a function of --seed
    net = build_model(kind, config)
    _echo(f"{model} ({kind}) on {canvas}x{canvas} cluttered MNIST; device {dev}; speed {speed.label()}")
    _run_dir(out, resume)
    result = train_classifier(net, tcfg, out, params, data_seed=data_seed, n_train=n_train, n_valid=n_valid,
                              resume=resume, data_dir=data_dir, device=dev, speed=speed, fresh_clutter=fresh_clutter,
                              max_minutes=max_minutes)
    _report_training(result, out)


# -- eval / sample -------------------------------------------------------------------------
@cli.group("eval")
def eval_group() -> None:
    """Evaluate a trained checkpoint."""


@eval_group.command("nll")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test")
@click.option("--batch-size", type=click.IntRange(min=1), default=500)
@click.option("--importance-samples", "K", type=click.IntRange(min=0), default=0,
              help="Also estimate the NLL by importance sampling with K samples per image (0: bound only).")
@_device_option
@_data_dir_option
@_friendly_errors
def eval_nll_cmd(checkpoint, split, batch_size, K, device, data_dir) -> None:
    """Negative log-likelihood of a DRAW CHECKPOINT on binarized MNIST, nats per image."""
    from benchmark.tasks import eval_nll

    r = eval_nll(checkpoint, split=split, data_dir=data_dir, device=_check_device(device), batch_size=batch_size,
                 importance_samples=K)
    click.echo(f"{split}: NLL bound {r['nll_bound_nats']:.2f} nats/image "
               f"(reconstruction {r['recon_nats']:.2f} + KL {r['kl_nats']:.2f}) over {int(r['n_images'])} images; "
               f"binarization: {r['binarization']}")
    if K:
        click.echo(f"{split}: NLL importance-sampled estimate (K={K}) {r['nll_is_nats']:.2f} nats/image")


@eval_group.command("classifier")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--n", "n", type=click.IntRange(min=1), default=None,
              help="Evaluate the first N test images [default: the bench's test set].")
@click.option("--mc-samples", type=click.IntRange(1, 100), default=1,
              help="RAM's location rollouts averaged per image (RAM only).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="RNG seed of RAM's sampled glimpses [default: the bench's, which reproduces its test error].")
@click.option("--batch-size", type=click.IntRange(min=1), default=500)
@_device_option
@_data_dir_option
@_friendly_errors
def eval_classifier_cmd(checkpoint, n, mc_samples, seed, batch_size, device, data_dir) -> None:
    """Test error of a trained classifier CHECKPOINT (a bench's weights/*.safetensors, or a
    .pt checkpoint of a bench's or `train classifier`'s run) on the cluttered MNIST test set
    it was trained for."""
    from benchmark.tasks import eval_classifier

    r = eval_classifier(checkpoint, n=n, mc_samples=mc_samples, seed=seed, data_dir=data_dir,
                        device=_check_device(device), batch_size=batch_size)
    m = r["mc_samples"]
    rollouts = (f", {m} location rollout{'s averaged' if m > 1 else ''}, seed {r['seed']}" if r["kind"] == "ram"
                else "")
    click.echo(f"test error {r['error_pct']:.2f}% over {r['n_images']} images ({r['kind']}{rollouts})")
    if r["on_target_pct"] is not None:
        click.echo(f"glimpses on the digit: {r['on_target_pct']:.1f}%")


@cli.command("sample")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--n", "n", type=click.IntRange(1, 1024), default=64, help="Number of samples.")
@click.option("--seed", type=click.IntRange(min=0), default=0)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@_device_option
@_friendly_errors
def sample_cmd(checkpoint, n, seed, out, device) -> None:
    """Sample from a DRAW CHECKPOINT: PNG grid, drawing GIF, step-by-step figure."""
    from benchmark.tasks import sample

    for name, path in sample(checkpoint, out, n=n, seed=seed, device=_check_device(device)).items():
        click.echo(f"wrote {name}: {path}")


# -- benchmarks ----------------------------------------------------------------------------
def _bench_options(f):
    """The options every bench shares (declared once)."""
    for opt in reversed([
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Output folder [default: runs/<preset>/<bench>; the canonical results/ only when named "
                          "here]."),
        click.option("--overwrite", is_flag=True,
                     help="Replace the results of a different config in --out (checkpoints whose settings did not "
                          "change are kept)."),
        click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Stop training after this many minutes of this invocation, checkpointed; rerun the same "
                          "command to continue."),
        click.option("--eager", is_flag=True,
                     help="Train with the plain eager reference instead of the fast path (CPU: fused + compiled, "
                          "bf16 where the processor has bf16 matrix instructions; CUDA: fused + CUDA graphs + bf16). "
                          "config.json records which path ran."),
        _device_option,
    ]):
        f = opt(f)
    return f


def _bench_speed(eager: bool, device: str):
    """The training path of a bench: the device's fast path, or with --eager the reference."""
    from draw.fast import SpeedConfig, default_speed

    speed = SpeedConfig() if eager else default_speed(device)
    click.echo(f"training path: {speed.label()}" + ("" if eager else " (--eager for the plain reference)"))
    return speed


def _run_bench(bench, out: Path, overwrite: bool, device: str, data_dir, max_minutes) -> None:
    from benchmark.runner import run_bench

    run_bench(bench, out, overwrite=overwrite, device=device, data_dir=data_dir, echo=click.echo,
              max_minutes=max_minutes)


@cli.group()
def bench() -> None:
    """Benchmarks: each writes results.csv, table.md, config.json and plots into --out."""


@bench.command("cluttered")
@click.option("--glimpses", type=click.IntRange(1, 64), default=8, help="Glimpses T of the attention model.")
@click.option("--preset", type=click.Choice(PRESETS), default=None, help="[default: paper on GPU, quick on CPU]")
@click.option("--seeds", type=click.IntRange(1, 20), default=1, help="Training seeds per model.")
@_classifier_models_option
@_bench_options
@_data_dir_option
@_friendly_errors
def bench_cluttered(glimpses, preset, seeds, models, mc_samples, model_specs, checkpoints, out, overwrite,
                    max_minutes, eager, device, data_dir) -> None:
    """100x100 cluttered MNIST (the paper's Table 1): attention classifier vs conv baselines."""
    from benchmark import cluttered
    from benchmark.classifiers import NAMES

    dev = _check_device(device)
    preset = _choose_preset(preset, dev)
    names = _comma_list(models, NAMES, "model(s)", "--models", allow_empty=bool(model_specs))
    users, weights = _user_models(model_specs, checkpoints)
    cfg = cluttered.bench_config(preset, glimpses=glimpses, seeds=seeds, models=names, speed=_bench_speed(eager, dev),
                                 mc_samples=mc_samples, user_models=users, checkpoints=weights)
    _run_bench(cluttered.ClutteredBench(cfg), out or Path("runs") / preset / f"cluttered-T{glimpses}", overwrite, dev,
               data_dir, max_minutes)


@bench.command("nll")
@click.option("--preset", type=click.Choice(PRESETS), default=None, help="[default: paper on GPU, quick on CPU]")
@click.option("--seeds", type=click.IntRange(1, 20), default=1, help="Training seeds per model.")
@click.option("--dataset", type=click.Choice(["mnist", "twodigit", "svhn", "cifar10"]), default="mnist",
              help="Binarized MNIST (Table 2), two-digit 60x60 MNIST (section 4.3), or SVHN / CIFAR-10 (sections "
                   "4.4-4.5; their files must be in the data folder: the error names them).")
@click.option("--models", default=None,
              help="Comma-separated subset of: draw, draw-noattn [default: both on MNIST, draw otherwise]. In a "
                   "folder of both, runs only these (the others are left as they are).")
@_bench_options
@_data_dir_option
@_friendly_errors
def bench_nll(preset, seeds, dataset, models, out, overwrite, max_minutes, eager, device, data_dir) -> None:
    """Negative log-likelihood (the paper's Table 2): DRAW with and without attention."""
    from benchmark import nll

    dev = _check_device(device)
    preset = _choose_preset(preset, dev)
    names = None if models is None else _comma_list(models, nll.MODELS, "model(s)", "--models")
    cfg = nll.bench_config(preset, seeds=seeds, dataset=dataset, models=names, speed=_bench_speed(eager, dev))
    _run_bench(nll.NllBench(cfg), out or Path("runs") / preset / f"nll-{dataset}", overwrite, dev, data_dir,
               max_minutes)


@bench.command("robustness")
@click.option("--preset", type=click.Choice(PRESETS), default=None,
              help="smoke: seconds; quick: the `bench cluttered` quick models, 5,000 test scenes; paper: paper-scale "
                   "training, 10,000 scenes [default: paper on GPU, quick on CPU]")
@click.option("--seeds", type=click.IntRange(1, 20), default=1, help="Training seeds per model.")
@_classifier_models_option
@click.option("--axes", default=",".join(AXIS_NAMES),
              help="Comma-separated subset of the degradations: " + ", ".join(AXIS_NAMES) + ".")
@click.option("--from", "from_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Reuse the trained models of this finished `bench cluttered` folder (its models, seeds and "
                   "training data; --models and --seeds are then ignored) instead of training.")
@_bench_options
@_data_dir_option
@_friendly_errors
def bench_robustness(preset, seeds, models, mc_samples, model_specs, checkpoints, axes, from_dir, out, overwrite,
                     max_minutes, eager, device, data_dir) -> None:
    """Error, calibration and per-class error of each classifier as cluttered MNIST degrades:
    more or larger clutter, fainter targets, Gaussian and salt-and-pepper noise, occlusion."""
    from benchmark import robustness
    from benchmark.classifiers import NAMES

    dev = _check_device(device)
    preset = _choose_preset(preset, dev)
    names = _comma_list(models, NAMES, "model(s)", "--models", allow_empty=bool(model_specs))
    axis_names = _comma_list(axes, AXIS_NAMES, "axis", "--axes")
    users, weights = _user_models(model_specs, checkpoints)
    if from_dir and users:
        raise click.BadParameter("--from reuses a bench folder's models; add user models to that bench instead",
                                 param_hint="--model-spec")
    try:
        cfg = robustness.bench_config(preset, seeds=seeds, models=names, axes=axis_names, from_dir=from_dir,
                                      speed=None if from_dir else _bench_speed(eager, dev), mc_samples=mc_samples,
                                      user_models=users, checkpoints=weights)
    except robustness.RobustnessError as e:
        raise click.BadParameter(str(e), param_hint="--from") from None
    _run_bench(robustness.RobustnessBench(cfg), out or Path("runs") / preset / "robustness", overwrite, dev, data_dir,
               max_minutes)


@bench.command("speed")
@click.option("--models", default="draw,classifier", help="Comma-separated subset of: draw, classifier.")
@click.option("--preset", type=click.Choice(PRESETS), default=None,
              help="smoke: tiny models, seconds; quick: the paper's models, minutes; paper: more steps and, "
                   "on a CPU, the compile of all T steps too [default: paper on GPU, quick on CPU]")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Timed steps per round [default: from the preset].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="[default: from the preset; 64 for quick/paper]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: runs/<preset>/speed-<device>].")
@click.option("--overwrite", is_flag=True, help="Replace results of a different config in --out.")
@_device_option
@_friendly_errors
def bench_speed(models, preset, steps, batch_size, out, overwrite, device) -> None:
    """Training throughput (images/s), step time and peak memory of DRAW and the attention
    classifier for each speed switch, and the speed-up over the plain eager reference."""
    from benchmark import speed

    dev = _check_device(device)
    preset = _choose_preset(preset, dev)
    names = _comma_list(models, speed.MODELS, "model(s)", "--models")
    cfg = speed.bench_config(preset, models=names, device=dev, steps=steps, batch_size=batch_size)
    _run_bench(speed.SpeedBench(cfg), out or Path("runs") / preset / f"speed-{dev}", overwrite, dev, None, None)


@bench.command("recipe")
@click.option("--preset", type=click.Choice(PRESETS), default=None,
              help="smoke: seconds; quick: 5 and 10 training minutes per candidate; paper: 10, 30 and 60 "
                   "[default: paper on GPU, quick on CPU]")
@click.option("--seeds", type=click.IntRange(1, 20), default=1, help="Training seeds per candidate.")
@click.option("--candidates", default=None, help="Comma-separated subset of the candidate recipes [default: all].")
@click.option("--budgets", default=None, metavar="MINUTES,...",
              help="Comma-separated training minutes at which the bound is reported, increasing; the last "
                   "ends each run [default: the preset's].")
@_bench_options
@_data_dir_option
@_friendly_errors
def bench_recipe(preset, seeds, candidates, budgets, out, overwrite, max_minutes, eager, device, data_dir) -> None:
    """Which training recipe brings the paper's MNIST DRAW's bound down fastest per minute of
    training (learning rate, warm-up, batch, clipping, Adam, window initialisation)."""
    from benchmark import recipe

    dev = _check_device(device)
    preset = _choose_preset(preset, dev)
    names = None if candidates is None else _comma_list(candidates, recipe.CANDIDATES, "candidate(s)", "--candidates")
    minutes = None if budgets is None else _float_list(budgets, "--budgets")
    try:
        cfg = recipe.bench_config(preset, seeds=seeds, candidates=names, budgets_min=minutes,
                                  speed=_bench_speed(eager, dev))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--budgets") from None
    _run_bench(recipe.RecipeBench(cfg), out or Path("runs") / preset / "recipe", overwrite, dev, data_dir,
               max_minutes)


def _float_list(text: str, option: str) -> list[float]:
    """"10,20,30" -> [10.0, 20.0, 30.0], or a usage error naming ``option``."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=option) from None


BENCHES = {"cluttered": "benchmark.cluttered:ClutteredBench", "nll": "benchmark.nll:NllBench",
           "recipe": "benchmark.recipe:RecipeBench",
           "robustness": "benchmark.robustness:RobustnessBench", "speed": "benchmark.speed:SpeedBench"}


@cli.command("report")
@click.argument("folders", metavar="OUT [OUT ...]", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--leaderboard", is_flag=True,
              help="Merge the bench folders OUT ... into one ranking per bench (cluttered, robustness, nll), "
                   "printed as markdown, instead of redrawing one folder's report.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --leaderboard: also write the markdown to this file.")
@_friendly_errors
def report_cmd(folders, leaderboard, out_file) -> None:
    """Redraw the table and plots of a bench folder OUT from its CSV files, or with
    --leaderboard rank the models of several bench folders."""
    if leaderboard:
        from benchmark.leaderboard import LeaderboardError, leaderboard_markdown
        from datasets.files import atomic_write_text

        try:
            text = leaderboard_markdown(list(folders))
        except LeaderboardError as e:
            raise click.BadParameter(str(e), param_hint="OUT") from None
        click.echo(text, nl=False)
        if out_file is not None:
            _writable_dir(out_file.parent, "--out")
            atomic_write_text(out_file, text)
            click.echo(f"wrote {out_file}")
        return
    if len(folders) > 1:
        raise click.BadParameter("give one folder to redraw, or --leaderboard to rank several", param_hint="OUT")
    if out_file is not None:
        raise click.BadParameter("--out goes with --leaderboard (a report is written into its folder)",
                                 param_hint="--out")
    _redraw(folders[0])


def _redraw(out: Path) -> None:
    import importlib
    import json

    try:
        name = json.loads((out / "config.json").read_text())["config"]["bench"]
    except (OSError, ValueError, KeyError, TypeError):
        raise click.BadParameter(f"{out} has no readable bench config.json; is it a bench folder?",
                                 param_hint="OUT") from None
    if name not in BENCHES:
        raise click.BadParameter(f"{out} holds no known bench results", param_hint="OUT")
    module, cls = BENCHES[name].split(":")
    bench_cls = getattr(importlib.import_module(module), cls)
    from benchmark.config import ConfigError

    try:
        cfg = bench_cls.from_folder(out).cfg
    except ConfigError as e:
        raise click.BadParameter(f"{e}: this folder's config.json is of another drawbench version; rerun the "
                                 f"`bench {name}` command that made it to regenerate it", param_hint="OUT") from None
    for path in bench_cls.write_report(out, cfg):
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(cli())
