"""Tests for datasets/cluttered.py: fake digits only, no MNIST, no network."""

from __future__ import annotations

import sys
import types
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets.cluttered import (
    CLUTTERED_60,
    CLUTTERED_100,
    SET_SIZES,
    TRANSLATED,
    ClutteredSet,
    ClutterParamError,
    ClutterParams,
    CorruptDatasetError,
    cache_path,
    cached_split,
    default_cache_dir,
    load_npz,
    make_cluttered,
    make_split,
    preview_grid,
    save_npz,
)

M = 200


def fake_digits(m: int = M, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(m, 28, 28) uint8 blobs (a filled rectangle of random intensity, with noise) and
    labels = arange(m), so that a label names its source digit."""
    rng = np.random.default_rng(seed)
    d = np.zeros((m, 28, 28), np.uint8)
    for i in range(m):
        r0, c0 = rng.integers(2, 10, size=2)
        r1, c1 = rng.integers(18, 26, size=2)
        d[i, r0:r1, c0:c1] = rng.integers(60, 256, size=(r1 - r0, c1 - c0))
    return d, np.arange(m, dtype=np.int64)


DIGITS, LABELS = fake_digits()


def target_box(ds: ClutteredSet, i: int) -> np.ndarray:
    r, c = ds.positions[i]
    g = ds.params.digit_size
    return ds.images[i, r : r + g, c : c + g]


def outside_mask(ds: ClutteredSet) -> np.ndarray:
    """(n, H, W) bool: True outside each image's target box."""
    n, H, W = ds.images.shape
    g = ds.params.digit_size
    rr = np.arange(H)[None, :, None]
    cc = np.arange(W)[None, None, :]
    r = ds.positions[:, 0, None, None]
    c = ds.positions[:, 1, None, None]
    inside = (rr >= r) & (rr < r + g) & (cc >= c) & (cc < c + g)
    return ~inside


# ---------------------------------------------------------------- determinism


def test_same_arguments_same_bytes():
    a = make_cluttered(DIGITS, LABELS, 300, CLUTTERED_60, seed=3, split="train")
    b = make_cluttered(DIGITS, LABELS, 300, CLUTTERED_60, seed=3, split="train")
    assert a.images.tobytes() == b.images.tobytes()
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.positions, b.positions)
    assert a.sha256() == b.sha256()


def test_seed_and_split_change_the_output():
    base = make_cluttered(DIGITS, LABELS, 100, CLUTTERED_60, seed=0, split="test")
    other_seed = make_cluttered(DIGITS, LABELS, 100, CLUTTERED_60, seed=1, split="test")
    other_split = make_cluttered(DIGITS, LABELS, 100, CLUTTERED_60, seed=0, split="valid")
    no_split = make_cluttered(DIGITS, LABELS, 100, CLUTTERED_60, seed=0, split=None)
    odd_split = make_cluttered(DIGITS, LABELS, 100, CLUTTERED_60, seed=0, split="extra")
    shas = {d.sha256() for d in (base, other_seed, other_split, no_split, odd_split)}
    assert len(shas) == 5
    for d in (other_seed, other_split, no_split, odd_split):
        assert not np.array_equal(base.images, d.images)
        assert not np.array_equal(base.positions, d.positions)


def test_chunk_size_does_not_change_the_output():
    ref = make_cluttered(DIGITS, LABELS, 257, CLUTTERED_60, seed=5)
    for chunk in (1, 7, 64, 10_000):
        d = make_cluttered(DIGITS, LABELS, 257, CLUTTERED_60, seed=5, chunk=chunk)
        assert d.sha256() == ref.sha256()


def test_prefix_stable_in_n():
    big = make_cluttered(DIGITS, LABELS, 3 * M + 17, CLUTTERED_100, seed=2, split="train")
    for n in (0, 1, 50, M, M + 1, 2 * M + 3):
        small = make_cluttered(DIGITS, LABELS, n, CLUTTERED_100, seed=2, split="train")
        assert np.array_equal(small.images, big.images[:n])
        assert np.array_equal(small.labels, big.labels[:n])
        assert np.array_equal(small.positions, big.positions[:n])


def test_golden_checksum():
    """Pins the bytes: if this fails, numpy's random streams or the generator changed,
    and every cached or published cluttered set changes with them."""
    digits = (np.arange(16 * 28 * 28) % 251).astype(np.uint8).reshape(16, 28, 28)
    labels = np.arange(16) % 10
    ds = make_cluttered(digits, labels, 40, ClutterParams(40, 3, 6), seed=7, split="test")
    assert ds.sha256() == GOLDEN_SHA, f"cluttered bytes changed (numpy {np.__version__})"


GOLDEN_SHA = "330f1a714cd1ac11f332760c12c7c444af4ec6f34fa312984ac5644e15ac5fab"  # numpy 2.4


def reference_cluttered(digits, labels, n, params, seed, split_id, pool=None):
    """Slow, loop-by-loop statement of the generator's random protocol and rendering."""
    pool = digits if pool is None else pool
    g, H, D, s = params.digit_size, params.canvas, params.distractors, params.distractor_size
    ss_order, ss_geom = np.random.SeedSequence([seed, split_id]).spawn(2)
    rng = np.random.default_rng(ss_order)
    m = len(digits)
    order = np.concatenate([rng.permutation(m) for _ in range(-(-n // m))])[:n]
    per_distractor = [len(pool), g - s + 1, g - s + 1, H - s + 1, H - s + 1]
    highs = np.array([H - g + 1, H - g + 1] + per_distractor * D)
    geom = np.random.default_rng(ss_geom).integers(0, highs, size=(n, len(highs)))
    images = np.zeros((n, H, H), np.uint8)
    for i in range(n):
        canvas = np.zeros((H, H), np.int64)
        r, c = geom[i, :2]
        canvas[r : r + g, c : c + g] += digits[order[i]]
        for j in range(D):
            src, cr, cc, pr, pc = geom[i, 2 + 5 * j : 7 + 5 * j]
            canvas[pr : pr + s, pc : pc + s] += pool[src, cr : cr + s, cc : cc + s]
        images[i] = np.minimum(canvas, 255)
    return images, labels[order], geom[:, :2]


@pytest.mark.parametrize(
    "params, split, split_id",
    [(CLUTTERED_100, "test", 2), (ClutterParams(33, 5, 13), None, 99), (TRANSLATED, "train", 0)],
)
def test_matches_loop_reference(params, split, split_id):
    pool = fake_digits(50, seed=1)[0]
    ds = make_cluttered(
        DIGITS, LABELS, 450, params, seed=11, split=split, distractor_digits=pool, chunk=100
    )
    images, labels, positions = reference_cluttered(
        DIGITS, LABELS, 450, params, 11, split_id, pool=pool
    )
    assert np.array_equal(ds.images, images)
    assert np.array_equal(ds.labels, labels)
    assert np.array_equal(ds.positions, positions)


# ---------------------------------------------------------------- content


def test_shapes_and_dtypes():
    ds = make_cluttered(DIGITS, LABELS, 123, CLUTTERED_100, seed=0, split="valid")
    assert ds.images.shape == (123, 100, 100) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (123,) and ds.labels.dtype == np.int64
    assert ds.positions.shape == (123, 2) and ds.positions.dtype == np.int32
    assert ds.positions.min() >= 0 and ds.positions.max() <= 100 - 28
    assert len(ds) == 123
    assert ds.params == CLUTTERED_100 and ds.seed == 0 and ds.split == "valid"


def test_translated_target_is_exact_and_alone():
    ds = make_cluttered(DIGITS, LABELS, M, TRANSLATED, seed=1)
    for i in range(len(ds)):
        assert np.array_equal(target_box(ds, i), DIGITS[ds.labels[i]])
    assert not ds.images[outside_mask(ds)].any()
    # positions cover the whole range of the 60x60 canvas
    assert ds.positions.min() == 0 and ds.positions.max() == 60 - 28


def test_target_present_under_clutter():
    ds = make_cluttered(DIGITS, LABELS, M, CLUTTERED_100, seed=1)
    for i in range(len(ds)):
        assert (target_box(ds, i) >= DIGITS[ds.labels[i]]).all()


def test_sum_is_clipped_at_255():
    ones = np.full((20, 28, 28), 255, np.uint8)
    ds = make_cluttered(ones, np.zeros(20, np.int64), 50, ClutterParams(30, 10, 28), seed=0)
    assert ds.images.max() == 255
    for i in range(len(ds)):
        assert (target_box(ds, i) == 255).all()


def test_distractor_count():
    ones = np.full((20, 28, 28), 255, np.uint8)
    params = ClutterParams(canvas=100, distractors=8, distractor_size=8)
    ds = make_cluttered(ones, np.zeros(20, np.int64), 100, params, seed=4)
    outside = (ds.images > 0) & outside_mask(ds)
    counts = outside.reshape(len(ds), -1).sum(axis=1)
    assert counts.max() <= 8 * 64
    assert (counts > 0).all()
    # every visible pixel is either target or a whole-value distractor pixel
    assert set(np.unique(ds.images)) <= {0, 255}


def test_no_leakage_from_other_pools():
    # targets are constant 1, the distractor pool constant 16: inside the target box
    # every pixel is 1 (mod 16), outside 0 (mod 16); nothing else can appear.
    targets = np.ones((30, 28, 28), np.uint8)
    pool = np.full((30, 28, 28), 16, np.uint8)
    ds = make_cluttered(
        targets, np.zeros(30, np.int64), 200, CLUTTERED_100, seed=0, distractor_digits=pool
    )
    out = outside_mask(ds)
    assert set(np.unique(ds.images[out] % 16)) == {0}
    assert set(np.unique(ds.images[~out] % 16)) == {1}
    assert ds.images[out].max() >= 16  # distractors were drawn


def test_every_digit_once_when_n_equals_m():
    for n in (None, M):
        ds = make_cluttered(DIGITS, LABELS, n, CLUTTERED_60, seed=0)
        assert np.array_equal(np.sort(ds.labels), LABELS)
        assert not np.array_equal(ds.labels, LABELS)  # shuffled


def test_cycles_through_permutations_when_n_exceeds_m():
    n = 2 * M + M // 2
    ds = make_cluttered(DIGITS, LABELS, n, CLUTTERED_60, seed=0)
    first, second, rest = ds.labels[:M], ds.labels[M : 2 * M], ds.labels[2 * M :]
    assert np.array_equal(np.sort(first), LABELS)
    assert np.array_equal(np.sort(second), LABELS)
    assert len(np.unique(rest)) == len(rest)
    assert not np.array_equal(first, second)  # a fresh permutation, not a repeat
    assert set(np.bincount(ds.labels, minlength=M)) == {2, 3}


def test_fewer_than_m_are_distinct():
    ds = make_cluttered(DIGITS, LABELS, 37, CLUTTERED_60, seed=0)
    assert len(np.unique(ds.labels)) == 37


def test_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        make_cluttered(DIGITS.astype(np.float32), LABELS, 10, TRANSLATED, seed=0)
    with pytest.raises(ValueError, match="shape"):
        make_cluttered(DIGITS[:, :20, :20], LABELS, 10, TRANSLATED, seed=0)
    with pytest.raises(ValueError, match="labels"):
        make_cluttered(DIGITS, LABELS[:-1], 10, TRANSLATED, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        make_cluttered(DIGITS, LABELS, -1, TRANSLATED, seed=0)
    with pytest.raises(ValueError, match="seed"):
        make_cluttered(DIGITS, LABELS, 10, TRANSLATED, seed=-1)
    with pytest.raises(ValueError, match="empty"):
        make_cluttered(DIGITS[:0], LABELS[:0], 10, TRANSLATED, seed=0)
    empty = make_cluttered(DIGITS, LABELS, 0, CLUTTERED_100, seed=0)
    assert empty.images.shape == (0, 100, 100)


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"canvas": 27}, "canvas"),
        ({"canvas": 0}, "canvas"),
        ({"distractors": -1}, "distractors"),
        ({"distractor_size": 0}, "distractor_size"),
        ({"distractor_size": 29}, "distractor_size"),
        ({"canvas": 30, "distractor_size": 31}, "distractor_size"),
        ({"digit_size": 0}, "digit_size"),
        ({"canvas": 100.0}, "canvas"),
        ({"distractors": True}, "distractors"),
    ],
)
def test_invalid_params(kwargs, param):
    with pytest.raises(ClutterParamError) as info:
        ClutterParams(**kwargs)
    assert info.value.param == param
    assert isinstance(info.value, ValueError)
    assert param in str(info.value) and info.value.message


def test_params_presets_and_tag():
    assert CLUTTERED_100 == ClutterParams(100, 8, 8, 28)
    assert TRANSLATED.distractors == 0 and TRANSLATED.canvas == 60
    assert CLUTTERED_100.tag == "c100-d8-s8"
    assert ClutterParams(np.int64(60), np.int32(2)).to_dict()["canvas"] == 60
    assert type(ClutterParams(np.int64(60)).canvas) is int
    assert ClutterParams.from_dict(CLUTTERED_60.to_dict()) == CLUTTERED_60
    CLUTTERED_60.validate()


def test_smaller_digit_size():
    digits = np.full((5, 10, 10), 9, np.uint8)
    ds = make_cluttered(digits, np.arange(5), 8, ClutterParams(12, 2, 3, 10), seed=0)
    assert ds.images.shape == (8, 12, 12)
    assert ds.params.tag == "c12-d2-s3-g10"


@st.composite
def valid_params(draw):
    canvas = draw(st.integers(28, 64))
    return ClutterParams(
        canvas=canvas,
        distractors=draw(st.integers(0, 10)),
        distractor_size=draw(st.integers(1, min(28, canvas))),
    )


@settings(max_examples=30, deadline=None)
@given(params=valid_params(), seed=st.integers(0, 2**32), n=st.integers(0, 25))
def test_valid_params_give_valid_output(params, seed, n):
    digits, labels = DIGITS[:12], LABELS[:12]
    ds = make_cluttered(digits, labels, n, params, seed=seed, split="test")
    H = params.canvas
    assert ds.images.shape == (n, H, H) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (n,) and set(ds.labels) <= set(labels)
    assert ds.positions.shape == (n, 2)
    assert ((ds.positions >= 0) & (ds.positions <= H - 28)).all()
    for i in range(n):
        assert (target_box(ds, i) >= digits[ds.labels[i]]).all()
    if params.distractors == 0 and n:
        assert not ds.images[outside_mask(ds)].any()


invalid_params = st.one_of(
    st.tuples(st.builds(dict, canvas=st.integers(-50, 27)), st.just("canvas")),
    st.tuples(st.builds(dict, distractors=st.integers(-100, -1)), st.just("distractors")),
    st.tuples(
        st.builds(
            dict,
            canvas=st.integers(28, 64),
            distractor_size=st.one_of(st.integers(-20, 0), st.integers(29, 200)),
        ),
        st.just("distractor_size"),
    ),
)


@settings(max_examples=30, deadline=None)
@given(case=invalid_params)
def test_invalid_params_raise(case):
    kwargs, param = case
    with pytest.raises(ClutterParamError) as info:
        ClutterParams(**kwargs)
    assert info.value.param == param


# ---------------------------------------------------------------- files


@pytest.fixture
def small_set() -> ClutteredSet:
    return make_cluttered(DIGITS, LABELS, 64, CLUTTERED_60, seed=9, split="test")


@pytest.mark.parametrize("compress", [True, False])
def test_npz_round_trip(tmp_path, small_set, compress):
    path = tmp_path / "sub" / "set.npz"
    sha = save_npz(small_set, path, compress=compress)
    assert sha == small_set.sha256()
    assert [p.name for p in path.parent.iterdir()] == ["set.npz"]  # no temp file left
    back = load_npz(path)
    assert back.sha256() == sha
    for k in ("images", "labels", "positions"):
        assert np.array_equal(getattr(back, k), getattr(small_set, k))
        assert getattr(back, k).dtype == getattr(small_set, k).dtype
    assert (back.params, back.seed, back.split) == (CLUTTERED_60, 9, "test")
    none_split = make_cluttered(DIGITS, LABELS, 3, TRANSLATED, seed=0)
    save_npz(none_split, tmp_path / "none.npz")
    assert load_npz(tmp_path / "none.npz").split is None


def test_failed_save_keeps_the_previous_file(tmp_path, small_set, monkeypatch):
    path = tmp_path / "set.npz"
    save_npz(small_set, path)
    good = path.read_bytes()

    def half_written(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", half_written)
    with pytest.raises(OSError, match="set.npz"):
        save_npz(small_set, path)
    assert path.read_bytes() == good  # the previous file is whole
    assert [p.name for p in tmp_path.iterdir()] == ["set.npz"]  # and no temp file is left


@pytest.mark.parametrize("compress", [True, False])
def test_truncated_file_is_corrupt(tmp_path, small_set, compress):
    path = tmp_path / "set.npz"
    save_npz(small_set, path, compress=compress)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptDatasetError, match="set.npz"):
        load_npz(path)
    path.write_bytes(b"")
    with pytest.raises(CorruptDatasetError):
        load_npz(path)


@pytest.mark.parametrize("compress", [True, False])
def test_flipped_byte_is_corrupt(tmp_path, small_set, compress):
    path = tmp_path / "set.npz"
    save_npz(small_set, path, compress=compress)
    data = bytearray(path.read_bytes())
    for offset in (len(data) // 3, len(data) // 2, 100, len(data) - 30):
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        path.write_bytes(bytes(flipped))
        with pytest.raises(CorruptDatasetError) as info:
            load_npz(path)
        assert str(path) in str(info.value) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("compress", [True, False])
def test_damage_anywhere_is_caught(tmp_path, compress):
    """Flip bytes all over a small file and cut it short: every load either raises
    CorruptDatasetError or returns exactly the saved data (flips in zip timestamps)."""
    ds = make_cluttered(DIGITS, LABELS, 6, ClutterParams(30, 2, 5), seed=0, split="test")
    path = tmp_path / "small.npz"
    sha = save_npz(ds, path, compress=compress)
    data = path.read_bytes()
    damaged = []
    for offset in range(0, len(data), 23):
        b = bytearray(data)
        b[offset] ^= 0xFF
        damaged.append(bytes(b))
    damaged += [data[:k] for k in range(0, len(data), 97)]
    for blob in damaged:
        path.write_bytes(blob)
        try:
            assert load_npz(path).sha256() == sha
        except CorruptDatasetError:
            pass


def test_checksum_mismatch_is_corrupt(tmp_path, small_set):
    # a well-formed archive whose arrays no longer match the stored checksum
    path = tmp_path / "set.npz"
    save_npz(small_set, path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["images"] = arrays["images"].copy()
    arrays["images"][0, 0, 0] ^= 1
    np.savez(path, **arrays)
    with pytest.raises(CorruptDatasetError, match="sha256"):
        load_npz(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "nope.npz")


# ---------------------------------------------------------------- splits and cache


@pytest.fixture
def fake_mnist(monkeypatch):
    """Replace datasets.mnist with a fake: train digits are constant 1, valid 10, test 100.
    Works whether or not the real datasets/mnist.py exists yet."""
    calls: list[tuple[str, object]] = []
    values = {"train": 1, "valid": 10, "test": 100}

    def load_mnist(split, data_dir=None):
        calls.append((split, data_dir))
        m = 40
        return np.full((m, 28, 28), values[split], np.uint8), np.arange(m) % 10

    module = types.ModuleType("datasets.mnist")
    module.load_mnist = load_mnist
    monkeypatch.setitem(sys.modules, "datasets.mnist", module)
    return calls


def test_make_split_uses_one_split_only(fake_mnist):
    params = ClutterParams(canvas=60, distractors=4, distractor_size=8)
    test = make_split("test", params, seed=0, n=50, data_dir="/nowhere")
    assert fake_mnist == [("test", "/nowhere")]
    assert test.split == "test" and test.images.shape == (50, 60, 60)
    # only sums of test pixels (100, clipped at 255) can appear
    assert set(np.unique(test.images)) <= {0, 100, 200, 255}
    train = make_split("train", params, seed=0, n=50)
    assert set(np.unique(train.images)) <= {0, 1, 2, 3, 4, 5}
    with pytest.raises(ValueError, match="split"):
        make_split("dev", params)


def test_make_split_default_sizes(fake_mnist):
    ds = make_split("valid", TRANSLATED)
    assert len(ds) == SET_SIZES["valid"] == 10_000
    assert SET_SIZES == {"train": 60000, "valid": 10000, "test": 10000}


def test_set_sizes_follow_mnist_where_they_agree():
    import datasets.cluttered as cluttered

    # valid / test: one image per digit of MNIST's split; train: 60,000 from 50,000 digits
    assert SET_SIZES["valid"] == cluttered.MNIST_SPLIT_SIZES["valid"]
    assert SET_SIZES["test"] == cluttered.MNIST_SPLIT_SIZES["test"]
    assert SET_SIZES["train"] > cluttered.MNIST_SPLIT_SIZES["train"] == 50_000
    assert not hasattr(cluttered, "SPLIT_SIZES")  # renamed: one SPLIT_SIZES, MNIST's


def test_cached_split_reuses_and_regenerates(tmp_path, fake_mnist):
    kwargs = {"seed": 0, "n": 30, "cache_dir": tmp_path}
    first = cached_split("test", CLUTTERED_100, **kwargs)
    path = tmp_path / "cluttered-test-c100-d8-s8-seed0-n30.npz"
    assert path.exists() and cache_path("test", CLUTTERED_100, 0, 30, tmp_path) == path
    assert len(fake_mnist) == 1

    again = cached_split("test", CLUTTERED_100, **kwargs)
    assert len(fake_mnist) == 1  # served from the cache
    assert again.sha256() == first.sha256()

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"):
        regen = cached_split("test", CLUTTERED_100, **kwargs)
    assert len(fake_mnist) == 2
    assert regen.sha256() == first.sha256()
    assert load_npz(path).sha256() == first.sha256()  # rewritten

    other = cached_split("test", CLUTTERED_100, seed=1, n=30, cache_dir=tmp_path)
    assert other.sha256() != first.sha256() and len(fake_mnist) == 3


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.setenv("DRAWBENCH_DATA", str(tmp_path))
    assert default_cache_dir() == tmp_path / "cluttered"
    p = cache_path("test", CLUTTERED_100)
    assert p == tmp_path / "cluttered" / "cluttered-test-c100-d8-s8-seed0-n10000.npz"
    assert default_cache_dir(tmp_path / "d") == tmp_path / "d" / "cluttered"
    assert cache_path("test", TRANSLATED, data_dir="/x").parent.as_posix() == "/x/cluttered"
    monkeypatch.delenv("DRAWBENCH_DATA")
    assert default_cache_dir().parts[-3:] == (".cache", "drawbench", "cluttered")


# ---------------------------------------------------------------- preview


def test_preview_grid_writes_png(tmp_path, small_set):
    path = tmp_path / "grid.png"
    preview_grid(small_set, path, n=12)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    preview_grid(small_set, tmp_path / "all.png", n=1000, boxes=False)  # n > len is fine
    assert (tmp_path / "all.png").stat().st_size > 1000
    with pytest.raises(ValueError):
        preview_grid(make_cluttered(DIGITS, LABELS, 0, TRANSLATED, 0), tmp_path / "x.png")


def test_npz_is_a_plain_zip(tmp_path, small_set):
    # no pickled objects: loadable with allow_pickle=False by any numpy
    path = tmp_path / "set.npz"
    save_npz(small_set, path)
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
    assert {"images.npy", "labels.npy", "positions.npy", "sha256.npy"} <= names
