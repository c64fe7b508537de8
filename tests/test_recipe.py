"""The DRAW recipe study: equal training-time budgets, bounds read off each curve."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from benchmark.recipe import bound_at
from cli import cli


def test_bound_at_interpolates_between_measurements_and_refuses_to_extrapolate():
    minutes, bounds = np.array([1.0, 3.0, 6.0]), np.array([200.0, 150.0, 120.0])
    assert bound_at(minutes, bounds, 2.0) == 175.0
    assert bound_at(minutes, bounds, 6.0) == 120.0
    assert math.isnan(bound_at(minutes, bounds, 7.0)) and math.isnan(bound_at(minutes, bounds, 0.5))
    assert bound_at(minutes, bounds, 7.0, finished=True) == 120.0  # a schedule that ended early holds its bound


@pytest.mark.parametrize("budgets, says", [("10,5", "increase"), ("ten", "comma-separated"), ("0,5", "positive"),
                                            ("5,nan", "positive"), ("", "positive")])
def test_bench_recipe_budgets_are_checked_before_any_work(budgets, says, tmp_path):
    r = CliRunner().invoke(cli, ["bench", "recipe", "--preset", "smoke", "--budgets", budgets, "--device", "cpu",
                                 "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--budgets" in r.output and says in r.output, r.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_bench_recipe_smoke(fake_mnist_dir, tmp_path):
    out = tmp_path / "recipe"
    r = CliRunner().invoke(cli, ["bench", "recipe", "--preset", "smoke", "--eager", "--device", "cpu",
                                 "--budgets", "0.04,0.1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "results.csv")
    bounds = df[df.metric == "valid_bound_nats"]
    assert set(bounds.model) == {"zero-init", "lr2e-3"} and set(bounds.split) == {"0.04min", "0.1min"}
    assert bounds.value.notna().all() and (bounds.value > 0).all()
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves.candidate) == {"zero-init", "lr2e-3"} and curves.valid_bound.notna().all()
    table = (out / "table.md").read_text()
    assert "bound after 0.1 min" in table and "Lowest bound" in table
    assert (out / "curves.png").stat().st_size > 5000


def test_the_nll_paper_preset_trains_with_the_studys_winner():
    """`bench nll --preset paper` (MNIST) takes its recipe from the study's named winner: its
    training settings and its initial windows, with Table 3's model unchanged."""
    from dataclasses import replace

    from benchmark.nll import bench_config as nll_config
    from benchmark.recipe import CANDIDATES, PAPER_RECIPE, bench_config

    winner = CANDIDATES[PAPER_RECIPE]
    nll = nll_config("paper")
    assert nll.train == winner.train and nll.train.lr == 1e-3 and nll.train.epochs == 100
    assert {m.window_init for m in nll.models.values()} == {winner.window_init}
    study = bench_config("paper")
    assert PAPER_RECIPE in study.candidates and replace(study.model, window_init=winner.window_init) \
        == nll.models["draw"]
