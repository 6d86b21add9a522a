"""Input handling: every layout in, same layout out, alpha kept, limits checked before allocation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dfi_engine import (
    EditOptions,
    ImageTooLargeError,
    ImageTooSmallError,
    InputError,
    ReconstructConfig,
    apply_vector,
    attribute_vector,
    read_image,
)
from dfi_engine.images import merge_image, split_image
from dfi_engine.synthetic import faces

H, W = 45, 37  # odd, not multiples of 16


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return faces(5, 1, False, 64)[0][:H, :W]


def layouts(rgb: np.ndarray) -> dict[str, np.ndarray]:
    grey = rgb.mean(2).astype(np.uint8)
    alpha = np.linspace(0, 255, H * W).reshape(H, W).astype(np.uint8)
    return {
        "rgb8": rgb,
        "rgba8": np.dstack([rgb, alpha]),
        "grey": grey,
        "grey_alpha": np.dstack([grey, alpha]),
        "rgb16": rgb.astype(np.uint16) * 257,
        "rgba16": np.dstack([rgb, alpha]).astype(np.uint16) * 257,
        "float": rgb.astype(np.float32) / 255,
    }


@pytest.mark.parametrize("kind", ["rgb8", "rgba8", "grey", "grey_alpha", "rgb16", "rgba16", "float"])
def test_split_merge_round_trip(rgb, kind):
    a = layouts(rgb)[kind]
    colour, alpha, spec = split_image(a)
    assert colour.shape == (H, W, 3) and colour.dtype == np.float32 and 0 <= colour.min() <= colour.max() <= 255
    back = merge_image(colour, spec, alpha)
    assert back.shape == a.shape and back.dtype == a.dtype
    tol = 1e-6 if a.dtype.kind == "f" else (257 if a.dtype == np.uint16 else 1)
    assert np.abs(back.astype(np.float64) - a).max() <= tol


@pytest.mark.parametrize("kind", ["rgba8", "grey", "rgb16"])
def test_edit_keeps_layout_and_alpha_at_odd_size(net, rgb, kind):
    a = layouts(rgb)[kind]
    w = attribute_vector(net, [f[:H, :W] for f in faces(1, 2, False)], [f[:H, :W] for f in faces(2, 2, True)])
    mask = np.zeros((H, W), np.uint8)
    mask[10:40, 5:30] = 255
    opts = EditOptions(scaling="none", reconstruct=ReconstructConfig(iterations=3))
    out = apply_vector(net, a, w, [1.0], mask=mask, options=opts).images[0]
    assert out.shape == a.shape and out.dtype == a.dtype
    if kind == "rgba8":
        assert np.array_equal(out[..., 3], a[..., 3])
    assert np.array_equal(out[mask == 0], a[mask == 0])
    assert not np.array_equal(out[mask > 0], a[mask > 0])


def test_too_small_and_too_large_refused_before_allocation():
    with pytest.raises(ImageTooSmallError, match="at least 32x32"):
        split_image(np.zeros((31, 100, 3), np.uint8))
    # A 100-gigapixel view costs no memory; the check must refuse it from the shape alone.
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (100_000, 1_000_000, 3))
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        split_image(huge)
    with pytest.raises(ImageTooLargeError):
        split_image(np.zeros((64, 64, 3), np.uint8), max_pixels=1000)


def test_bad_layouts_and_types():
    with pytest.raises(InputError, match="shape"):
        split_image(np.zeros((64, 64, 5), np.uint8))
    with pytest.raises(InputError, match="pixel type"):
        split_image(np.zeros((64, 64, 3), np.int32))
    with pytest.raises(InputError, match="Mask is"):
        from dfi_engine import to_mask

        to_mask(np.zeros((10, 10)), 64, 64)


def test_read_image_files(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    Image.fromarray(layouts(rgb)["rgba8"]).save(tmp_path / "b.png")
    assert read_image(tmp_path / "b.png").shape == (H, W, 4)
    Image.fromarray(layouts(rgb)["rgb16"][..., 0]).save(tmp_path / "c.png")
    c = read_image(tmp_path / "c.png")
    assert c.dtype == np.uint16 and c.shape == (H, W)
    Image.fromarray(rgb).convert("P").save(tmp_path / "d.png")
    assert read_image(tmp_path / "d.png").shape == (H, W, 3)
    with pytest.raises(ImageTooLargeError):
        read_image(tmp_path / "a.png", max_pixels=100)
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="not an image"):
        read_image(tmp_path / "x.png")
    with pytest.raises(InputError, match="No such"):
        read_image(tmp_path / "missing.png")
