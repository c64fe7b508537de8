"""The importance-sampled NLL estimator, DRAW's importance weights, and ``bench nll`` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch.distributions import MultivariateNormal, Normal

from datasets.tensors import TensorData
from draw.likelihood import LOG_2PI, bernoulli_nll, importance_sampled_nll, iwae_nll, log_mean_exp
from draw.model import DRAW, DrawConfig
from draw.train import evaluate


# -- a linear-Gaussian model whose likelihood is known in closed form -----------------------
class LinearGaussian:
    """z ~ N(0, I_d), x | z ~ N(A z + b, s^2 I_D): p(x) = N(x; b, A A^T + s^2 I).

    The proposal q(z | x) = N(M x + c, diag(v)) is deliberately NOT the posterior (unless
    ``exact``), so the bound is loose and the estimator has work to do.
    """

    def __init__(self, d: int = 2, D: int = 3, seed: int = 0, exact: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(D, d, generator=g, dtype=torch.float64)
        self.b = torch.randn(D, generator=g, dtype=torch.float64)
        self.s = 0.7
        # the true posterior: N(S A^T (x - b) / s^2, S), S = (I + A^T A / s^2)^-1
        S = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + self.A.T @ self.A / self.s**2)
        self.M, self.c, self.q_cov = S @ self.A.T / self.s**2, -(S @ self.A.T @ self.b) / self.s**2, S
        if not exact:  # a wrong mean map and a too wide, axis-aligned covariance
            self.M = self.M + 0.1 * torch.randn(d, D, generator=g, dtype=torch.float64)
            self.c = self.c + 0.15
            self.q_cov = torch.diag(1.3 * S.diagonal())
        self.d = d

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.A @ self.A.T + self.s**2 * torch.eye(len(self.b), dtype=torch.float64)
        return MultivariateNormal(self.b, cov).log_prob(x)

    def q(self, x: torch.Tensor) -> MultivariateNormal:
        return MultivariateNormal(x @ self.M.T + self.c, self.q_cov)

    def log_weights(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x)
        z = q.sample()
        log_lik = Normal(z @ self.A.T + self.b, self.s).log_prob(x).sum(-1)
        log_prior = (-0.5 * z.square() - 0.5 * LOG_2PI).sum(-1)
        return log_lik + log_prior - q.log_prob(z)

    def elbo_nll(self, x: torch.Tensor, n: int = 50_000) -> torch.Tensor:
        """-E_q[log w] by Monte Carlo with many draws: the variational bound."""
        return torch.stack([-self.log_weights(xi.expand(n, -1)).mean() for xi in x])


@pytest.mark.parametrize("max_rows", [80_000, 6000])  # several items per chunk / one item, draws in chunks
def test_estimator_recovers_the_closed_form_likelihood(max_rows):
    torch.manual_seed(0)
    m = LinearGaussian()
    x = torch.tensor([[0.0, 0.5, -1.0], [2.0, -1.0, 0.5], [-1.5, 1.0, 2.0]], dtype=torch.float64)
    true_nll = -m.log_px(x)
    bound = m.elbo_nll(x)
    est = iwae_nll(m.log_weights, x, K=20_000, max_rows=max_rows)
    assert est.dtype == torch.float64 and est.shape == (3,)
    assert (bound - true_nll > 0.05).all(), "the proposal should leave a visible gap"
    torch.testing.assert_close(est, true_nll, atol=0.03, rtol=0)  # about 4 standard errors
    assert (est <= bound).all()


def test_estimate_tightens_with_K_and_stays_below_the_bound():
    torch.manual_seed(1)
    m = LinearGaussian(seed=3)
    x = torch.randn(400, 3, dtype=torch.float64) + m.b
    bound = -m.log_weights(x.repeat_interleave(200, 0)).view(400, 200).mean(1)  # (400,)
    means = [iwae_nll(m.log_weights, x, K).mean().item() for K in (1, 10, 100)]
    true = -m.log_px(x).mean().item()
    assert abs(means[0] - bound.mean().item()) < 0.1  # K = 1 is the bound itself
    assert means[0] > means[1] > means[2] >= true - 0.02


def test_exact_posterior_gives_the_likelihood_for_every_K():
    """q = p(z | x): every weight equals p(x), so the estimate is exact with one draw."""
    m = LinearGaussian(exact=True)
    x = torch.tensor([[0.3, -0.2, 1.0], [1.0, 1.0, -1.0]], dtype=torch.float64)
    for K in (1, 7):
        torch.testing.assert_close(iwae_nll(m.log_weights, x, K), -m.log_px(x), atol=1e-9, rtol=0)


def test_same_draws_never_exceed_the_bound():
    """For any draws, -logmeanexp(w) <= -mean(w) (Jensen), also far out in the tails."""
    g = torch.Generator().manual_seed(0)
    for scale in (1e-3, 1.0, 50.0):
        w = -500 + scale * torch.randn(100, 64, generator=g)
        assert (-log_mean_exp(w, 1) <= -w.double().mean(1) + 1e-9).all()


def test_log_mean_exp_is_stable_and_float64():
    w = torch.tensor([-1e4, -1e4 + math.log(3.0)], dtype=torch.float32)
    r = log_mean_exp(w)
    assert r.dtype == torch.float64
    assert abs(r.item() - (-1e4 + math.log(2.0))) < 1e-3  # log((1 + 3) / 2) above -1e4
    assert torch.isfinite(log_mean_exp(torch.tensor([1e4, 1e4])))


def test_chunking_does_not_change_a_deterministic_estimate():
    x = torch.randn(13, 4, dtype=torch.float64)

    def log_w(rows):
        return -rows.square().sum(1)  # every draw equal: the estimate is exact

    for K, max_rows in [(5, 1000), (5, 7), (40, 16), (3, 1), (2000, None)]:  # None: the device's rows per pass
        torch.testing.assert_close(iwae_nll(log_w, x, K, max_rows=max_rows), x.square().sum(1))
    with pytest.raises(ValueError, match="K must be"):
        iwae_nll(log_w, x, 0)
    with pytest.raises(ValueError, match="max_rows must be"):
        iwae_nll(log_w, x, 5, max_rows=0)


def test_rows_per_pass_follow_the_device():
    from draw.likelihood import ROWS_PER_PASS_DEFAULT, rows_per_pass

    assert rows_per_pass("cpu") == rows_per_pass(torch.device("cpu")) == 1000
    assert rows_per_pass("cuda") == rows_per_pass("cuda:1") == ROWS_PER_PASS_DEFAULT
    seen = []

    def log_w(rows):
        seen.append(len(rows))
        return torch.zeros(len(rows))

    iwae_nll(log_w, torch.zeros(3, 2), K=2500)  # one image at a time, in CPU passes of 1,000 rows
    assert seen == [1000, 1000, 500] * 3


# -- DRAW ------------------------------------------------------------------------------------
def tiny(attention: bool = True, **kw) -> DRAW:
    torch.manual_seed(0)
    return DRAW(DrawConfig(image_shape=(1, 10, 9), T=3, read_n=2, write_n=3, lstm_size=12, z_size=4,
                           attention=attention, **kw))


def binary(n: int, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData((torch.rand(n, 1, 10, 9, generator=g) < 0.3).to(torch.uint8), None, scale=1.0)


@pytest.mark.parametrize("attention", [True, False])
def test_draw_with_q_equal_to_prior_and_z_ignored_is_exact(attention):
    """q(z_t | x) = N(0, I) and a decoder blind to z: p(x) = Bernoulli(sigmoid(c_T)) exactly,
    so the estimate, the bound and the reconstruction NLL coincide for every K."""
    model = tiny(attention)
    with torch.no_grad():
        for p in (*model.q_mu.parameters(), *model.q_log_sigma.parameters()):
            p.zero_()
        model.decoder.weight_ih.zero_()
    data = binary(6)
    x, _ = data.batch(torch.arange(6))
    c_T = model(x).logits
    exact = bernoulli_nll(c_T, x).double().mean().item()
    for K in (1, 5):
        assert abs(importance_sampled_nll(model, data, K) - exact) < 1e-4
    assert abs(evaluate(model, data)["loss"] - exact) < 1e-4


def test_draw_weights_average_to_the_bound():
    """E_q[-log w] is the bound of eq. 12 (recon + closed-form KL)."""
    model = tiny()
    with torch.no_grad():
        model.q_mu.weight.mul_(8)  # a posterior far from the prior: a large KL
    x, _ = binary(4).batch(torch.arange(4))
    rows = x.repeat_interleave(3000, 0)
    torch.manual_seed(1)
    with torch.no_grad():
        neg_w = -model.log_importance_weights(rows).view(4, 3000).double()
        out = model(rows)
        bound = (bernoulli_nll(out.logits, rows) + out.kl.sum(1)).view(4, 3000).double()
    se = (neg_w.std(1) / math.sqrt(3000)).max().item()
    assert neg_w.mean().item() > 0
    torch.testing.assert_close(neg_w.mean(1), bound.mean(1), atol=5 * se + 0.05, rtol=0)


@pytest.mark.parametrize("attention", [True, False])
def test_draw_importance_weights_follow_the_plain_recurrence(attention):
    """``log_importance_weights`` (which, without attention, computes the encoder's product
    with x once for all steps) gives, from the same noise, the weights of the step-by-step
    recurrence with the encoder on the concatenated read, log N(z; 0, I) - log N(z; mu, sigma)
    taken from torch.distributions."""
    model = tiny(attention)
    with torch.no_grad():
        model.q_mu.weight.mul_(4)
    n, T, Z = 5, model.cfg.T, model.cfg.z_size
    x, _ = binary(n).batch(torch.arange(n))
    with torch.no_grad():
        torch.manual_seed(4)
        got = model.log_importance_weights(x)
        torch.manual_seed(4)
        eps = torch.randn(T, n, Z)
        state, log_ratio = model.initial_state(n, x.device, x.dtype), torch.zeros(n)
        for t in range(T):
            state, mu, log_sigma, _ = model._infer(x, state, eps[t])
            z = mu + log_sigma.exp() * eps[t]
            prior, q = torch.distributions.Normal(0.0, 1.0), torch.distributions.Normal(mu, log_sigma.exp())
            log_ratio += (prior.log_prob(z) - q.log_prob(z)).sum(-1)
        want = log_ratio - bernoulli_nll(state["c"], x)
    assert want.abs().min() > 1.0  # weights far from 0: the comparison below means something
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_draw_estimate_is_below_the_bound():
    model = tiny()
    with torch.no_grad():
        model.q_mu.weight.mul_(8)
    data = binary(16)
    torch.manual_seed(2)
    bound = np.mean([evaluate(model, data)["loss"] for _ in range(20)])
    torch.manual_seed(3)
    est = importance_sampled_nll(model, data, K=64, max_rows=256)
    assert est < bound - 0.5, (est, bound)


# -- the bench end to end (smoke preset, fake MNIST) ----------------------------------------
def test_is_order_is_a_fixed_permutation_whose_prefixes_sample_the_whole_test_set():
    from benchmark.nll import is_order

    a = is_order(10_000)
    np.testing.assert_array_equal(np.sort(a), np.arange(10_000))
    # the order never changes between versions: a resumed estimate's saved chunks depend on it
    assert a[:5].tolist() == [1917, 9206, 9232, 4359, 3252]
    # MNIST's first 5,000 test images are the easier ones; a prefix of the order takes from both halves
    assert 430 < (a[:1000] < 5000).sum() < 570


def test_whole_test_estimate_is_exact_on_every_image_and_unbiased_and_tight_on_samples():
    from benchmark.nll import whole_test_estimate

    rng = np.random.default_rng(0)
    n_test = 2000
    nll = rng.normal(90.0, 25.0, n_test)  # the NLL varies much between images ...
    bound = nll + rng.gamma(4.0, 1.5, n_test)  # ... the gap to the bound little
    est, se = whole_test_estimate(bound, np.arange(n_test), nll)
    assert est == pytest.approx(nll.mean()) and se == 0.0  # every image: the plain mean, no sampling error
    ests, ses, means = [], [], []
    for _ in range(400):
        idx = rng.choice(n_test, 200, replace=False)
        e, s = whole_test_estimate(bound, idx, nll[idx])
        ests.append(e), ses.append(s), means.append(nll[idx].mean())
    assert abs(np.mean(ests) - nll.mean()) < 3 * np.std(ests) / np.sqrt(len(ests))  # unbiased
    assert np.mean(ses) == pytest.approx(np.std(ests), rel=0.15)  # its standard error is its spread
    assert np.std(ests) < np.std(means) / 5  # far tighter than the sample's own mean
    assert all(math.isnan(v) for v in whole_test_estimate(bound, np.arange(0), nll[:0]))


@pytest.mark.slow
def test_bench_nll_smoke_end_to_end(fake_mnist_dir, tmp_path):
    from cli import cli

    out = tmp_path / "nll"
    runner = CliRunner()
    r = runner.invoke(cli, ["bench", "nll", "--preset", "smoke", "--out", str(out), "--device", "cpu", "--eager"])
    assert r.exit_code == 0, r.output
    from benchmark import nll

    assert (nll.bench_config("smoke").data.n_test, nll.bench_config("smoke").data.n_is) == (50, 16)
    df = pd.read_csv(out / "results.csv")
    assert set(df.model) == {"draw", "draw-noattn"}
    assert set(df.columns) == {"bench", "model", "variant", "preset", "seed", "split", "metric", "value"}
    for model in ("draw", "draw-noattn"):
        d = df[df.model == model]
        metrics = set(d.metric)
        assert {"nll_bound_nats", "nll_is_nats", "train_s", "images_per_s", "epochs"} <= metrics
        est = d[d.metric == "nll_is_nats"]
        (is_split,) = est.split
        bound_same = d[(d.metric == "nll_bound_nats") & (d.split == is_split)].value.item()
        assert est.value.item() <= bound_same
        # a random sample of the test images, and the whole set's estimate from it
        per_image = pd.read_csv(out / "is_per_image.csv").query("model == @model")
        np.testing.assert_array_equal(per_image["index"], nll.is_order(50)[:16])
        whole = d[d.metric == "nll_is_test_nats"].value.item()
        bound_all = d[(d.metric == "nll_bound_nats") & (d.split == "test")].value.item()
        assert whole == pytest.approx(bound_all - (per_image.bound - per_image.nll_is).mean())
        assert d[d.metric == "nll_is_test_se_nats"].value.item() > 0
    table = (out / "table.md").read_text()
    from benchmark.paper import table2

    for name in [*table2().model, "DRAW (ours)", "DRAW without attention (ours)"]:
        assert f"| {name} |" in table
    assert "| DARN 12hl | 88.30 | published (value not checked against a second source) |" in table
    assert "| DARN 1hl | ≈ 84.13 | published |" in table
    assert "at or below the bound on the same images: yes" in table
    assert "all test images, estimated from test[16 random]" in table
    for f in ["samples_draw.png", "drawing_draw.gif", "drawing_steps_draw.png", "read_attention_draw.png",
              "samples_draw-noattn.png", "drawing_draw-noattn.gif", "drawing_steps_draw-noattn.png",
              "nll.png", "learning_curves.png", "kl_per_step.png"]:
        assert (out / f).stat().st_size > 1000, f
    doc = json.loads((out / "config.json").read_text())
    cfg = doc["config"]
    assert cfg["bench"] == "nll" and cfg["dataset"] == "mnist"
    # the protocol where results are read: which binarization, K, how many images, which checkpoint
    n_test = doc["data"]["test_images"]
    assert doc["data"]["source"] == "stochastic-seed-20150210" and n_test == cfg["data"]["n_test"]
    assert doc["data"]["importance_samples"] == cfg["importance_samples"]
    assert "seed 20150210" in table and f"the bound on all {n_test:,} test images" in table
    assert f"K = {cfg['importance_samples']}" in table and "best.pt" in table
    # the sizes where the preset departs from Table 3's MNIST model (T 64, read 2x2, write 5x5), and only those
    assert "(4 glimpses where the paper's model has 64; 3x3 write where the paper's model has 5x5)" in table
    assert "read where" not in table
    kl = pd.read_csv(out / "kl_per_step.csv")
    assert len(kl) == 2 * cfg["models"]["draw"]["T"] and (kl.kl_nats >= 0).all()

    # a second run with the same command skips both finished models
    r2 = runner.invoke(cli, ["bench", "nll", "--preset", "smoke", "--out", str(out), "--device", "cpu", "--eager"])
    assert r2.exit_code == 0, r2.output
    assert "nothing to do" in r2.output
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), df)

    # eval nll prints the bound and the estimate
    ckpt = out / "runs" / "draw-seed0" / "best.pt"
    r3 = runner.invoke(cli, ["eval", "nll", str(ckpt), "--importance-samples", "4", "--device", "cpu"])
    assert r3.exit_code == 0, r3.output
    assert "NLL bound" in r3.output and "importance-sampled estimate (K=4)" in r3.output

    # the shipped weights sample and evaluate like the checkpoint
    weights = out / "weights" / "draw-seed0.safetensors"
    r5 = runner.invoke(cli, ["eval", "nll", str(weights), "--device", "cpu"])
    r6 = runner.invoke(cli, ["eval", "nll", str(ckpt), "--device", "cpu"])
    assert r5.exit_code == 0 and r5.output == r6.output
    r7 = runner.invoke(cli, ["sample", str(weights), "--n", "4", "--out", str(tmp_path / "s"), "--device", "cpu"])
    assert r7.exit_code == 0 and (tmp_path / "s" / "drawing.gif").exists()

    # `train draw --like` trains exactly what the bench trained
    again = tmp_path / "again"
    r8 = runner.invoke(cli, ["train", "draw", "--like", str(out), "--model", "draw-noattn", "--out", str(again),
                             "--device", "cpu"])
    assert r8.exit_code == 0, r8.output
    from draw.checkpoint import load_checkpoint

    a, b = load_checkpoint(out / "runs" / "draw-noattn-seed0" / "last.pt"), load_checkpoint(again / "last.pt")
    assert a["model_config"] == b["model_config"] and not b["model_config"]["attention"]
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())

    # the plots and table come back from the CSVs alone
    (out / "nll.png").unlink()
    r4 = runner.invoke(cli, ["report", str(out)])
    assert r4.exit_code == 0, r4.output
    assert (out / "nll.png").exists()


def test_bench_config_is_json_and_gives_both_models_one_budget():
    from dataclasses import asdict, replace

    from benchmark.config import from_dict
    from benchmark.nll import NllConfig, bench_config

    for preset in ("smoke", "quick", "paper"):
        cfg = bench_config(preset, seeds=2)
        d = asdict(cfg)
        json.dumps(d)  # serialisable
        assert from_dict(NllConfig, json.loads(json.dumps(d))) == cfg  # config.json rebuilds the config
        assert d["bench"] == "nll" and list(d["models"]) == ["draw", "draw-noattn"]
        a, b = cfg.models.values()  # one architecture, with and without attention; one training config
        assert a.attention and not b.attention and replace(b, attention=True) == a
    paper = bench_config("paper")
    assert paper.importance_samples == 5000
    m = paper.models["draw"]
    assert (m.T, m.read_n, m.write_n, m.lstm_size, m.z_size) == (64, 2, 5, 256, 100)  # Table 3
    q = bench_config("quick").models["draw"]  # the quick budget's sizes, where the paper's ordering shows
    assert (q.T, q.read_n, q.write_n, q.lstm_size, q.z_size) == (16, 12, 12, 256, 100)
    with pytest.raises(ValueError, match="unknown dataset"):
        bench_config("smoke", dataset="cifar")


def test_a_folder_whose_config_holds_the_retired_max_rows_still_reads_and_resumes(tmp_path):
    """Bench folders written before draw.likelihood.rows_per_pass (the quick results shipped
    in results/, the paper run) stored the IS estimate's rows per pass as ``max_rows``: their
    config is read without it, and compares equal to today's, so the same command continues them."""
    from dataclasses import asdict
    from pathlib import Path

    from benchmark.config import ConfigError, from_dict
    from benchmark.nll import NllBench, NllConfig, bench_config
    from benchmark.report import normalize_config
    from benchmark.runner import _as_read_today

    stored = json.loads(json.dumps({**asdict(bench_config("paper")), "max_rows": 5000}))
    assert from_dict(NllConfig, stored) == bench_config("paper")
    assert _as_read_today(NllConfig, stored) == normalize_config(asdict(bench_config("paper")))
    with pytest.raises(ConfigError, match="unknown setting.*max_row "):
        from_dict(NllConfig, {**stored, "max_row": 5000})  # any other unknown key is still refused
    shipped = Path(__file__).resolve().parents[1] / "results" / "quick" / "nll-mnist"
    assert "max_rows" in json.loads((shipped / "config.json").read_text())["config"]
    cfg = NllBench.from_folder(shipped).cfg
    assert cfg == bench_config("quick", speed=cfg.speed)  # the CPU's speed switches it ran with

    # resuming keeps the folder's history of sessions (config.json)
    from datetime import datetime, timedelta, timezone
    from functools import partial

    from benchmark.report import write_config

    first = datetime(2026, 12, 4, tzinfo=timezone.utc)
    write_config(tmp_path, stored, first, finished=first)
    write_config(tmp_path, asdict(bench_config("paper")), first + timedelta(days=1),
                 as_read_today=partial(_as_read_today, NllConfig))
    doc = json.loads((tmp_path / "config.json").read_text())
    assert len(doc["sessions"]) == 2 and doc["started"] == first.isoformat() and "max_rows" not in doc["config"]


def test_read_footprint_mass():
    from benchmark.pictures import read_footprint

    w = torch.tensor([[[14.0, 14.0, 3.0, 1.0, 1.0], [5.0, 20.0, 1.0, 0.5, 2.0]]])  # (1, T=2, 5)
    foot = read_footprint(w, N=2, A=28, B=28)
    assert foot.shape == (1, 28, 28)
    assert abs(foot.sum() - 2 * 2 * 2) < 1e-6
    row, col = np.unravel_index(foot[0].argmax(), (28, 28))  # the tight window: centre (x, y) = (5, 20), 1-based
    assert 18 <= row <= 20 and 3 <= col <= 5, (row, col)


def test_smooth_window_init():
    """window_init="smooth": at t = 1 (h_dec = 0) every window spans the image with sigma = delta / 2,
    and the write gain puts a patch value of 1 at about 1 on the canvas."""
    torch.manual_seed(0)
    cfg = DrawConfig(image_shape=(1, 28, 28), T=2, read_n=2, write_n=5, lstm_size=8, z_size=3,
                     window_init="smooth")
    model = DRAW(cfg)
    out = model(torch.rand(2, 1, 28, 28), return_params=True)
    r, w = out.read_params[:, 0], out.write_params[:, 0]  # (batch, 5): g_x, g_y, delta, sigma, gamma
    torch.testing.assert_close(r[:, 2], torch.full((2,), 27.0), atol=0.5, rtol=0.05)
    torch.testing.assert_close(r[:, 3], r[:, 2] / 2, atol=0, rtol=0.1)
    torch.testing.assert_close(w[:, 3], w[:, 2] / 2, atol=0, rtol=0.1)
    torch.testing.assert_close(w[:, 4], 1 / (2 * math.pi * w[:, 3] ** 2), atol=0, rtol=0.2)
    assert DrawConfig().window_init == "zero"  # the default is unchanged
    with pytest.raises(ValueError, match="window_init"):
        DrawConfig(window_init="random")


def test_bench_nll_trains_its_models_in_turns_and_reports_a_stopped_run(fake_mnist_dir, tmp_path, monkeypatch):
    """The models advance one epoch each in turns; a bench stopped by SIGTERM between turns
    exits with 128 + 15 and leaves a table that shows both at the same epoch; the same
    command then finishes both without retraining what was done."""
    import signal
    from dataclasses import replace

    from benchmark import nll
    from cli import cli
    from draw.interrupt import Interrupted

    smoke = nll.PRESETS["mnist"]["smoke"]
    monkeypatch.setitem(nll.PRESETS["mnist"], "smoke", replace(smoke, train=replace(smoke.train, epochs=2)))
    calls, stop_at_call = [], {"n": 2}
    real = nll.train

    def spy(net, *args, until_epoch=None, desc="", **kw):
        if len(calls) == stop_at_call["n"]:
            raise Interrupted("SIGTERM: training stopped at step 4 (epoch 2)", signal.SIGTERM)
        r = real(net, *args, until_epoch=until_epoch, desc=desc, **kw)
        calls.append((desc, until_epoch, len(r.history), r.finished))
        return r

    monkeypatch.setattr(nll, "train", spy)
    out = tmp_path / "nll"
    command = ["bench", "nll", "--preset", "smoke", "--out", str(out), "--device", "cpu", "--eager"]
    r = CliRunner().invoke(cli, command)
    assert r.exit_code == 128 + signal.SIGTERM, r.output
    assert "SIGTERM: training stopped" in r.output and "Traceback" not in r.output
    draw, noattn = nll.MODEL_LABELS["draw"], nll.MODEL_LABELS["draw-noattn"]
    assert calls == [(draw, 1, 1, False), (noattn, 1, 1, False)]
    table = (out / "table.md").read_text()
    assert "## Still training" in table
    assert f"| {draw} | 0 | 1 of 2 |" in table and f"| {noattn} | 0 | 1 of 2 |" in table
    assert (out / "learning_curves.png").exists() and not (out / "results.csv").exists()
    assert json.loads((out / "config.json").read_text())["complete"] is False

    stop_at_call["n"] = -1
    calls.clear()
    r = CliRunner().invoke(cli, command)
    assert r.exit_code == 0, r.output
    assert calls == [(draw, 2, 2, True), (noattn, 2, 2, True), (draw, None, 2, True), (noattn, None, 2, True)]
    df = pd.read_csv(out / "results.csv")
    assert set(df[df.metric == "epochs"].value) == {2.0}
    assert "## Still training" not in (out / "table.md").read_text()
    assert len(pd.read_csv(out / "curves.csv")) == 4


def test_a_stopped_runs_table_gives_the_training_time_left_at_the_recent_pace(tmp_path):
    from benchmark import nll

    cfg = nll.bench_config("paper")  # 100 epochs
    # cumulative seconds per epoch; the attention model's 4th epoch was slow (a restart's compile)
    secs = {"draw": [900, 1500, 2100, 3000, 3600, 4200], "draw-noattn": [1200, 2400, 3600, 4800, 6000]}
    rows = [{"model": m, "seed": 0, "epoch": e + 1, "seconds": s, "valid_bound": 100.0 - e}
            for m, ss in secs.items() for e, s in enumerate(ss)]
    pd.DataFrame(rows).to_csv(tmp_path / "curves.csv", index=False)
    text = "\n".join(nll._in_progress(tmp_path, pd.DataFrame(), cfg))
    draw_left, noattn_left = 600 * 94 / 3600, 1200 * 95 / 3600  # the median epoch x the epochs left
    assert "| 6 of 100 |" in text and f"| {draw_left:.1f} |" in text and f"| {noattn_left:.1f} |" in text
    assert f"about {draw_left + noattn_left:.1f} h more of training in all" in text


def test_importance_sampling_resumes_chunk_by_chunk_to_the_same_estimates(fake_mnist_dir, tmp_path, monkeypatch):
    """SIGTERM during the third chunk of the IS estimates (the models take chunks in turns):
    that chunk is saved, the bench stops; the rerun computes only the rest, and every
    image's estimate equals that of an uninterrupted run (each chunk draws from its own
    seed). Chunks follow the fixed random order of the test images; a saved chunk that holds
    other images than this version plans stops the bench instead of being mixed in."""
    import os
    import shutil
    import signal

    from benchmark import nll
    from benchmark.runner import run_bench
    from draw.fast import SpeedConfig
    from draw.interrupt import Interrupted

    cfg = nll.bench_config("smoke", speed=SpeedConfig())  # both models
    monkeypatch.setattr(nll, "IS_CHUNK_ROWS", 4 * cfg.importance_samples)  # 4 images per chunk
    n_chunks = -(-cfg.data.n_is // 4)
    assert n_chunks >= 3
    run = lambda out: run_bench(nll.NllBench(cfg), out, device="cpu", progress=False, echo=lambda m: None)  # noqa: E731
    run(tmp_path / "ref")

    calls = {"n": 0}
    real = nll.iwae_nll

    def terminated(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3 and not calls.get("killed"):
            calls["killed"] = True
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kw)

    monkeypatch.setattr(nll, "iwae_nll", terminated)
    out = tmp_path / "cut"
    with pytest.raises(Interrupted, match=f"importance sampling stopped after 12 of {2 * cfg.data.n_is} images"):
        run(out)
    saved = pd.read_csv(out / "importance" / f"draw-seed0-K{cfg.importance_samples}.csv")
    assert sorted(set(saved.chunk)) == [0, 1] and not (out / "results.csv").exists()
    np.testing.assert_array_equal(saved["index"], nll.is_order(cfg.data.n_test)[:8])
    other = pd.read_csv(out / "importance" / f"draw-noattn-seed0-K{cfg.importance_samples}.csv")
    assert sorted(set(other.chunk)) == [0]
    # the stopped bench already shows both trained models' samples, test bounds and the estimate so far
    for model in ("draw", "draw-noattn"):
        assert (out / f"samples_{model}.png").exists() and (out / f"drawing_{model}.gif").exists()
    progress = pd.read_csv(out / nll.IS_PROGRESS_FILE).set_index("model")
    assert (progress.images_done["draw"], progress.images["draw"]) == (8, cfg.data.n_is)
    assert progress.images_done["draw-noattn"] == 4
    assert progress.nll_is_nats["draw"] == pytest.approx(saved.nll_is.mean())
    table = (out / "table.md").read_text()
    assert "## Importance sampling in progress" in table and "## Still training" not in table
    assert f"| 8 of {cfg.data.n_is} | ≈ {saved.nll_is.mean():.2f} |" in table
    left = progress.is_s["draw"] / 8 * (cfg.data.n_is - 8) / 3600  # the pace so far x the images left
    assert f"| {progress.is_s['draw'] / 3600:.2f} | {left:.1f} |" in table
    assert f"with attention {progress.test_bound_nats['draw']:.2f}, without" in table
    bad = tmp_path / "bad"  # a chunk of other images (say, from before the random order): refused
    shutil.copytree(out, bad)
    chunks = bad / "importance" / f"draw-seed0-K{cfg.importance_samples}.csv"
    pd.read_csv(chunks).assign(index=lambda d: d["index"].sort_values().to_numpy()).to_csv(chunks, index=False)
    with pytest.raises(RuntimeError, match="chunk 0 holds other test images than this version plans"):
        run(bad)
    older = tmp_path / "older"  # is_progress.csv of an older version, without the whole-set estimate: still read
    shutil.copytree(out, older)
    rows = pd.read_csv(older / nll.IS_PROGRESS_FILE)
    rows.drop(columns=["nll_is_test_nats", "nll_is_test_se_nats"]).to_csv(older / nll.IS_PROGRESS_FILE, index=False)
    nll.NllBench.write_report(older, cfg)
    assert f"| 8 of {cfg.data.n_is} | ≈ {saved.nll_is.mean():.2f} |" in (older / "table.md").read_text()
    whole = rows.set_index("model").nll_is_test_nats["draw"]
    assert f"≈ {whole:.2f} ± " in table and f"≈ {whole:.2f} ± " not in (older / "table.md").read_text()
    calls["n"] = 0
    # a spent time budget stops before the next chunk too (and the run is not complete)
    assert not run_bench(nll.NllBench(cfg), out, device="cpu", progress=False, echo=lambda m: None, max_minutes=0)
    assert calls["n"] == 0
    assert run(out)
    assert calls["n"] == 2 * n_chunks - 3  # only the chunks left
    a, b = pd.read_csv(tmp_path / "ref" / "is_per_image.csv"), pd.read_csv(out / "is_per_image.csv")
    np.testing.assert_array_equal(a.nll_is.to_numpy(), b.nll_is.to_numpy())
    progress = pd.read_csv(out / nll.IS_PROGRESS_FILE).set_index("model")  # after the last chunks: every image
    for model, mine in b.groupby("model"):
        assert progress.images_done[model] == cfg.data.n_is
        assert progress.bound_same_images_nats[model] == pytest.approx(mine.bound.mean())
        assert progress.nll_is_nats[model] == pytest.approx(mine.nll_is.mean())
    assert "in progress" not in (out / "table.md").read_text()


def test_a_folder_whose_run_folders_are_lost_goes_on_from_its_shipped_models(fake_mnist_dir, tmp_path, monkeypatch):
    """``runs/`` gone (a wiped scratch disk, a results folder checked out from git) after
    training finished: the bench trains nothing, goes on with the estimate from the chunks
    in ``importance/`` and ends with the rows of an uninterrupted run. Gone before a
    model's training finished: that model trains again from its first step and its lost
    run's rows leave curves.csv. Shipped weights of other settings, a curve that stops
    short and chunks of other weights stop the bench with a message instead."""
    import shutil
    from dataclasses import asdict, replace
    from pathlib import Path

    from benchmark import nll
    from benchmark.runner import BenchError, run_bench
    from draw.checkpoint import load_model, save_weights

    cfg = nll.bench_config("smoke")
    monkeypatch.setattr(nll, "IS_CHUNK_ROWS", 4 * cfg.importance_samples)  # 4 images per chunk
    run = lambda out: run_bench(nll.NllBench(cfg), out, device="cpu", progress=False, echo=lambda m: None)  # noqa: E731
    ref = tmp_path / "ref"
    assert run(ref)
    ref_rows = pd.read_csv(ref / "results.csv")
    chunks = ref / "importance" / f"draw-seed0-K{cfg.importance_samples}.csv"
    assert pd.read_csv(chunks).weights.nunique() == 1 and pd.read_csv(chunks).weights[0].startswith("sha256:")

    def copy(name: str) -> Path:
        out = tmp_path / name
        shutil.copytree(ref, out)
        shutil.rmtree(out / "runs")
        for f in ("results.csv", "is_per_image.csv"):
            (out / f).unlink()
        for f in (out / "importance").iterdir():  # only the first chunk of each estimate was done
            pd.read_csv(f).query("chunk == 0").to_csv(f, index=False)
        return out

    real, trained = nll.train, []
    monkeypatch.setattr(nll, "train", lambda net, *a, desc="", **kw: trained.append(desc) or real(net, *a, desc=desc, **kw))
    done = copy("lost")
    assert run(done)
    assert trained == [] and not (done / "runs").exists()
    pd.testing.assert_frame_equal(pd.read_csv(done / "is_per_image.csv"), pd.read_csv(ref / "is_per_image.csv"))
    # but for the times: train_s is the curve's wall time at the last epoch's end (not after its save), is_s measured
    a, b = (rows[~rows.metric.isin(["train_s", "is_s"])].reset_index(drop=True)
            for rows in (ref_rows, pd.read_csv(done / "results.csv")))
    pd.testing.assert_frame_equal(a, b)

    other = copy("other-settings")
    weights = other / "weights" / "draw-seed0.safetensors"
    model, record = load_model(weights)
    save_weights(model, weights, {"train": asdict(replace(cfg.train, lr=1.0)), "data": asdict(cfg.data),
                                  "dataset": cfg.dataset, "source": record["source"]})
    with pytest.raises(BenchError, match="holds a model trained with other settings"):
        run(other)
    short = copy("short-curve")
    curves = pd.read_csv(short / "curves.csv")
    curves[curves.model != "draw"].to_csv(short / "curves.csv", index=False)
    with pytest.raises(BenchError, match="cannot be told finished"):
        run(short)
    stale = copy("other-weights")
    f = stale / "importance" / f"draw-seed0-K{cfg.importance_samples}.csv"
    pd.read_csv(f).assign(weights="sha256:0123456789012345").to_csv(f, index=False)
    with pytest.raises(BenchError, match="holds estimates of other weights"):
        run(stale)
    assert trained == []

    moved = tmp_path / "old-layout"  # chunks where versions before 2026-12 kept them, in the run folder
    shutil.copytree(ref, moved)
    for f in ("results.csv", "is_per_image.csv"):
        (moved / f).unlink()
    shutil.rmtree(moved / "importance")
    for model in ("draw", "draw-noattn"):
        old = moved / "runs" / f"{model}-seed0" / f"importance_K{cfg.importance_samples}.csv"
        new = ref / "importance" / f"{model}-seed0-K{cfg.importance_samples}.csv"
        pd.read_csv(new).query("chunk == 0").drop(columns="weights").to_csv(old, index=False)
    assert run(moved)
    assert not list((moved / "runs").glob("*/importance_K*.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(moved / "is_per_image.csv"), pd.read_csv(ref / "is_per_image.csv"))
    assert pd.read_csv(moved / "importance" / chunks.name).weights.nunique() == 1

    trained.clear()
    mid = copy("lost-mid-training")  # no model shipped yet: both train again, the lost run's rows go
    shutil.rmtree(mid / "weights")
    shutil.rmtree(mid / "importance")
    curves = pd.read_csv(mid / "curves.csv")
    pd.concat([curves, curves.tail(1).assign(epoch=7)]).to_csv(mid / "curves.csv", index=False)
    assert run(mid)
    assert len(trained) == 4  # both models, each its one epoch and then its end of schedule
    pd.testing.assert_frame_equal(pd.read_csv(mid / "curves.csv")[["model", "epoch"]], curves[["model", "epoch"]])
    pd.testing.assert_frame_equal(pd.read_csv(mid / "is_per_image.csv"), pd.read_csv(ref / "is_per_image.csv"))


def test_bench_nll_models_runs_one_model_and_a_second_call_adds_the_other(fake_mnist_dir, tmp_path):
    from cli import cli

    out = tmp_path / "nll"
    base = ["bench", "nll", "--preset", "smoke", "--out", str(out), "--device", "cpu", "--eager"]
    r = CliRunner().invoke(cli, [*base, "--models", "draw-noattn"])
    assert r.exit_code == 0, r.output
    assert set(pd.read_csv(out / "results.csv").model) == {"draw-noattn"}
    r = CliRunner().invoke(cli, [*base, "--models", "draw"])
    assert r.exit_code == 0, r.output
    assert "adding draw to the models" in r.output
    assert set(pd.read_csv(out / "results.csv").model) == {"draw", "draw-noattn"}
    r = CliRunner().invoke(cli, [*base, "--models", "draw,vae"])
    assert r.exit_code == 2 and "unknown model(s) vae; choose from draw, draw-noattn" in r.output


def test_a_folder_keeps_the_training_path_it_started_on_when_the_machine_would_choose_another(fake_mnist_dir,
                                                                                                tmp_path):
    """The fast path's bf16 products depend on the CPU: rerunning a run's command on another
    machine continues on the path config.json records, and says so, instead of refusing."""
    from cli import cli

    out = tmp_path / "nll"
    args = ["bench", "nll", "--preset", "smoke", "--models", "draw-noattn", "--out", str(out), "--device", "cpu",
            "--eager"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "config.json").read_text())
    doc["config"]["speed"] = {**doc["config"]["speed"], "fused": True, "amp": "bf16"}  # as a bf16 CPU started it
    (out / "config.json").write_text(json.dumps(doc))
    run_json = out / "runs" / "draw-noattn-seed0" / "run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "speed": doc["config"]["speed"]}))
    rows = pd.read_csv(out / "results.csv")
    rows.iloc[:0].to_csv(out / "results.csv", index=False)  # its job not done yet: it runs again
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "was started on the training path fused+bf16; continuing on it, not on eager" in r.output
    assert "speed: fused+bf16" in r.output
    assert json.loads((out / "config.json").read_text())["config"]["speed"] == doc["config"]["speed"]
    assert set(pd.read_csv(out / "results.csv").metric) == set(rows.metric)
    r = CliRunner().invoke(cli, [*args[:5], "draw", *args[6:]])  # a model joins it on its path, too
    assert r.exit_code == 0, r.output
    assert "continuing on it" in r.output and "adding draw to the models" in r.output
    assert json.loads((out / "config.json").read_text())["config"]["speed"] == doc["config"]["speed"]
    assert set(pd.read_csv(out / "results.csv").model) == {"draw", "draw-noattn"}
    r = CliRunner().invoke(cli, [*args, "--seeds", "2"])  # another config besides: refused as before
    assert r.exit_code != 0 and "different configuration" in r.output, r.output


def test_learning_curves_of_a_long_run_add_a_zoom_on_its_last_half(tmp_path):
    """Past 20 epochs the figure gets a second panel (the last half on a linear scale, with
    the paper's bounds): the first epochs' 200 nats no longer hide the models' gap."""
    from PIL import Image

    from benchmark.nll import bench_config, learning_curves
    from benchmark.report import set_plot_style

    set_plot_style()
    widths = {}
    for n in (5, 30):
        out = tmp_path / str(n)
        out.mkdir()
        rows = [{"model": m, "seed": 0, "epoch": e, "train_bound": 200 / e + 80 + 4 * (m == "draw-noattn"),
                 "valid_bound": 200 / e + 81 + 4 * (m == "draw-noattn")}
                for e in range(1, n + 1) for m in ("draw", "draw-noattn")]
        pd.DataFrame(rows).to_csv(out / "curves.csv", index=False)
        (png,) = learning_curves(out, bench_config("paper"))
        widths[n] = Image.open(png).size[0]
    assert widths[30] > 1.5 * widths[5]
