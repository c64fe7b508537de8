"""Shipped weights (safetensors) and checkpoints rebuild their model from the file alone."""

from __future__ import annotations

import json
import struct
from dataclasses import asdict

import pytest
import torch

from draw.baselines import ConvBaseline, ConvConfig
from draw.checkpoint import CheckpointError, load_model, read_safetensors, save_weights
from draw.classifier import AttentionClassifier, ClassifierConfig
from draw.model import DRAW, DrawConfig


def _models():
    torch.manual_seed(0)
    return [DRAW(DrawConfig(T=3, lstm_size=16, z_size=4)),
            AttentionClassifier(ClassifierConfig(image_shape=(1, 30, 30), glimpses=2, read_n=4, lstm_size=8)),
            ConvBaseline(ConvConfig(arch="resnet", image_size=(32, 32), width=4))]  # BatchNorm: int64 buffers too


@pytest.mark.parametrize("model", _models(), ids=["draw", "classifier", "resnet"])
def test_weights_round_trip_and_rebuild_the_model(model, tmp_path):
    path = save_weights(model, tmp_path / "m.safetensors", {"train": {"lr": 0.001}})
    rebuilt, record = load_model(path)
    assert type(rebuilt) is type(model) and asdict(rebuilt.cfg) == asdict(model.cfg)
    assert record["train"] == {"lr": 0.001}
    for k, v in model.state_dict().items():
        got = rebuilt.state_dict()[k]
        assert got.dtype == v.dtype and torch.equal(got, v), k


def test_corrupt_or_foreign_weights_are_refused(tmp_path):
    model = _models()[1]
    path = save_weights(model, tmp_path / "m.safetensors")
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF  # a flipped byte in the tensor data
    (tmp_path / "bad.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model(tmp_path / "bad.safetensors")
    (tmp_path / "short.safetensors").write_bytes(bytes(blob[:20]))
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(tmp_path / "short.safetensors")
    with pytest.raises(CheckpointError, match="not a 'draw' model"):
        load_model(path, kind="draw")


def test_the_safetensors_package_reads_our_files_and_we_read_its(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    model = _models()[0]
    path = save_weights(model, tmp_path / "ours.safetensors")
    theirs = st.load_file(str(path))
    assert set(theirs) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(theirs[k], v)
    tensors = {"a": torch.arange(6, dtype=torch.int64).reshape(2, 3), "b": torch.randn(4).to(torch.bfloat16)}
    st.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"note": "x"})
    got, meta = read_safetensors(tmp_path / "theirs.safetensors")
    assert meta == {"note": "x"} and all(torch.equal(got[k], v) for k, v in tensors.items())


def test_header_is_the_safetensors_layout(tmp_path):
    path = save_weights(_models()[1], tmp_path / "m.safetensors")
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    assert n % 8 == 0 and header["__metadata__"]["kind"] == "classifier"
    assert header["lstm.weight_ih"]["dtype"] == "F32" and header["lstm.weight_ih"]["shape"] == [32, 16]
