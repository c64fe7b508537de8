"""Typed configs: dataclasses written to config.json with ``asdict`` and read back with
:func:`from_dict`, so that a bench folder's config rebuilds the exact settings it ran with
(``report``, ``bench robustness --from``, ``train ... --like``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """A stored config that does not fit the dataclass it should rebuild."""


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Rebuild the dataclass ``cls`` from ``data`` (as ``asdict`` and a JSON round trip left
    it): nested dataclasses, ``dict[str, X]``, ``list[X]``, ``tuple[...]`` and optional
    fields are rebuilt by their annotations. Unknown or missing keys raise
    :class:`ConfigError` naming the place (``where``), but for the keys a dataclass lists in
    its ``RETIRED_SETTINGS`` class attribute: settings older versions wrote that changed
    only the speed, not the results, read and dropped so that their folders still read."""
    return _build(cls, data, where)


def _build(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(data).__name__}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(data) - set(fields) - set(getattr(tp, "RETIRED_SETTINGS", ())))
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} for {tp.__name__}")
        kwargs = {name: _build(hints[name], data[name], f"{where}.{name}") for name in fields if name in data}
        try:
            return tp(**kwargs)
        except TypeError as e:  # a required field is missing
            raise ConfigError(f"{where}: {e}") from None
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _build(arg, data, where)
            except (ConfigError, TypeError, ValueError):
                continue
        raise ConfigError(f"{where}: {data!r} fits none of {tp}")
    if origin is dict:
        _, value_tp = typing.get_args(tp) or (str, Any)
        return {k: _build(value_tp, v, f"{where}.{k}") for k, v in dict(data).items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_build(item_tp, v, f"{where}[{i}]") for i, v in enumerate(data)]
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v, where) for v in data)
        return tuple(_build(a, v, where) for a, v in zip(args, data, strict=True))
    if tp is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    return data


def to_dict(config: Any) -> dict:
    """``dataclasses.asdict``: the form written to config.json."""
    return dataclasses.asdict(config)
