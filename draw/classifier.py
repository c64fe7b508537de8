"""Read-only attention classifier: the "Differentiable RAM" of Gregor et al. (2015), section 4.1.

An LSTM takes, at each of T glimpses, an N x N patch read from the image with DRAW's
Gaussian filterbank (eq. 27); the window for glimpse t is a linear function of the
previous hidden state h_{t-1} (eq. 21); a softmax over the classes reads the last state.
Trained end to end by back-propagation through the attention (no reinforcement learning,
unlike RAM).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from draw.attention import attention_params, filterbank_from, read_patch
from draw.config import ClassifierConfig


class AttentionClassifier(nn.Module):
    """``x`` ``(batch, C, H, W)`` in [0, 1] -> logits ``(batch, n_classes)``."""

    kind = "classifier"

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C, H, W = cfg.image_shape
        self.C, self.B, self.A = C, H, W
        N = cfg.read_n
        self.attn = nn.Linear(cfg.hidden, 5)  # eq. 21: (g~X, g~Y, log sigma^2, log delta~, log gamma) = W(h)
        if cfg.glimpse_net:
            self.what = nn.Linear(C * N * N, cfg.glimpse_net)
            self.where = nn.Linear(5, cfg.glimpse_net)
        self.lstm = nn.LSTMCell(cfg.glimpse_net or C * N * N, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.n_classes)
        self._init_first_glimpse()

    def _init_first_glimpse(self) -> None:
        """h_0 = 0, so the first window is the bias: start with the N x N grid spanning the
        whole image (g~ = 0, delta~ = 1), sigma = half the stride, gamma = 1; small weights
        so later windows start near it and move as the LSTM learns where to look."""
        stride = (max(self.A, self.B) - 1) / max(self.cfg.read_n - 1, 1)
        with torch.no_grad():
            self.attn.weight.mul_(0.1)
            self.attn.bias.copy_(torch.tensor([0.0, 0.0, math.log((stride / 2) ** 2), 0.0, 0.0]))

    def _where(self, p) -> Tensor:
        """Window parameters scaled to O(1): centre in [-1, 1], log stride, log sigma, log gamma."""
        return torch.stack([2 * p.g_x / self.A - 1, 2 * p.g_y / self.B - 1, p.delta.log(), 0.5 * p.sigma2.log(),
                            p.gamma.log()], -1)  # (batch, 5)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns logits ``(batch, n_classes)`` and the windows ``(batch, T, 5)``
        (g_x, g_y, delta, sigma, gamma in pixels, for drawing the glimpses)."""
        batch, N = x.shape[0], self.cfg.read_n
        h = x.new_zeros(batch, self.cfg.hidden)
        c = x.new_zeros(batch, self.cfg.hidden)
        windows = []
        for _ in range(self.cfg.glimpses):
            p = attention_params(self.attn(h), N, self.A, self.B, bounded_centre=self.cfg.bounded_centre)  # from h_{t-1}
            F_x, F_y = filterbank_from(p, N, self.A, self.B)  # (batch, N, A), (batch, N, B)
            g = read_patch(x, F_x, F_y, p.gamma).flatten(1)  # eq. 27, (batch, C N N)
            if self.cfg.glimpse_net:
                g = torch.relu(self.what(g) + self.where(self._where(p)))  # (batch, glimpse_net)
            h, c = self.lstm(g, (h, c))
            windows.append(p.stack())
        return self.out(h), torch.stack(windows, 1)

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean cross-entropy; metrics are device tensors (no host sync)."""
        logits, _ = self(x)
        loss = F.cross_entropy(logits, y)
        error = (logits.argmax(1) != y).float().mean()
        return loss, {"loss": loss.detach(), "error": error.detach()}
