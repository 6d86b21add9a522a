"""Blending and colour matching."""

from __future__ import annotations

import numpy as np
import pytest

from dfi_engine.postprocess import blend, color_match, compose, feather


def test_feather_is_zero_outside_and_full_deep_inside():
    mask = np.zeros((80, 80), np.float32)
    mask[20:60, 10:70] = 1.0
    w = feather(mask, 6)
    assert (w[mask == 0] == 0).all()
    assert np.allclose(w[30:50, 20:60], 1.0)
    assert 0 < w[20, 40] < 0.5  # the edge ramps
    # a soft selection scales the weight
    assert np.allclose(feather(mask * 0.5, 6)[40, 40], 0.5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_blend_then_compose_leaves_outside_bit_identical(dtype, channels):
    rng = np.random.default_rng(0)
    hi = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    shape = (50, 60) if channels == 1 else (50, 60, channels)
    original = (rng.random(shape) * hi).astype(dtype)
    edited = (rng.random(shape) * hi).astype(dtype)
    mask = (rng.random((50, 60)) > 0.6).astype(np.float32)  # ragged mask: many edges
    w = feather(mask, 3)
    e = edited.astype(np.float32)
    mixed = blend(original.astype(np.float32)[..., None] if channels == 1 else original.astype(np.float32),
                  e[..., None] if channels == 1 else e, w)
    mixed = mixed[..., 0] if channels == 1 else mixed
    out = compose(original, mixed.astype(dtype), w)
    outside = w == 0
    assert np.array_equal(out[outside], original[outside])
    assert out.dtype == original.dtype and out.shape == original.shape


def test_channel_matching_removes_a_colour_cast_that_global_matching_keeps():
    rng = np.random.default_rng(1)
    reference = rng.uniform(60, 200, (40, 40, 3)).astype(np.float32)
    cast = reference * np.array([1.0, 0.8, 1.2]) + np.array([20.0, -10.0, 5.0])  # per-channel drift
    err_channel = np.abs(color_match(cast, reference, "channel") - reference).mean()
    err_global = np.abs(color_match(cast, reference, "global") - reference).mean()
    err_none = np.abs(cast - reference).mean()
    assert err_channel < 1e-3
    assert err_global > 5 * max(err_channel, 0.1) and err_global < err_none


def test_global_matching_is_the_original_one_mean_one_std():
    rng = np.random.default_rng(2)
    ref = rng.uniform(0, 255, (20, 20, 3)).astype(np.float32)
    res = color_match(ref * 0.5 + 30, ref, "global")
    assert np.isclose(res.mean(), ref.mean(), atol=1e-3) and np.isclose(res.std(), ref.std(), rtol=1e-4)


def test_smooth_chroma_keeps_luminance_and_broad_colour_and_damps_colour_fringes():
    from dfi_engine.postprocess import LUMA, smooth_chroma

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128]
    fringe = np.where((xx // 2 + yy // 2) % 2 == 0, 1.0, -1.0)[..., None] * np.array([20.0, -20.0, 5.0])
    broad = np.array([12.0, 0.0, -12.0]) * (xx / 127.0)[..., None]  # a slow colour ramp
    luma = rng.normal(0, 10, (128, 128))[..., None]  # sharp grey detail
    change = (luma + fringe + broad).astype(np.float32)
    out = smooth_chroma(change)
    np.testing.assert_allclose(out @ LUMA, change @ LUMA, atol=1e-3)  # the grey detail, as it was
    chroma = lambda c: c - (c @ LUMA)[..., None]  # noqa: E731
    inner = (slice(16, -16), slice(16, -16))
    left = chroma(out - broad)[inner]
    assert np.abs(left).mean() < 0.1 * np.abs(chroma(fringe)[inner]).mean()  # the fringes are gone
    assert np.abs(chroma(out)[inner] - chroma(broad)[inner]).max() < 1.5  # the broad colour stays
    assert smooth_chroma(change, 0.0) is change
