"""A researcher's own classifier, written outside the repository, through the benches."""

from __future__ import annotations

import json
import sys
import textwrap

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from draw.plugin import PluginError, UserClassifier, UserModelConfig, check_user_model

MODULE = """
import torch
from torch import nn


def tiny_mlp(image_shape, n_classes):
    c, h, w = image_shape
    return nn.Sequential(nn.AvgPool2d(4), nn.Flatten(), nn.Linear(c * (h // 4) * (w // 4), 32), nn.ReLU(),
                         nn.Linear(32, n_classes))


def wrong_shape(image_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(image_shape[1] * image_shape[2], n_classes + 1))


class _Nan(nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 10), float("nan"))


def makes_nan(image_shape, n_classes):
    return _Nan()


def not_a_module(image_shape, n_classes):
    return "a string"
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``my_models.py`` in a folder outside the repository, put on the path as a user would."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "my_models.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(folder))
    yield "my_models"
    sys.modules.pop("my_models", None)


@pytest.mark.parametrize(("factory", "message"), [
    ("no_such_module:f", "does not import"),
    ("my_models:absent", "has no function 'absent'"),
    ("my_models:wrong_shape", r"returned \(2, 11\)"),
    ("my_models:makes_nan", "NaN"),
    ("my_models:not_a_module", "not a torch.nn.Module"),
    ("unregistered-name", "no 'drawbench.models' entry point"),
])
def test_broken_factories_are_named_with_what_is_wrong(user_module, factory, message):
    with pytest.raises(PluginError, match=message) as e:
        check_user_model(UserModelConfig(factory=factory, image_shape=(1, 40, 40)))
    assert factory.split(":")[0] in str(e.value)


def test_a_good_factory_is_a_classifier_with_the_common_loss(user_module):
    cfg = UserModelConfig(factory="my_models:tiny_mlp", image_shape=(1, 40, 40))
    assert "my_models.py" in check_user_model(cfg)
    model = UserClassifier(cfg)
    loss, metrics = model.loss(torch.rand(4, 1, 40, 40), torch.tensor([0, 1, 2, 3]))
    assert loss.ndim == 0 and set(metrics) == {"loss", "error"}


def test_an_entry_point_of_an_installed_package_registers_a_name(tmp_path, monkeypatch, user_module):
    dist = tmp_path / "site" / "my_models_pkg-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-models-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[drawbench.models]\ntiny = my_models:tiny_mlp\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    origin = check_user_model(UserModelConfig(factory="tiny", image_shape=(1, 40, 40)))
    assert "my_models:tiny_mlp" in origin and "my-models-pkg 1.0" in origin


@pytest.mark.slow
def test_a_user_model_runs_through_bench_cluttered_and_bench_robustness(fake_mnist_dir, user_module, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cl"
    args = ["bench", "cluttered", "--preset", "smoke", "--eager", "--device", "cpu", "--models", "conv2",
            "--model-spec", "my_models:tiny_mlp", "--out", str(out)]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "results.csv")
    err = df[df.metric == "test_error_pct"].set_index("model").value
    assert set(err.index) == {"conv2", "tiny_mlp"} and 0 <= err["tiny_mlp"] <= 100
    assert "tiny_mlp (user model)" in (out / "table.md").read_text()
    spec = json.loads((out / "config.json").read_text())["config"]["models"]["tiny_mlp"]
    assert spec["config"]["factory"] == "my_models:tiny_mlp" and "my_models.py" in spec["config"]["origin"]

    # its trained weights, given back with --checkpoint, evaluate to the same error without training
    weights = tmp_path / "tiny.pt"
    from draw.checkpoint import load_model

    trained, _ = load_model(out / "weights" / "tiny_mlp-seed0.safetensors")
    torch.save(trained.net.state_dict(), weights)
    out2 = tmp_path / "cl2"
    r = runner.invoke(cli, [*args[:-1], str(out2), "--models", "", "--checkpoint", f"tiny_mlp={weights}"])
    assert r.exit_code == 0, r.output
    assert "not trained here" in r.output and "epoch 1/" not in r.output
    df2 = pd.read_csv(out2 / "results.csv")
    assert df2[df2.metric == "test_error_pct"].value.item() == err["tiny_mlp"]

    rob = tmp_path / "rob"
    r = runner.invoke(cli, ["bench", "robustness", "--preset", "smoke", "--eager", "--device", "cpu", "--models",
                            "conv2", "--model-spec", "mlp=my_models:tiny_mlp", "--axes", "gaussian,occlusion",
                            "--out", str(rob)])
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(rob / "results.csv")
    assert {"conv2", "mlp"} <= set(rows.model)
    ce = rows[(rows.metric == "mce_pct") & (rows.model == "mlp")]
    assert len(ce) == 1 and ce.value.item() > 0  # scored against the 2-layer conv, as every model is


@pytest.mark.parametrize(("spec", "hint"), [
    ("my_models:wrong_shape", "--model-spec"),
    ("no_such_module:f", "--model-spec"),
    ("conv2=my_models:tiny_mlp", "--model-spec"),
])
def test_bench_usage_errors_name_the_model(user_module, tmp_path, spec, hint):
    r = CliRunner().invoke(cli, ["bench", "cluttered", "--preset", "smoke", "--eager", "--models", "conv2",
                                 "--model-spec", spec, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and hint in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "o" / "results.csv").exists()


@pytest.mark.slow
def test_the_readme_example_runs_through_bench_robustness(fake_mnist_dir, tmp_path, monkeypatch):
    """The documented 20-line model, copied from README.md as a user would."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Your own model", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 20
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "readme_models.py").write_text(code)
    monkeypatch.syspath_prepend(str(folder))
    try:
        r = CliRunner().invoke(cli, ["bench", "robustness", "--preset", "smoke", "--eager", "--device", "cpu",
                                     "--models", "conv2", "--model-spec", "readme_models:small_cnn", "--axes",
                                     "gaussian", "--out", str(tmp_path / "rob")])
    finally:
        sys.modules.pop("readme_models", None)
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(tmp_path / "rob" / "results.csv")
    assert "small_cnn" in set(rows.model)


@pytest.mark.slow
def test_a_user_model_joins_a_finished_bench_folder(fake_mnist_dir, user_module, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cl"
    base = ["bench", "cluttered", "--preset", "smoke", "--eager", "--device", "cpu", "--out", str(out)]
    r = runner.invoke(cli, [*base, "--models", "conv2"])
    assert r.exit_code == 0, r.output
    conv2 = pd.read_csv(out / "results.csv")
    r = runner.invoke(cli, [*base, "--models", "", "--model-spec", "my_models:tiny_mlp"])  # the README's recipe
    assert r.exit_code == 0, r.output
    assert "conv2 epoch" not in r.output and "adding tiny_mlp" in r.output
    df = pd.read_csv(out / "results.csv")
    assert set(df.model) == {"conv2", "tiny_mlp"}
    assert df[df.model == "conv2"].value.tolist() == conv2.value.tolist()
    assert "tiny_mlp (user model)" in (out / "table.md").read_text()
