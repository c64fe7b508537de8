"""The device and data-parallel helpers of the training engine.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) the
training loop joins a process group (NCCL on CUDA, gloo on CPU); every rank draws the same
epoch order and takes its slice of each global batch, and rank 0 alone writes and prints.
"""

from __future__ import annotations

import atexit
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


def all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    """``t`` summed (or maxed, ``op="max"``) over the process group, in place; ``t`` itself
    in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t
