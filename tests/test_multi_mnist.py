"""Two-digit 60x60 MNIST: determinism, placement, binarization, and ``bench nll --dataset twodigit``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from datasets.multi_mnist import load_two_digit, make_two_digit, two_digit_layout


def blobs(m: int = 50, seed: int = 0) -> np.ndarray:
    """``(m, 28, 28)`` uint8: random-intensity rectangles, so overlaps saturate sometimes."""
    rng = np.random.default_rng(seed)
    d = np.zeros((m, 28, 28), np.uint8)
    for i in range(m):
        r0, c0 = rng.integers(0, 8, size=2)
        d[i, r0 : r0 + 20, c0 : c0 + 20] = rng.integers(100, 256)
    return d


DIGITS = blobs()


def test_deterministic_in_seed():
    a = make_two_digit(DIGITS, 300, seed=1)
    assert a.dtype == np.uint8 and a.shape == (300, 60, 60)
    assert a.tobytes() == make_two_digit(DIGITS, 300, seed=1).tobytes()
    assert a.tobytes() != make_two_digit(DIGITS, 300, seed=2).tobytes()
    # chunking is an implementation detail
    assert a.tobytes() == make_two_digit(DIGITS, 300, seed=1, chunk=7).tobytes()
    # the first images do not depend on how many are made
    assert make_two_digit(DIGITS, 10, seed=1).tobytes() == a[:10].tobytes()


def test_each_image_is_the_clipped_sum_of_its_two_digits():
    n = 200
    images = make_two_digit(DIGITS, n, seed=3)
    lay = two_digit_layout(len(DIGITS), n, seed=3)
    for i in range(n):
        acc = np.zeros((60, 60), np.int32)
        for k in range(2):
            r, c = lay.position[i, k]
            acc[r : r + 28, c : c + 28] += DIGITS[lay.index[i, k]]
        np.testing.assert_array_equal(images[i], np.minimum(acc, 255))
    assert (images == 255).any()  # some overlaps saturate


def test_positions_are_uniform_over_the_canvas():
    lay = two_digit_layout(10, 20000, seed=0, canvas=60)
    pos = lay.position.reshape(-1)
    assert pos.min() == 0 and pos.max() == 32  # every corner position is reachable, none beyond
    counts = np.bincount(pos, minlength=33)
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    # the two digits of an image are placed independently
    assert abs(np.corrcoef(lay.position[:, 0, 0], lay.position[:, 1, 0])[0, 1]) < 0.03
    assert set(np.unique(lay.index)) == set(range(10))


def test_bad_arguments():
    with pytest.raises(ValueError, match="uint8"):
        make_two_digit(DIGITS.astype(np.float32), 3, seed=0)
    with pytest.raises(ValueError, match="canvas"):
        make_two_digit(DIGITS, 3, seed=0, canvas=20)


def test_load_two_digit_binarized_from_fake_mnist(fake_mnist_dir):
    x = load_two_digit("test", 40, seed=0)
    assert x.shape == (40, 60, 60) and x.dtype == np.uint8
    assert set(np.unique(x)) <= {0, 1} and x.any()
    np.testing.assert_array_equal(x, load_two_digit("test", 40, seed=0))
    grey = load_two_digit("test", 40, seed=0, binarized=False)
    assert grey.max() > 1 and ((grey == 0) <= (x == 0)).all()  # pixels off in grey stay off
    assert load_two_digit("train", 40).tobytes() != x.tobytes()
    with pytest.raises(ValueError, match="split"):
        load_two_digit("extra")


@pytest.mark.slow
def test_bench_nll_twodigit_smoke(fake_mnist_dir, tmp_path):
    from cli import cli

    out = tmp_path / "two"
    r = CliRunner().invoke(cli, ["bench", "nll", "--dataset", "twodigit", "--preset", "smoke", "--eager", "--out", str(out),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "results.csv")
    assert set(df.model) == {"draw"}
    assert {"nll_bound_nats", "nll_is_nats"} <= set(df.metric)
    for f in ("samples_draw.png", "drawing_draw.gif", "drawing_steps_draw.png", "read_attention_draw.png"):
        assert (out / f).stat().st_size > 1000
    table = (out / "table.md").read_text()
    assert "Two-digit 60x60 MNIST" in table and "DRAW (ours)" in table
