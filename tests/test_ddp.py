"""Data-parallel training: 2 CPU processes (gloo) train the same model as 1 process with the
same global batch, and only rank 0 writes files."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import fake_digits

from datasets.tensors import TensorData
from draw.checkpoint import load_checkpoint
from draw.classifier import AttentionClassifier, ClassifierConfig
from draw.fast import SpeedConfig
from draw.model import DRAW, DrawConfig
from draw.train import TrainConfig, train

CFG = TrainConfig(epochs=2, batch_size=16, lr=3e-3, checkpoint_every=3, log_every=2)


pytestmark = pytest.mark.slow  # two processes each


def _data(kind: str) -> tuple[TensorData, TensorData]:
    x, y = fake_digits(80, seed=0)
    xv, yv = fake_digits(21, seed=1)  # odd: the ranks' validation shares differ in size
    if kind == "draw":
        return TensorData((torch.from_numpy(x) > 127).to(torch.uint8), None, 1.0), TensorData((torch.from_numpy(xv) > 127).to(torch.uint8), None, 1.0)
    return TensorData(torch.from_numpy(x), torch.from_numpy(y)), TensorData(torch.from_numpy(xv), torch.from_numpy(yv))


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "draw":
        return DRAW(DrawConfig(T=3, read_n=2, write_n=3, lstm_size=16, z_size=4))
    return AttentionClassifier(ClassifierConfig(image_shape=(1, 28, 28), glimpses=3, read_n=4, lstm_size=16))


def _train(kind: str, out, fused: bool):
    train_data, valid_data = _data(kind)
    return train(_model(kind), train_data, valid_data, CFG, out, device="cpu", progress=False,
                 select="error" if kind == "classifier" else "loss", speed=SpeedConfig(fused=fused))


def _rendezvous(rank: int, world: int, port: int) -> None:
    """torchrun's environment for this spawned process."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})


def _worker(rank: int, world: int, port: int, kind: str, out: str, fused: bool) -> None:
    _rendezvous(rank, world, port)
    torch.set_num_threads(1)
    if rank != 0:  # rank 0 alone may write: any other writer fails the test
        import draw.train

        def refuse(*args, **kwargs):
            raise AssertionError(f"rank {rank} wrote a file")

        draw.train._atomic_torch_save = refuse
    result = _train(kind, out, fused)
    torch.save(result.history, os.path.join(out, f"history-rank{rank}.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_same_training(tmp_path, kind: str, fused: bool) -> None:
    ref = _train(kind, tmp_path / "one", fused)
    out = tmp_path / "two"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), kind, str(out), fused), nprocs=2, join=True)

    one, two = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(out / "last.pt")
    assert two["state"]["step"] == one["state"]["step"] == 2 * 80 // CFG.batch_size
    assert two["state"]["images_seen"] == one["state"]["images_seen"] == 2 * 80
    for k, v in one["model"].items():
        torch.testing.assert_close(two["model"][k], v, rtol=1e-4, atol=1e-5, msg=f"{kind}: {k} differs")
    h0, h1 = (torch.load(out / f"history-rank{r}.pt", weights_only=True) for r in (0, 1))
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "train_s")} for r in h]  # noqa: E731
    assert strip(h0) == strip(h1)  # every rank agrees on the (all-reduced) epoch metrics
    for a, b in zip(ref.history, h0, strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4 * max(1.0, abs(a["train_loss"]))
        if kind == "classifier":  # deterministic: the sharded validation equals the whole one
            assert abs(a["valid_loss"] - b["valid_loss"]) < 1e-5
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "history-rank0.pt", "history-rank1.pt", "last.pt"]


def test_two_processes_train_the_classifier_like_one(tmp_path):
    _check_same_training(tmp_path, "classifier", fused=False)


def test_two_processes_train_fused_draw_like_one(tmp_path):
    """DRAW's noise is drawn for the global batch and sliced per rank, so even the sampled
    latents match the single process."""
    _check_same_training(tmp_path, "draw", fused=True)


def _gloo_worker_threads() -> int:
    """This process's gloo worker threads, by the name torch gives them (0 where it names none)."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            names.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return sum(name == "pt_gloo_runloop" for name in names)


def _shutdown_worker(rank: int, world: int, port: int, out: str) -> None:
    _rendezvous(rank, world, port)
    from torch.nn.parallel import DistributedDataParallel

    from draw import distributed

    distributed.init_distributed(torch.device("cpu"))
    ddp = DistributedDataParallel(torch.nn.Linear(2, 2))  # holds the default group, as training does
    total = distributed.all_reduce(torch.ones(3))
    before = _gloo_worker_threads()
    distributed._shut_down()  # what atexit runs
    torch.save({"total": total, "before": before, "after": _gloo_worker_threads()}, os.path.join(out, f"rank{rank}.pt"))
    del ddp


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc to count threads")
def test_metrics_all_reduce_threads_are_joined_before_exit(tmp_path):
    """The metrics all-reduce runs on a gloo group that DDP does not hold, so the exit handler
    joins its worker threads while the interpreter is whole (a thread that let go of a tensor
    during finalization aborted the process, see draw.distributed)."""
    mp.spawn(_shutdown_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert r["total"].tolist() == [2.0, 2.0, 2.0]
        if r["before"] == 0:
            pytest.skip("this torch does not name its gloo worker threads")
        assert r["after"] < r["before"], r  # the metrics group's threads are gone, DDP's may stay
