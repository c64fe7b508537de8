"""The classifiers of the cluttered-MNIST benches, by bench name: what each is built from and
how it is trained (:class:`ModelSpec`), and their predictions on a data set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from datasets.tensors import TensorData
from draw.baselines import ConvConfig
from draw.classifier import ClassifierConfig
from draw.plugin import UserModelConfig, check_user_model
from draw.ram import RAMConfig
from draw.registry import build_model, complete_config
from draw.train import TrainConfig

NAMES = ("attention", "ram", "conv2", "resnet", "resnet18")
LABELS = {
    "attention": "Differentiable RAM (ours)",
    "ram": "RAM (ours)",
    "conv2": "Convolutional, 2 layers (ours)",
    "resnet": "Small ResNet (ours)",
    "resnet18": "ResNet-18 (ours)",
}


@dataclass
class ModelSpec:
    """One model of a bench: its registry kind and config (so it rebuilds alone), its
    training settings, and how tables name it."""

    kind: str
    config: dict
    train: TrainConfig = field(default_factory=TrainConfig)
    label: str = ""
    variant: str = ""  # the setting in a few words, e.g. "T=8, read 12x12, LSTM 256"
    checkpoint: str | None = None  # a user model's trained weights: evaluated as given, not trained

    def __post_init__(self) -> None:
        # a spec read from an older config.json lacks the settings added since: their defaults
        self.config = complete_config(self.kind, self.config)

    def build(self) -> nn.Module:
        return build_model(self.kind, self.config)


def user_spec(name: str, factory: str, image_shape: tuple[int, int, int], train: TrainConfig,
              checkpoint: str | None = None) -> ModelSpec:
    """A user's classifier (:mod:`draw.plugin`) as a bench model named ``name``: checked once
    (it imports, returns finite logits of the right shape; :class:`draw.plugin.PluginError`
    otherwise), its origin recorded in the config."""
    cfg = UserModelConfig(factory=factory, image_shape=image_shape)
    cfg.origin = check_user_model(cfg)
    how = f"weights {checkpoint}, evaluated as given" if checkpoint else "trained here"
    return ModelSpec("user", asdict(cfg), train, f"{name} (user model)", f"{factory}; {how}", checkpoint)


def parse_model_specs(specs: list[str]) -> list[tuple[str, str]]:
    """``--model-spec`` values ``[NAME=]module.path:function`` or an entry-point name ->
    ``(name, factory)`` pairs; the name defaults to the function's (or entry point's) name."""
    pairs = []
    for spec in specs:
        name, _, factory = spec.rpartition("=") if "=" in spec else ("", "", spec)
        name = name or factory.rpartition(":")[2]
        if not name or not factory:
            raise ValueError(f"--model-spec {spec!r}: give [NAME=]module.path:function or an entry-point name")
        if name in NAMES:
            raise ValueError(f"--model-spec {spec!r}: the name {name!r} is a shipped model's; give NAME=...")
        pairs.append((name, factory))
    if len({n for n, _ in pairs}) < len(pairs):
        raise ValueError("--model-spec: two user models share a name; give NAME=... to tell them apart")
    return pairs


@dataclass
class Sizes:
    """The sizes a bench preset sets for its classifiers (and RAM's policy settings)."""

    read_n: int = 12  # the attention model's read N x N; RAM's finest retina patch g x g
    lstm_size: int = 256
    resnet_width: int = 24
    scales: int = 4  # RAM's retina: patches of g, 2g, 4g, ... pixels
    ram_loc_std: float = RAMConfig.loc_std
    ram_reinforce_into_core: float = RAMConfig.reinforce_into_core
    ram_core: str = RAMConfig.core


def classifier_spec(name: str, image_shape: tuple[int, int, int], train: TrainConfig, *, glimpses: int,
                    sizes: Sizes) -> ModelSpec:
    """The :class:`ModelSpec` of bench model ``name`` (one of :data:`NAMES`)."""
    C, H, W = image_shape
    if name == "attention":
        cfg = ClassifierConfig(image_shape=image_shape, glimpses=glimpses, read_n=sizes.read_n,
                               lstm_size=sizes.lstm_size)
        return ModelSpec("classifier", asdict(cfg), train, LABELS[name],
                         f"T={glimpses}, read {sizes.read_n}x{sizes.read_n}, LSTM {sizes.lstm_size}")
    if name == "ram":
        cfg = RAMConfig(image_shape=image_shape, glimpses=glimpses, patch=sizes.read_n, scales=sizes.scales,
                        lstm_size=sizes.lstm_size, loc_std=sizes.ram_loc_std,
                        reinforce_into_core=sizes.ram_reinforce_into_core, core=sizes.ram_core)
        default = (RAMConfig.loc_std, RAMConfig.reinforce_into_core)  # the first presets' policy: not named
        policy = "" if (cfg.loc_std, cfg.reinforce_into_core) == default else (
            f", std {cfg.loc_std:g}, {cfg.reinforce_into_core:g} of REINFORCE into the core")
        return ModelSpec("ram", asdict(cfg), train, LABELS[name],
                         f"T={glimpses}, {sizes.read_n}x{sizes.read_n}, {sizes.scales} scales, {cfg.core} core "
                         f"{sizes.lstm_size}{policy}")
    if name in ("conv2", "resnet", "resnet18"):
        cfg = ConvConfig(arch=name, in_channels=C, image_size=(H, W), width=sizes.resnet_width)
        return ModelSpec("conv", asdict(cfg), train, LABELS[name],
                         f"width {sizes.resnet_width}" if name == "resnet" else "")
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(NAMES)}")


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int = 500
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Predicted classes ``(n,)``, their softmax confidence ``(n,)`` and, for models that
    return them, the glimpses: the attention classifier's windows ``(n, T, 5)``, RAM's
    locations ``(n, T, 2)`` (averaged over ``model.mc_samples`` rollouts for RAM)."""
    model.eval()
    device = next(model.parameters()).device
    preds, confs, windows = [], [], []
    for x, _ in data.batches(batch_size, device=device):
        out = model(x)
        logits, w = out if isinstance(out, tuple) else (out, None)
        conf, pred = logits.float().softmax(1).max(1)
        preds.append(pred.cpu())
        confs.append(conf.cpu())
        if w is not None:
            windows.append(w.cpu())
    return (torch.cat(preds).numpy(), torch.cat(confs).numpy(),
            torch.cat(windows).numpy() if windows else None)


def eval_seed(train_seed: int) -> int:
    """The RNG seed a bench's test pass of a model trained with ``train_seed`` starts from
    (RAM samples its glimpse locations; ``eval classifier`` uses the same by default)."""
    return 30_000 + train_seed


def on_target_pct(windows: np.ndarray, positions: np.ndarray, digit_size: int) -> float:
    """The % of glimpses whose centre lies on the target digit's ``digit_size`` square: whether
    a model learned where to look. ``windows`` ``(n, T, >= 2)`` start with the centre (g_x, g_y)
    in 1-based pixels (the attention classifier's windows, RAM's locations); ``positions``
    ``(n, 2)`` are the digits' 0-based (row, col) top-left pixels, so a digit covers the
    1-based continuous span [p + 0.5, p + digit_size + 0.5] on each axis."""
    x, y = windows[..., 0], windows[..., 1]  # (n, T)
    left, top = positions[:, 1:2] + 0.5, positions[:, 0:1] + 0.5  # (n, 1)
    inside = (x >= left) & (x <= left + digit_size) & (y >= top) & (y <= top + digit_size)
    return 100.0 * float(inside.mean())
