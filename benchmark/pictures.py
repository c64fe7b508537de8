"""Pictures: sample grids, drawing animations, glimpse boxes.

Windows are ``(..., 5)`` rows of (g_x, g_y, delta, sigma, gamma) in 1-based pixel units,
as returned by the models; the box of an N x N window spans the centres of its first and
last filters, ``g +- (N - 1) / 2 * delta``.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.patheffects import withStroke  # noqa: E402
from PIL import Image  # noqa: E402

from datasets.files import atomic_write_bytes  # noqa: E402


def _to_numpy(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(n, C, H, W)`` or ``(n, H, W)`` in [0, 1] -> ``(n, H, W, C)`` float numpy."""
    a = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.float32)
    if a.ndim == 3:
        a = a[:, None]
    return np.clip(a.transpose(0, 2, 3, 1), 0, 1)


def image_grid(images: torch.Tensor | np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``(n, C, H, W)`` images in [0, 1] into one ``(rows*(H+pad)+pad, ..., C)`` array."""
    a = _to_numpy(images)
    n, H, W, C = a.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    grid = np.full((nrow * (H + pad) + pad, ncol * (W + pad) + pad, C), 0.5, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = a[i]
    return grid


def _to_uint8(grid: np.ndarray, scale: int = 1) -> Image.Image:
    img = (grid * 255).round().astype(np.uint8)
    img = img[..., 0] if img.shape[-1] == 1 else img
    pil = Image.fromarray(img)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST) if scale > 1 else pil


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, ncol: int | None = None, scale: int = 3) -> Path:
    """Write a PNG grid of ``(n, C, H, W)`` images in [0, 1]."""
    path = Path(path)
    _to_uint8(image_grid(images, ncol), scale).save(path)
    return path


def save_drawing_gif(canvases: torch.Tensor, path: str | Path, ncol: int | None = None, scale: int = 3, ms: int = 80) -> Path:
    """Animated GIF of the canvas over time: ``canvases`` ``(T, n, C, H, W)`` in [0, 1];
    the last frame is held for a second."""
    path = Path(path)
    frames = [_to_uint8(image_grid(c, ncol), scale).convert("P") for c in canvases]
    durations = [ms] * (len(frames) - 1) + [1000]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path


def _box(window: np.ndarray, N: int) -> tuple[float, float, float, float]:
    """(left, top, width, height) in 0-based plotting coordinates for one window row."""
    g_x, g_y, delta = window[0], window[1], window[2]
    half = (N - 1) / 2 * delta
    # 1-based pixel centres -> matplotlib's 0-based centres
    return g_x - 1 - half, g_y - 1 - half, 2 * half, 2 * half


def plot_glimpses(
    images: torch.Tensor | np.ndarray,
    windows: torch.Tensor | np.ndarray,
    N: int,
    path: str | Path,
    titles: list[str] | None = None,
    ncol: int = 4,
    title: str | None = None,
) -> Path:
    """Images with one box per glimpse, coloured by step (viridis: dark = first).

    ``images`` ``(n, C, H, W)``; ``windows`` ``(n, T, 5)``. Line width grows with sigma.
    """
    a = _to_numpy(images)
    w = windows.detach().cpu().numpy() if isinstance(windows, torch.Tensor) else np.asarray(windows)
    n, T = w.shape[0], w.shape[1]
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.6 * ncol, 2.8 * nrow), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.95, T))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(a[i].squeeze(-1) if a.shape[-1] == 1 else a[i], cmap="gray", vmin=0, vmax=1)
        for t in range(T):
            left, top, width, height = _box(w[i, t], N)
            lw = float(np.clip(0.8 + w[i, t, 3] / 3, 0.8, 4))
            ax.add_patch(Rectangle((left, top), width, height, fill=False, edgecolor=colors[t], linewidth=lw))
            ax.text(left + 1, top + 4, str(t + 1), color=colors[t], fontsize=6, clip_on=True)
        H, W = a.shape[1:3]
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    fig.suptitle((f"{title}; g" if title else "G") + f"limpses, step 1 (dark) to {T} (yellow)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (2.8 * nrow)))  # keep a strip for the suptitle
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def drawing_sequence(
    canvases: torch.Tensor, windows: torch.Tensor | None, N: int, path: str | Path, steps: int = 10
) -> Path:
    """The paper's figure style: rows = samples, columns = time steps (evenly spaced, last
    included), each with the write window drawn as a red box whose line width shows sigma."""
    T, n = canvases.shape[:2]
    cols = np.unique(np.linspace(0, T - 1, min(steps, T)).round().astype(int))
    fig, axes = plt.subplots(n, len(cols), figsize=(1.1 * len(cols), 1.1 * n), squeeze=False)
    c = canvases.detach().float().cpu().numpy()
    w = windows.detach().cpu().numpy() if windows is not None else None
    for r in range(n):
        for j, t in enumerate(cols):
            ax = axes[r, j]
            img = c[t, r].transpose(1, 2, 0)
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            if w is not None:
                left, top, width, height = _box(w[t, r], N)
                ax.add_patch(Rectangle((left, top), width, height, fill=False, edgecolor="red",
                                       linewidth=float(np.clip(0.5 + w[t, r, 3], 0.5, 4))))
            ax.set_xlim(-0.5, img.shape[1] - 0.5)
            ax.set_ylim(img.shape[0] - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={t + 1}", fontsize=8)
    fig.tight_layout(pad=0.2)
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    path.write_bytes(buf.getvalue())
    return path


def read_footprint(windows: torch.Tensor | np.ndarray, N: int, A: int, B: int) -> np.ndarray:
    """How much each pixel was read, summed over glimpses: ``sum_t (F_y^T 1)(1^T F_x)``.

    ``windows`` ``(n, T, 5)`` read windows; returns ``(n, B, A)``; each glimpse adds mass N^2
    (every filter row sums to 1), so the total is ``T N^2`` per image.
    """
    from draw.attention import filterbank

    w = torch.as_tensor(np.asarray(windows.detach().cpu() if isinstance(windows, torch.Tensor) else windows),
                        dtype=torch.float64)
    n, T, _ = w.shape
    flat = w.reshape(n * T, 5)
    F_x, F_y = filterbank(flat[:, 0], flat[:, 1], N=N, A=A, B=B, sigma2=flat[:, 3].square(), delta=flat[:, 2])
    mass = F_y.sum(1)[:, :, None] * F_x.sum(1)[:, None, :]  # (n T, B, A)
    return mass.view(n, T, B, A).sum(1).numpy()


def plot_read_attention(
    images: torch.Tensor | np.ndarray,
    windows: torch.Tensor | np.ndarray,
    N: int,
    path: str | Path,
    titles: list[str] | None = None,
) -> Path:
    """Where the encoder looked, one column per image ``(n, C, H, W)`` with read windows
    ``(n, T, 5)``. Top row: the image, the path of the read window's centre over the
    glimpses (coloured by step, viridis: dark = first) and the window of every glimpse
    (line width grows with sigma). Bottom row: the read footprint (:func:`read_footprint`),
    the share of all the filterbank mass that fell on each pixel."""
    a = _to_numpy(images)
    w = windows.detach().cpu().numpy() if isinstance(windows, torch.Tensor) else np.asarray(windows)
    n, T = w.shape[:2]
    H, W = a.shape[1:3]
    foot = read_footprint(w, N, W, H)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.1), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.95, T))
    for i in range(n):
        ax = axes[0, i]
        ax.imshow(a[i].squeeze(-1) if a.shape[-1] == 1 else a[i], cmap="gray", vmin=0, vmax=1)
        for t in range(T):
            left, top, width, height = _box(w[i, t], N)
            ax.add_patch(Rectangle((left, top), max(width, 0.3), max(height, 0.3), fill=False, edgecolor=colors[t],
                                   linewidth=float(np.clip(0.6 + w[i, t, 3] / 2, 0.6, 3)), alpha=0.8))
        ax.plot(w[i, :, 0] - 1, w[i, :, 1] - 1, color="white", lw=0.6, alpha=0.6)
        ax.scatter(w[i, :, 0] - 1, w[i, :, 1] - 1, c=colors, s=9, zorder=3, edgecolors="none")
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        ax.axis("off")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        ax = axes[1, i]
        ax.imshow(foot[i] / foot[i].sum(), cmap="magma")
        ax.axis("off")
    axes[0, 0].text(-0.08, 0.5, f"read windows,\nstep 1 (dark)\nto {T} (yellow)", transform=axes[0, 0].transAxes,
                    ha="right", va="center", fontsize=8)
    axes[1, 0].text(-0.08, 0.5, "share of\nreading\nper pixel", transform=axes[1, 0].transAxes, ha="right",
                    va="center", fontsize=8)
    fig.suptitle(f"Where the encoder looked: {T} glimpses of {N}x{N} on test images", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format="png")
    plt.close(fig)
    path.write_bytes(buf.getvalue())
    return path


def plot_ram_glimpses(
    images: torch.Tensor | np.ndarray,
    locations: torch.Tensor | np.ndarray,
    patch: int,
    scales: int,
    path: str | Path,
    titles: list[str] | None = None,
    ncol: int = 4,
    title: str | None = None,
    beside: tuple | None = None,
) -> Path:
    """The hard-attention RAM's glimpses (:class:`draw.ram.RAM`): for each step t the k nested
    squares of sides g, 2g, 4g, ... that its retina read, one colour per step (viridis: dark =
    first), the step number at the fovea, and the path of the glimpse centres.

    ``images`` ``(n, C, H, W)``; ``locations`` ``(n, T, 2)`` in 1-based pixels (x, y), as
    ``RAM.forward`` returns them; ``patch`` = g, ``scales`` = k. The squares cover exactly
    the pixels read: the centre is rounded half up to a pixel, and a side s spans pixels
    c - s//2 .. c - s//2 + s - 1 (:class:`draw.ram.GlimpseSensor`).
    ``beside = (windows, read_n)`` or ``(windows, read_n, titles)``: the differentiable
    model's windows ``(n, T', 5)`` drawn on a second copy of each image, to its right (as
    :func:`plot_glimpses` draws them). ``ncol`` counts images (pairs with ``beside``).
    """
    a = _to_numpy(images)
    loc = locations.detach().float().cpu().numpy() if isinstance(locations, torch.Tensor) else np.asarray(locations)
    n, T = loc.shape[:2]
    H, W = a.shape[1:3]
    per = 2 if beside is not None else 1
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol * per, figsize=(2.6 * ncol * per, 2.8 * nrow), squeeze=False,
                             layout="constrained")  # tight_layout lets titles overlap the row above
    for ax in axes.flat:
        ax.axis("off")
    colors = plt.cm.viridis(np.linspace(0, 0.95, T))
    centres = np.floor(loc - 1 + 0.5)  # 0-based crop centres (col, row), rounded half up
    centres = np.clip(centres, 0, [W - 1, H - 1])
    for i in range(n):
        r, c = divmod(i, ncol)
        ax = axes[r, c * per]
        ax.imshow(a[i].squeeze(-1) if a.shape[-1] == 1 else a[i], cmap="gray", vmin=0, vmax=1)
        for t in range(T):
            for j in range(scales):
                s = patch * 2**j
                left, top = centres[i, t] - s // 2 - 0.5  # pixel edges of the first column and row read
                ax.add_patch(Rectangle((left, top), s, s, fill=False, edgecolor=colors[t],
                                       linewidth=1.6 if j == 0 else 0.7, alpha=1.0 if j == 0 else 0.7))
            left, top = centres[i, t] - patch // 2 - 0.5
            ax.text(left + 0.5, top - 0.8, str(t + 1), color=colors[t], fontsize=7, clip_on=True,
                    path_effects=[withStroke(linewidth=1.2, foreground="white")])  # dark steps on dark images
        ax.plot(loc[i, :, 0] - 1, loc[i, :, 1] - 1, color="white", lw=0.6, alpha=0.6)
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        label = titles[i] if titles is not None else ""
        if beside is None:
            if label:
                ax.set_title(label, fontsize=9)
            continue
        ax.set_title(f"RAM: {label}" if label else "RAM", fontsize=9)
        windows, read_n = beside[0], beside[1]
        w = windows.detach().float().cpu().numpy() if isinstance(windows, torch.Tensor) else np.asarray(windows)
        Tw = w.shape[1]
        wcolors = plt.cm.viridis(np.linspace(0, 0.95, Tw))
        ax = axes[r, c * per + 1]
        ax.imshow(a[i].squeeze(-1) if a.shape[-1] == 1 else a[i], cmap="gray", vmin=0, vmax=1)
        for t in range(Tw):
            left, top, width, height = _box(w[i, t], read_n)
            lw = float(np.clip(0.8 + w[i, t, 3] / 3, 0.8, 4))
            ax.add_patch(Rectangle((left, top), width, height, fill=False, edgecolor=wcolors[t], linewidth=lw))
            ax.text(left + 1, top + 4, str(t + 1), color=wcolors[t], fontsize=6, clip_on=True)
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        other = beside[2][i] if len(beside) > 2 and beside[2] is not None else ""
        ax.set_title(f"Differentiable: {other}" if other else "Differentiable", fontsize=9)
    k_sides = ", ".join(str(patch * 2**j) for j in range(scales))
    fig.suptitle((f"{title}; " if title else "") + f"RAM glimpses (squares of {k_sides} px), step 1 (dark) to "
                 f"{T} (yellow)", fontsize=10)
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
