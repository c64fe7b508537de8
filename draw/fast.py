"""Speed switches for :func:`draw.train.train` and ``bench speed``: :class:`SpeedConfig`,
and :func:`prepare`, which turns a model into the loss module one training step calls.

None of the switches changes the model's mathematics; all off is the plain eager
reference (``model.loss`` as written). ``fused`` swaps in :mod:`draw.fused`'s layout of
the same computation; ``compile`` runs the unrolled glimpse loop through
``torch.compile``; ``cuda_graphs`` replays it as CUDA graphs
(``torch.compile(mode="reduce-overhead")``); ``amp="bf16"`` runs the matrix products in
bfloat16; ``tf32`` allows TF32 matrix products on CUDA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from draw.fused import FusedClassifier, FusedDraw

AMP_MODES = ("off", "bf16")


@dataclass
class SpeedConfig:
    """How to run a training step; none of these switches changes the model's mathematics
    (``amp`` and ``tf32`` change its arithmetic precision). All off = the plain eager reference.

    ``fused``: :class:`draw.fused.FusedDraw` / :class:`draw.fused.FusedClassifier` instead
    of ``model.loss`` (other models keep ``model.loss``), and Adam's fused kernel.
    ``compile``: ``torch.compile`` the unrolled recurrence, ``compile_unroll`` time steps
    per compiled region (the default 8: DRAW's 64 steps are 8 calls of one graph, compiled
    in about a minute on a CPU; 0: all T steps in one graph, several minutes to compile;
    1: one step, the quickest compile and the most per-call overhead). Without ``fused``
    the model's own ``loss`` is compiled whole. ``compile_unfused=False`` compiles only the
    fused recurrent layouts (DRAW, the attention classifier) and leaves models without one
    (the conv baselines, RAM, a user's model) eager: on the 2-core CPU their bf16 eager step
    was the fastest (batch 128, images/s: small ResNet 3576 eager bf16 vs 2340 compiled bf16,
    2-layer conv 29144 vs 26322, RAM 6883 vs 5882), while the attention classifier gains
    from compiling (6576 vs 4231).
    ``cuda_graphs``: replay the compiled steps as CUDA graphs (CUDA only; implies
    ``compile`` with all T steps in one region).
    ``amp``: ``"bf16"`` runs the matrix products in bfloat16 (autocast); with ``fused`` the
    attention, the recurrent state, the canvas and the losses stay float32.
    ``tf32``: TF32 matrix products on CUDA (ignored on CPU).
    """

    fused: bool = False
    compile: bool = False
    compile_unroll: int = 8
    compile_unfused: bool = True
    cuda_graphs: bool = False
    amp: str = "off"
    tf32: bool = False

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.compile_unroll < 0:
            raise ValueError(f"compile_unroll must be >= 0, got {self.compile_unroll}")

    @property
    def compiled(self) -> bool:
        return self.compile or self.cuda_graphs

    def label(self) -> str:
        """A short name of the switch set, e.g. ``fused+compile(8)+bf16``; ``eager`` when all off."""
        parts = []
        if self.fused:
            parts.append("fused")
        if self.compiled:
            unroll = 0 if self.cuda_graphs else self.compile_unroll  # CUDA graphs: all T steps
            parts.append(f"compile({unroll or 'T'}{'' if self.compile_unfused else ', fused only'})")
        if self.cuda_graphs:
            parts.append("cudagraphs")
        if self.amp != "off":
            parts.append(self.amp)
        if self.tf32:
            parts.append("tf32")
        return "+".join(parts) or "eager"


class LossModule(nn.Module):
    """``forward(x, y) = model.loss(x, y)``: what DDP and ``torch.compile`` wrap for models
    without a fused path (and the eager reference under DDP)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def loss(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        return self.model.loss(x, y)

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        return self.model.loss(x, y)


def fused(model: nn.Module) -> nn.Module:
    """The fused loss module of ``model``, or :class:`LossModule` when it has none."""
    from draw.classifier import AttentionClassifier
    from draw.model import DRAW

    if type(model) is DRAW:
        return FusedDraw(model)
    if type(model) is AttentionClassifier:
        return FusedClassifier(model)
    return LossModule(model)


# -- putting the switches together ---------------------------------------------------------
@dataclass
class Prepared:
    """What :func:`prepare` hands to the training loop."""

    module: nn.Module  # forward(x, y) -> (loss, metrics): the training step's loss (wrap it in DDP)
    eval_loss: Callable[..., tuple[Tensor, dict[str, Tensor]]]  # (x, y): uncompiled, unsharded, for validation
    speed: SpeedConfig

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context of the forward pass (a no-op unless ``amp="bf16"``)."""
        if self.speed.amp == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def _raise_recompile_limit(n: int = 64) -> None:
    """Every compiled model instance adds guards on the same code; let a process train several."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), n))


def prepare(model: nn.Module, speed: SpeedConfig, device: torch.device | str,
            shard: tuple[int, int] = (0, 1)) -> Prepared:
    """The loss module of ``model`` with the switches of ``speed`` applied.

    ``shard = (rank, world)``: data-parallel position (see :class:`draw.fused.FusedDraw`).
    ``cuda_graphs`` needs a CUDA device (``ValueError`` otherwise) and compiles all T steps
    as one region, replayed as a CUDA graph (``torch.compile(mode="reduce-overhead")``).
    """
    device = torch.device(device)
    if speed.cuda_graphs and device.type != "cuda":
        raise ValueError("cuda_graphs needs a CUDA device")
    module = fused(model) if speed.fused else LossModule(model)
    eval_module = fused(model) if speed.fused else LossModule(model)
    module.to(device)
    eval_module.to(device)
    if isinstance(module, FusedDraw):
        module.shard = shard
    if speed.compiled:
        _raise_recompile_limit()
        mode = "reduce-overhead" if speed.cuda_graphs else None
        if isinstance(module, (FusedDraw, FusedClassifier)):
            module.chunk = 0 if speed.cuda_graphs else speed.compile_unroll
            module.unroll = torch.compile(module._unroll, dynamic=False, mode=mode)
        elif speed.compile_unfused or speed.cuda_graphs:  # no fused path: the model's own loss, whole
            module.forward = torch.compile(module.forward, dynamic=False, mode=mode)
    return Prepared(module, eval_module.loss, speed)


def cpu_info() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (keys lower-cased: ``model name``,
    ``cpu family``, ``flags``, ...); empty where there is no such file."""
    info: dict[str, str] = {}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return info
    for line in lines:
        if not line.strip():
            break  # the first processor is enough
        key, _, value = line.partition(":")
        info.setdefault(key.strip().lower(), value.strip())
    return info


def cpu_has_bf16_matmul() -> bool:
    """True where the CPU has bfloat16 matrix instructions (AVX-512 BF16 or AMX, from
    :func:`cpu_info`): there bf16 autocast speeds the products up; elsewhere bf16 would be
    emulated, slower than float32."""
    flags = cpu_info().get("flags", "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_speed(device: torch.device | str) -> SpeedConfig:
    """The fast path the benches train on unless told ``--eager``: on CUDA, the fused
    layout compiled into CUDA graphs with bf16 products (TF32 for the float32 rest); on a
    CPU, fused and compiled (8 steps per region), with bf16 products where the processor
    has bf16 matrix instructions (:func:`cpu_has_bf16_matmul`), float32 otherwise; the models
    without a fused layout stay uncompiled on a CPU (see :class:`SpeedConfig`)."""
    if torch.device(device).type == "cuda":
        return SpeedConfig(fused=True, cuda_graphs=True, amp="bf16", tf32=True)
    return SpeedConfig(fused=True, compile=True, compile_unroll=8, compile_unfused=False,
                       amp="bf16" if cpu_has_bf16_matmul() else "off")


@contextlib.contextmanager
def matmul_precision(speed: SpeedConfig, device: torch.device) -> Iterator[None]:
    """TF32 matrix products on CUDA for the duration of the block, when ``speed.tf32``."""
    if not (speed.tf32 and torch.device(device).type == "cuda"):
        yield
        return
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]
