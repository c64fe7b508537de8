"""One training loop for every model (DRAW, the attention classifier, conv baselines).

The loop knows nothing about the model beyond ``model.loss(x, y) -> (loss, metrics)``,
where ``metrics`` are 0-d device tensors. The whole data set lives on the device as a
uint8 tensor and is batched by index (no DataLoader, no per-sample Python); the host
synchronises only every ``log_every`` steps (progress bar, NaN check) and at checkpoints.

Checkpoints (``last.pt``; ``best.pt`` by validation) are written atomically and hold
everything needed to continue exactly: model config and weights, optimizer, schedule,
RNG states, epoch, step and position inside the epoch. Epoch orders are a pure function
of (seed, epoch), so a resumed run sees the same batches as an uninterrupted one.

Speed switches (:class:`draw.fast.SpeedConfig`: fused kernels, ``torch.compile``, CUDA
graphs, bf16, TF32) change how a step runs, never what it computes. Under ``torchrun``
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) the loop trains with
DistributedDataParallel: every rank draws the same epoch order and takes its slice of
each global batch of ``batch_size`` images, and rank 0 alone writes checkpoints and shows
progress.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from draw.config import TrainConfig
from draw.fast import SpeedConfig, matmul_precision, prepare
from draw.registry import build_model, model_kind

CHECKPOINT_FORMAT = "drawbench-checkpoint-v1"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, truncated, corrupt or of another model."""


class TrainSettingError(ValueError):
    """A training setting that cannot work with the data given; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class NonFiniteError(RuntimeError):
    """The loss or the gradients became NaN or Inf."""


@dataclass
class TensorData:
    """A data set held as tensors: ``x`` ``(n, C, H, W)`` uint8 (or float), ``y`` ``(n,)`` or None.

    ``scale`` maps stored values to [0, 1] (1/255 for uint8 grey levels, 1 for binary data).
    """

    x: Tensor
    y: Tensor | None = None
    scale: float = 1 / 255

    def __post_init__(self) -> None:
        if self.x.dim() == 3:
            self.x = self.x[:, None]  # (n, H, W) -> (n, 1, H, W)
        if self.y is not None and len(self.y) != len(self.x):
            raise ValueError(f"x has {len(self.x)} items but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device: torch.device | str) -> TensorData:
        y = self.y.to(device) if self.y is not None else None
        return TensorData(self.x.to(device), y, self.scale)

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        """Float images in [0, 1] ``(b, C, H, W)`` and labels ``(b,)`` for indices ``idx``."""
        x = self.x[idx].float() * self.scale
        return x, (self.y[idx] if self.y is not None else None)


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one dict per epoch
    last_path: Path | None = None
    best_path: Path | None = None
    best: dict = field(default_factory=dict)  # {"metric", "value", "epoch"}
    steps: int = 0
    train_seconds: float = 0.0
    images_per_s: float = 0.0


def default_device() -> torch.device:
    return resolve_device(None)


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``device``, or CUDA when available, else CPU; under ``torchrun`` a bare ``cuda``
    becomes this process's GPU, ``cuda:LOCAL_RANK``."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


# -- data parallel (torchrun) -----------------------------------------------------------
def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process: from an initialised process group, else from
    torchrun's environment, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that writes files and prints."""
    return world()[0] == 0


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on CPU);
    returns ``(rank, world size)``."""
    import torch.distributed as dist

    rank, size = world()
    if size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
        rank, size = world()
    return rank, size


def _all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of ``n`` training items for ``epoch``: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def lr_factor(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up, then constant or cosine decay to 0."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorData, batch_size: int = 500, *,
             loss_fn: Callable | None = None, shard: tuple[int, int] = (0, 1)) -> dict[str, float]:
    """Mean of every metric of ``model.loss`` (or ``loss_fn``, the same loss computed
    faster) over ``data``, weighted by batch size. ``shard = (rank, world)``: this process
    evaluates its contiguous share and the means are all-reduced over the process group."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_fn = loss_fn or model.loss
    rank, size = shard if len(data) >= shard[1] else (0, 1)  # too few items to share: all on every rank
    lo, hi = len(data) * rank // size, len(data) * (rank + 1) // size
    sums: dict[str, Tensor] = {}
    for start in range(lo, hi, batch_size):
        idx = torch.arange(start, min(start + batch_size, hi), device=data.x.device)
        x, y = data.batch(idx)
        _, metrics = loss_fn(x.to(device), y.to(device) if y is not None else None)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0) + v.double() * len(idx)
    model.train(was_training)
    if size > 1:
        keys = sorted(sums)
        total = _all_reduce(torch.stack([sums[k] for k in keys]).to(device)) if keys else None
        sums = {k: total[i] for i, k in enumerate(keys)}
    return {k: float(v) / len(data) for k, v in sums.items()}


# -- checkpoints -------------------------------------------------------------------------
def _atomic_torch_save(obj: dict, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, rename: a crash (or a full disk)
    leaves the previous file intact."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # e.g. a full disk: name the file (a file object's error names none)
        raise OSError(e.errno, f"{e.strerror or e}; the previous {path.name}, if any, is kept", str(path)) from e
    finally:
        if tmp.exists():
            tmp.unlink()


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`train`; :class:`CheckpointError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:  # torch.save writes a zip whose members carry CRC-32s: flipped bytes are caught here
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        ckpt = torch.load(path, map_location=map_location, weights_only=True) if bad is None else None
    except OSError:
        raise
    except Exception as e:  # truncated zip, bad pickle, not a torch file ...
        reason = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {reason}".rstrip(": ")) from e
    if bad is not None:
        raise CheckpointError(f"{path} is corrupt: its member {bad} fails its CRC-32 check")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a drawbench checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu", kind: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model stored in a checkpoint; ``kind`` checks it is the expected model."""
    ckpt = load_checkpoint(path)
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointError(f"{path} holds a {ckpt['kind']!r} model, not a {kind!r} model")
    model = build_model(ckpt["kind"], ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the stored config: {e}") from e
    return model.to(device), ckpt


# -- the loop ----------------------------------------------------------------------------
def train(
    model: nn.Module,
    train_data: TensorData,
    valid_data: TensorData | None,
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    device: torch.device | str | None = None,
    select: str = "loss",
    progress: bool = True,
    desc: str = "train",
    on_epoch_end: Callable[[dict], None] | None = None,
    speed: SpeedConfig | None = None,
    epoch_data: Callable[[int], TensorData] | None = None,
) -> TrainResult:
    """Train ``model`` with Adam and gradient clipping; checkpoint to ``out_dir``.

    ``select`` names the validation metric (lower is better) that picks ``best.pt``.
    With ``resume=True`` and ``out_dir/last.pt`` present, continues exactly where it stopped
    (a finished run returns at once). Raises :class:`NonFiniteError` on NaN/Inf, leaving
    the last good checkpoint in place. ``speed``: how to run the steps (default: the plain
    eager ``model.loss``). Under torchrun, ``cfg.batch_size`` is the global batch, split
    evenly over the ranks; ``on_epoch_end`` runs on rank 0 only. ``epoch_data(e)``, if
    given, supplies the training set of epoch ``e`` >= 1 (0-based; epoch 0 uses
    ``train_data``): same size, a deterministic function of ``e`` so that a resumed run
    sees the same images.
    """
    device = resolve_device(device)
    speed = speed or SpeedConfig()
    rank, size = init_distributed(device)
    main = rank == 0
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and main:  # rank 0 alone writes
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.pt.*.tmp"):  # half-written by a run killed while saving
            stale.unlink(missing_ok=True)
    last_path = out / "last.pt" if out else None
    best_path = out / "best.pt" if out else None

    if cfg.batch_size % size:
        raise TrainSettingError("batch_size", f"batch size {cfg.batch_size} does not split evenly over {size} processes")
    local_batch = cfg.batch_size // size

    torch.manual_seed(cfg.seed)  # the same on every rank: the same noise stream everywhere
    model.to(device).train()
    plain = speed == SpeedConfig() and size == 1
    if plain:  # the reference: model.loss as written
        loss_fn, eval_fn = model.loss, None
    else:
        prepared = prepare(model, speed, device, shard=(rank, size))
        loss_fn, eval_fn = prepared.module, prepared.eval_loss
        if size > 1:
            from torch.nn.parallel import DistributedDataParallel

            loss_fn = DistributedDataParallel(prepared.module, device_ids=[device.index] if device.type == "cuda" else None)

    def autocast() -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if plain else prepared.autocast(device)

    fused_adam = speed.fused and device.type in ("cuda", "cpu")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                           **({"fused": True} if fused_adam else {}))
    n = len(train_data)
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainSettingError("batch_size", f"batch size {cfg.batch_size} is larger than the training set ({n})")
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, total_steps))

    result = TrainResult(last_path=last_path, best_path=best_path)
    epoch, step_in_epoch, step, elapsed, train_time, images_seen = 0, 0, 0, 0.0, 0.0, 0
    running: dict = {"sums": {}, "count": 0}
    if resume and last_path is not None and last_path.exists():
        ckpt = load_checkpoint(last_path)
        if ckpt["kind"] != model_kind(model) or ckpt["model_config"] != asdict(model.cfg):
            if ckpt["kind"] != model_kind(model):
                raise CheckpointError(f"{last_path} holds a {ckpt['kind']!r} model, not a {model_kind(model)!r} "
                                      "model; use another --out")
            changed = sorted(k for k, v in asdict(model.cfg).items() if ckpt["model_config"].get(k) != v)
            raise CheckpointError(f"{last_path} was written for another model config ({', '.join(changed)}); "
                                  "use another --out")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        epoch, step_in_epoch, step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["step"]
        result.history, result.best, elapsed = ckpt["history"], ckpt["best"], ckpt["train_seconds"]
        train_time, images_seen, running = ckpt["train_time"], ckpt["images_seen"], ckpt["running"]
        if ckpt["train_config"] != asdict(cfg):
            changed = sorted(k for k, v in asdict(cfg).items() if ckpt["train_config"].get(k) != v)
            raise CheckpointError(f"{last_path} was trained with other settings ({', '.join(changed)}); use another --out")

    def save(path: Path, final: bool = False) -> None:
        if not main:  # rank 0 alone writes
            return
        _atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "kind": model_kind(model),
                "model_config": asdict(model.cfg),
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "train_config": asdict(cfg),
                "rng": _rng_state(),
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "step": step,
                "history": result.history,
                "best": result.best,
                "train_seconds": elapsed,
                "train_time": train_time,
                "images_seen": images_seen,
                "running": {"sums": {k: float(v) for k, v in sums.items()}, "count": count},
                "finished": final,
            },
            path,
        )

    # device-side accumulators: no host sync per step
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    sums: dict[str, Tensor] = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in running["sums"].items()}
    count = running["count"]

    def check_finite() -> None:
        s = int(_all_reduce(bad_step.clone(), "max"))  # every rank stops at the same step
        if s >= 0:
            kept = (f"the last good checkpoint is {last_path}" if last_path is not None and last_path.exists()
                    else "no checkpoint had been written yet")
            raise NonFiniteError(f"loss or gradients became NaN/Inf at step {s} (epoch {epoch + 1}); {kept}; "
                                 "a lower learning rate or gradient clipping may help")

    stop_at = total_steps  # lowered when the wall-clock budget runs out

    def done() -> bool:
        return step >= stop_at

    t_start = time.perf_counter() - elapsed
    precision = matmul_precision(speed, device)  # TF32 for the loop (left on if the loop raises)
    precision.__enter__()
    while epoch < cfg.epochs and not done():
        data = train_data if epoch_data is None or epoch == 0 else epoch_data(epoch)
        if len(data) != n:
            raise ValueError(f"epoch_data({epoch}) has {len(data)} items, the training set {n}")
        order = epoch_order(n, cfg.seed, epoch).to(data.x.device)
        bar = tqdm(
            total=steps_per_epoch, initial=step_in_epoch, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress or not main, leave=False, dynamic_ncols=True,
        )
        t_epoch = time.perf_counter()
        while step_in_epoch < steps_per_epoch and not done():
            start = step_in_epoch * cfg.batch_size + rank * local_batch  # this rank's slice of the global batch
            idx = order[start : start + local_batch]
            x, y = data.batch(idx)
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True) if y is not None else None
            if speed.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast():
                loss, metrics = loss_fn(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # max_norm inf (grad_clip 0) clips nothing, but the norm still catches NaN/Inf gradients
            gnorm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip else math.inf)
            finite = torch.isfinite(loss) & torch.isfinite(gnorm)
            bad_step = torch.where(~finite & (bad_step < 0), torch.full_like(bad_step, step), bad_step)
            opt.step()
            sched.step()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0) + v.detach().double()
            count += 1
            step += 1
            step_in_epoch += 1
            images_seen += len(idx) * size
            bar.update(1)
            if step % cfg.log_every == 0:
                check_finite()
                bar.set_postfix({k: f"{float(v) / count:.4g}" for k, v in sums.items()})
            if last_path is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                check_finite()
                elapsed = time.perf_counter() - t_start
                train_time += time.perf_counter() - t_epoch
                t_epoch = time.perf_counter()
                save(last_path)
            if cfg.max_minutes is not None and time.perf_counter() - t_start > 60 * cfg.max_minutes:
                stop_at = step  # out of time: finish this epoch's bookkeeping and stop
        bar.close()
        check_finite()
        train_time += time.perf_counter() - t_epoch
        if step_in_epoch >= steps_per_epoch or done():
            row = {"epoch": epoch + 1, "step": step, "lr": opt.param_groups[0]["lr"]}
            if size > 1 and sums:  # the mean over every rank's batches
                sums = dict(zip(sums, _all_reduce(torch.stack(list(sums.values()))).div(size).unbind(), strict=True))
            row.update({f"train_{k}": float(v) / max(count, 1) for k, v in sums.items()})
            if valid_data is not None:
                # validation draws its own noise (seeded by seed, epoch and rank) and leaves the
                # training stream alone: every rank keeps the same stream whatever its share
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # float32, no autocast
                    torch.manual_seed(cfg.seed * 1_000_003 + 1_000 * epoch + rank + 1)
                    valid = evaluate(model, valid_data, cfg.eval_batch_size, loss_fn=eval_fn, shard=(rank, size))
                row.update({f"valid_{k}": v for k, v in valid.items()})
            elapsed = time.perf_counter() - t_start
            row["seconds"] = elapsed
            result.history.append(row)
            sums, count = {}, 0
            key = f"valid_{select}" if valid_data is not None else f"train_{select}"
            if key in row and (not result.best or row[key] <= result.best["value"]):
                result.best = {"metric": key, "value": row[key], "epoch": epoch + 1}
                if best_path is not None:
                    save(best_path)
            if on_epoch_end is not None and main:
                on_epoch_end(row)
            epoch += 1
            step_in_epoch = 0
            if last_path is not None:
                save(last_path, final=epoch >= cfg.epochs or done())
    precision.__exit__(None, None, None)
    result.steps = step
    result.train_seconds = time.perf_counter() - t_start
    result.images_per_s = images_seen / train_time if train_time > 0 else 0.0
    return result
