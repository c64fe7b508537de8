"""DRAW: a recurrent variational auto-encoder with attentive read and write.

Gregor, Danihelka, Graves, Rezende, Wierstra (2015), arXiv 1502.04623, section 2
(eqs. 3-8 for one step), section 3 (read/write with and without attention).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from draw.attention import AttentionParams, attention_params, filterbank_from, read, write
from draw.fused import lstm_pointwise
from draw.likelihood import (
    LOG_2PI,
    bernoulli_nll,
    discretized_logistic_nll,
    gaussian_kl,
    standard_normal_log_prob,
)
from draw.paper import TABLE3

LIKELIHOODS = ("bernoulli", "logistic")
WINDOW_INITS = ("zero", "smooth")
_MNIST = TABLE3["mnist"]


@dataclass
class DrawConfig:
    """DRAW generative model. Defaults: the paper's MNIST model (Table 3)."""

    image_shape: tuple[int, int, int] = _MNIST.image_shape  # (C, H, W) = (C, B, A)
    T: int = _MNIST.glimpses  # glimpses (time steps)
    read_n: int = _MNIST.read_n  # read patch N x N
    write_n: int = _MNIST.write_n  # write patch N x N
    lstm_size: int = _MNIST.lstm_size  # units of LSTM_enc and of LSTM_dec (Table 3 gives one width)
    z_size: int = _MNIST.z_size
    attention: bool = True  # False: read = [x, x^], write = W(h_dec)
    # D(x | c_T), eq. 9. "bernoulli": Bernoulli(sigmoid(c_T)), for binary images (MNIST).
    # "logistic": for 8-bit (colour) images, a logistic with mean sigmoid(c_T) and a learned
    # scale per channel, discretised to the 256 levels (PixelCNN++'s likelihood with one
    # component). Chosen over a Gaussian density because it is a probability mass on the
    # 256 values the data can take: its NLL is a true negative log-likelihood, comparable
    # across models (as bits per dimension) and bounded below by 0, where a density on
    # discrete data can be driven to -inf by shrinking its variance.
    likelihood: str = "bernoulli"
    # Initial attention windows (the paper does not say). "zero": the default init of the
    # linear maps of eq. 21, so every window starts centred with its grid spanning the image,
    # sigma = 1 pixel and gamma = 1; with a 2x2 read the encoder then sees only the 4 corner
    # pixels and learning is slow to start. "smooth": sigma starts at delta / 2, so the N x N
    # filters tile the whole image smoothly (the read sees a blurred overview), and the write
    # gain 1/gamma^ starts where a patch value of 1 adds 1 to the canvas at a filter's centre.
    window_init: str = "zero"

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(s) for s in self.image_shape)  # JSON round trip gives lists
        for name in ("T", "read_n", "write_n", "lstm_size", "z_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.window_init not in WINDOW_INITS:
            raise ValueError(f"window_init must be one of {WINDOW_INITS}, got {self.window_init!r}")

    def describe(self) -> str:
        """The sizes in a few words, e.g. ``T=64, read 2x2, write 5x5, LSTM 256, z 100``; without
        attention the read and write sizes do not exist: ``T=64, LSTM 256, z 100``."""
        patches = f"read {self.read_n}x{self.read_n}, write {self.write_n}x{self.write_n}, " if self.attention else ""
        return f"T={self.T}, {patches}LSTM {self.lstm_size}, z {self.z_size}"


@dataclass
class DrawOutput:
    logits: Tensor  # (batch, C, H, W): the final canvas c_T; D(x | c_T) has mean sigmoid(c_T)
    kl: Tensor  # (batch, T): KL(Q(Z_t | h_enc_t) || N(0, I)) per step, nats
    read_params: Tensor | None = None  # (batch, T, 5) g_x, g_y, delta, sigma, gamma (attention only)
    write_params: Tensor | None = None  # (batch, T, 5)
    canvases: Tensor | None = None  # (T, batch, C, H, W) sigmoid(c_t), when asked for


@dataclass
class Generation:
    canvases: Tensor  # (T, n, C, H, W): sigmoid(c_t) after every step
    write_params: Tensor | None  # (T, n, 5) g_x, g_y, delta, sigma, gamma; None without attention


class DRAW(nn.Module):
    """The DRAW network. ``x`` is ``(batch, C, H, W)`` in [0, 1] (H = B, W = A in the paper)."""

    kind = "draw"

    def __init__(self, cfg: DrawConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C, H, W = cfg.image_shape
        self.C, self.B, self.A = C, H, W
        if cfg.attention:
            read_size = 2 * C * cfg.read_n * cfg.read_n
            self.read_attn = nn.Linear(cfg.lstm_size, 5)  # eq. 21 for the read window
            self.write_attn = nn.Linear(cfg.lstm_size, 5)  # eq. 21 for the write window
            self.write_patch = nn.Linear(cfg.lstm_size, C * cfg.write_n * cfg.write_n)  # eq. 28
        else:
            read_size = 2 * C * H * W  # eq. 17: read(x, x^) = [x, x^]
            self.write_patch = nn.Linear(cfg.lstm_size, C * H * W)  # eq. 18: write = W(h_dec)
        self.encoder = nn.LSTMCell(read_size + cfg.lstm_size, cfg.lstm_size)  # eq. 5
        self.q_mu = nn.Linear(cfg.lstm_size, cfg.z_size)  # eq. 6: mu_t = W(h_enc_t)
        self.q_log_sigma = nn.Linear(cfg.lstm_size, cfg.z_size)  # sigma_t = exp(W(h_enc_t))
        self.decoder = nn.LSTMCell(cfg.z_size, cfg.lstm_size)  # eq. 7
        if cfg.attention and cfg.window_init == "smooth":
            self._smooth_windows()
        if cfg.likelihood == "logistic":
            # one learned log-scale per colour channel, in [0, 1] pixel units; 1/16 to start
            self.log_scale = nn.Parameter(torch.full((C, 1, 1), math.log(1 / 16)))

    @torch.no_grad()
    def _smooth_windows(self) -> None:
        """``window_init="smooth"``: the biases of eq. 21 put every window (at h_dec = 0) in the
        centre with the grid spanning the image (g~ = 0, delta~ = 1 in eqs. 22-24) and
        sigma = delta / 2; gamma = 1 for the read, and for the write 1/gamma^ = 1 / peak^2,
        the inverse squared peak of a normalised Gaussian filter. Weights keep their init."""
        span = max(self.A, self.B) - 1
        for lin, N in ((self.read_attn, self.cfg.read_n), (self.write_attn, self.cfg.write_n)):
            sigma = span / max(N - 1, 1) / 2
            lin.bias.zero_()  # g~_X = g~_Y = 0, log delta~ = 0, log gamma = 0
            lin.bias[2] = 2 * math.log(sigma)  # log sigma^2
        sigma_w = span / max(self.cfg.write_n - 1, 1) / 2
        peak = 1 / (math.sqrt(2 * math.pi) * sigma_w)
        self.write_attn.bias[4] = 2 * math.log(peak)  # log gamma^: canvas += w peak^2 / gamma^ = w

    # -- the two halves of one step -------------------------------------------------------
    def _read(self, x: Tensor, x_hat: Tensor, h_dec: Tensor) -> tuple[Tensor, AttentionParams | None]:
        """``r_t = read(x, x^_t, h_dec_{t-1})`` (eq. 4) -> ``(batch, read_size)``."""
        if not self.cfg.attention:
            return torch.cat([x.flatten(1), x_hat.flatten(1)], 1), None
        p = attention_params(self.read_attn(h_dec), self.cfg.read_n, self.A, self.B)
        F_x, F_y = filterbank_from(p, self.cfg.read_n, self.A, self.B)
        return read(x, x_hat, F_x, F_y, p.gamma), p

    def _write(self, h_dec: Tensor) -> tuple[Tensor, AttentionParams | None]:
        """``write(h_dec_t)`` (eq. 8's increment) -> ``(batch, C, H, W)``."""
        w = self.write_patch(h_dec)
        if not self.cfg.attention:
            return w.view(-1, self.C, self.B, self.A), None
        N = self.cfg.write_n
        p = attention_params(self.write_attn(h_dec), N, self.A, self.B)
        F_x, F_y = filterbank_from(p, N, self.A, self.B)
        return write(w.view(-1, self.C, N, N), F_x, F_y, p.gamma), p

    def initial_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        cfg = self.cfg
        zeros = lambda n: torch.zeros(batch, n, device=device, dtype=dtype)  # noqa: E731
        return {
            "h_enc": zeros(cfg.lstm_size),
            "c_enc": zeros(cfg.lstm_size),
            "h_dec": zeros(cfg.lstm_size),
            "c_dec": zeros(cfg.lstm_size),
            "c": torch.zeros(batch, self.C, self.B, self.A, device=device, dtype=dtype),
        }

    def _infer(self, x: Tensor, state: dict[str, Tensor], eps: Tensor,
               encode: Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, Tensor]] | None = None,
               ) -> tuple[dict[str, Tensor], Tensor, Tensor, tuple]:
        """Eqs. 3-8 for one step; returns the new state, ``mu_t``, ``log sigma_t`` ``(batch, z)``
        and the (read, write) windows. ``z_t = mu_t + sigma_t * eps``. ``encode(x^_t, state)``,
        if given, computes eqs. 4-5 instead (see :meth:`_encoder_without_attention`)."""
        x_hat = x - torch.sigmoid(state["c"])  # eq. 3
        if encode is None:
            r, p_read = self._read(x, x_hat, state["h_dec"])  # eq. 4
            h_enc, c_enc = self.encoder(torch.cat([r, state["h_dec"]], 1), (state["h_enc"], state["c_enc"]))  # eq. 5
        else:
            (h_enc, c_enc), p_read = encode(x_hat, state), None
        mu, log_sigma = self.q_mu(h_enc), self.q_log_sigma(h_enc)
        z = mu + log_sigma.exp() * eps  # eq. 6, reparameterised sample z_t ~ Q(Z_t | h_enc_t)
        h_dec, c_dec = self.decoder(z, (state["h_dec"], state["c_dec"]))  # eq. 7
        dc, p_write = self._write(h_dec)
        new = {"h_enc": h_enc, "c_enc": c_enc, "h_dec": h_dec, "c_dec": c_dec, "c": state["c"] + dc}  # eq. 8
        return new, mu, log_sigma, (p_read, p_write)

    def step(self, x: Tensor, state: dict[str, Tensor], eps: Tensor) -> tuple[dict[str, Tensor], Tensor, tuple]:
        """One inference step, eqs. 3-8. ``eps``: ``(batch, z)`` standard normal noise.

        Returns the new state, the step's KL ``(batch,)``, and the (read, write) windows.
        """
        new, mu, log_sigma, windows = self._infer(x, state, eps)
        return new, gaussian_kl(mu, log_sigma), windows

    def reconstruction_nll(self, logits: Tensor, x: Tensor) -> Tensor:
        """L^x = -log D(x | c_T) (eq. 9), ``(batch,)`` nats, for the configured likelihood:
        Bernoulli(sigmoid(c_T)), or a discretised logistic with mean sigmoid(c_T) and a
        learned per-channel scale (see :class:`draw.config.DrawConfig`)."""
        if self.cfg.likelihood == "logistic":
            return discretized_logistic_nll(torch.sigmoid(logits), self.log_scale, x)
        return bernoulli_nll(logits, x)

    def _encoder_without_attention(self, x: Tensor) -> Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, Tensor]]:
        """Eqs. 4-5 without attention for a whole sequence on ``x``, with x's share of the
        encoder's input product computed once: ``W [x, x^_t, h_dec_{t-1}] = W_x x +
        W_rest [x^_t, h_dec_{t-1}]``, and ``W_x x`` is the same at every step. Returns
        ``encode(x^_t, state) -> (h_enc_t, c_enc_t)``, the LSTM cell on those gates
        (:func:`draw.fused.lstm_pointwise`). The same numbers as ``self.encoder`` on the concatenated input to
        float rounding, in ~70% of the products: the importance-sampled estimate of the paper's
        no-attention model ran 1.3x faster (540 rows/s against 410, the 2-core EPYC of family
        25, eager float32)."""
        cell, n = self.encoder, x[0].numel()
        x_share = torch.nn.functional.linear(x.flatten(1), cell.weight_ih[:, :n], cell.bias_ih + cell.bias_hh)
        W_rest_t = torch.cat([cell.weight_ih[:, n:], cell.weight_hh], 1).t()  # [x^, h_dec, h_enc] -> gates

        def encode(x_hat: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            rest = torch.cat([x_hat.flatten(1), state["h_dec"], state["h_enc"]], 1)
            return lstm_pointwise(torch.addmm(x_share, rest, W_rest_t), state["c_enc"])

        return encode

    def log_importance_weights(self, x: Tensor) -> Tensor:
        """One importance weight per row: ``log p(x | z) + log p(z) - log q(z | x)``, ``(batch,)``.

        ``z = (z_1 .. z_T)`` is drawn from the encoder, ``q(z | x) = prod_t N(z_t; mu_t, sigma_t)``
        where ``mu_t, sigma_t`` depend on ``z_<t`` through ``h_dec_{t-1}``;
        ``p(z) = prod_t N(z_t; 0, I)``. ``E_q[-w]`` is the bound ``L`` of eq. 12 (with the KL
        estimated by sampling instead of in closed form); see :func:`draw.likelihood.iwae_nll`.
        Without attention the encoder's product with ``x`` is computed once for all T steps
        (:meth:`_encoder_without_attention`).
        """
        batch = x.shape[0]
        state = self.initial_state(batch, x.device, x.dtype)
        eps = torch.randn(self.cfg.T, batch, self.cfg.z_size, device=x.device, dtype=x.dtype)
        log_ratio = torch.zeros(batch, device=x.device, dtype=x.dtype)
        encode = None if self.cfg.attention else self._encoder_without_attention(x)
        for t in range(self.cfg.T):
            state, mu, log_sigma, _ = self._infer(x, state, eps[t], encode)
            z = mu + log_sigma.exp() * eps[t]
            log_q = (-0.5 * eps[t].square() - log_sigma - 0.5 * LOG_2PI).sum(-1)  # log N(z; mu, sigma), (z - mu) / sigma = eps
            log_ratio = log_ratio + standard_normal_log_prob(z) - log_q
        return log_ratio - self.reconstruction_nll(state["c"], x)

    def forward(self, x: Tensor, *, return_params: bool = False, return_canvases: bool = False) -> DrawOutput:
        """Run T steps on ``x`` ``(batch, C, H, W)``; returns canvas logits and per-step KL."""
        batch = x.shape[0]
        state = self.initial_state(batch, x.device, x.dtype)
        eps = torch.randn(self.cfg.T, batch, self.cfg.z_size, device=x.device, dtype=x.dtype)
        kls, reads, writes, canvases = [], [], [], []
        for t in range(self.cfg.T):
            state, kl, (p_read, p_write) = self.step(x, state, eps[t])
            kls.append(kl)
            if return_params and p_read is not None:
                reads.append(p_read.stack())
                writes.append(p_write.stack())
            if return_canvases:
                canvases.append(torch.sigmoid(state["c"]))
        return DrawOutput(
            logits=state["c"],
            kl=torch.stack(kls, 1),
            read_params=torch.stack(reads, 1) if reads else None,
            write_params=torch.stack(writes, 1) if writes else None,
            canvases=torch.stack(canvases) if canvases else None,
        )

    def loss(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean over the batch of L = L^x + L^z (eq. 12), nats per image; metrics stay on device."""
        out = self(x)
        recon = self.reconstruction_nll(out.logits, x)  # (batch,) eq. 9
        kl = out.kl.sum(1)  # (batch,) eq. 10-11
        bound = recon + kl
        loss = bound.mean()
        return loss, {"loss": loss.detach(), "recon": recon.mean().detach(), "kl": kl.mean().detach()}

    @torch.no_grad()
    def generate(self, n: int, *, device: torch.device | str | None = None, generator: torch.Generator | None = None) -> Generation:
        """Sample images from the prior: z_t ~ N(0, I), h_dec = LSTM_dec(z_t), c_t += write (eqs. 13-15).

        Returns every intermediate canvas ``(T, n, C, H, W)`` and the write windows ``(T, n, 5)``.
        """
        device = torch.device(device) if device is not None else next(self.parameters()).device
        dtype = next(self.parameters()).dtype
        state = self.initial_state(n, device, dtype)
        h_dec, c_dec, c = state["h_dec"], state["c_dec"], state["c"]
        canvases, windows = [], []
        for _ in range(self.cfg.T):
            z = torch.randn(n, self.cfg.z_size, device=device, dtype=dtype, generator=generator)  # eq. 13
            h_dec, c_dec = self.decoder(z, (h_dec, c_dec))  # eq. 14
            dc, p = self._write(h_dec)
            c = c + dc  # eq. 15
            canvases.append(torch.sigmoid(c))
            if p is not None:
                windows.append(p.stack())
        return Generation(torch.stack(canvases), torch.stack(windows) if windows else None)
