"""Checkpoints and shipped weights: written atomically, checked when read, self-describing.

Two file kinds rebuild a model from the file alone (its registry kind and config inside):

- ``*.pt`` training checkpoints (``last.pt``, ``best.pt``): a ``torch.save`` zip holding the
  model, the optimizer, the schedule, the RNG states and the training loop's state, so a
  run continues exactly. Every zip member carries a CRC-32, checked on load: flipped bytes
  are reported, never loaded.
- ``*.safetensors`` weights (:func:`save_weights`): the model's tensors alone, a few MB, in
  the safetensors layout (an 8-byte little-endian header length, a JSON header, the raw
  little-endian bytes), with the kind, the config and a SHA-256 of the tensor bytes in the
  header's ``__metadata__``. Written and read here without the ``safetensors`` package (it
  is not on every machine); the tests check that package reads our files and we read its.
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datasets.files import atomic_open, sha256_bytes
from draw.registry import build_model, model_kind

CHECKPOINT_FORMAT = "drawbench-checkpoint-v1"
WEIGHTS_FORMAT = "drawbench-weights-v1"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, truncated, corrupt or of another model."""


# --------------------------------------------------------------------------- training checkpoints


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (a kill or a full disk keeps the old file)."""
    with atomic_open(path) as fh:
        torch.save({"format": CHECKPOINT_FORMAT, **obj}, fh)


def rng_state() -> dict[str, Any]:
    """The RNG states a resumed run restores (torch's, and every GPU's)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by the training loop; :class:`CheckpointError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:  # torch.save writes a zip whose members carry CRC-32s: flipped bytes are caught here
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        ckpt = torch.load(path, map_location=map_location, weights_only=True) if bad is None else None
    except OSError:
        raise
    except Exception as e:  # truncated zip, bad pickle, not a torch file ...
        reason = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {reason}".rstrip(": ")) from e
    if bad is not None:
        raise CheckpointError(f"{path} is corrupt: its member {bad} fails its CRC-32 check")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a drawbench checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    return ckpt


# --------------------------------------------------------------------------- safetensors weights

_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}
_CODES = {v: k for k, v in _DTYPES.items()}


def save_weights(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """The model's weights as ``path`` (``.safetensors``), with its kind and config (and
    ``extra``, JSON-serialisable, e.g. the training config) in the header's metadata."""
    path = Path(path)
    header: dict[str, Any] = {}
    chunks, offset = [], 0
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} has no safetensors code")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    body = b"".join(chunks)
    meta = {"format": WEIGHTS_FORMAT, "kind": model_kind(model), "config": json.dumps(asdict(model.cfg)),
            "sha256": sha256_bytes(body)}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    raw = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw + body)
    return path


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; :class:`CheckpointError` if unreadable or
    (for our files) if the tensor bytes fail their SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    blob = path.read_bytes()
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8 : 8 + n])
        body = memoryview(blob)[8 + n :]
        meta = header.pop("__metadata__", {}) or {}
        tensors = {}
        for name, spec in header.items():
            lo, hi = spec["data_offsets"]
            if not 0 <= lo <= hi <= len(body):
                raise ValueError(f"tensor {name} lies outside the file")
            dtype, shape = _CODES[spec["dtype"]], spec["shape"]
            t = torch.frombuffer(bytearray(body[lo:hi]), dtype=dtype) if hi > lo else torch.empty(0, dtype=dtype)
            tensors[name] = t.reshape(shape)
    except (struct.error, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e
    if "sha256" in meta and sha256_bytes(body) != meta["sha256"]:
        raise CheckpointError(f"{path} is corrupt: its tensor bytes fail their SHA-256 check")
    return tensors, meta


# --------------------------------------------------------------------------- models from files


def load_model(path: str | Path, device: str | torch.device = "cpu",
               kind: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a ``.pt`` checkpoint or a ``.safetensors`` weights file;
    ``kind`` checks it is the expected model. Returns the model (on ``device``, in eval
    mode for weights, as trained for checkpoints) and the file's record: a checkpoint's
    dict, or ``{"kind", "model_config", ...metadata}`` for weights."""
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors, meta = read_safetensors(path)
        if meta.get("format") != WEIGHTS_FORMAT:
            raise CheckpointError(f"{path} holds no drawbench model (metadata format {WEIGHTS_FORMAT!r} expected)")
        record = {k: (v if k in ("format", "kind", "sha256") else json.loads(v)) for k, v in meta.items()}
        record["model_config"] = record.pop("config")
        state = tensors
    else:
        record = load_checkpoint(path)
        state = record["model"]
    if kind is not None and record["kind"] != kind:
        raise CheckpointError(f"{path} holds a {record['kind']!r} model, not a {kind!r} model")
    try:
        model = build_model(record["kind"], record["model_config"])
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the stored config: {e}") from e
    return model.to(device), record
