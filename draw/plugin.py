"""A user's own classifier, trained and evaluated exactly as the shipped ones.

A factory ``factory(image_shape, n_classes) -> torch.nn.Module`` returns a module that maps a
``(batch, C, H, W)`` float batch in [0, 1] to logits ``(batch, n_classes)``. It is named
either as ``"module.path:function"`` (importable: installed, or on ``PYTHONPATH``) or by the
name an installed package registers in the entry-point group ``drawbench.models``::

    # pyproject.toml of the user's package
    [project.entry-points."drawbench.models"]
    tiny-mlp = "my_models:tiny_mlp"

:class:`UserClassifier` wraps the module with the loss every classifier has, so the one
training loop, the checkpoints and the benches take it like any other model
(registry kind ``"user"``). :func:`check_user_model` finds the mistakes users make (a
factory that does not import, does not return a module, returns the wrong shape or NaN) and
raises :class:`PluginError` naming the model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ENTRY_POINT_GROUP = "drawbench.models"


class PluginError(ValueError):
    """A user model that cannot be used; the message names it and says what is wrong."""


@dataclass
class UserModelConfig:
    """``factory``: ``"module.path:function"`` or a ``drawbench.models`` entry-point name;
    ``origin``: where it was found (file, package and version), for the record."""

    factory: str
    image_shape: tuple[int, int, int] = (1, 100, 100)
    n_classes: int = 10
    origin: str = ""

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(s) for s in self.image_shape)  # JSON round trip gives lists


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def resolve_factory(spec: str) -> tuple[Callable[..., nn.Module], str]:
    """The factory function named by ``spec`` and where it came from; :class:`PluginError`
    (naming ``spec``) when it cannot be found."""
    if ":" not in spec:
        eps = _entry_points()
        if spec not in eps:
            known = ", ".join(sorted(eps)) or "none installed"
            raise PluginError(f"model {spec!r}: not 'module.path:function' and no {ENTRY_POINT_GROUP!r} entry point "
                              f"of that name (registered: {known})")
        ep = eps[spec]
        try:
            fn = ep.load()
        except Exception as e:  # the user's module raised anything at import time
            raise PluginError(f"model {spec!r}: entry point {ep.value} does not load: {type(e).__name__}: {e}") from e
        dist = getattr(ep, "dist", None)
        where = f"entry point {ep.value}" + (f" of {dist.name} {dist.version}" if dist is not None else "")
        return fn, where
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise PluginError(f"model {spec!r}: module {module_name!r} does not import: {type(e).__name__}: {e} "
                          "(is it installed, or on PYTHONPATH?)") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise PluginError(f"model {spec!r}: {module_name} has no function {attr!r}")
    return fn, f"{getattr(module, '__file__', module_name)}"


class UserClassifier(nn.Module):
    """``x`` ``(batch, C, H, W)`` in [0, 1] -> logits ``(batch, n_classes)``, by the user's module."""

    kind = "user"

    def __init__(self, cfg: UserModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        factory, _ = resolve_factory(cfg.factory)
        try:
            net = factory(tuple(cfg.image_shape), cfg.n_classes)
        except Exception as e:
            raise PluginError(f"model {cfg.factory!r}: the factory raised {type(e).__name__}: {e}") from e
        if not isinstance(net, nn.Module):
            raise PluginError(f"model {cfg.factory!r}: the factory returned a {type(net).__name__}, not a "
                              "torch.nn.Module")
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean cross-entropy and argmax error; metrics are detached device tensors."""
        logits = self(x).float()
        loss = F.cross_entropy(logits, y)
        error = (logits.argmax(1) != y).float().mean()
        return loss, {"loss": loss.detach(), "error": error.detach()}


@torch.no_grad()
def check_user_model(cfg: UserModelConfig, batch: int = 2) -> str:
    """Build the model and run it once on a random batch: :class:`PluginError` naming it
    unless it returns finite logits of shape ``(batch, n_classes)``. Returns its origin."""
    _, origin = resolve_factory(cfg.factory)
    model = UserClassifier(cfg).eval()
    x = torch.rand(batch, *cfg.image_shape)
    try:
        out = model(x)
    except Exception as e:
        raise PluginError(f"model {cfg.factory!r}: forward on a ({batch}, {', '.join(map(str, cfg.image_shape))}) "
                          f"batch raised {type(e).__name__}: {e}") from e
    if not isinstance(out, Tensor) or tuple(out.shape) != (batch, cfg.n_classes):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise PluginError(f"model {cfg.factory!r}: returned {shape} for a batch of {batch}; logits of shape "
                          f"(batch, {cfg.n_classes}) expected")
    if not torch.isfinite(out).all():
        raise PluginError(f"model {cfg.factory!r}: returned NaN or Inf logits on a random batch")
    return origin


def load_user_weights(model: UserClassifier, path: str) -> None:
    """Load the user's trained weights into ``model``: a state dict of their module saved
    with ``torch.save`` (``.pt``/``.pth``) or as ``.safetensors``; :class:`PluginError`
    naming the model and the file when they do not fit."""
    from pathlib import Path

    from draw.checkpoint import CheckpointError, read_safetensors

    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            state = read_safetensors(p)[0]
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except (OSError, CheckpointError, RuntimeError, ValueError) as e:
        raise PluginError(f"model {model.cfg.factory!r}: cannot read weights {p}: {e}") from e
    if isinstance(state, dict) and state and all(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items()}  # a drawbench file of the wrapped model
    try:
        model.net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise PluginError(f"model {model.cfg.factory!r}: the weights in {p} do not fit it: {e}") from e
