"""Recurrent Attention Model (RAM): Mnih, Heess, Graves and Kavukcuoglu (2014), "Recurrent
Models of Visual Attention" (arXiv 1406.6247), the hard-attention model that DRAW's Table 1
compares against (100 x 100 cluttered MNIST: 4 glimpses 9.41%, 8 glimpses 8.11%).

At each of T glimpses a retina reads k nested square patches around a location l (sec. 4,
"Retina and location encodings"); a glimpse network mixes "what" and "where" into g_t; a
recurrent core updates h_t; a Gaussian location policy picks the next l from h_t. The
location is sampled, so it is not differentiable: the policy is trained by REINFORCE with a
learned baseline, the rest by back-propagating the classification loss (sec. 3.2, "hybrid
supervised loss"). Unlike :mod:`draw.classifier`, whose attention is differentiable.

Locations l are in [-1, 1]^2, as (x, y): (-1, -1) is the centre of the top-left pixel,
(1, 1) that of the bottom-right one, (0, 0) the image centre. In 1-based pixels (the rest
of the code base's convention) x = 1 + (l_x + 1) (W - 1) / 2, y = 1 + (l_y + 1) (H - 1) / 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CORES = ("lstm", "rnn")


@dataclass
class RAMConfig:
    """RAM; defaults: the paper's 100 x 100 cluttered setting (Table 2: 12 x 12 patches, 4 scales)."""

    image_shape: tuple[int, int, int] = (1, 100, 100)
    glimpses: int = 8  # T
    patch: int = 12  # g_w, the side of the finest retina patch
    scales: int = 4  # k patches of sides g_w, 2 g_w, 4 g_w, ... (12, 24, 48, 96)
    glimpse_hidden: int = 128  # h_g and h_l
    glimpse_size: int = 256  # g_t
    lstm_size: int = 256  # the core's state h_t
    n_classes: int = 10
    # Fixed std of the Gaussian location policy, in l units (the paper fixes it, value not
    # given). 0.1 is about 5 pixels on 100 x 100: exploration within a fovea's width of the
    # mean, so a glimpse still lands near where the policy meant, while its REINFORCE
    # gradient (which scales as 1/std) stays moderate.
    loc_std: float = 0.1
    # The paper's classification core (the cluttered MNIST rows of its Table 2, quoted by DRAW's
    # Table 1) is rectifier units, h_t = Rect(Linear(h_{t-1}) + Linear(g_t)) ("rnn", sec. 4,
    # "Core network"); it used LSTM units for its dynamic environment. "lstm" gives RAM the
    # differentiable classifier's core; at 100 x 100 it learned twice as fast as "rnn" (measured,
    # benchmark/cluttered.py's paper preset, which uses it).
    core: str = "rnn"
    # The share of REINFORCE's gradient that reaches the core and glimpse networks through h
    # (LocationNetwork): 0 trains the location network alone (h detached, as the best-known
    # PyTorch RAM does), 1 is the RAM paper's hybrid loss, whose REINFORCE term trains every
    # parameter (sec. 3.2); a fraction scales that gradient without changing the forward pass.
    reinforce_into_core: float = 0.0

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(s) for s in self.image_shape)  # JSON round trip gives lists
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {self.image_shape}")
        for name in ("glimpses", "patch", "scales", "glimpse_hidden", "glimpse_size", "lstm_size", "n_classes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.loc_std) and self.loc_std > 0):
            raise ValueError(f"loc_std must be > 0, got {self.loc_std}")
        if self.core not in CORES:
            raise ValueError(f"core must be one of {CORES}, got {self.core!r}")
        if not (math.isfinite(self.reinforce_into_core) and 0 <= self.reinforce_into_core <= 1):
            raise ValueError(f"reinforce_into_core must be in [0, 1], got {self.reinforce_into_core}")


class GlimpseSensor(nn.Module):
    """The retina rho(x, l) (sec. 4): k square patches centred at l, of sides g, 2g, 4g, ...,
    each area-averaged down to g x g (average pooling over 1, 2, 4, ... pixel blocks); zeros
    outside the image. No parameters.

    The crop centre is l's pixel rounded half up, c = floor(p + 1/2) with p the 0-based
    pixel position of l; a patch of side s covers pixels c - floor(s/2) .. c - floor(s/2) + s - 1
    on each axis (for even s, c is the pixel just below and right of the patch's middle).

    Every block average is read from the image's integral image I (summed-area table,
    I[r, q] = the sum of the pixels above row r and left of column q), computed once per
    image and read T times: a block's sum is I at its four corners, so a glimpse gathers
    k (g + 1)^2 values (676 for the paper's 12 x 12 x 4) instead of the largest patch's
    (g 2^(k-1))^2 pixels (9,216) and their pooling. Corners off the image are clamped to its
    edge, which is the zero padding. I is float64: sums of float32 pixels (up to H W of
    them) are then exact to ~1e-11, so the blocks equal average pooling's to float32 rounding.
    """

    def __init__(self, image_shape: tuple[int, int, int], patch: int, scales: int) -> None:
        super().__init__()
        self.C, self.H, self.W = image_shape
        self.g, self.k = patch, scales
        self.size = scales * self.C * patch * patch  # of the flattened output

    def integral(self, x: Tensor) -> Tensor:
        """``(batch, C, H, W)`` -> its integral image ``(batch, C, H + 1, W + 1)``, float64;
        done once per image, read T times."""
        return F.pad(x.double().cumsum(-2).cumsum(-1), (1, 0, 1, 0))

    def centre(self, loc: Tensor) -> Tensor:
        """``(batch, 2)`` locations (x, y) in [-1, 1] -> 0-based crop centres (col, row), long."""
        loc = loc.float()  # Python-scalar arithmetic below: no host-to-device copy (CUDA graphs)
        c_x = torch.floor((loc[:, 0] + 1) * ((self.W - 1) / 2) + 0.5).clamp(0, self.W - 1)  # round half up
        c_y = torch.floor((loc[:, 1] + 1) * ((self.H - 1) / 2) + 0.5).clamp(0, self.H - 1)
        return torch.stack((c_x, c_y), -1).long()

    def read(self, sums: Tensor, loc: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Patches ``(batch, k, C, g, g)`` in ``dtype`` at ``loc`` ``(batch, 2)``, from the
        integral image ``sums`` (from :meth:`integral`)."""
        batch, C, _, W1 = sums.shape
        c = self.centre(loc)  # (batch, 2)
        block = 2 ** torch.arange(self.k, device=sums.device)  # (k,) block side 2^j at scale j
        # the corners of scale j's g x g blocks: c - floor(g 2^j / 2) + a 2^j, a = 0 .. g
        corner = torch.arange(self.g + 1, device=sums.device)[None, :] * block[:, None] - (self.g * block[:, None]) // 2
        cols = (c[:, 0, None, None] + corner).clamp(0, self.W)  # (batch, k, g + 1)
        rows = (c[:, 1, None, None] + corner).clamp(0, self.H)
        index = (rows[..., :, None] * W1 + cols[..., None, :]).flatten(1)  # (batch, k (g+1)^2)
        G = sums.flatten(2).gather(2, index[:, None].expand(batch, C, -1))
        G = G.view(batch, C, self.k, self.g + 1, self.g + 1)
        box = G[..., 1:, 1:] - G[..., :-1, 1:] - G[..., 1:, :-1] + G[..., :-1, :-1]  # (batch, C, k, g, g)
        area = (block * block).to(box.dtype)[:, None, None]  # (k, 1, 1)
        return (box / area).transpose(1, 2).to(dtype)  # (batch, k, C, g, g)

    def forward(self, x: Tensor, loc: Tensor) -> Tensor:
        """rho(x, l): ``x`` ``(batch, C, H, W)``, ``loc`` = l ``(batch, 2)`` -> ``(batch, k, C, g, g)``."""
        return self.read(self.integral(x), loc, x.dtype)


class GlimpseNetwork(nn.Module):
    """f_g(x, l) (sec. 4, "Glimpse network"): h_g = Rect(Linear(rho(x, l))), h_l = Rect(Linear(l)),
    g = Rect(Linear(h_g) + Linear(h_l))."""

    def __init__(self, cfg: RAMConfig) -> None:
        super().__init__()
        self.sensor = GlimpseSensor(cfg.image_shape, cfg.patch, cfg.scales)
        self.what = nn.Linear(self.sensor.size, cfg.glimpse_hidden)  # -> h_g
        self.where = nn.Linear(2, cfg.glimpse_hidden)  # -> h_l
        self.what_g = nn.Linear(cfg.glimpse_hidden, cfg.glimpse_size)
        self.where_g = nn.Linear(cfg.glimpse_hidden, cfg.glimpse_size)

    def forward(self, sums: Tensor, loc: Tensor) -> Tensor:
        """``sums`` from ``sensor.integral``, ``loc`` = l_{t-1} ``(batch, 2)`` -> g ``(batch, glimpse_size)``."""
        rho = self.sensor.read(sums, loc, self.what.weight.dtype).flatten(1)  # (batch, k C g g)
        h_g = F.relu(self.what(rho))
        h_l = F.relu(self.where(loc))
        return F.relu(self.what_g(h_g) + self.where_g(h_l))


class CoreNetwork(nn.Module):
    """f_h: h_t = f_h(h_{t-1}, g_t); an LSTM cell, or the paper's rectifier units
    h_t = Rect(Linear(h_{t-1}) + Linear(g_t)) (``kind="rnn"``, whose cell state stays 0)."""

    def __init__(self, glimpse_size: int, size: int, kind: str = "lstm") -> None:
        super().__init__()
        self.kind = kind
        if kind == "lstm":
            self.cell = nn.LSTMCell(glimpse_size, size)
        else:
            self.from_h = nn.Linear(size, size)
            self.from_g = nn.Linear(glimpse_size, size)

    def forward(self, g: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """``g`` ``(batch, glimpse_size)``, ``(h, c)`` each ``(batch, size)`` -> the new ``(h, c)``."""
        if self.kind == "lstm":
            return self.cell(g, state)
        h, c = state
        return F.relu(self.from_h(h) + self.from_g(g)), c


class LocationNetwork(nn.Module):
    """f_l: the location policy pi(l | h) = N(mu, loc_std^2 I), mu = tanh(Linear(h)) (the paper
    has mu = Linear(h); tanh keeps the mean on the image). Trained by REINFORCE; the sample
    fed back to the glimpse network is detached. Of REINFORCE's gradient with respect to h,
    the share ``into_core`` reaches the core and glimpse networks (RAMConfig.reinforce_into_core:
    0 detaches h, 1 is the paper's hybrid loss); the forward pass is the same for every share.

    Why the share matters at 100 x 100 (measured, issue 14): the core, shaped by the
    cross-entropy alone, holds no digit position early in training; this location network
    (or a two-layer one) fitted by regression to the true position on the detached h stays
    at the image centre's 29 px mean distance, while with that regression's gradient let
    into the core the same model looks within 10 px of the digit after one epoch. The whole
    REINFORCE gradient into the core put the model behind the detached one (validation error
    after 5 epochs of 20,000 images 88.6 / 84.8 / 82.5% at std 0.1 / 0.2 / 0.3, detached
    76.9%; 70.0% after 45 at std 0.3, detached 44.1%); a tenth of it, std 0.2, was level with
    the detached policy for 25 such epochs, then ahead (21.7% against 31.7% after 120 epochs,
    seed 0; glimpses still 30-40 px from the digit on average). Neither a two-layer location
    network (ReLU hidden layer of 128, the change that brought public 28 x 28 RAM code to the
    paper with one rollout) nor 0.3 of the gradient sped this up at 100 x 100 (47.1% after 38
    such epochs and 68.4% after 26, against 39.3 / 41.5% and 55.6 / 56.3% for a tenth at std 0.2
    over two seeds); with the two-layer network and std 0.05 the policy ran into a corner (glimpses
    70 px from the digit after 8 epochs) and stayed there. Over longer runs a tenth at std 0.1
    overtook std 0.2 (the cluttered paper preset's comment has the numbers)."""

    def __init__(self, size: int, std: float, into_core: float = 0.0) -> None:
        super().__init__()
        self.std = std
        self.into_core = into_core
        self.mu = nn.Linear(size, 2)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``h`` ``(batch, size)`` -> l ``(batch, 2)`` in [-1, 1] (detached) and log pi(l | h) ``(batch,)``.

        The log-density is of the unclamped sample; all in float32 (also under autocast)."""
        if self.into_core:  # the value of h, a share of its gradient
            h = h.detach() + self.into_core * (h - h.detach())
        else:
            h = h.detach()
        mu = torch.tanh(self.mu(h).float())  # (batch, 2)
        sample = (mu + self.std * torch.randn_like(mu)).detach()
        log_pi = (-(sample - mu).square() / (2 * self.std**2) - math.log(self.std * math.sqrt(2 * math.pi))).sum(-1)
        return sample.clamp(-1, 1), log_pi


class BaselineNetwork(nn.Module):
    """b_t = Linear(h_t) (sec. 3.2, variance reduction): the expected reward from state h_t,
    fitted by the squared error to R; h is detached so the baseline does not shape the core."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.b = nn.Linear(size, 1)

    def forward(self, h: Tensor) -> Tensor:
        """``(batch, size)`` -> ``(batch,)`` float32."""
        return self.b(h.detach()).float().squeeze(-1)


class ActionNetwork(nn.Module):
    """f_a: the class after the last glimpse, softmax(Linear(h_T)) (sec. 4.1); returns logits."""

    def __init__(self, size: int, n_classes: int) -> None:
        super().__init__()
        self.logits = nn.Linear(size, n_classes)

    def forward(self, h: Tensor) -> Tensor:
        """``(batch, size)`` -> logits ``(batch, n_classes)`` float32."""
        return self.logits(h).float()


@dataclass
class Rollout:
    """One episode per image: the action's logits ``(batch, n_classes)``, the locations
    l_0 .. l_{T-1} ``(batch, T, 2)`` in [-1, 1], their log pi ``(batch, T)`` and the
    baselines b_0 .. b_{T-1} ``(batch, T)`` of the states they were drawn from."""

    logits: Tensor
    loc: Tensor
    log_pi: Tensor
    b: Tensor


def hybrid_loss(logits: Tensor, y: Tensor, log_pi: Tensor, b: Tensor) -> dict[str, Tensor]:
    """The terms of the hybrid loss (sec. 3.2): cross-entropy of the action, REINFORCE of the
    locations with reward R = 1 for a correct class (0 otherwise, at the last step only) and
    advantage R - b_t, and the baseline's squared error to R. Shapes as in :class:`Rollout`.
    Returns 0-d tensors ``ce``, ``reinforce``, ``baseline_mse`` (with their graphs), ``reward``
    and ``error``."""
    ce = F.cross_entropy(logits.float(), y)
    R = (logits.argmax(1) == y).float()  # (batch,)
    advantage = (R[:, None] - b).detach()  # (batch, T)
    reinforce = -(log_pi * advantage).sum(1).mean()  # - sum_t log pi(l_t) (R - b_t), batch mean
    baseline_mse = (b - R[:, None]).square().mean()
    return {"ce": ce, "reinforce": reinforce, "baseline_mse": baseline_mse, "reward": R.mean(), "error": 1 - R.mean()}


class RAM(nn.Module):
    """``x`` ``(batch, C, H, W)`` in [0, 1] -> logits ``(batch, n_classes)`` and glimpse locations.

    ``mc_samples`` (an attribute, not part of the config): location rollouts averaged per
    image by :meth:`forward` when it is not told; 1 by default (set it for evaluation)."""

    kind = "ram"

    def __init__(self, cfg: RAMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.glimpse = GlimpseNetwork(cfg)
        self.core = CoreNetwork(cfg.glimpse_size, cfg.lstm_size, cfg.core)
        self.locator = LocationNetwork(cfg.lstm_size, cfg.loc_std, cfg.reinforce_into_core)
        self.baseline = BaselineNetwork(cfg.lstm_size)
        self.action = ActionNetwork(cfg.lstm_size, cfg.n_classes)
        self.mc_samples = 1

    def rollout(self, x: Tensor) -> Rollout:
        """One episode of T glimpses per image, locations sampled from the policy."""
        batch = x.shape[0]
        sums = self.glimpse.sensor.integral(x)
        h = x.new_zeros(batch, self.cfg.lstm_size)
        c = x.new_zeros(batch, self.cfg.lstm_size)
        ls, log_pis, bs = [], [], []
        for _ in range(self.cfg.glimpses):
            loc, log_pi = self.locator(h)  # l_t ~ pi(. | h_t); from h_0 = 0 the learned start
            bs.append(self.baseline(h))
            h, c = self.core(self.glimpse(sums, loc), (h, c))
            ls.append(loc)
            log_pis.append(log_pi)
        return Rollout(self.action(h), torch.stack(ls, 1), torch.stack(log_pis, 1), torch.stack(bs, 1))

    def to_pixels(self, loc: Tensor) -> Tensor:
        """Locations in [-1, 1] ``(..., 2)`` -> 1-based pixel coordinates (x, y)."""
        _, H, W = self.cfg.image_shape
        return torch.stack((1 + (loc[..., 0] + 1) * ((W - 1) / 2), 1 + (loc[..., 1] + 1) * ((H - 1) / 2)), -1)

    def forward(self, x: Tensor, mc_samples: int | None = None) -> tuple[Tensor, Tensor]:
        """Logits ``(batch, n_classes)`` and the glimpse locations ``(batch, T, 2)`` in 1-based
        pixels (x, y). With ``mc_samples`` M > 1 (default ``self.mc_samples``): M rollouts,
        one after another; the logits are the log of their mean class probabilities, the
        locations those of the first rollout."""
        M = self.mc_samples if mc_samples is None else int(mc_samples)
        if M < 1:
            raise ValueError(f"mc_samples must be >= 1, got {M}")
        first = self.rollout(x)
        if M == 1:
            return first.logits, self.to_pixels(first.loc)
        log_p = [first.logits.log_softmax(-1)] + [self.rollout(x).logits.log_softmax(-1) for _ in range(M - 1)]
        return torch.logsumexp(torch.stack(log_p), 0) - math.log(M), self.to_pixels(first.loc)

    def terms(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """:func:`hybrid_loss` of one rollout per image."""
        r = self.rollout(x)
        return hybrid_loss(r.logits, y, r.log_pi, r.b)

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """ce + reinforce + baseline_mse; metrics are detached device tensors (no host sync)."""
        t = self.terms(x, y)
        loss = t["ce"] + t["reinforce"] + t["baseline_mse"]
        return loss, {"loss": loss.detach(), **{k: v.detach() for k, v in t.items()}}
