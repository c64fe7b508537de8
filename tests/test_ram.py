"""The Recurrent Attention Model (Mnih et al., 2014): retina, gradient routing of the hybrid
loss, baseline, learning, Monte Carlo averaging, files, torch.compile."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets.tensors import TensorData
from draw.checkpoint import load_model, save_weights
from draw.fast import SpeedConfig
from draw.ram import RAM, BaselineNetwork, GlimpseSensor, LocationNetwork, RAMConfig, hybrid_loss
from draw.registry import build_model, model_kind
from draw.step import TrainStep
from draw.train import TrainConfig, evaluate, train
from tests.conftest import fake_digits


def small(**kw) -> RAM:
    cfg = dict(image_shape=(1, 24, 24), glimpses=3, patch=4, scales=3, glimpse_hidden=16, glimpse_size=32,
               lstm_size=32, n_classes=10)
    return RAM(RAMConfig(**{**cfg, **kw}))


def grad_size(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


# --------------------------------------------------------------------------- retina


def expected_patches(img: np.ndarray, loc: tuple[float, float], g: int, k: int) -> np.ndarray:
    """Crop-and-resize by hand: (C, H, W) image -> (k, C, g, g), zeros outside the image."""
    C, H, W = img.shape
    cx = math.floor((loc[0] + 1) / 2 * (W - 1) + 0.5)
    cy = math.floor((loc[1] + 1) / 2 * (H - 1) + 0.5)
    out = np.zeros((k, C, g, g))
    for j in range(k):
        s, b = g * 2**j, 2**j
        top, left = cy - s // 2, cx - s // 2
        for ch in range(C):
            for r in range(g):
                for q in range(g):
                    total = 0.0
                    for dr in range(b):
                        for dq in range(b):
                            rr, cc = top + r * b + dr, left + q * b + dq
                            if 0 <= rr < H and 0 <= cc < W:
                                total += img[ch, rr, cc]
                    out[j, ch, r, q] = total / (b * b)
    return out


def test_retina_matches_hand_computed_crops():
    rng = np.random.default_rng(0)
    img = rng.random((2, 20, 24)).astype(np.float32)  # not square: catches an x / y swap
    locs = [(-1.0, -1.0), (1.0, 1.0), (0.3, -0.7), (-0.95, 0.5), (0.0, 0.0)]
    sensor = GlimpseSensor((2, 20, 24), patch=2, scales=3)  # sides 2, 4, 8
    x = torch.from_numpy(img)[None].expand(len(locs), -1, -1, -1)
    got = sensor(x, torch.tensor(locs)).numpy()
    assert got.shape == (len(locs), 3, 2, 2, 2)
    for i, loc in enumerate(locs):
        np.testing.assert_allclose(got[i], expected_patches(img, loc, 2, 3), rtol=0, atol=1e-6)
    # spelled out: (-1, -1) is the top-left pixel; the 2 x 2 fovea covers rows and cols -1, 0
    np.testing.assert_allclose(got[0, 0, 0], [[0, 0], [0, img[0, 0, 0]]], atol=0)
    # the 8 x 8 patch there (rows and cols -4 .. 3) averages 4 x 4 blocks: only the bottom right one is on the image
    np.testing.assert_allclose(got[0, 2, 1], [[0, 0], [0, img[1, :4, :4].mean()]], atol=1e-6)


def test_retina_at_the_paper_scale_equals_crop_and_pool():
    """The integral-image retina against the direct one (zero-pad, crop, average-pool) at the
    paper's 100 x 100, 12 x 12 x 4, on locations that reach every border and corner."""
    torch.manual_seed(0)
    x = (torch.rand(64, 1, 100, 100) < 0.2).float() * torch.rand(64, 1, 100, 100)  # sparse, like a digit
    loc = torch.cat([torch.rand(48, 2) * 2.4 - 1.2, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]]
                                                                  ).repeat(4, 1)]).clamp(-1, 1)
    sensor = GlimpseSensor((1, 100, 100), patch=12, scales=4)
    got = sensor(x, loc)
    S = 12 * 2**3
    x_pad = F.pad(x, (S // 2,) * 4)
    c = sensor.centre(loc)
    for i in range(len(loc)):
        big = x_pad[i, :, c[i, 1] : c[i, 1] + S, c[i, 0] : c[i, 0] + S]  # pixel c - S/2 of the image is c here
        for j in range(4):
            s, o = 12 * 2**j, S // 2 - 12 * 2**j // 2
            want = F.avg_pool2d(big[None, :, o : o + s, o : o + s], 2**j)[0]
            torch.testing.assert_close(got[i, j], want, rtol=0, atol=1e-6)
    assert got.dtype == torch.float32 and got[-4:].abs().sum() > 0


def test_locations_in_pixels_match_the_crops():
    model = small(image_shape=(1, 30, 20))
    loc = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(model.to_pixels(loc), torch.tensor([[1.0, 1.0], [20.0, 30.0], [10.5, 15.5]]))
    c = model.glimpse.sensor.centre(loc)  # 0-based (col, row), rounded half up
    assert c.tolist() == [[0, 0], [19, 29], [10, 15]]


# --------------------------------------------------------------------------- the hybrid loss


@pytest.mark.parametrize("core", ["rnn", "lstm"])  # the paper preset's RAM has the LSTM core
def test_gradients_reach_only_their_networks(core):
    torch.manual_seed(0)
    model = small(core=core)
    x, y = torch.rand(16, 1, 24, 24), torch.randint(0, 10, (16,))
    terms = model.terms(x, y)
    nets = {"glimpse": model.glimpse, "core": model.core, "locator": model.locator, "baseline": model.baseline,
            "action": model.action}
    reached = {}
    for name in ("ce", "reinforce", "baseline_mse"):
        model.zero_grad(set_to_none=True)
        terms[name].backward(retain_graph=True)
        reached[name] = {net for net, m in nets.items() if grad_size(m) > 0}
    assert reached["reinforce"] == {"locator"}  # through log pi only: the samples are detached
    assert reached["ce"] == {"glimpse", "core", "action"}  # the location is detached: no policy gradient
    assert reached["baseline_mse"] == {"baseline"}  # h is detached


def test_a_share_of_reinforce_reaches_the_core_and_glimpse_networks():
    """reinforce_into_core = w: the same forward pass; REINFORCE's gradient reaches the core and
    glimpse networks through h, scaled by w against the whole (w = 1, the paper's hybrid loss)."""
    x, y = torch.rand(16, 1, 24, 24), torch.randint(0, 10, (16,))
    grads, losses = {}, {}
    for w in (0.0, 0.25, 1.0):
        torch.manual_seed(0)
        model = small(reinforce_into_core=w)
        torch.manual_seed(1)
        terms = model.terms(x, y)
        terms["reinforce"].backward()
        losses[w] = float(terms["reinforce"].detach())
        grads[w] = {n: model.get_submodule(n).weight.grad for n in ("core.from_g", "locator.mu")}
        assert (grads[w]["core.from_g"] is None) == (w == 0)
        assert model.baseline.b.weight.grad is None and model.action.logits.weight.grad is None
    assert losses[0.0] == losses[0.25] == losses[1.0]  # the forward pass does not depend on w
    torch.testing.assert_close(grads[0.25]["locator.mu"], grads[1.0]["locator.mu"])
    torch.testing.assert_close(grads[0.25]["core.from_g"], 0.25 * grads[1.0]["core.from_g"])
    assert grads[1.0]["core.from_g"].abs().sum() > 0
    with pytest.raises(ValueError, match="reinforce_into_core"):
        RAMConfig(reinforce_into_core=1.5)


def test_reinforce_term_is_minus_log_pi_times_advantage():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    y = torch.tensor([0, 0, 0])  # correct, wrong, correct: R = 1, 0, 1
    log_pi = torch.tensor([[-1.0, -2.0], [-0.5, -0.5], [-3.0, -1.0]], requires_grad=True)
    b = torch.tensor([[0.5, 0.25], [0.5, 0.5], [1.0, 0.0]])
    t = hybrid_loss(logits, y, log_pi, b)
    want = -((-1 * 0.5 - 2 * 0.75) + (-0.5 * -0.5 - 0.5 * -0.5) + (-3 * 0 - 1 * 1)) / 3
    torch.testing.assert_close(t["reinforce"], torch.tensor(want))
    torch.testing.assert_close(t["reward"], torch.tensor(2 / 3))
    torch.testing.assert_close(t["error"], torch.tensor(1 / 3))
    torch.testing.assert_close(t["baseline_mse"], (b - torch.tensor([[1.0], [0.0], [1.0]])).square().mean())


def test_baseline_learns_the_expected_reward():
    torch.manual_seed(0)
    p, T, batch = 0.7, 3, 64
    base = BaselineNetwork(8)
    opt = torch.optim.Adam(base.parameters(), lr=3e-3)
    for _ in range(600):
        y = torch.randint(0, 10, (batch,))
        correct = torch.rand(batch) < p  # reward independent of the state
        logits = F.one_hot(torch.where(correct, y, (y + 1) % 10), 10).float()
        b = torch.stack([base(torch.randn(batch, 8)) for _ in range(T)], 1)  # (batch, T)
        t = hybrid_loss(logits, y, torch.zeros(batch, T), b)
        assert float(t["reward"]) == float(correct.float().mean())
        opt.zero_grad()
        t["baseline_mse"].backward()
        opt.step()
    with torch.no_grad():
        b = base(torch.randn(4096, 8))
    assert abs(float(b.mean()) - p) < 0.05, float(b.mean())
    assert float(b.std()) < 0.1  # it learned the constant, not the noise


def test_reinforce_moves_the_policy_towards_reward():
    """Reward 1 where the sampled x > 0: REINFORCE (with the baseline) must push the mean right."""
    torch.manual_seed(0)
    policy, base = LocationNetwork(4, std=0.3), BaselineNetwork(4)
    opt = torch.optim.Adam([*policy.parameters(), *base.parameters()], lr=1e-2)
    y = torch.zeros(64, dtype=torch.long)
    for _ in range(200):
        h = torch.randn(64, 4)
        loc, log_pi = policy(h)
        logits = F.one_hot((loc[:, 0] <= 0).long(), 10).float()  # class 0 (correct) iff l_x > 0
        t = hybrid_loss(logits, y, log_pi[:, None], base(h)[:, None])
        opt.zero_grad()
        (t["reinforce"] + t["baseline_mse"]).backward()
        opt.step()
    with torch.no_grad():
        mu = torch.tanh(policy.mu(torch.randn(1000, 4)))
    assert float(mu[:, 0].mean()) > 0.5, float(mu[:, 0].mean())
    assert float(t["reward"]) > 0.9


# --------------------------------------------------------------------------- learning


def translated_digits(n: int, seed: int, size: int = 40) -> TensorData:
    """The fake 28 x 28 digits pasted at random positions on a ``size`` x ``size`` canvas."""
    digits, labels = fake_digits(n, seed)
    rng = np.random.default_rng(seed + 100)
    canvas = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r, c = rng.integers(0, size - 28 + 1, 2)
        canvas[i, r : r + 28, c : c + 28] = digits[i]
    return TensorData(torch.from_numpy(canvas), torch.from_numpy(labels))


def test_learns_translated_digits():
    torch.manual_seed(0)
    model = small(image_shape=(1, 40, 40), patch=8, scales=3, glimpses=3, glimpse_hidden=32, glimpse_size=64,
                  lstm_size=64)
    data, test = translated_digits(1024, 0), translated_digits(500, 1)
    before = evaluate(model, test)
    train(model, data, None, TrainConfig(epochs=6, batch_size=32, lr=3e-3), None, device="cpu", progress=False)
    after = evaluate(model, test)
    assert before["error"] > 0.7
    assert after["error"] < 0.2, after
    assert after["reward"] == pytest.approx(1 - after["error"])


# --------------------------------------------------------------------------- Monte Carlo averaging


def test_mc_samples_average_rollouts():
    model = small().eval()
    x = torch.rand(5, 1, 24, 24)
    with torch.no_grad():
        torch.manual_seed(1)
        logits, locs = model(x, mc_samples=4)
        torch.manual_seed(1)
        rolls = [model.rollout(x) for _ in range(4)]
        torch.manual_seed(1)
        model.mc_samples = 4
        by_attribute, _ = model(x)
        model.mc_samples = 1
        torch.manual_seed(2)
        one, one_locs = model(x, mc_samples=1)
        torch.manual_seed(2)
        plain, plain_locs = model(x)
    torch.testing.assert_close(logits.exp().sum(1), torch.ones(5))
    assert not torch.allclose(rolls[0].logits, rolls[1].logits)  # the rollouts differ: averaging matters
    want = torch.stack([r.logits.softmax(-1) for r in rolls]).mean(0).log()
    torch.testing.assert_close(logits, want)
    torch.testing.assert_close(locs, model.to_pixels(rolls[0].loc))
    torch.testing.assert_close(by_attribute, logits)
    torch.testing.assert_close(one, plain)
    torch.testing.assert_close(one_locs, plain_locs)
    with pytest.raises(ValueError):
        model(x, mc_samples=0)
    assert "mc_samples" not in asdict(model.cfg)


# --------------------------------------------------------------------------- shapes, configs, files


def test_shapes_config_and_weights_round_trip(tmp_path):
    cfg = RAMConfig(image_shape=(1, 30, 20), glimpses=4, patch=4, scales=2, glimpse_hidden=8, glimpse_size=16,
                    lstm_size=16, n_classes=5, core="rnn")
    model = build_model("ram", json.loads(json.dumps(asdict(cfg))))  # image_shape comes back a list
    assert model.cfg == cfg and model_kind(model) == "ram"
    x = torch.rand(3, 1, 30, 20)
    logits, locs = model(x)
    assert logits.shape == (3, 5) and locs.shape == (3, 4, 2)
    assert float(locs[..., 0].min()) >= 1 and float(locs[..., 0].max()) <= 20
    assert float(locs[..., 1].min()) >= 1 and float(locs[..., 1].max()) <= 30
    loss, metrics = model.loss(x, torch.tensor([0, 1, 4]))
    assert loss.shape == () and loss.requires_grad
    assert set(metrics) == {"loss", "error", "reward", "ce", "reinforce", "baseline_mse"}
    assert all(v.shape == () and not v.requires_grad for v in metrics.values())
    path = save_weights(model, tmp_path / "ram.safetensors")
    loaded, record = load_model(path, kind="ram")
    assert record["kind"] == "ram" and loaded.cfg == cfg
    torch.manual_seed(3)
    a = model(x)
    torch.manual_seed(3)
    b = loaded(x)
    torch.testing.assert_close(a, b)
    assert build_model("ram", {}).cfg == RAMConfig()
    for bad in ({"patch": 0}, {"loc_std": 0.0}, {"core": "gru"}, {"image_shape": (100, 100)}):
        with pytest.raises(ValueError):
            RAMConfig(**bad)


def test_bf16_autocast_keeps_the_policy_float32():
    torch.manual_seed(0)
    model = small()
    x, y = torch.rand(8, 1, 24, 24), torch.randint(0, 10, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = model.rollout(x)
        loss, metrics = model.loss(x, y)
    assert r.log_pi.dtype == r.b.dtype == r.loc.dtype == r.logits.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert grad_size(model.locator) > 0


@pytest.mark.slow
def test_compiled_step_matches_eager():
    torch.manual_seed(0)
    eager = small()
    compiled = copy.deepcopy(eager)
    x, y = torch.rand(16, 1, 24, 24), torch.randint(0, 10, (16,))
    steps = {"eager": TrainStep(eager, SpeedConfig(), torch.device("cpu"), lr=1e-2),
             "compiled": TrainStep(compiled, SpeedConfig(compile=True), torch.device("cpu"), lr=1e-2)}
    out = {}
    with torch._inductor.config.patch(fallback_random=True):  # inductor draws eager's random numbers
        for name, step in steps.items():
            torch.manual_seed(5)
            out[name] = step(x, y)
    (loss_e, metrics_e, finite_e), (loss_c, metrics_c, finite_c) = out["eager"], out["compiled"]
    assert bool(finite_e) and bool(finite_c)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)
    for k in metrics_e:
        torch.testing.assert_close(metrics_c[k], metrics_e[k], rtol=1e-4, atol=1e-5)
    for (name, p_e), p_c in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(p_c, p_e, rtol=1e-4, atol=1e-5, msg=name)
