"""Where a training step's time goes, for ``bench speed``: the forward / backward / optimizer
split, the number of operators a step dispatches (per glimpse: the recurrent models repeat
the same work T times), and how long the step's matrix products alone take on this machine.

The last answers "is the step bound by its products?": every matrix product of one step
(``mm``, ``addmm``, ``bmm``, ``baddbmm``: the LSTMs, the linear maps and the attention's
filterbank products, forward and backward) is recorded with its shapes and dtype, then each
distinct one is replayed on its own, on fresh contiguous operands, and timed. The sum is
the time a step would take if everything but the products were free: its ceiling. A step at
twice its products' time is bound by everything else (small kernels, dispatch, memory
traffic); a step near it can only go faster with faster products (bf16, larger batches).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import Counter

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from draw.step import TrainStep

# The matrix products: the operators whose time the ceiling counts.
PRODUCTS = ("mm", "addmm", "bmm", "baddbmm", "_addmm_activation")

Signature = tuple[str, tuple[tuple[int, ...], ...], torch.dtype]  # (operator, operand shapes, dtype)


class _Recorder(TorchDispatchMode):
    """Counts every operator dispatched, and records the matrix products' signatures."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.products: Counter[Signature] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.ops += 1
        name = func.overloadpacket.__name__
        if name in PRODUCTS:
            tensors = [a for a in args if isinstance(a, Tensor)]
            self.products[(name, tuple(tuple(t.shape) for t in tensors), tensors[-1].dtype)] += 1
        return func(*args, **(kwargs or {}))


@dataclasses.dataclass
class StepCensus:
    """What one uncompiled step dispatches: ``ops`` operators, ``products`` matrix products by signature."""

    ops: int
    products: Counter[Signature]


def census(step: TrainStep, x: Tensor, y: Tensor | None) -> StepCensus:
    """Record one training step of ``step`` (forward, backward, clipping and Adam)."""
    with _Recorder() as rec:
        step(x, y)
    return StepCensus(rec.ops, rec.products)


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on a CPU): timings end here."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _operands(sig: Signature, device: torch.device) -> list[Tensor]:
    _, shapes, dtype = sig
    return [torch.randn(s, device=device).to(dtype) for s in shapes]


def product_seconds(sig: Signature, device: torch.device, min_time: float = 0.02) -> float:
    """The median time of one product of signature ``sig`` on ``device``."""
    name, _, _ = sig
    op = getattr(torch.ops.aten, name).default
    args = _operands(sig, device)
    op(*args)  # warm-up
    sync(device)
    reps, times = 0, []
    start = time.perf_counter()
    while reps < 3 or (time.perf_counter() - start < min_time and reps < 1000):
        t = time.perf_counter()
        op(*args)
        sync(device)
        times.append(time.perf_counter() - t)
        reps += 1
    return statistics.median(times)


def products_seconds(products: Counter[Signature], device: torch.device) -> float:
    """How long the products of one step take alone: each distinct one timed, times its count."""
    return sum(n * product_seconds(sig, device) for sig, n in products.items())


def phase_seconds(step: TrainStep, x: Tensor, y: Tensor | None, steps: int) -> dict[str, float]:
    """Median seconds of the forward, backward and update (clipping + Adam) phases over ``steps`` steps."""
    phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
    for _ in range(steps):
        sync(step.device)
        t0 = time.perf_counter()
        loss, _ = step.forward(x, y)
        sync(step.device)
        t1 = time.perf_counter()
        step.backward(loss)
        sync(step.device)
        t2 = time.perf_counter()
        step.update(loss)
        sync(step.device)
        t3 = time.perf_counter()
        for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            phases[k].append(v)
    return {k: statistics.median(v) for k, v in phases.items()}
