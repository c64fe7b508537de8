"""Fused training paths: the same mathematics as :mod:`draw.model` and
:mod:`draw.classifier` in fewer, larger kernels (see :mod:`draw.fast` for the switches).

The models' own ``loss`` methods stay the plain eager reference: one module call per
equation, written to be read against the paper. :class:`FusedDraw` and
:class:`FusedClassifier` compute the same loss from the same parameters (tests check it to
float tolerance) and differ only in how the work is laid out:

- packed GEMMs: every linear map that reads the same vector is one matrix product
  (``h_dec_{t-1}`` feeds the read window, the encoder and the decoder: one
  ``(batch, 256) @ (256, 2053)`` product instead of three); the weights are concatenated
  once per batch (and cast once under autocast), so checkpoints keep the models' own
  parameters;
- one Gaussian filterbank pass for both axes, on index grids precomputed as buffers;
  both filterbanks are left operands of their products, so their gradients need no
  transposes; under ``torch.compile`` small ones (N <= ``SMALL_N``) are broadcast sums the
  compiler fuses with their neighbours;
- images and canvas kept in a ``(batch, H, C, W)`` layout, and the weights that read the
  glimpses or write the patches permuted to match, so no step transposes anything;
- a hand-written LSTM cell (one autograd node in eager mode);
- the KL of all T steps computed once, after the loop;
- under bf16 autocast only the matrix products of the LSTMs and linear maps run in
  bfloat16: the attention, the recurrent state, the canvas and the losses stay float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from draw.attention import LOG_DELTA_RANGE, LOG_GAMMA_RANGE, LOG_SIGMA2_RANGE
from draw.likelihood import gaussian_kl


# -- the LSTM cell -----------------------------------------------------------------------
class _LSTMPointwise(torch.autograd.Function):
    """``h, c`` from the gate pre-activations ``(batch, 4H)`` (PyTorch's order i, f, g, o)
    and ``c_prev`` ``(batch, H)``: the elementwise half of ``nn.LSTMCell`` as one autograd
    node with a hand-written backward."""

    @staticmethod
    def forward(ctx, gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
        H = c_prev.shape[1]
        s = torch.sigmoid(gates)  # i, f, o used; the g block is overwritten below
        g = torch.tanh(gates[:, 2 * H : 3 * H])
        i, f, o = s[:, :H], s[:, H : 2 * H], s[:, 3 * H :]
        c = torch.addcmul(f * c_prev, i, g)  # c_t = f c_{t-1} + i g
        tc = torch.tanh(c)
        h = o * tc  # h_t = o tanh(c_t)
        ctx.save_for_backward(s, g, c_prev, tc)
        return h, c

    @staticmethod
    def backward(ctx, dh: Tensor | None, dc: Tensor | None) -> tuple[Tensor, Tensor]:
        s, g, c_prev, tc = ctx.saved_tensors
        H = c_prev.shape[1]
        i, f, o = s[:, :H], s[:, H : 2 * H], s[:, 3 * H :]
        if dh is None:
            dh = torch.zeros_like(tc)
        dct = dh * o * (1 - tc * tc)  # dL/dc_t through h_t
        if dc is not None:
            dct = dct + dc
        d = torch.empty_like(s)  # (batch, 4H) dL/d(activated gates), then pre-activation
        torch.mul(dct, g, out=d[:, :H])
        torch.mul(dct, c_prev, out=d[:, H : 2 * H])
        torch.mul(dct, i, out=d[:, 2 * H : 3 * H])
        torch.mul(dh, tc, out=d[:, 3 * H :])
        slope = s * (1 - s)  # sigmoid'
        slope[:, 2 * H : 3 * H] = 1 - g * g  # tanh'
        return d.mul_(slope), dct * f


def lstm_pointwise(gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTM cell after its matrix product: ``(h_t, c_t)`` from gates ``(batch, 4H)``.

    Eager: one autograd node with a hand-written backward. Under ``torch.compile``: plain
    ops, whose derivative the compiler fuses itself.
    """
    gates, c_prev = gates.float(), c_prev.float()  # bf16 products, float32 state
    if torch.compiler.is_compiling():
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    return _LSTMPointwise.apply(gates, c_prev)


def _lstm_weights(cell: nn.LSTMCell) -> tuple[Tensor, Tensor, Tensor]:
    """(W_ih, W_hh, b_ih + b_hh) of an ``nn.LSTMCell``."""
    bias = cell.bias_ih + cell.bias_hh if cell.bias else torch.zeros_like(cell.weight_ih[:, 0])
    return cell.weight_ih, cell.weight_hh, bias


# -- attention -----------------------------------------------------------------------------
class Glimpse(nn.Module):
    """Gaussian filterbanks (eqs. 19-26) for an N x N grid on a (B, A) image, both axes in
    one pass, on index grids held as buffers (precomputed once per model and device)."""

    def __init__(self, N: int, A: int, B: int, *, bounded_centre: bool = False, min_sigma: float = 0.0,
                 max_log_gamma: float = 0.0) -> None:
        super().__init__()
        self.N, self.A, self.B, self.bounded_centre = N, A, B, bounded_centre
        self.min_sigma2, self.max_log_gamma = min_sigma**2, max_log_gamma
        self.stride = (max(A, B) - 1) / max(N - 1, 1)  # eq. 24
        self.register_buffer("offsets", torch.arange(1, N + 1, dtype=torch.float32) - N / 2 - 0.5, persistent=False)
        self.register_buffer("grid_x", torch.arange(1, A + 1, dtype=torch.float32), persistent=False)
        self.register_buffer("grid_y", torch.arange(1, B + 1, dtype=torch.float32), persistent=False)
        self.register_buffer("half_size", torch.tensor([(A + 1) / 2, (B + 1) / 2]), persistent=False)
        lo, hi = zip(LOG_SIGMA2_RANGE, LOG_DELTA_RANGE, LOG_GAMMA_RANGE, strict=True)
        self.register_buffer("lo", torch.tensor(lo), persistent=False)
        self.register_buffer("hi", torch.tensor(hi), persistent=False)

    def forward(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``raw`` ``(batch, 5)`` = (g~X, g~Y, log sigma^2, log delta~, log gamma) (eq. 21).

        Returns ``F_x`` ``(batch, N, A)``, ``F_y`` ``(batch, N, B)`` and ``gamma`` ``(batch,)``.
        """
        raw = raw.float()
        g_t = raw[:, :2]
        if self.bounded_centre:
            g_t = torch.tanh(g_t)
        g = (g_t + 1) * self.half_size  # eqs. 22-23, (batch, 2) = (g_x, g_y)
        rest = raw[:, 2:]  # (batch, 3) = (log sigma^2, log delta~, log gamma)
        if self.max_log_gamma:  # the smooth bound of attention_params
            M = self.max_log_gamma
            rest = torch.cat([rest[:, :2], M * torch.tanh(rest[:, 2:] / M)], 1)
        e = torch.clamp(rest, self.lo, self.hi).exp()  # (batch, 3) = (sigma^2, delta~, gamma)
        delta = e[:, 1:2] * self.stride  # eq. 24, (batch, 1)
        mu = g[:, :, None] + (self.offsets * delta)[:, None, :]  # eqs. 19-20, (batch, 2, N)
        sigma2 = e[:, 0] + self.min_sigma2 if self.min_sigma2 else e[:, 0]
        coef = (-0.5 / sigma2)[:, None, None]  # -1 / (2 sigma^2), (batch, 1, 1)
        N = self.N
        if self.A == self.B:  # eqs. 25-26 for both axes at once, softmax = normalised Gaussian
            F_xy = torch.softmax((self.grid_x - mu.reshape(-1, 2 * N, 1)).square() * coef, -1)  # (batch, 2N, A)
            F_x, F_y = F_xy[:, :N], F_xy[:, N:]
        else:
            F_x = torch.softmax((self.grid_x - mu[:, 0, :, None]).square() * coef, -1)  # (batch, N, A)
            F_y = torch.softmax((self.grid_y - mu[:, 1, :, None]).square() * coef, -1)  # (batch, N, B)
        return F_x, F_y, e[:, 2]


def _hca(x: Tensor) -> Tensor:
    """``(batch, C, H, W)`` -> ``(batch, H, C, W)`` contiguous: the layout of the fused paths."""
    return x.permute(0, 2, 1, 3).contiguous()


# Under torch.compile, filterbanks of at most this many rows are applied as broadcast
# products and sums, which the compiler fuses with their neighbours, instead of as batched
# matrix products (library calls too small to pay their overhead).
SMALL_N = 6


def _read_hca(X: Tensor, F_x: Tensor, F_y: Tensor) -> Tensor:
    """The glimpses ``F_y X F_x^T`` of every channel of ``X`` ``(batch, B, K, A)``, returned
    transposed, as ``(batch, N_x, N_y, K)`` = ``[m, n, k]`` (the callers permute the weights
    that read it to match). Both filterbanks are left operands of their products, so their
    gradients come out in their own layout."""
    b, B, K, A = X.shape
    N = F_x.shape[1]
    if N <= SMALL_N and torch.compiler.is_compiling():
        u = (F_y[:, :, :, None, None] * X[:, None]).sum(2)  # (batch, N_y, K, A)
        return (F_x[:, :, None, None, :] * u[:, None]).sum(-1)  # (batch, N_x, N_y, K)
    with torch.autocast(X.device.type, enabled=False):  # attention stays float32 under bf16 autocast
        u = torch.bmm(F_y, X.float().reshape(b, B, K * A))  # (batch, N_y, K A)
        return torch.bmm(F_x, u.view(b, N * K, A).transpose(1, 2)).view(b, N, N, K)  # (batch, N_x, N_y, K)


def _write_hca(w: Tensor, F_x: Tensor, F_y: Tensor) -> Tensor:
    """``F_y^T w F_x`` for a patch ``w`` ``(batch, N, C, N)`` -> ``(batch, B, C, A)``."""
    b, N, C, _ = w.shape
    A = F_x.shape[2]
    if N <= SMALL_N and torch.compiler.is_compiling():
        v = (w[..., None] * F_x[:, None, None]).sum(3)  # (batch, N, C, A)
        return (F_y[:, :, :, None, None] * v[:, :, None]).sum(1)  # (batch, B, C, A)
    with torch.autocast(w.device.type, enabled=False):  # attention stays float32 under bf16 autocast
        v = torch.bmm(w.float().reshape(b, N * C, N), F_x)  # (batch, N C, A)
        return torch.bmm(F_y.transpose(1, 2), v.view(b, N, C * A)).view(b, -1, C, A)  # (batch, B, C, A)


def _autocast_weights(P: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Under autocast, the packed weights cast once per batch (not once per time step)."""
    if not torch.is_autocast_enabled(device.type):
        return P
    dtype = torch.get_autocast_dtype(device.type)
    return {k: v.to(dtype) for k, v in P.items()}


def _perm_cols(W: Tensor, shape: tuple[int, ...], order: tuple[int, ...]) -> Tensor:
    """Reorder the input columns of ``W`` ``(out, prod(shape))`` from ``shape`` to ``order``."""
    return W.reshape(W.shape[0], *shape).permute(0, *(1 + d for d in order)).reshape(W.shape[0], -1)


def _perm_rows(W: Tensor, shape: tuple[int, ...], order: tuple[int, ...]) -> Tensor:
    """Reorder the output rows of ``W`` ``(prod(shape), ...)`` from ``shape`` to ``order``."""
    return W.reshape(*shape, *W.shape[1:]).permute(*order, *range(len(shape), W.dim() - 1 + len(shape))).reshape(W.shape)


# -- DRAW ----------------------------------------------------------------------------------
class FusedDraw(nn.Module):
    """:meth:`draw.model.DRAW.loss` with packed GEMMs and fused kernels (same parameters).

    ``model`` is held as a submodule: moving this module moves the model, and its
    parameters are the model's own. ``shard = (rank, world)`` draws the noise of the whole
    global batch and keeps this rank's slice, so data-parallel training sees the same noise
    as one process with the same global batch.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        cfg = model.cfg
        self.C, self.B, self.A = model.C, model.B, model.A
        self.T, self.Z, self.E, self.D = cfg.T, cfg.z_size, cfg.lstm_size, cfg.lstm_size
        self.attention = cfg.attention
        if self.attention:
            self.read_glimpse = Glimpse(cfg.read_n, self.A, self.B)
            self.write_glimpse = Glimpse(cfg.write_n, self.A, self.B)
        self.shard: tuple[int, int] = (0, 1)
        self.unroll = self._unroll  # replaced by a compiled version in prepare()
        self.chunk = 0  # time steps per call of self.unroll; 0: all T

    def _packed(self) -> dict[str, Tensor]:
        """The model's weights, concatenated and permuted once per batch."""
        m, C, B, A = self.model, self.C, self.B, self.A
        W_ih_e, W_hh_e, b_e = _lstm_weights(m.encoder)
        W_ih_d, W_hh_d, b_d = _lstm_weights(m.decoder)
        R = W_ih_e.shape[1] - self.D  # read size
        W_r = W_ih_e[:, :R]
        if self.attention:
            Nr, Nw = m.cfg.read_n, m.cfg.write_n
            W_r = _perm_cols(W_r, (2, C, Nr, Nr), (3, 2, 0, 1))  # (s, c, n, m) -> (m, n, s, c)
            W_write = torch.cat([m.write_attn.weight, _perm_rows(m.write_patch.weight, (C, Nw, Nw), (1, 0, 2))])
            b_write = torch.cat([m.write_attn.bias, _perm_rows(m.write_patch.bias, (C, Nw, Nw), (1, 0, 2))])
            W_h = torch.cat([m.read_attn.weight, W_ih_e[:, R:], W_hh_d])  # everything h_dec_{t-1} feeds
            b_h = torch.cat([m.read_attn.bias, b_e, b_d])
        else:
            W_r = _perm_cols(W_r, (2, C, B, A), (2, 0, 1, 3))  # (s, c, h, w) -> (h, s, c, w)
            W_write = _perm_rows(m.write_patch.weight, (C, B, A), (1, 0, 2))
            b_write = _perm_rows(m.write_patch.bias, (C, B, A), (1, 0, 2))
            W_h = torch.cat([W_ih_e[:, R:], W_hh_d])
            b_h = torch.cat([b_e, b_d])
        return {
            "W_h_t": W_h.t(), "b_h": b_h,  # h_dec_{t-1} -> [read window | encoder gates | decoder gates]
            "W_enc_t": torch.cat([W_r, W_hh_e], 1).t(),  # [r_t, h_enc_{t-1}] -> encoder gates
            "W_q_t": torch.cat([m.q_mu.weight, m.q_log_sigma.weight]).t(),  # h_enc -> [mu, log sigma]
            "b_q": torch.cat([m.q_mu.bias, m.q_log_sigma.bias]),
            "W_z_t": W_ih_d.t(),  # z_t -> decoder gates
            "W_write_t": W_write.t(), "b_write": b_write,  # h_dec_t -> [write window | patch]
        }

    def _unroll(self, x_p: Tensor, eps: Tensor, state: tuple[Tensor, ...], P: dict[str, Tensor],
                first: bool) -> tuple[tuple[Tensor, ...], Tensor]:
        """``len(eps)`` steps of eqs. 3-8 from ``state`` = (h_enc, c_enc, h_dec, c_dec, canvas);
        ``x_p`` ``(batch, B, C, A)``; returns the new state and ``[mu, log sigma]`` per step
        ``(steps, batch, 2 z)``."""
        h_enc, c_enc, h_dec, c_dec, canvas = state
        b, C, A = x_p.shape[0], self.C, self.A
        qs = []
        for t in range(eps.shape[0]):
            if first and t == 0:  # h_dec_0 = 0: the projection is the bias alone
                proj = P["b_h"].expand(b, -1)
            else:
                proj = torch.addmm(P["b_h"], h_dec, P["W_h_t"])
            x_hat = x_p - torch.sigmoid(canvas)  # eq. 3
            X = torch.cat([x_p, x_hat], 2)  # (batch, B, 2C, A)
            if self.attention:
                raw, g_enc, g_dec = proj.split([5, 4 * self.E, 4 * self.D], 1)
                F_x, F_y, gamma = self.read_glimpse(raw)
                r = _read_hca(X, F_x, F_y).flatten(1) * gamma[:, None]  # eq. 27, (batch, N N 2C)
            else:
                g_enc, g_dec = proj.split([4 * self.E, 4 * self.D], 1)
                r = X.flatten(1)  # eq. 17
            gates = torch.addmm(g_enc, torch.cat([r.to(h_enc.dtype), h_enc], 1), P["W_enc_t"])
            h_enc, c_enc = lstm_pointwise(gates, c_enc)  # eq. 5
            q = torch.addmm(P["b_q"], h_enc, P["W_q_t"]).float()  # (batch, 2z) = [mu, log sigma]
            qs.append(q)
            mu, log_sigma = q.split(self.Z, 1)
            z = torch.addcmul(mu, log_sigma.exp(), eps[t])  # eq. 6
            h_dec, c_dec = lstm_pointwise(torch.addmm(g_dec, z, P["W_z_t"]), c_dec)  # eq. 7
            out = torch.addmm(P["b_write"], h_dec, P["W_write_t"]).float()
            if self.attention:
                raw, w = out.split([5, out.shape[1] - 5], 1)
                F_x, F_y, gamma = self.write_glimpse(raw)
                N = self.write_glimpse.N
                w = (w / gamma[:, None]).view(b, N, C, N)  # eq. 28, scaled by 1 / gamma
                dc = _write_hca(w, F_x, F_y)  # eq. 29
            else:
                dc = out.view(b, -1, C, A)  # eq. 18
            canvas = canvas + dc  # eq. 8
        return (h_enc, c_enc, h_dec, c_dec, canvas), torch.stack(qs)

    def outputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Canvas logits ``(batch, C, H, W)`` and the KL of every step ``(batch, T)``."""
        b = x.shape[0]
        rank, world = self.shard
        eps = torch.randn(self.T, b * world, self.Z, device=x.device, dtype=x.dtype)  # as DRAW.forward
        if world > 1:
            eps = eps[:, rank * b : (rank + 1) * b]
        P = _autocast_weights(self._packed(), x.device)
        zeros = lambda n: x.new_zeros(b, n)  # noqa: E731
        x_p = _hca(x)  # (batch, B, C, A)
        state = (zeros(self.E), zeros(self.E), zeros(self.D), zeros(self.D), torch.zeros_like(x_p))
        chunk = self.chunk or self.T
        qs = []
        for t0 in range(0, self.T, chunk):
            state, q = self.unroll(x_p, eps[t0 : t0 + chunk], state, P, t0 == 0)
            qs.append(q)
        q = torch.cat(qs)  # (T, batch, 2z)
        kl = gaussian_kl(q[..., : self.Z], q[..., self.Z :]).t()  # eqs. 10-11, (batch, T)
        return state[4].permute(0, 2, 1, 3), kl

    def loss(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """As :meth:`draw.model.DRAW.loss`: mean bound (eq. 12), nats per image."""
        logits, kl_t = self.outputs(x)
        recon = self.model.reconstruction_nll(logits.float(), x)  # (batch,) eq. 9
        kl = kl_t.sum(1)
        loss = (recon + kl).mean()
        return loss, {"loss": loss.detach(), "recon": recon.mean().detach(), "kl": kl.mean().detach()}

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        return self.loss(x, y)


# -- the attention classifier --------------------------------------------------------------
class FusedClassifier(nn.Module):
    """:meth:`draw.classifier.AttentionClassifier.loss` with packed GEMMs (same parameters)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        cfg = model.cfg
        self.C, self.B, self.A = model.C, model.B, model.A
        self.glimpse = Glimpse(cfg.read_n, self.A, self.B, bounded_centre=cfg.bounded_centre, min_sigma=cfg.min_sigma,
                               max_log_gamma=cfg.max_log_gamma)
        self.unroll = self._unroll
        self.chunk = 0

    def _packed(self) -> dict[str, Tensor]:
        m, C, N = self.model, self.C, self.model.cfg.read_n
        W_ih, W_hh, b = _lstm_weights(m.lstm)
        return {"W_h_t": torch.cat([m.attn.weight, W_hh]).t(), "b_h": torch.cat([m.attn.bias, b]),
                "W_ih_t": _perm_cols(W_ih, (C, N, N), (2, 1, 0)).t()}  # (c, n, m) -> (m, n, c)

    def _unroll(self, x_p: Tensor, h: Tensor, c: Tensor, P: dict[str, Tensor], steps: int,
                first: bool) -> tuple[Tensor, Tensor]:
        b = x_p.shape[0]
        for t in range(steps):
            if first and t == 0:  # h_0 = 0
                proj = P["b_h"].expand(b, -1)
            else:
                proj = torch.addmm(P["b_h"], h, P["W_h_t"])  # (batch, 5 + 4H) = [window | LSTM gates]
            raw, g_lstm = proj.split([5, proj.shape[1] - 5], 1)
            F_x, F_y, gamma = self.glimpse(raw)
            g = _read_hca(x_p, F_x, F_y).flatten(1) * gamma[:, None]  # eq. 27, (batch, N N C)
            gates = torch.addmm(g_lstm, g.to(h.dtype), P["W_ih_t"])
            h, c = lstm_pointwise(gates, c)
        return h, c

    def logits(self, x: Tensor) -> Tensor:
        b, T = x.shape[0], self.model.cfg.glimpses
        P = _autocast_weights(self._packed(), x.device)
        h = x.new_zeros(b, self.model.cfg.lstm_size)
        c = torch.zeros_like(h)
        x_p = _hca(x)
        chunk = self.chunk or T
        for t0 in range(0, T, chunk):
            h, c = self.unroll(x_p, h, c, P, min(chunk, T - t0), t0 == 0)
        return self.model.out(h)

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """As :meth:`draw.classifier.AttentionClassifier.loss`: mean cross-entropy and error."""
        logits = self.logits(x).float()
        loss = F.cross_entropy(logits, y)
        error = (logits.argmax(1) != y).float().mean()
        return loss, {"loss": loss.detach(), "error": error.detach()}

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.loss(x, y)
