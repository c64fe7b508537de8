"""The fast paths compute what the plain eager models compute; the switches and ``bench speed``."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from datasets.tensors import TensorData
from draw.attention import attention_params, filterbank_from
from draw.classifier import AttentionClassifier, ClassifierConfig
from draw.fast import SpeedConfig, prepare
from draw.fused import FusedClassifier, FusedDraw, Glimpse, lstm_pointwise
from draw.model import DRAW, DrawConfig
from draw.train import TrainConfig, train


def _same_loss_and_grads(model, fast, x, y, *, rtol=1e-5):
    """The reference ``model.loss`` and ``fast.loss`` on the same weights, input and noise."""
    torch.manual_seed(7)
    ref, ref_m = model.loss(x, y)
    ref_g = torch.autograd.grad(ref, list(model.parameters()))
    torch.manual_seed(7)
    got, got_m = fast.loss(x, y)
    got_g = torch.autograd.grad(got, list(model.parameters()))
    torch.testing.assert_close(got, ref, rtol=rtol, atol=1e-6)
    assert set(got_m) == set(ref_m)
    for k in ref_m:
        torch.testing.assert_close(got_m[k], ref_m[k], rtol=rtol, atol=1e-6)
    for (name, _), a, b in zip(model.named_parameters(), got_g, ref_g, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item(), msg=f"gradient of {name}")


@pytest.mark.parametrize("kw", [
    {},  # the paper's step, small
    {"image_shape": (3, 12, 10), "read_n": 3, "write_n": 4},  # colour, not square
    {"image_shape": (2, 9, 7), "attention": False},
    {"image_shape": (3, 8, 8), "likelihood": "logistic"},
], ids=["attention", "colour-nonsquare", "no-attention", "logistic"])
def test_fused_draw_matches_the_reference(kw):
    torch.manual_seed(0)
    cfg = {"T": 5, "read_n": 2, "write_n": 3, "lstm_size": 16, "z_size": 6, **kw}
    model = DRAW(DrawConfig(**cfg))
    C, H, W = model.cfg.image_shape
    if model.cfg.likelihood == "logistic":
        x = torch.randint(0, 256, (4, C, H, W)).float() / 255
    else:
        x = (torch.rand(4, C, H, W) < 0.4).float()
    _same_loss_and_grads(model, FusedDraw(model), x, None)


@pytest.mark.parametrize("kw", [
    {"image_shape": (1, 30, 30), "read_n": 5},
    {"image_shape": (2, 20, 26), "read_n": 4},
    {"image_shape": (1, 20, 20), "read_n": 4, "bounded_centre": False},
    {"image_shape": (1, 20, 20), "read_n": 4, "min_sigma": 0.0, "max_log_gamma": 0.0},
], ids=["paper", "colour-nonsquare", "unbounded", "eqs-21-24-as-written"])
def test_fused_classifier_matches_the_reference(kw):
    torch.manual_seed(0)
    model = AttentionClassifier(ClassifierConfig(glimpses=3, lstm_size=16, **kw))
    with torch.no_grad():  # move the windows off their initial grid
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    C, H, W = model.cfg.image_shape
    _same_loss_and_grads(model, FusedClassifier(model), torch.rand(5, C, H, W), torch.randint(0, 10, (5,)))


def test_lstm_cell_matches_nn_lstmcell_and_its_gradient():
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(6, 5).double()
    x, h, c = torch.randn(3, 6).double(), torch.randn(3, 5).double(), torch.randn(3, 5).double().requires_grad_()
    gates = (x @ cell.weight_ih.t() + h @ cell.weight_hh.t() + cell.bias_ih + cell.bias_hh).detach().requires_grad_()
    h_ref, c_ref = cell(x, (h, c))
    h_got, c_got = lstm_pointwise(gates, c)
    torch.testing.assert_close(h_got.double(), h_ref)
    torch.testing.assert_close(c_got.double(), c_ref)
    from draw.fused import _LSTMPointwise

    assert torch.autograd.gradcheck(_LSTMPointwise.apply, (gates, c))


def test_glimpse_matches_the_paper_filterbank():
    torch.manual_seed(0)
    for A, B, N, bounded in [(28, 28, 5, False), (26, 20, 4, True)]:
        raw = torch.randn(6, 5) * 2  # includes values clamped by the safe ranges
        F_x, F_y, gamma = Glimpse(N, A, B, bounded_centre=bounded)(raw)
        p = attention_params(raw, N, A, B, bounded_centre=bounded)
        ref_x, ref_y = filterbank_from(p, N, A, B)
        torch.testing.assert_close(F_x, ref_x)
        torch.testing.assert_close(F_y, ref_y)
        torch.testing.assert_close(gamma, p.gamma)


def _digits(n: int) -> TensorData:
    g = torch.Generator().manual_seed(0)
    return TensorData((torch.rand(n, 1, 28, 28, generator=g) < 0.2).to(torch.uint8), None, 1.0)


def _tiny_draw() -> DRAW:
    torch.manual_seed(0)
    return DRAW(DrawConfig(T=4, read_n=2, write_n=3, lstm_size=32, z_size=8))


def test_training_with_the_fused_path_follows_the_reference(tmp_path):
    """Same seed, same batches, same noise: the fused path (with fused Adam) ends with the
    weights of the plain eager run, up to float rounding."""
    cfg = TrainConfig(epochs=2, batch_size=32, lr=2e-3, checkpoint_every=0)
    ref, fast = _tiny_draw(), _tiny_draw()
    r1 = train(ref, _digits(96), _digits(40), cfg, None, device="cpu", progress=False)
    r2 = train(fast, _digits(96), _digits(40), cfg, None, device="cpu", progress=False, speed=SpeedConfig(fused=True))
    for (k, a), b in zip(ref.state_dict().items(), fast.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=k)
    for a, b in zip(r1.history, r2.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=1e-5)


def test_bf16_autocast_keeps_the_loss_within_a_percent():
    model = _tiny_draw()
    x = (torch.rand(16, 1, 28, 28) < 0.3).float()
    prepared = prepare(model, SpeedConfig(fused=True, amp="bf16"), "cpu")
    torch.manual_seed(3)
    ref, _ = model.loss(x)
    torch.manual_seed(3)
    with prepared.autocast(torch.device("cpu")):
        got, _ = prepared.module(x, None)
    assert got.dtype == torch.float32
    assert abs(got.item() - ref.item()) < 0.01 * ref.item()
    got.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow
def test_compiled_unroll_matches_the_reference():
    """One small torch.compile (C++ codegen: about 20-40 s on 2 cores)."""
    torch.manual_seed(0)
    model = AttentionClassifier(ClassifierConfig(image_shape=(1, 20, 20), glimpses=2, read_n=3, lstm_size=8))
    prepared = prepare(model, SpeedConfig(fused=True, compile=True, compile_unroll=0), "cpu")
    x, y = torch.rand(4, 1, 20, 20), torch.randint(0, 10, (4,))
    _same_loss_and_grads(model, prepared.module, x, y)


def test_speed_config_checks_its_fields():
    assert SpeedConfig().label() == "eager"
    assert SpeedConfig(fused=True, compile=True, compile_unroll=8, amp="bf16").label() == "fused+compile(8)+bf16"
    with pytest.raises(ValueError, match="amp"):
        SpeedConfig(amp="fp8")
    with pytest.raises(ValueError, match="CUDA"):
        prepare(_tiny_draw(), SpeedConfig(cuda_graphs=True), "cpu")


def test_cuda_graphs_flag_needs_cuda(tmp_path):
    result = CliRunner().invoke(cli, ["train", "draw", "--device", "cpu", "--cuda-graphs", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--cuda-graphs" in result.output


@pytest.mark.slow
def test_bench_speed_smoke_writes_results_table_and_plot(tmp_path):
    out = tmp_path / "speed"
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", "speed", "--preset", "smoke", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out / "results.csv")
    assert set(df.model) == {"draw", "classifier"}
    assert set(df.variant) == {"eager", "fused", "(machine)"}
    assert set(df.metric) == {"images_per_s", "step_ms", "cpu_ms", "peak_mem_mb", "compile_s", "loss_rel_err", "epoch_s",
                              "forward_ms", "backward_ms", "optimizer_ms", "ops_per_glimpse", "products_ms",
                              "products_share", "load_avg_start", "load_avg_end"}
    wide = df[df.variant != "(machine)"].pivot_table(index=["model", "variant"], columns="metric", values="value")
    assert (wide[["forward_ms", "backward_ms", "optimizer_ms", "products_ms", "products_share"]] > 0).all().all()
    # the fused layout packs the products and fuses the LSTM cell: fewer operators per glimpse
    for m in ("draw", "classifier"):
        assert wide.loc[(m, "fused"), "ops_per_glimpse"] < wide.loc[(m, "eager"), "ops_per_glimpse"]
    ips = df[df.metric == "images_per_s"].value
    assert (ips > 0).all() and ips.map(math.isfinite).all()
    assert (df[df.metric == "loss_rel_err"].value < 1e-5).all()  # same weights, batch, noise: same loss
    table = (out / "table.md").read_text()
    assert "speed-up" in table and "1.00x" in table and "Where a step's time goes" in table
    assert (out / "speedup.png").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["config"]["bench"] == "speed"
    (out / "table.md").unlink()
    (out / "speedup.png").unlink()
    redraw = runner.invoke(cli, ["report", str(out)])
    assert redraw.exit_code == 0, redraw.output
    assert (out / "table.md").exists() and (out / "speedup.png").exists()


class _Linear(torch.nn.Module):
    """One linear map and a squared loss: a step whose products are known by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)

    def loss(self, x, y=None):
        loss = self.lin(x).square().mean()
        return loss, {"loss": loss.detach()}


def test_census_records_the_products_of_forward_and_backward():
    from benchmark.step_profile import census, products_seconds
    from draw.step import TrainStep

    step = TrainStep(_Linear(), SpeedConfig(), torch.device("cpu"), lr=1e-3)
    seen = census(step, torch.randn(5, 8), None)
    # forward: x W^T + b (addmm, 5x8 by 8x4); backward: dL/dW = g^T x (mm, 4x5 by 5x8); x needs no gradient
    assert sorted((name, n) for (name, _, _), n in seen.products.items()) == [("addmm", 1), ("mm", 1)]
    flops = sorted(math.prod(shapes[-2]) * shapes[-1][-1] for (_, shapes, _), _ in seen.products.items())
    assert flops == [4 * 5 * 8, 5 * 8 * 4]
    assert seen.ops > 2  # and the rest: the loss, clipping, Adam
    t = products_seconds(seen.products, torch.device("cpu"))
    assert 0 < t < math.inf


def test_the_phases_of_a_step_are_the_step():
    from benchmark.step_profile import phase_seconds
    from draw.step import TrainStep

    x = torch.randn(6, 8)
    a, b = _Linear(), _Linear()
    b.load_state_dict(a.state_dict())
    start = a.lin.weight.detach().clone()
    whole = TrainStep(a, SpeedConfig(), torch.device("cpu"), lr=1e-2, grad_clip=1.0)
    parts = TrainStep(b, SpeedConfig(), torch.device("cpu"), lr=1e-2, grad_clip=1.0)
    for _ in range(3):
        whole(x, None)
    phases = phase_seconds(parts, x, None, 3)
    assert set(phases) == {"forward", "backward", "optimizer"} and all(v > 0 for v in phases.values())
    for p, q in zip(a.parameters(), b.parameters(), strict=True):  # three steps either way: the same weights
        torch.testing.assert_close(p, q)
    assert not torch.equal(a.lin.weight, start)  # and they did train
