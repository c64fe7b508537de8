"""The degradations of ``bench robustness``: identity at severity 0, determinism, ranges,
the size of each effect, and the clean scenes' match with the training distribution."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fake_digits

from datasets.cluttered import ClutterParams, make_cluttered
from datasets.degrade import (
    AXES,
    MAX_DISTRACTORS,
    Scenes,
    axis_values,
    gaussian_noise,
    occlude,
    occluder_boxes,
    salt_pepper,
    severity,
)


@pytest.fixture(scope="module")
def digits():
    return fake_digits(300, seed=5)


@pytest.fixture(scope="module")
def scenes(digits):
    return Scenes(*digits, n=40, canvas=60, seed=3)


def _gray(n=20, H=50, W=50, value=128):
    return np.full((n, H, W), value, np.uint8)


NOISES = [(gaussian_noise, 0.3), (salt_pepper, 0.2), (occlude, 0.3)]


@pytest.mark.parametrize(("fn", "severity"), NOISES)
def test_noise_is_deterministic_identity_at_zero_and_uint8(fn, severity, scenes):
    x = scenes.render(8, 8)
    assert np.array_equal(fn(x, 0.0, seed=1), x)
    a, b = fn(x, severity, seed=1), fn(x, severity, seed=1)
    assert a.dtype == np.uint8 and a.shape == x.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, x)
    assert not np.array_equal(a, fn(x, severity, seed=2))
    # prefix-stable: the first images do not depend on how many are degraded
    assert np.array_equal(fn(x[:7], severity, seed=1), a[:7])
    assert np.array_equal(x, scenes.render(8, 8)), "input must not be modified"


def test_gaussian_noise_has_the_requested_sigma_and_is_clipped():
    x = _gray(value=128)
    for sigma in (0.05, 0.1, 0.2):
        diff = (gaussian_noise(x, sigma, seed=0).astype(float) - x) / 255
        assert abs(diff.std() - sigma) < 0.01 * sigma + 0.003  # 0.5 is 2.5 sigma away from the ends
        assert abs(diff.mean()) < 0.003
    y = gaussian_noise(_gray(value=255), 0.5, seed=0)
    assert y.max() == 255 and (y == 255).mean() > 0.45  # half the draws clip at 1
    # one fixed noise field, scaled: the sign of every change agrees across sigmas
    a = gaussian_noise(x, 0.1, seed=0).astype(int) - 128
    b = gaussian_noise(x, 0.2, seed=0).astype(int) - 128
    assert np.all(np.sign(a) * np.sign(b) >= 0)


def test_salt_pepper_hits_the_fraction_half_each_and_nests():
    x = _gray(value=128)
    prev = np.zeros(x.shape, bool)
    for p in (0.05, 0.1, 0.3):
        y = salt_pepper(x, p, seed=0)
        hit = y != 128
        assert abs(hit.mean() - p) < 0.01
        assert set(np.unique(y[hit])) <= {0, 255}
        assert abs((y == 255).sum() / hit.sum() - 0.5) < 0.03
        assert np.all(hit[prev]), "pixels hit at a lower fraction must stay hit"
        prev = hit
    with pytest.raises(ValueError):
        salt_pepper(x, 1.5, seed=0)


def test_occlusion_is_one_black_square_of_the_requested_side():
    x = _gray(n=30, H=100, W=100, value=200)
    for f in (0.1, 0.25, 0.5):
        y = occlude(x, f, seed=4)
        side = round(f * 100)
        assert np.all((y == 0).sum(axis=(1, 2)) == side * side)
        rows, cols, s = occluder_boxes(30, 100, 100, f, seed=4)
        assert s == side
        for i in range(30):
            assert np.all(y[i, rows[i]:rows[i] + s, cols[i]:cols[i] + s] == 0)
        assert rows.min() >= 0 and rows.max() <= 100 - side


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="uint8"):
        gaussian_noise(np.zeros((2, 5, 5), np.float32), 0.1, seed=0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_noise(_gray(), -0.1, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        occlude(_gray(), -0.1, seed=0)


def test_scene_without_distractors_is_the_target_digit_at_its_position(digits, scenes):
    d, _ = digits
    x = scenes.render(0, 8)
    for i in range(len(scenes)):
        r, c = scenes.positions[i]
        assert np.array_equal(x[i, r:r + 28, c:c + 28], d[scenes.order[i]])
        assert x[i].sum() == d[scenes.order[i]].sum()  # nothing else on the canvas
    assert np.array_equal(scenes.labels, digits[1][scenes.order])
    half = scenes.render(0, 8, contrast=0.5)
    i = 0
    r, c = scenes.positions[i]
    assert np.array_equal(half[i, r:r + 28, c:c + 28], np.rint(d[scenes.order[i]] * np.float32(0.5)).astype(np.uint8))


def test_clutter_nests_and_contrast_leaves_the_clutter(scenes):
    prev = scenes.render(0, 8).astype(int)
    for k in (4, 8, 16, 24):
        x = scenes.render(k, 8).astype(int)
        assert np.all(x >= prev), "more distractors only add to the image"
        assert (x > prev).any()
        prev = x
    faint = scenes.render(8, 8, contrast=0.2).astype(int)
    full = scenes.render(8, 8).astype(int)
    assert np.all(faint <= full) and (faint < full).any()
    no_target = scenes.render(8, 8, contrast=0.0)
    assert no_target.sum() < full.sum()


def test_scenes_are_deterministic_and_prefix_stable(digits):
    a = Scenes(*digits, n=25, canvas=60, seed=1)
    b = Scenes(*digits, n=25, canvas=60, seed=1)
    small = Scenes(*digits, n=6, canvas=60, seed=1)
    other = Scenes(*digits, n=25, canvas=60, seed=2)
    for k, s in ((8, 8), (20, 12)):
        x = a.render(k, s)
        assert np.array_equal(x, b.render(k, s))
        assert np.array_equal(x[:6], small.render(k, s))
        assert not np.array_equal(x, other.render(k, s))


@pytest.mark.parametrize("axis", list(AXES))
def test_every_axis_is_the_clean_scene_at_its_identity_value(axis, scenes):
    clean = scenes.render(8, 8)
    v = AXES[axis].clean_value(8, 8)
    assert np.array_equal(scenes.degrade(axis, v, distractors=8, distractor_size=8), clean)
    harder = AXES[axis].values[-1]
    y = scenes.degrade(axis, harder, distractors=8, distractor_size=8, clean=clean)
    assert y.shape == clean.shape and y.dtype == np.uint8
    assert not np.array_equal(y, clean)
    assert np.array_equal(y, scenes.degrade(axis, harder, distractors=8, distractor_size=8))


def test_axes_have_at_least_five_severities_in_order():
    for a in AXES.values():
        assert len(a.values) >= 5
        v = np.array(a.values, float)
        assert np.all(np.diff(v) > 0) or np.all(np.diff(v) < 0)  # contrast falls, the rest rise
    assert AXES["clutter"].values[0] == 0 and AXES["clutter"].values[-1] == 28 == MAX_DISTRACTORS
    assert AXES["distractor_size"].values[0] == 4 and AXES["distractor_size"].values[-1] == 18
    assert AXES["gaussian"].values[-1] == 0.5 and AXES["salt_pepper"].values[-1] == 0.3


@pytest.mark.parametrize(("distractors", "size", "clutter", "sizes"), [
    (8, 8, [0, 4, 8, 12, 16, 20, 24, 28], [4, 6, 8, 10, 12, 14, 16, 18]),  # paper / quick: 100x100, 8 of 8x8
    (4, 6, [0, 4, 8, 12, 16, 20, 24], [4, 6, 8, 10, 12, 14, 16]),  # smoke: 40x40, 4 of 6x6
])
def test_severities_are_the_five_values_after_the_training_setting(distractors, size, clutter, sizes):
    assert axis_values("clutter", distractors, size, canvas=40) == clutter
    assert axis_values("distractor_size", distractors, size, canvas=40) == sizes
    sev = [severity("clutter", v, distractors, size) for v in clutter]
    assert sev[clutter.index(distractors):] == [0, 1, 2, 3, 4, 5]
    assert sev[:clutter.index(distractors)] == list(range(-clutter.index(distractors), 0))  # easier: -2, -1
    assert [severity("distractor_size", v, distractors, size) for v in sizes][sizes.index(size):] == [0, 1, 2, 3, 4, 5]
    for axis in ("contrast", "gaussian", "salt_pepper", "occlusion"):  # the identity is 0, then 1..5
        values = axis_values(axis, distractors, size)
        assert values == [float(v) for v in AXES[axis].values]
        assert [severity(axis, v, distractors, size) for v in values] == [0, 1, 2, 3, 4, 5]
    assert severity("contrast", 0.2, distractors, size) == 5 and severity("gaussian", 0.1, distractors, size) == 1


def test_severity_errors_name_the_problem():
    assert severity("clutter", 28, 4, 6) == 6  # past severity 5: not evaluated
    with pytest.raises(ValueError, match="value 13"):
        severity("clutter", 13, 8, 8)
    with pytest.raises(ValueError, match="training setting 5"):
        severity("clutter", 12, 5, 8)  # a training setting off the list cannot be numbered
    with pytest.raises(ValueError, match="unknown axis"):
        severity("blur", 1, 8, 8)
    with pytest.raises(ValueError, match="5 are needed"):
        axis_values("clutter", 16, 8)  # only 20, 24, 28 are harder than 16
    with pytest.raises(ValueError, match="only 3 values"):
        axis_values("distractor_size", 8, 12, canvas=100)  # 14, 16, 18: the list stops at 18 (<= 28, the digit)


def test_clean_scenes_match_the_training_generator_in_distribution(digits):
    """Same ink per image and per distractor count as make_cluttered (independent draws)."""
    d, y = digits
    n = 600
    ours = Scenes(d, y, n=n, canvas=100, seed=0).render(8, 8).astype(float)
    theirs = make_cluttered(d, y, n, ClutterParams(canvas=100, distractors=8, distractor_size=8), seed=0).images.astype(float)
    a, b = ours.sum(axis=(1, 2)), theirs.sum(axis=(1, 2))
    se = np.sqrt(a.var() / n + b.var() / n)
    assert abs(a.mean() - b.mean()) < 4 * se
    # the target's position is uniform over the same range
    pos = Scenes(d, y, n=n, canvas=100, seed=0).positions
    assert pos.min() >= 0 and pos.max() <= 72 and abs(pos.mean() - 36) < 3


def test_bad_render_arguments_raise(scenes):
    with pytest.raises(ValueError, match="distractors"):
        scenes.render(MAX_DISTRACTORS + 1, 8)
    with pytest.raises(ValueError, match="distractor_size"):
        scenes.render(8, 29)
    with pytest.raises(ValueError, match="contrast"):
        scenes.render(8, 8, contrast=1.5)
    with pytest.raises(ValueError, match="axis"):
        scenes.degrade("blur", 1.0, distractors=8, distractor_size=8)
