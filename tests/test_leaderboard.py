"""`report --leaderboard`: rankings merged from small synthetic bench folders (no training)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from benchmark.leaderboard import LeaderboardError, leaderboard_markdown, leaderboards
from cli import cli


def _folder(path, config: dict, rows: list[dict]):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"config": config}))
    pd.DataFrame(rows).to_csv(path / "results.csv", index=False)
    return path


def _row(bench, model, seed, split, metric, value, preset="smoke"):
    return {"bench": bench, "model": model, "variant": "", "preset": preset, "seed": seed, "split": split,
            "metric": metric, "value": value}


@pytest.fixture
def folders(tmp_path):
    # two cluttered folders: T=8 (two seeds of the attention model, one of conv2) and T=4
    c8 = _folder(tmp_path / "c8", {"bench": "cluttered", "preset": "smoke", "glimpses": 8}, [
        _row("cluttered", "attention", 0, "test", "test_error_pct", 10.0),
        _row("cluttered", "attention", 1, "test", "test_error_pct", 14.0),
        _row("cluttered", "attention", 0, "test", "macs_per_image", 2e6),
        _row("cluttered", "attention", 1, "test", "macs_per_image", 2e6),
        _row("cluttered", "conv2", 0, "test", "test_error_pct", 30.0),
        _row("cluttered", "conv2", 0, "valid", "valid_error_pct", 1.0),
    ])
    c4 = _folder(tmp_path / "c4", {"bench": "cluttered", "preset": "quick", "glimpses": 4}, [
        _row("cluttered", "attention", 0, "test", "test_error_pct", 5.0, "quick"),  # no multiply-adds: older folder
    ])
    rob = _folder(tmp_path / "rob", {"bench": "robustness", "preset": "smoke",
                                     "eval": {"distractors": 4, "distractor_size": 6}}, [
        _row("robustness", "attention", 0, "clean", "test_error_pct", 8.0),
        _row("robustness", "conv2", 0, "clean", "test_error_pct", 20.0),
        _row("robustness", "resnet", 0, "clean", "test_error_pct", 6.0),
        _row("robustness", "attention", 0, "all", "mce_pct", 70.0),
        _row("robustness", "attention", 0, "all", "relative_mce_pct", 90.0),
        _row("robustness", "conv2", 0, "all", "mce_pct", 100.0),
        _row("robustness", "conv2", 0, "all", "relative_mce_pct", 100.0),
        _row("robustness", "resnet", 0, "all", "mce_pct", 70.0),  # ties the attention model on mCE
        _row("robustness", "resnet", 0, "all", "relative_mce_pct", 80.0),  # ... and wins on relative mCE
        *[_row("robustness", m, 0, a, "ce_pct", 1.0) for m in ("attention", "conv2", "resnet")
          for a in ("gaussian", "occlusion")],
    ])
    nll = _folder(tmp_path / "nll", {"bench": "nll", "preset": "smoke", "dataset": "mnist"}, [
        # a random sample of 100 test images: ranked by the whole test set's estimate, not the sample's mean
        _row("nll", "draw", 0, "test[100 random]", "nll_is_nats", 95.0),
        _row("nll", "draw", 0, "test", "nll_is_test_nats", 96.0),
        _row("nll", "draw", 0, "test", "nll_bound_nats", 100.0),
        _row("nll", "draw-noattn", 0, "test[100 random]", "nll_is_nats", 90.0),
        _row("nll", "draw-noattn", 0, "test", "nll_is_test_nats", 98.0),
    ])
    return {"c8": c8, "c4": c4, "rob": rob, "nll": nll}


def test_rankings_per_bench(folders):
    boards = leaderboards([folders["c8"], folders["rob"], folders["c4"], folders["nll"]])
    assert list(boards) == ["cluttered", "robustness", "nll"]
    c = boards["cluttered"]
    assert c[["model", "glimpses", "test_error_pct"]].values.tolist() == [
        ["attention", 4, 5.0], ["attention", 8, 12.0], ["conv2", 8, 30.0]]
    assert c["rank"].tolist() == [1, 2, 3] and c.seeds.tolist() == [1, 2, 1]
    assert c.sd[1] == pytest.approx(pd.Series([10.0, 14.0]).std()) and c.macs_per_image[1] == 2e6
    assert pd.isna(c.macs_per_image[0])
    r = boards["robustness"]
    assert r.model.tolist() == ["resnet", "attention", "conv2"]  # mCE, then relative mCE
    assert r.clean_error_pct.tolist() == [6.0, 8.0, 20.0] and r.n_axes.tolist() == [2, 2, 2]
    n = boards["nll"]
    assert n.model.tolist() == ["draw", "draw-noattn"] and n.nll_bound_nats[0] == 100.0
    assert n.nll_is_nats.tolist() == [96.0, 98.0] and set(n.is_images) == {"100 random, all estimated"}


def test_nll_folders_of_older_versions_say_which_images_they_sampled(folders, tmp_path):
    old = _folder(tmp_path / "old", {"bench": "nll", "preset": "quick", "dataset": "mnist"}, [
        _row("nll", "draw", 0, "test[:1000]", "nll_is_nats", 91.0),  # the first 1,000 images, no whole-set estimate
        _row("nll", "draw-noattn", 0, "test", "nll_is_nats", 97.0),  # every test image
    ])
    n = leaderboards([folders["nll"], old])["nll"].set_index(["folder", "model"])
    assert n.is_images[(str(old), "draw")] == "first 1000 only" and n.nll_is_nats[(str(old), "draw")] == 91.0
    assert n.is_images[(str(old), "draw-noattn")] == "all"


def test_markdown_and_the_command(folders, tmp_path):
    text = leaderboard_markdown([folders["c8"], folders["c4"]])
    assert "## Cluttered MNIST classification" in text and "robustness" not in text
    assert "| 2 | attention | smoke | 8 | 12.00 ± 2.83 | 2.00 | 2 |" in text
    out = tmp_path / "board" / "leaderboard.md"
    r = CliRunner().invoke(cli, ["report", "--leaderboard", *(str(f) for f in folders.values()), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text() in r.output
    assert "| 1 | resnet | smoke | 70.0 | 80.0 | 6.00 | 2 | 1 |" in out.read_text()


def test_robustness_folder_without_ce_rows_is_scored_from_its_settings(tmp_path):
    rows = []
    for model, scale in (("conv2", 2.0), ("attention", 1.0)):
        for level, err in zip([0, 0.1, 0.2, 0.3, 0.4, 0.5], [5, 10, 20, 30, 40, 50], strict=True):
            rows.append(_row("robustness", model, 0, f"gaussian={level:g}", "test_error_pct", scale * err))
    rob = _folder(tmp_path / "old", {"bench": "robustness", "preset": "smoke",
                                     "eval": {"distractors": 8, "distractor_size": 8}}, rows)
    r = leaderboards([rob])["robustness"]
    assert r.model.tolist() == ["attention", "conv2"] and r.mce_pct.tolist() == [50.0, 100.0]


def test_bad_folders_are_usage_errors_naming_them(folders, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    speed = _folder(tmp_path / "speed", {"bench": "speed"}, [])
    with pytest.raises(LeaderboardError, match="plain"):
        leaderboards([folders["c8"], plain])
    runner = CliRunner()
    for bad, words in ((plain, "is it a bench folder"), (speed, "'speed' bench")):
        r = runner.invoke(cli, ["report", "--leaderboard", str(folders["c8"]), str(bad)])
        assert r.exit_code == 2 and str(bad) in r.output and words in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["report", str(folders["c8"]), str(folders["c4"])])  # two folders need --leaderboard
    assert r.exit_code == 2 and "--leaderboard" in r.output
    r = runner.invoke(cli, ["report", "--leaderboard", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "missing" in r.output
