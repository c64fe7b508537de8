"""The data container every model trains and is evaluated on: a whole data set held as
tensors (uint8 on the device, converted batch by batch), batched by index.

No DataLoader and no per-sample Python: a batch is one gather ``x[idx]`` and one multiply.
This is the one place that walks a data set in batches (:meth:`TensorData.batches`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class TensorData:
    """A data set held as tensors: ``x`` ``(n, C, H, W)`` uint8 (or float), ``y`` ``(n,)`` or None.

    ``scale`` maps stored values to [0, 1] (1/255 for uint8 grey levels, 1 for binary data).
    An ``x`` of shape ``(n, H, W)`` gets a channel axis.
    """

    x: Tensor
    y: Tensor | None = None
    scale: float = 1 / 255

    def __post_init__(self) -> None:
        if self.x.dim() == 3:
            self.x = self.x[:, None]  # (n, H, W) -> (n, 1, H, W)
        if self.y is not None and len(self.y) != len(self.x):
            raise ValueError(f"x has {len(self.x)} items but y has {len(self.y)}")

    @classmethod
    def from_numpy(cls, x: np.ndarray, y: np.ndarray | None = None, scale: float = 1 / 255) -> TensorData:
        """Wrap numpy arrays (shared memory where possible, a copy for read-only arrays)."""
        x = x if x.flags.writeable else x.copy()
        y = None if y is None else (y if y.flags.writeable else y.copy())
        return cls(torch.from_numpy(x), None if y is None else torch.from_numpy(y), scale)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one item."""
        return tuple(int(s) for s in self.x.shape[1:])  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> TensorData:
        y = self.y.to(device) if self.y is not None else None
        return TensorData(self.x.to(device), y, self.scale)

    def take(self, n: int | None) -> TensorData:
        """The first ``n`` items (all of them when ``n`` is None or at least ``len(self)``)."""
        if n is None or n >= len(self):
            return self
        return TensorData(self.x[:n], None if self.y is None else self.y[:n], self.scale)

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        """Float images in [0, 1] ``(b, C, H, W)`` and labels ``(b,)`` for indices ``idx``."""
        x = self.x[idx].float() * self.scale
        return x, (self.y[idx] if self.y is not None else None)

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None,
                device: torch.device | str | None = None) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Items ``start .. stop`` in order, ``batch_size`` at a time, as :meth:`batch` gives
        them, moved to ``device`` when given (the last batch may be smaller)."""
        stop = len(self) if stop is None else min(stop, len(self))
        for lo in range(start, stop, batch_size):
            idx = torch.arange(lo, min(lo + batch_size, stop), device=self.x.device)
            x, y = self.batch(idx)
            if device is not None:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True) if y is not None else None
            yield x, y
