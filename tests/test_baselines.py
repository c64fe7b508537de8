"""Convolutional baselines: shapes, loss contract, checkpoint round trip, ability to learn."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from draw.baselines import ConvBaseline, ConvConfig, conv2_feature_shape

SIZES = [(100, 100), (60, 60), (28, 28)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("arch", ["conv2", "resnet", "resnet18"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_shape(arch: str, size: tuple[int, int]) -> None:
    model = ConvBaseline(ConvConfig(arch=arch, image_size=size))
    logits = model(torch.rand(3, 1, *size))
    assert logits.shape == (3, 10)
    assert torch.isfinite(logits).all()


def test_non_square_and_multichannel() -> None:
    for arch in ["conv2", "resnet", "resnet18"]:
        cfg = ConvConfig(arch=arch, in_channels=3, image_size=(40, 64), n_classes=7, width=8)
        assert ConvBaseline(cfg)(torch.rand(2, 3, 40, 64)).shape == (2, 7)


def test_conv2_is_the_ram_paper_architecture() -> None:
    # RAM paper section 4.1: 8 filters 10x10 stride 5, FC 256, softmax.
    net = ConvBaseline(ConvConfig(arch="conv2")).net
    assert net.conv.out_channels == 8
    assert net.conv.kernel_size == (10, 10) and net.conv.stride == (5, 5)
    assert conv2_feature_shape((100, 100)) == (8, 19, 19)
    assert net.fc.in_features == 8 * 19 * 19 and net.fc.out_features == 256
    assert net.out.out_features == 10


def test_conv2_rejects_images_smaller_than_its_filter() -> None:
    with pytest.raises(ValueError, match="at least 10x10"):
        ConvConfig(arch="conv2", image_size=(8, 8))
    with pytest.raises(ValueError, match="unknown arch"):
        ConvConfig(arch="vgg")


@pytest.mark.parametrize("arch", ["conv2", "resnet"])
def test_loss_returns_tensors(arch: str) -> None:
    model = ConvBaseline(ConvConfig(arch=arch, image_size=(28, 28)))
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss, stats = model.loss(x, y)
    assert loss.ndim == 0 and loss.requires_grad
    assert set(stats) == {"loss", "error"}
    for v in stats.values():
        assert isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad
    assert torch.allclose(stats["loss"], loss.detach())
    assert 0.0 <= stats["error"].item() <= 1.0
    # error is the argmax mistake rate
    expected = (model(x).argmax(1) != y).float().mean()
    assert torch.allclose(stats["error"], expected)
    loss.backward()


@pytest.mark.parametrize("arch", ["conv2", "resnet", "resnet18"])
def test_state_dict_round_trip(arch: str, tmp_path) -> None:
    cfg = ConvConfig(arch=arch, image_size=(60, 60), width=8)
    model = ConvBaseline(cfg).eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"config": asdict(cfg), "model": model.state_dict()}, path)

    ckpt = torch.load(path, weights_only=True)
    rebuilt = ConvBaseline(ConvConfig(**ckpt["config"]))  # no forward pass before loading
    rebuilt.load_state_dict(ckpt["model"])
    rebuilt.eval()
    assert rebuilt.cfg == cfg
    x = torch.rand(4, 1, 60, 60)
    torch.testing.assert_close(rebuilt(x), model(x))


def test_config_from_json_list() -> None:
    # A config that went through JSON carries image_size as a list.
    assert ConvConfig(image_size=[28, 28]).image_size == (28, 28)  # type: ignore[arg-type]


def _quadrant_task(n: int = 64, size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (n, 1, size, size): a bright 8x8 square in one quadrant on faint noise; label = quadrant."""
    g = torch.Generator().manual_seed(1)
    x = 0.2 * torch.rand(n, 1, size, size, generator=g)
    y = torch.arange(n) % 4
    half = size // 2
    for i in range(n):
        q = int(y[i])
        r0 = (q // 2) * half + int(torch.randint(0, half - 8, (1,), generator=g))
        c0 = (q % 2) * half + int(torch.randint(0, half - 8, (1,), generator=g))
        x[i, 0, r0 : r0 + 8, c0 : c0 + 8] = 1.0
    return x, y


@pytest.mark.parametrize("arch", ["conv2", "resnet"])
def test_overfits_tiny_task(arch: str) -> None:
    x, y = _quadrant_task()
    model = ConvBaseline(ConvConfig(arch=arch, image_size=(40, 40), n_classes=4, width=8))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(90):  # the resnet reaches zero eval error after ~40-55 steps, conv2 after ~3
        opt.zero_grad()
        loss, _ = model.loss(x, y)
        loss.backward()
        opt.step()
    model.eval()  # BatchNorm on running statistics: the model must really have learned
    with torch.no_grad():
        _, stats = model.loss(x, y)
    assert stats["error"].item() == 0.0
