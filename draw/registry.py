"""Model kinds, so that a file (kind + config dict) rebuilds its model alone.

A kind names a model class and its config dataclass (each defined beside its model):
``build_model(kind, asdict(config))`` is how checkpoints, shipped weights and benches
rebuild a model.
"""

from __future__ import annotations

import dataclasses

from torch import nn


def _kinds() -> dict[str, tuple[type, type]]:
    from draw.baselines import ConvBaseline, ConvConfig
    from draw.classifier import AttentionClassifier, ClassifierConfig
    from draw.model import DRAW, DrawConfig
    from draw.plugin import UserClassifier, UserModelConfig
    from draw.ram import RAM, RAMConfig

    return {
        "draw": (DRAW, DrawConfig),
        "classifier": (AttentionClassifier, ClassifierConfig),
        "conv": (ConvBaseline, ConvConfig),
        "user": (UserClassifier, UserModelConfig),
        "ram": (RAM, RAMConfig),
    }


def model_kind(model: nn.Module) -> str:
    """The registry name of ``model``'s class."""
    for name, (cls, _) in _kinds().items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered model kind")


def config_class(kind: str) -> type:
    """The config dataclass of model ``kind``."""
    kinds = _kinds()
    if kind not in kinds:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(kinds)}")
    return kinds[kind][1]


def config_defaults(cls: type) -> dict:
    """The default value of every field of the config dataclass ``cls`` that has one."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def complete_config(kind: str, config: dict) -> dict:
    """``config`` with every setting it lacks that ``kind``'s config has a default for, at that
    default: a config stored before a setting was added reads as it was trained (a new
    setting's default is the behaviour from before it)."""
    return {**config_defaults(config_class(kind)), **config}


def build_model(kind: str, config: dict) -> nn.Module:
    """A fresh model of ``kind`` from ``asdict(config)`` (as stored in a checkpoint)."""
    cfg_cls = config_class(kind)
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = set(config) - names
    if unknown:
        raise ValueError(f"config for {kind!r} has unknown fields: {', '.join(sorted(unknown))}")
    return _kinds()[kind][0](cfg_cls(**config))
