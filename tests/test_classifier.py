"""The read-only attention classifier (section 4.1) and the cluttered bench at the smoke preset."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from datasets.tensors import TensorData
from draw.classifier import AttentionClassifier, ClassifierConfig
from draw.train import TrainConfig, evaluate, train


def test_shapes_and_windows():
    model = AttentionClassifier(ClassifierConfig(image_shape=(1, 50, 40), glimpses=3, read_n=5, lstm_size=16))
    logits, windows = model(torch.rand(4, 1, 50, 40))
    assert logits.shape == (4, 10)
    assert windows.shape == (4, 3, 5)
    # the first window (h_0 = 0) is the bias: centred, spanning the image
    torch.testing.assert_close(windows[:, 0, 0], torch.full((4,), 41 / 2))
    torch.testing.assert_close(windows[:, 0, 1], torch.full((4,), 51 / 2))
    torch.testing.assert_close(windows[:, 0, 2], torch.full((4,), 49 / 4))
    loss, metrics = model.loss(torch.rand(4, 1, 50, 40), torch.tensor([0, 1, 2, 3]))
    assert loss.shape == () and set(metrics) == {"loss", "error"}


def quadrant_task(n: int, seed: int, size: int = 32) -> TensorData:
    """A bright 6x6 square in one of four quadrants; the class is the quadrant; faint noise."""
    g = np.random.default_rng(seed)
    y = g.integers(0, 4, n)
    x = (g.random((n, size, size)) * 40).astype(np.uint8)
    half = size // 2
    for i in range(n):
        r0 = (y[i] // 2) * half + g.integers(0, half - 6)
        c0 = (y[i] % 2) * half + g.integers(0, half - 6)
        x[i, r0 : r0 + 6, c0 : c0 + 6] = 255
    return TensorData(torch.from_numpy(x), torch.from_numpy(y))


def test_learns_a_tiny_synthetic_task():
    torch.manual_seed(0)
    model = AttentionClassifier(ClassifierConfig(image_shape=(1, 32, 32), glimpses=2, read_n=4, lstm_size=32, n_classes=4))
    data, test = quadrant_task(512, 0), quadrant_task(256, 1)
    before = evaluate(model, test)["error"]
    train(model, data, None, TrainConfig(epochs=8, batch_size=32, lr=3e-3), None, device="cpu", progress=False)
    after = evaluate(model, test)["error"]
    assert before > 0.5
    assert after < 0.1, after


@pytest.mark.slow
def test_bench_cluttered_smoke(fake_mnist_dir, tmp_path):
    out = tmp_path / "bench"
    runner = CliRunner()
    args = ["bench", "cluttered", "--glimpses", "3", "--preset", "smoke", "--out", str(out), "--device", "cpu"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "preset: smoke (chosen); device: cpu"
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns) == ["bench", "model", "variant", "preset", "seed", "split", "metric", "value"]
    err = df[df.metric == "test_error_pct"].set_index("model").value
    assert set(err.index) == {"attention", "ram", "conv2", "resnet"}  # every row of Table 1 but the paper's
    assert ((err >= 0) & (err <= 100)).all()
    macs = df[df.metric == "macs_per_image"].set_index("model").value
    assert macs["attention"] > 0 and macs["ram"] > 0 and macs["conv2"] > 0  # counted for every model
    assert (df[df.metric == "infer_images_per_s"].value > 0).all()
    on_target = df[df.metric == "on_target_pct"].set_index("model").value  # the models that glimpse
    assert set(on_target.index) == {"attention", "ram"} and ((on_target >= 0) & (on_target <= 100)).all()
    table = (out / "table.md").read_text()
    assert "glimpses on the digit (%)" in table
    assert "3.36" in table and "this run" in table
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["glimpses"] == 3 and cfg["finished"] and cfg["complete"]
    from draw.fast import default_speed

    speed = cfg["config"]["speed"]  # the bench trained through the fast path by default, and says so
    assert speed["fused"] and speed["compile"] and speed == asdict(default_speed("cpu"))
    assert default_speed("cpu").label() in table
    for png in ("test_error.png", "learning_curves.png", "confusion.png", "glimpses.png", "glimpses_ram.png",
                "compute.png"):
        assert (out / png).stat().st_size > 5000
    glimpses = pd.read_csv(out / "glimpses.csv")
    assert glimpses.t.max() == 3

    # eval classifier reproduces the table's test errors from the shipped weights and from the
    # run folder's checkpoint (the data settings come from the file, or the run.json beside it)
    for model in ("attention", "ram", "conv2"):
        for path in (out / "weights" / f"{model}-seed0.safetensors", out / "runs" / f"{model}-seed0" / "best.pt"):
            r = runner.invoke(cli, ["eval", "classifier", str(path), "--device", "cpu"])
            assert r.exit_code == 0, r.output
            assert f"test error {err[model]:.2f}% over " in r.output, (model, path, r.output)
            assert ("glimpses on the digit: " in r.output) == (model != "conv2")
    r = runner.invoke(cli, ["eval", "classifier", str(out / "weights" / "ram-seed0.safetensors"), "--mc-samples", "4",
                            "--n", "10", "--device", "cpu"])
    assert r.exit_code == 0 and "over 10 images (ram, 4 location rollouts averaged, seed 30000)" in r.output, r.output
    r = runner.invoke(cli, ["eval", "classifier", str(out / "weights" / "conv2-seed0.safetensors"), "--mc-samples", "4"])
    assert r.exit_code == 2 and "--mc-samples" in r.output and "only RAM" in r.output

    # rerun: every model is already done, nothing is retrained or duplicated, and the
    # provenance of results this invocation did not produce is not rewritten
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output and "epoch" not in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    # another config into the same folder is refused
    result = runner.invoke(cli, [*args[:3], "4", *args[4:]])
    assert result.exit_code == 2 and "--overwrite" in result.output

    result = runner.invoke(cli, ["report", str(out)])
    assert result.exit_code == 0 and "test_error.png" in result.output


def test_on_target_counts_glimpse_centres_on_the_digit_square():
    from benchmark.cluttered import on_target_pct

    # a 28 x 28 digit with top-left pixel (row 10, col 20), 0-based: 1-based x in [20.5, 48.5], y in [10.5, 38.5]
    positions = np.array([[10, 20]])
    windows = np.array([[[21.0, 11.0, 3.0], [20.4, 11.0, 3.0], [48.5, 38.5, 3.0], [49.0, 20.0, 3.0]]])  # (1, T=4, 3)
    assert on_target_pct(windows, positions, 28) == 50.0  # the 1st and 3rd (on the edge) are on it
    assert on_target_pct(windows[:, :1, :2], positions, 28) == 100.0  # RAM's (x, y) locations alike
    assert on_target_pct(windows[:, 1:2], positions, 28) == 0.0


def test_fresh_clutter_is_new_every_epoch_and_deterministic(fake_mnist_dir):
    from benchmark.data import fresh_cluttered
    from datasets.cluttered import ClutterParams
    from datasets.mnist import load_mnist

    params = ClutterParams(canvas=40, distractors=3, distractor_size=6)
    a, b = fresh_cluttered(params, 0, 50), fresh_cluttered(params, 0, 50)
    e1, e2 = a(1), a(2)
    assert len(e1) == 50 and e1.x.dtype == torch.uint8
    assert torch.equal(e1.x, b(1).x) and torch.equal(e1.y, b(1).y)
    assert not torch.equal(e1.x, e2.x)
    assert not torch.equal(e1.x, fresh_cluttered(params, 1, 50)(1).x)
    _, train_labels = load_mnist("train")
    assert set(e1.y.tolist()) <= set(train_labels.tolist())


@pytest.mark.slow
def test_more_seeds_with_overwrite_keeps_finished_training(fake_mnist_dir, tmp_path):
    out = tmp_path / "bench"
    runner = CliRunner()
    base = ["bench", "cluttered", "--preset", "smoke", "--models", "conv2", "--out", str(out), "--device", "cpu",
            "--eager"]
    r = runner.invoke(cli, [*base, "--seeds", "1"])
    assert r.exit_code == 0, r.output
    first = pd.read_csv(out / "results.csv")
    r = runner.invoke(cli, [*base, "--seeds", "2", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert r.output.count("conv2 epoch 1/2: train loss") == 1  # seed 1 trains, seed 0 resumes as finished
    df = pd.read_csv(out / "results.csv")
    err = df[df.metric == "test_error_pct"].set_index("seed").value
    assert set(err.index) == {0, 1}
    assert err[0] == first[first.metric == "test_error_pct"].value.iloc[0]


@pytest.mark.slow
def test_models_added_to_a_finished_folder_join_it(fake_mnist_dir, tmp_path):
    out = tmp_path / "bench"
    runner = CliRunner()
    base = ["bench", "cluttered", "--preset", "smoke", "--out", str(out), "--device", "cpu", "--eager"]
    r = runner.invoke(cli, [*base, "--models", "conv2"])
    assert r.exit_code == 0, r.output
    first = pd.read_csv(out / "results.csv")
    r = runner.invoke(cli, [*base, "--models", "resnet"])
    assert r.exit_code == 0, r.output
    assert "adding resnet to the models of" in r.output and "conv2 epoch" not in r.output  # conv2 not retrained
    df = pd.read_csv(out / "results.csv")
    assert set(df.model) == {"conv2", "resnet"}
    kept = df[df.model == "conv2"].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[["seed", "metric", "value"]], first[["seed", "metric", "value"]])  # conv2's rows
    stored = json.loads((out / "config.json").read_text())["config"]
    assert list(stored["models"]) == ["conv2", "resnet"]
    assert "Small ResNet" in (out / "table.md").read_text() and "2 layers" in (out / "table.md").read_text()
    r = runner.invoke(cli, [*base, "--models", "conv2"])  # a model it holds: nothing to do, nothing rewritten
    assert r.exit_code == 0 and "nothing to do" in r.output, r.output
    assert json.loads((out / "config.json").read_text())["config"] == stored
    r = runner.invoke(cli, [*base, "--models", "conv2", "--seeds", "2"])  # other seeds: another config
    assert r.exit_code != 0 and "different configuration" in r.output, r.output


@pytest.mark.slow
def test_a_folder_written_before_a_model_setting_existed_reads_it_at_its_default(fake_mnist_dir, tmp_path):
    out = tmp_path / "bench"
    runner = CliRunner()
    args = ["bench", "cluttered", "--preset", "smoke", "--models", "ram", "--out", str(out), "--device", "cpu", "--eager"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output

    def store(value):  # the RAM config as an older version wrote it (None: without the setting)
        doc = json.loads((out / "config.json").read_text())
        ram = doc["config"]["models"]["ram"]["config"]
        ram.pop("reinforce_into_core", None)
        if value is not None:
            ram["reinforce_into_core"] = value
        (out / "config.json").write_text(json.dumps(doc))

    store(None)
    r = runner.invoke(cli, args)
    assert r.exit_code == 0 and "nothing to do" in r.output, r.output
    store(0.5)  # another value is another model
    r = runner.invoke(cli, args)
    assert r.exit_code != 0 and "different configuration" in r.output, r.output


def test_the_paper_preset_lets_a_tenth_of_reinforce_into_rams_core_and_says_so():
    from benchmark.cluttered import bench_config

    paper, quick = (bench_config(p, models=["ram"]).models["ram"] for p in ("paper", "quick"))
    assert (paper.config["reinforce_into_core"], paper.config["loc_std"]) == (0.1, 0.1)
    assert "0.1 of REINFORCE into the core" in paper.variant and "std 0.1" in paper.variant
    assert (quick.config["reinforce_into_core"], quick.config["loc_std"]) == (0.0, 0.1)
    assert "REINFORCE" not in quick.variant  # the quick folders' variant, as they were written
    assert paper.build().locator.into_core == 0.1


def test_a_run_folder_written_before_a_model_setting_existed_resumes(tmp_path):
    from benchmark.cluttered import _model_at_defaults
    from benchmark.runner import BenchError, RunContext
    from draw.ram import RAMConfig

    ctx = RunContext(out=tmp_path, device=torch.device("cpu"), echo=lambda m: None)
    run = tmp_path / "runs" / "ram-seed0"
    identity = {"model": {"kind": "ram", "config": asdict(RAMConfig())}, "train": {"lr": 1e-3}}
    ctx.claim_run_dir(run, identity, complete=_model_at_defaults)
    (run / "last.pt").write_bytes(b"checkpoint")
    old = json.loads((run / "run.json").read_text())
    del old["model"]["config"]["reinforce_into_core"]  # as written before the setting existed
    (run / "run.json").write_text(json.dumps(old))
    ctx.claim_run_dir(run, identity, complete=_model_at_defaults)  # read at its default: the same run
    assert (run / "last.pt").exists()
    other = {**identity, "model": {"kind": "ram", "config": asdict(RAMConfig(reinforce_into_core=0.1))}}
    with pytest.raises(BenchError, match="other settings"):
        ctx.claim_run_dir(run, other, complete=_model_at_defaults)


def test_run_folders_are_kept_only_for_the_same_settings(tmp_path):
    from benchmark.runner import BenchError, RunContext

    ctx = RunContext(out=tmp_path, device=torch.device("cpu"), echo=lambda m: None)
    run = tmp_path / "runs" / "conv2-seed0"
    ctx.claim_run_dir(run, {"train": {"lr": 1e-3}, "data": {"distractors": 8}})
    (run / "last.pt").write_bytes(b"checkpoint")
    ctx.claim_run_dir(run, {"train": {"lr": 1e-3}, "data": {"distractors": 8}})  # the same run: resumed
    assert (run / "last.pt").exists()
    with pytest.raises(BenchError, match="--overwrite"):  # other settings are never resumed
        ctx.claim_run_dir(run, {"train": {"lr": 2e-3}, "data": {"distractors": 8}})
    assert (run / "last.pt").exists()
    ctx.overwrite = True
    ctx.claim_run_dir(run, {"train": {"lr": 1e-3}, "data": {"distractors": 9}})
    assert not (run / "last.pt").exists()
    assert json.loads((run / "run.json").read_text())["data"] == {"distractors": 9}


def test_the_table_says_how_many_location_rollouts_rams_test_error_averages(tmp_path):
    from benchmark.cluttered import bench_config, table
    from benchmark.report import read_results

    def text(models, m):
        return table(tmp_path, read_results(tmp_path), bench_config("smoke", models=models, mc_samples=m))

    assert "RAM's test error is of one location rollout per image" in text(["ram", "conv2"], 1)
    assert "averages the class probabilities of 5 location rollouts per image" in text(["ram"], 5)
    assert "rollout" not in text(["conv2"], 1)  # no RAM, nothing to say


def test_eval_classifier_refuses_what_it_cannot_evaluate(tmp_path):
    from draw.baselines import ConvConfig
    from draw.checkpoint import save_weights
    from draw.model import DRAW, DrawConfig
    from draw.registry import build_model

    conv = build_model("conv", asdict(ConvConfig(arch="conv2", in_channels=1, image_size=(28, 28))))
    bare = save_weights(conv, tmp_path / "bare.safetensors")  # no data record
    r = CliRunner().invoke(cli, ["eval", "classifier", str(bare)])
    assert r.exit_code == 2 and "does not say which cluttered data" in r.output, r.output
    draw = save_weights(DRAW(DrawConfig(T=2, lstm_size=8, z_size=2)), tmp_path / "draw.safetensors")
    r = CliRunner().invoke(cli, ["eval", "classifier", str(draw)])
    assert r.exit_code == 2 and "not a classifier" in r.output and "eval nll" in r.output, r.output


def test_a_run_killed_while_claiming_its_folder_is_claimed_again(tmp_path):
    from benchmark.runner import BenchError, RunContext

    ctx = RunContext(out=tmp_path, device=torch.device("cpu"), echo=lambda m: None)
    run = tmp_path / "runs" / "attention-seed0"
    run.mkdir(parents=True)
    (run / ".run.json.4242.0badc0de.tmp").write_text('{"train": {"l')  # SIGKILL inside the atomic write
    ctx.claim_run_dir(run, {"train": {"lr": 1e-3}})
    assert sorted(p.name for p in run.iterdir()) == ["run.json"]
    (run / "notes.txt").write_text("someone else's")  # a real file of an unknown run still stops it
    (run / "run.json").unlink()
    with pytest.raises(BenchError, match="unknown run"):
        ctx.claim_run_dir(run, {"train": {"lr": 1e-3}})


@pytest.mark.slow
def test_train_classifier_like_a_bench_folder_trains_the_same_model(fake_mnist_dir, tmp_path):
    from draw.checkpoint import load_checkpoint

    out = tmp_path / "bench"
    runner = CliRunner()
    r = runner.invoke(cli, ["bench", "cluttered", "--preset", "smoke", "--models", "conv2,attention", "--out", str(out),
                            "--device", "cpu", "--eager"])
    assert r.exit_code == 0, r.output
    for model in ("conv2", "attention"):
        again = tmp_path / f"again-{model}"
        r = runner.invoke(cli, ["train", "classifier", "--like", str(out), "--model", model, "--out", str(again),
                                "--device", "cpu"])
        assert r.exit_code == 0, r.output
        a, b = load_checkpoint(out / "runs" / f"{model}-seed0" / "last.pt"), load_checkpoint(again / "last.pt")
        assert a["model_config"] == b["model_config"] and a["train_config"] == b["train_config"]
        for k, v in a["model"].items():
            assert torch.equal(v, b["model"][k]), (model, k)  # same data, seed and settings: the same weights
        # the run folder's config.json says which data: the bench's test error on its test images
        n_test = json.loads((out / "config.json").read_text())["config"]["data"]["n_test"]
        want = pd.read_csv(out / "results.csv").query("model == @model and metric == 'test_error_pct'").value.item()
        r = runner.invoke(cli, ["eval", "classifier", str(again / "best.pt"), "--n", str(n_test), "--device", "cpu"])
        assert r.exit_code == 0 and f"test error {want:.2f}% over {n_test} images" in r.output, r.output

    r = runner.invoke(cli, ["train", "classifier", "--like", str(out), "--model", "conv2", "--lr", "0.1", "--out",
                            str(tmp_path / "x")])
    assert r.exit_code == 2 and "--lr" in r.output  # --like sets the learning rate
    r = runner.invoke(cli, ["train", "classifier", "--like", str(out), "--model", "resnet", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "trains no model 'resnet'" in r.output
