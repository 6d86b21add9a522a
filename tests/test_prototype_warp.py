"""Moving-least-squares and thin-plate-spline warps: exact at the control points, rigid where the points move
rigidly, never folding, and the identity (bit for bit) where nothing moves."""

from __future__ import annotations

import numpy as np
import pytest

from dfi_engine.faces import warp as wp


@pytest.mark.parametrize("kind", wp.KINDS)
def test_mls_is_exact_at_the_control_points_and_reproduces_a_global_similarity(kind):
    rng = np.random.default_rng(0)
    p = rng.uniform(50, 150, (20, 2))
    q = p + rng.normal(0, 3, p.shape)
    np.testing.assert_allclose(wp.mls(p, q, p + 1e-6, kind), q, atol=1e-4)
    a, s = 0.1, (1.1 if kind == "similarity" else 1.0)
    rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    v = rng.uniform(0, 200, (50, 2))
    np.testing.assert_allclose(wp.mls(p, p @ rot.T + [3, -2], v, kind), v @ rot.T + [3, -2], atol=1e-8)


def test_the_spline_is_exact_at_the_control_points_and_holds_its_anchors():
    rng = np.random.default_rng(3)
    p = rng.integers(50, 150, (20, 2)).astype(float)  # on whole pixels: grid nodes (200 over 200 px) sit on them
    q = p + rng.normal(0, 3, p.shape)
    anchors = np.array([[0, 0], [199, 0], [0, 199], [199, 199], [100, 0], [0, 100], [199, 100], [100, 199]], float)
    field = wp.tps_field(np.concatenate([p, anchors]), np.concatenate([q, anchors]), (0, 0, 200, 200), nodes=200)
    at = p.astype(int)
    np.testing.assert_allclose(field.d[at[:, 1], at[:, 0]], q - p, atol=1e-6)  # backward: p reads q
    assert np.abs(field.d[[0, 0, -1, -1], [0, -1, 0, -1]]).max() < 1e-6
    shift = wp.tps_field(p, p + [4.0, -2.0], (0, 0, 200, 200))  # a pure translation stays one
    np.testing.assert_allclose(shift.d, np.broadcast_to([4.0, -2.0], shift.d.shape), atol=1e-6)


@pytest.mark.parametrize("kind", ["rigid", "tps"])
def test_a_folding_field_is_damped_until_no_cell_folds(kind):
    rng = np.random.default_rng(1)
    p = rng.uniform(60, 140, (20, 2))
    field = wp.point_field(p, p + rng.normal(0, 40, p.shape), (0, 0, 200, 200), kind=kind)
    assert wp.min_det(field) < 0  # crossing control points: the raw field folds
    damped, scale = wp.damp(field)
    assert 0 < scale < 1 and wp.min_det(damped) > wp.MIN_DET * 0.99


def test_zero_displacement_is_the_identity_bit_for_bit_and_nothing_outside_the_box_moves():
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 255, (120, 150, 3)).astype(np.float32)
    p = rng.uniform(40, 80, (10, 2))
    field = wp.mls_field(p + [1.5, -1.0], p, (20, 10, 110, 100))
    assert np.array_equal(wp.apply_field(image, field.scaled(0.0)), image)
    out = wp.apply_field(image, field)
    outside = np.ones(image.shape[:2], bool)
    outside[10:100, 20:110] = False
    assert np.array_equal(out[outside], image[outside]) and not np.array_equal(out, image)


def test_bilinear_reads_whole_pixels_exactly_and_interpolates_between():
    img = np.arange(5 * 6 * 2, dtype=np.float32).reshape(5, 6, 2)
    yy, xx = np.mgrid[0:5, 0:6].astype(np.float32)
    assert np.array_equal(wp.bilinear(img, xx, yy), img)
    np.testing.assert_allclose(wp.bilinear(img, np.array([0.5]), np.array([1.0]))[0], (img[1, 0] + img[1, 1]) / 2)
