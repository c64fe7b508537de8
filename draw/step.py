"""One training step, the same for the training loop and ``bench speed``: the loss (forward,
run as the speed switches say), backward, gradient clipping and Adam.

The step never synchronises with the host: it returns the loss, the metrics and a flag
"loss and gradients finite" as device tensors, for the caller to check when it chooses.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from draw.fast import SpeedConfig, prepare


class TrainStep:
    """``step(x, y) -> (loss, metrics, finite)`` for ``model`` under ``speed``.

    ``shard = (rank, world)``: with ``world > 1`` the loss module is wrapped in
    DistributedDataParallel (every rank holds ``1/world`` of a global batch). ``grad_clip``
    0 clips nothing, but the gradient norm is still computed: it is how NaN/Inf gradients
    are caught. ``eval_loss(x, y)`` is the same loss uncompiled and unsharded, for
    validation.
    """

    def __init__(self, model: nn.Module, speed: SpeedConfig, device: torch.device, *, lr: float,
                 weight_decay: float = 0.0, grad_clip: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, shard: tuple[int, int] = (0, 1)) -> None:
        self.model, self.speed, self.device = model, speed, device
        self.grad_clip = grad_clip if grad_clip else math.inf
        rank, size = shard
        self.plain = speed == SpeedConfig() and size == 1
        if self.plain:  # the reference: model.loss as written
            self.loss_fn, self.eval_loss = model.loss, model.loss
        else:
            prepared = prepare(model, speed, device, shard=shard)
            self.loss_fn, self.eval_loss = prepared.module, prepared.eval_loss
            self._autocast = prepared.autocast
            if size > 1:
                from torch.nn.parallel import DistributedDataParallel

                self.loss_fn = DistributedDataParallel(prepared.module,
                                                       device_ids=[device.index] if device.type == "cuda" else None)
        fused_adam = speed.fused and device.type in ("cuda", "cpu")
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                          **({"fused": True} if fused_adam else {}))

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's autocast context (a no-op unless ``speed.amp == "bf16"``)."""
        return contextlib.nullcontext() if self.plain else self._autocast(self.device)

    # The step in three phases (``__call__`` runs them in order; ``bench speed`` times them apart).
    def forward(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and its metrics, under the speed switches."""
        if self.speed.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast():
            return self.loss_fn(x, y)

    def backward(self, loss: Tensor) -> None:
        """The gradients of ``loss`` (the previous ones dropped)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def update(self, loss: Tensor) -> Tensor:
        """Clip the gradients and take Adam's step; returns "loss and gradients finite"."""
        gnorm = nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        finite = torch.isfinite(loss) & torch.isfinite(gnorm)
        self.optimizer.step()
        return finite

    def __call__(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        loss, metrics = self.forward(x, y)
        self.backward(loss)
        return loss.detach(), metrics, self.update(loss)
