"""What a model costs: multiply-adds per image (counted, not guessed) and inference speed.

Multiply-adds are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward
pass in evaluation mode: it counts the matrix products and convolutions (2 FLOPs per
multiply-add) that reach PyTorch's dispatcher, so the attention model's filterbank
products, LSTM gates and linear maps are all in, while elementwise work (the Gaussian
exponentials, activations, pooling) is not: the count is a lower bound on arithmetic and
the same rule for every model.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from datasets.tensors import TensorData


@torch.no_grad()
def macs_per_image(model: nn.Module, image_shape: tuple[int, int, int], batch: int = 2) -> float:
    """Multiply-adds of one forward pass per image of ``image_shape`` ``(C, H, W)``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.rand(batch, *image_shape, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 2 / batch


@torch.no_grad()
def inference_images_per_s(model: nn.Module, data: TensorData, batch_size: int = 500, max_images: int = 5000) -> float:
    """Images per second of evaluation-mode forward passes over the first ``max_images`` of
    ``data`` (data already on the model's device; one untimed warm-up batch first)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    data = data.take(max_images)
    x, _ = next(data.batches(batch_size, device=device))
    model(x)  # warm-up: one-time allocations
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for x, _ in data.batches(batch_size, device=device):
        model(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    model.train(was_training)
    return len(data) / (time.perf_counter() - t0)
