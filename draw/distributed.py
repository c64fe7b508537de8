"""The device and data-parallel helpers of the training engine.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) the
training loop joins a process group (NCCL on CUDA, gloo on CPU); every rank draws the same
epoch order and takes its slice of each global batch, and rank 0 alone writes and prints.
"""

from __future__ import annotations

import atexit
import gc
import os

import torch
from torch import Tensor


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """``device``, or CUDA when available, else CPU; under ``torchrun`` a bare ``cuda``
    becomes this process's GPU, ``cuda:LOCAL_RANK``."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


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


# The group that carries :func:`all_reduce` under gloo: a group of its own, apart from the
# default one that DistributedDataParallel holds. A gloo worker thread that finishes a
# collective on a tensor Python can see must take the GIL to let go of it; if the process
# reaches interpreter finalization first (a rank that returns right after its last metrics
# all-reduce, on a busy CPU), that thread is terminated mid-destructor and the process
# aborts with "terminate called without an active exception" (torch 2.14: 2 of 96 looped
# runs of the two-process DRAW test on the 2-core EPYC beside another job, and once in CI;
# the core dump showed ~AsyncAllreduceWork in a gloo thread during Py_FinalizeEx). DDP keeps
# the default group alive until exit, but this one nobody else holds, so :func:`_shut_down`
# destroys it while the interpreter is whole: its destructor joins its threads (releasing
# the GIL meanwhile), and they let go of everything first. None: the default group (NCCL
# on CUDA, not tried here for want of a GPU; or a single process).
_metrics_group = None


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on CPU);
    returns ``(rank, world size)``."""
    import torch.distributed as dist

    global _metrics_group
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        _metrics_group = dist.new_group(backend="gloo") if backend == "gloo" else None
        atexit.register(_shut_down)
        rank, size = world()
    return rank, size


def _shut_down() -> None:
    """At exit: destroy every process group, and collect the cycles that may still hold the
    metrics group, so that its threads are joined before the interpreter finalizes."""
    import torch.distributed as dist

    global _metrics_group
    if dist.is_initialized():
        _metrics_group = None
        dist.destroy_process_group()
        gc.collect()


def all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    """``t`` summed (or maxed, ``op="max"``) over the process group, in place; ``t`` itself
    in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=_metrics_group)
    return t
