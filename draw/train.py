"""One training loop for every model (DRAW, the attention classifier, RAM, conv baselines,
a user's own classifier).

The loop knows nothing about the model beyond ``model.loss(x, y) -> (loss, metrics)``,
where ``metrics`` are 0-d device tensors. The data set lives on the device
(:class:`datasets.tensors.TensorData`) and is batched by index; the host synchronises only
every ``log_every`` steps (progress bar, NaN check) and at checkpoints. How a step runs is
:class:`draw.step.TrainStep`'s business (speed switches, DDP).

Everything the loop must remember to continue exactly lives in one :class:`LoopState`,
saved and restored whole with the model, optimizer, schedule and RNG states
(:mod:`draw.checkpoint`). Epoch orders are a pure function of (seed, epoch), so a resumed
run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from datasets.files import remove_stale_temporaries
from datasets.tensors import TensorData
from draw.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from draw.distributed import all_reduce, init_distributed, resolve_device
from draw.fast import SpeedConfig, matmul_precision
from draw.interrupt import Interrupted, StopOnSignal
from draw.registry import config_defaults, model_kind
from draw.step import TrainStep

SCHEDULES = ("constant", "cosine")


class TrainSettingError(ValueError):
    """A training setting that cannot work with the data given; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class NonFiniteError(RuntimeError):
    """The loss or the gradients became NaN or Inf."""


@dataclass
class TrainConfig:
    """Optimisation settings shared by every model (one training loop for all). Part of a
    run's identity: a checkpoint trained with other settings is never resumed."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    schedule: str = "constant"  # "constant" | "cosine" (with linear warm-up)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's moment decay rates
    eps: float = 1e-8  # Adam's denominator guard
    grad_clip: float = 10.0  # max global grad norm; 0 disables
    seed: int = 0
    checkpoint_every: int = 500  # steps; plus one at every epoch end
    log_every: int = 25  # steps between host syncs (progress bar, NaN check)
    max_steps: int | None = None  # stop early (smoke runs); the schedule ends there
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))  # JSON round trip gives a list


@dataclass
class LoopState:
    """Where a run stands: saved in every checkpoint as ``asdict``, restored whole."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0
    step: int = 0
    elapsed_s: float = 0.0  # wall time of all sessions of this run, compile and validation included
    train_s: float = 0.0  # wall time inside training steps
    images_seen: int = 0
    running: dict[str, float] = field(default_factory=dict)  # metric sums since the epoch began
    running_count: int = 0
    history: list[dict] = field(default_factory=list)  # one row per finished epoch
    best: dict = field(default_factory=dict)  # {"metric", "value", "epoch"}


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one dict per epoch
    last_path: Path | None = None
    best_path: Path | None = None
    best: dict = field(default_factory=dict)  # {"metric", "value", "epoch"}
    steps: int = 0
    train_seconds: float = 0.0  # wall time of all sessions (compile and validation included)
    images_per_s: float = 0.0  # over the time inside training steps
    train_time_s: float = 0.0  # the time inside training steps (all sessions; compile included)
    finished: bool = False  # False: stopped by the time budget (resume to continue)


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
    for x, y in data.batches(batch_size, lo, hi, device=device):
        _, metrics = loss_fn(x, y)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0) + v.double() * len(x)
    model.train(was_training)
    if size > 1:
        keys = sorted(sums)
        total = all_reduce(torch.stack([sums[k] for k in keys]).to(device)) if keys else None
        sums = {k: total[i] for i, k in enumerate(keys)}
    return {k: float(v) / len(data) for k, v in sums.items()}


def _check_resumable(ckpt: dict, model: nn.Module, cfg: TrainConfig, path: Path) -> None:
    if ckpt["kind"] != model_kind(model):
        raise CheckpointError(f"{path} holds a {ckpt['kind']!r} model, not a {model_kind(model)!r} model; "
                              "use another --out")
    for what, stored, current in (("was written for another model config", ckpt["model_config"], model.cfg),
                                  ("was trained with other settings", ckpt["train_config"], cfg)):
        now = json.loads(json.dumps(asdict(current)))
        # a setting added since the checkpoint was written: its default
        stored = json.loads(json.dumps({**config_defaults(type(current)), **stored}))
        if stored != now:
            changed = sorted(k for k, v in now.items() if stored.get(k) != v)
            raise CheckpointError(f"{path} {what} ({', '.join(changed)}); use another --out")


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
    deadline: float | None = None,
    max_train_s: float | None = None,
    until_epoch: int | None = None,
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
    sees the same images. ``deadline`` (``time.monotonic()`` seconds): stop at the first
    step boundary after it, checkpointed (``result.finished`` is then False; resume to go on).
    ``max_train_s``: likewise, once the run's time inside training steps (all sessions;
    compile included, validation not) reaches it. ``until_epoch``: stop once that many
    epochs of the schedule are done (not finished unless the schedule ends there), so that
    several runs can advance in turns (``bench nll`` trains its models in step).
    SIGTERM or SIGINT stops the loop after the step in flight and checkpoints it, then
    raises :class:`draw.interrupt.Interrupted` (rerun to continue).
    """
    device = resolve_device(device)
    speed = speed or SpeedConfig()
    rank, size = init_distributed(device)
    main = rank == 0
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and main:  # rank 0 alone writes
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)  # half-written by a run killed while saving
    last_path = out / "last.pt" if out else None
    best_path = out / "best.pt" if out else None
    if cfg.batch_size % size:
        raise TrainSettingError("batch_size", f"batch size {cfg.batch_size} does not split evenly over {size} processes")
    local_batch = cfg.batch_size // size
    n = len(train_data)
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainSettingError("batch_size", f"batch size {cfg.batch_size} is larger than the training set ({n})")
    total_steps = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(steps_per_epoch * cfg.epochs,
                                                                                   cfg.max_steps)

    torch.manual_seed(cfg.seed)  # the same on every rank: the same noise stream everywhere
    model.to(device).train()
    step_fn = TrainStep(model, speed, device, lr=cfg.lr, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                        betas=cfg.betas, eps=cfg.eps, shard=(rank, size))
    opt = step_fn.optimizer
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, total_steps))

    state = LoopState()
    if resume and last_path is not None and last_path.exists():
        ckpt = load_checkpoint(last_path)
        _check_resumable(ckpt, model, cfg, last_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        state = LoopState(**ckpt["state"])
    result = TrainResult(last_path=last_path, best_path=best_path)

    # device-side accumulators: no host sync per step
    sums: dict[str, Tensor] = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in state.running.items()}
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    t_start = time.perf_counter() - state.elapsed_s

    def sync_state() -> None:
        state.elapsed_s = time.perf_counter() - t_start
        state.running = {k: float(v) for k, v in sums.items()}

    def save(path: Path, finished: bool = False) -> None:
        if not main:  # rank 0 alone writes
            return
        sync_state()
        save_checkpoint({"kind": model_kind(model), "model_config": asdict(model.cfg), "model": model.state_dict(),
                         "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "train_config": asdict(cfg),
                         "rng": rng_state(), "state": asdict(state), "finished": finished}, path)

    def check_finite() -> None:
        s = int(all_reduce(bad_step.clone(), "max"))  # every rank stops at the same step
        if s >= 0:
            kept = (f"the last good checkpoint is {last_path}" if last_path is not None and last_path.exists()
                    else "no checkpoint had been written yet")
            raise NonFiniteError(f"loss or gradients became NaN/Inf at step {s} (epoch {state.epoch + 1}); {kept}; "
                                 "a lower learning rate or gradient clipping may help")

    stop_at = total_steps  # lowered when the time budget runs out or a signal asks to stop
    last_epoch = cfg.epochs if until_epoch is None else min(cfg.epochs, until_epoch)
    with StopOnSignal(size == 1) as stop, matmul_precision(speed, device):
        while state.epoch < last_epoch and state.step < stop_at:
            data = train_data if epoch_data is None or state.epoch == 0 else epoch_data(state.epoch)
            if len(data) != n:
                raise ValueError(f"epoch_data({state.epoch}) has {len(data)} items, the training set {n}")
            order = epoch_order(n, cfg.seed, state.epoch).to(data.device)
            bar = tqdm(total=steps_per_epoch, initial=state.step_in_epoch,
                       desc=f"{desc} epoch {state.epoch + 1}/{cfg.epochs}", disable=not progress or not main,
                       leave=False, dynamic_ncols=True)
            t_epoch = time.perf_counter()
            while state.step_in_epoch < steps_per_epoch and state.step < stop_at:
                start = state.step_in_epoch * cfg.batch_size + rank * local_batch  # this rank's slice
                x, y = data.batch(order[start : start + local_batch])
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True) if y is not None else None
                _, metrics, finite = step_fn(x, y)
                bad_step = torch.where(~finite & (bad_step < 0), torch.full_like(bad_step, state.step), bad_step)
                sched.step()
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0) + v.detach().double()
                state.running_count += 1
                state.step += 1
                state.step_in_epoch += 1
                state.images_seen += local_batch * size
                bar.update(1)
                if state.step % cfg.log_every == 0:
                    check_finite()
                    bar.set_postfix({k: f"{float(v) / state.running_count:.4g}" for k, v in sums.items()})
                if stop.signum is not None or (deadline is not None and time.monotonic() > deadline) or (
                        max_train_s is not None and state.train_s + time.perf_counter() - t_epoch >= max_train_s):
                    stop_at = state.step  # out of time or asked to stop: checkpoint below and stop
                if last_path is not None and ((cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0)
                                              or state.step == stop_at < total_steps):
                    check_finite()
                    state.train_s += time.perf_counter() - t_epoch
                    t_epoch = time.perf_counter()
                    save(last_path)
            bar.close()
            check_finite()
            state.train_s += time.perf_counter() - t_epoch
            if state.step_in_epoch < steps_per_epoch and state.step < total_steps:
                break  # stopped by the time budget inside the epoch (checkpointed above)
            _end_epoch(state, sums, model, valid_data, cfg, step_fn, device, rank, size, select, opt)
            state.history[-1]["seconds"] = time.perf_counter() - t_start  # wall time, validation included
            state.history[-1]["train_s"] = state.train_s  # time inside training steps
            sums = {}
            if state.best.get("epoch") == state.epoch and best_path is not None:
                save(best_path)
            if on_epoch_end is not None and main:
                on_epoch_end(state.history[-1])
            if last_path is not None:
                save(last_path, finished=state.epoch >= cfg.epochs or state.step >= total_steps)
    sync_state()
    result.history, result.best, result.steps = state.history, state.best, state.step
    result.train_seconds = state.elapsed_s
    result.images_per_s = state.images_seen / state.train_s if state.train_s > 0 else 0.0
    result.train_time_s = state.train_s
    result.finished = state.epoch >= cfg.epochs or state.step >= total_steps
    if stop.signum is not None:  # even when training just finished: what follows it must not start
        where = "after its last step" if result.finished else f"at step {state.step} (epoch {state.epoch + 1})"
        kept = (f"checkpointed in {last_path}; rerun the same command to continue" if last_path is not None
                else "this run had no checkpoint folder")
        raise Interrupted(f"{stop.name}: training stopped {where}, {kept}", stop.signum)
    return result


def _end_epoch(state: LoopState, sums: dict[str, Tensor], model: nn.Module, valid_data: TensorData | None,
               cfg: TrainConfig, step_fn: TrainStep, device: torch.device, rank: int, size: int, select: str,
               opt: torch.optim.Optimizer) -> None:
    """Close the epoch in ``state``: the history row (running training means, validation
    metrics), the best epoch so far, the counters reset."""
    row: dict = {"epoch": state.epoch + 1, "step": state.step, "lr": opt.param_groups[0]["lr"]}
    if size > 1 and sums:  # the mean over every rank's batches
        sums = dict(zip(sums, all_reduce(torch.stack(list(sums.values()))).div(size).unbind(), strict=True))
    row.update({f"train_{k}": float(v) / max(state.running_count, 1) for k, v in sums.items()})
    if valid_data is not None:
        # validation draws its own noise (seeded by seed, epoch and rank) and leaves the training
        # stream alone: every rank keeps the same stream whatever its share; float32, no autocast
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed * 1_000_003 + 1_000 * state.epoch + rank + 1)
            valid = evaluate(model, valid_data, cfg.eval_batch_size, loss_fn=step_fn.eval_loss, shard=(rank, size))
        row.update({f"valid_{k}": v for k, v in valid.items()})
    state.history.append(row)
    state.running, state.running_count = {}, 0
    key = f"valid_{select}" if valid_data is not None else f"train_{select}"
    if key in row and (not state.best or row[key] <= state.best["value"]):
        state.best = {"metric": key, "value": row[key], "epoch": state.epoch + 1}
    state.epoch += 1
    state.step_in_epoch = 0

