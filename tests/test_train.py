"""The training loop: learning, checkpoints, exact resume, NaN handling."""

from __future__ import annotations

import pytest
import torch
from conftest import fake_digits

from datasets.tensors import TensorData
from draw.checkpoint import CheckpointError, load_checkpoint, load_model
from draw.model import DRAW, DrawConfig
from draw.train import NonFiniteError, TrainConfig, evaluate, train


def binary_digits(n: int, seed: int = 0) -> TensorData:
    x, _ = fake_digits(n, seed)
    g = torch.Generator().manual_seed(seed)
    xb = (torch.rand(n, 28, 28, generator=g) < torch.from_numpy(x) / 255).to(torch.uint8)
    return TensorData(xb, None, scale=1.0)


def tiny_draw() -> DRAW:
    torch.manual_seed(0)
    return DRAW(DrawConfig(image_shape=(1, 28, 28), T=4, read_n=2, write_n=3, lstm_size=32, z_size=8))


def test_bound_falls_in_50_steps():
    data = binary_digits(512)
    model = tiny_draw()
    before = evaluate(model, data)["loss"]
    cfg = TrainConfig(epochs=50, batch_size=64, lr=3e-3, max_steps=50, checkpoint_every=0)
    result = train(model, data, None, cfg, None, device="cpu", progress=False)
    after = evaluate(model, data)["loss"]
    assert result.steps == 50
    assert after < before - 50, (before, after)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_checkpoint_round_trip(tmp_path):
    data = binary_digits(128)
    model = tiny_draw()
    train(model, data, binary_digits(64, 1), TrainConfig(epochs=1, batch_size=32), tmp_path, device="cpu", progress=False)
    rebuilt, ckpt = load_model(tmp_path / "last.pt", kind="draw")
    assert ckpt["state"]["epoch"] == 1 and ckpt["state"]["step"] == 4 and ckpt["finished"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[k], v.cpu())
    assert (tmp_path / "best.pt").exists()
    with pytest.raises(CheckpointError, match="not a 'classifier' model"):
        load_model(tmp_path / "last.pt", kind="classifier")


class Interrupt(Exception):
    pass


def test_resume_is_exact(tmp_path):
    """Kill at step 7 (last checkpoint at step 6), resume: same weights, history and loss as
    an uninterrupted run."""
    data, valid = binary_digits(160), binary_digits(40, 1)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=2e-3, checkpoint_every=3, schedule="cosine", warmup_steps=2)

    ref = tiny_draw()
    ref_result = train(ref, data, valid, cfg, tmp_path / "ref", device="cpu", progress=False)

    victim = tiny_draw()
    calls = {"n": 0}
    original = victim.loss

    def dying_loss(x, y=None):
        calls["n"] += 1
        if calls["n"] == 8:  # during step 7 (after the epoch-1 validation took no loss calls: it is step 8's turn)
            raise Interrupt
        return original(x, y)

    victim.loss = dying_loss
    with pytest.raises(Interrupt):
        train(victim, data, valid, cfg, tmp_path / "run", device="cpu", progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["state"]["step"] == 6 and not ckpt["finished"]

    resumed = tiny_draw()
    result = train(resumed, data, valid, cfg, tmp_path / "run", resume=True, device="cpu", progress=False)
    assert result.steps == ref_result.steps == 10
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    assert [r["train_loss"] for r in result.history] == pytest.approx([r["train_loss"] for r in ref_result.history], rel=1e-12)
    assert [r["valid_loss"] for r in result.history] == pytest.approx([r["valid_loss"] for r in ref_result.history], rel=1e-12)

    # a finished run resumes to a no-op
    again = train(tiny_draw(), data, valid, cfg, tmp_path / "run", resume=True, device="cpu", progress=False)
    assert again.steps == 10 and len(again.history) == 2


def test_epoch_data_feeds_each_epoch_and_resumes_exactly(tmp_path):
    """With ``epoch_data`` the second and third epochs train on their own sets (so the weights
    differ from a fixed-set run), and a run killed in epoch 3 resumes to the same weights."""
    data, valid = binary_digits(96), binary_digits(32, 1)
    asked = []

    def epoch_data(e):
        asked.append(e)
        return binary_digits(96, seed=100 + e)

    cfg = TrainConfig(epochs=3, batch_size=32, lr=2e-3, checkpoint_every=2)
    fixed = tiny_draw()
    train(fixed, data, valid, cfg, tmp_path / "fixed", device="cpu", progress=False)
    ref = tiny_draw()
    train(ref, data, valid, cfg, tmp_path / "ref", device="cpu", progress=False, epoch_data=epoch_data)
    assert asked == [1, 2]
    assert any(not torch.equal(fixed.state_dict()[k], v) for k, v in ref.state_dict().items())

    victim = tiny_draw()
    original, calls = victim.loss, {"n": 0}

    def dying_loss(x, y=None):
        calls["n"] += 1
        if calls["n"] == 8:  # step 8 of 9, in epoch 3; the last checkpoint is at step 6
            raise Interrupt
        return original(x, y)

    victim.loss = dying_loss
    with pytest.raises(Interrupt):
        train(victim, data, valid, cfg, tmp_path / "run", device="cpu", progress=False, epoch_data=epoch_data)
    resumed = tiny_draw()
    train(resumed, data, valid, cfg, tmp_path / "run", resume=True, device="cpu", progress=False, epoch_data=epoch_data)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="epoch_data"):
        train(tiny_draw(), data, None, cfg, None, device="cpu", progress=False, epoch_data=lambda e: binary_digits(64))


def test_resume_refuses_other_settings(tmp_path):
    data = binary_digits(64)
    train(tiny_draw(), data, None, TrainConfig(epochs=1, batch_size=32), tmp_path, device="cpu", progress=False)
    with pytest.raises(CheckpointError, match="other settings"):
        train(tiny_draw(), data, None, TrainConfig(epochs=1, batch_size=16), tmp_path, resume=True, device="cpu", progress=False)


def test_nan_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    data = binary_digits(128)
    model = tiny_draw()
    calls = {"n": 0}
    original = model.loss

    def poisoned(x, y=None):
        calls["n"] += 1
        loss, m = original(x, y)
        return (loss * float("nan") if calls["n"] >= 6 else loss), m

    model.loss = poisoned
    cfg = TrainConfig(epochs=3, batch_size=32, checkpoint_every=2, log_every=1)
    with pytest.raises(NonFiniteError, match="step 5"):
        train(model, data, None, cfg, tmp_path, device="cpu", progress=False)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    data = binary_digits(64)
    train(tiny_draw(), data, None, TrainConfig(epochs=1, batch_size=32), tmp_path, device="cpu", progress=False)
    path = tmp_path / "last.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "x.pt")


def test_sigterm_stops_after_the_step_checkpointed_and_resumes_exactly(tmp_path):
    """SIGTERM during step 5 (no checkpoint due until step 6): the loop finishes that step,
    checkpoints it, raises Interrupted; the resumed run ends with the uninterrupted
    run's weights. The handlers are restored afterwards."""
    import os
    import signal

    from draw.interrupt import Interrupted

    data, valid = binary_digits(160), binary_digits(40, 1)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=2e-3, checkpoint_every=6)
    ref = tiny_draw()
    train(ref, data, valid, cfg, tmp_path / "ref", device="cpu", progress=False)

    victim = tiny_draw()
    calls = {"n": 0}
    original = victim.loss

    def terminated_loss(x, y=None):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(x, y)

    victim.loss = terminated_loss
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="SIGTERM: training stopped at step 5") as err:
        train(victim, data, valid, cfg, tmp_path / "run", device="cpu", progress=False)
    assert err.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["state"]["step"] == 5 and not ckpt["finished"]

    resumed = tiny_draw()
    result = train(resumed, data, valid, cfg, tmp_path / "run", resume=True, device="cpu", progress=False)
    assert result.finished and result.steps == 10
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)


def test_until_epoch_pauses_a_run_that_resumes_to_the_same_weights(tmp_path):
    data, valid = binary_digits(96), binary_digits(32, 1)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=2e-3, schedule="cosine", warmup_steps=2)
    ref = tiny_draw()
    train(ref, data, valid, cfg, tmp_path / "ref", device="cpu", progress=False)

    first = train(tiny_draw(), data, valid, cfg, tmp_path / "run", device="cpu", progress=False, until_epoch=1)
    assert not first.finished and len(first.history) == 1 and first.steps == 3
    again = train(tiny_draw(), data, valid, cfg, tmp_path / "run", resume=True, device="cpu", progress=False,
                  until_epoch=1)
    assert again.steps == 3  # already there: nothing trained
    resumed = tiny_draw()
    result = train(resumed, data, valid, cfg, tmp_path / "run", resume=True, device="cpu", progress=False,
                   until_epoch=5)  # past the schedule's end: the schedule decides
    assert result.finished and len(result.history) == 3
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
