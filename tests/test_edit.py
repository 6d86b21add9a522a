"""DFI edits on synthetic faces where the truth is known (random but fixed VGG weights)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dfi_engine import CancelledError, EditOptions, ReconstructConfig, apply_vector, attribute_vector, inpaint
from dfi_engine.features import extract, to_tensor
from dfi_engine.progress import Event
from dfi_engine.reconstruct import reconstruct
from dfi_engine.synthetic import beard_region, faces

pytestmark = pytest.mark.slow  # VGG inversions: every test 7-140 s of CPU here

ITERS = 40


@pytest.fixture(scope="module")
def setup(net):
    src, tgt = faces(1, 8, False), faces(2, 8, True)
    photo = faces(3, 1, False)[0]
    return photo, attribute_vector(net, src, tgt)


def opts(iterations: int = ITERS, **kw) -> EditOptions:
    return EditOptions(scaling="none", reconstruct=ReconstructConfig(iterations=iterations), **kw)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def smooth_image(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([128 + 60 * np.sin(xx / 7), 128 + 60 * np.cos(yy / 9), 100 + 50 * np.sin((xx + yy) / 11)], -1)
    return img.astype(np.uint8)


def test_strength_zero_returns_input(net, setup):
    # At δ=0 the start point has zero feature loss; only λ·TV pulls it away, and the random
    # VGG's ~100k feature values over 12k pixels pin the image down, so on a smooth 64×64 image
    # ≥ 35 dB holds (measured ≈ 40 dB). A wrong sign or runaway steps fall far below.
    _, w = setup
    image = smooth_image()
    res = apply_vector(net, image, w, [0.0], options=opts(color="none"))
    assert psnr(res.images[0], image) >= 35.0


def test_inversion_recovers_image_from_noisy_start(net):
    # The inversion itself: from the image plus heavy noise (σ=30, ≈ 18.6 dB), inverting φ(x)
    # must find x again (measured ≈ 40 dB after 100 iterations; asserted ≥ 30 dB). TV on the image, as
    # for any inversion from a degraded start (the edit default, TV on the change, would keep the noise).
    image = smooth_image().astype(np.float32)
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 30, image.shape), 0, 255)
    target = extract(net, image)
    for levels in (1, 4):  # plain pixels and the pyramid both get there
        cfg = ReconstructConfig(iterations=100, tv_on="image", levels=levels, tv_weight=0.001, tv_relative=False)
        z, _ = reconstruct(net, to_tensor(noisy, net.device), target, cfg)
        out = z[0].permute(1, 2, 0).numpy()
        assert psnr(noisy, image) < 20.0
        assert psnr(out, image) >= 30.0, levels


def test_beard_appears_in_region_and_rest_stays(net, setup):
    photo, w = setup
    region = beard_region()
    far = ~ndimage.binary_dilation(region, iterations=4)
    res = apply_vector(net, photo, w, [1.0], options=opts())
    d = res.images[0].astype(np.float64) - photo
    darkening = -d[region].mean()
    assert darkening > 10.0, "the beard region must move toward the dark target"
    assert np.abs(d[far]).mean() < darkening, "the rest of the image must change less than the edited region"
    # Toward the target colour: every channel darker in the region.
    assert (d[region].mean(0) < 0).all()


def test_mask_keeps_outside_bit_identical(net, setup):
    photo, w = setup
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[36:60, 12:52] = 255
    res = apply_vector(net, photo, w, [1.0], mask=mask, options=opts(20))
    out = res.images[0]
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    assert (out[mask > 0] != photo[mask > 0]).any()


def test_batch_of_strengths_matches_separate_runs_and_is_monotone(net, setup):
    photo, w = setup
    strengths = [0.5, 1.0, 1.5]
    batch = apply_vector(net, photo, w, strengths, options=opts())
    region = beard_region()
    darkening = [-(im.astype(float) - photo)[region].mean() for im in batch.images]
    assert darkening[0] < darkening[1] < darkening[2]
    for i in (0, 2):
        alone = apply_vector(net, photo, w, [strengths[i]], options=opts())
        diff = np.abs(alone.images[0].astype(float) - batch.images[i])
        # Same problem, same optimiser; only float summation order differs between batch sizes.
        assert diff.mean() < 3.0
        assert abs(alone.losses[0] - batch.losses[i]) <= 0.01 * batch.losses[i]


def test_progress_and_cancel(net, setup):
    photo, w = setup
    seen: list[int] = []

    def progress(ev: Event) -> None:
        if ev.stage == "reconstruct":
            seen.append(ev.step)

    apply_vector(net, photo, w, [1.0], options=opts(5), progress=progress)
    assert seen == [1, 2, 3, 4, 5]
    with pytest.raises(CancelledError):
        apply_vector(net, photo, w, [1.0], options=opts(50), cancel=lambda: len(seen) > 7,
                     progress=progress)
    assert len(seen) == 8  # stopped at the first check after the flag went up


def test_inpaint_fills_region_from_neighbours(net, setup):
    photo, _ = setup
    mask = np.zeros(photo.shape[:2], bool)
    mask[22:32, 14:28] = True  # the left eye and skin around it
    res = inpaint(net, photo, mask, faces(4, 8, False), strength=1.0, options=opts())
    out = res.images[0]
    assert np.array_equal(out[~mask], photo[~mask])
    err_fill = np.abs(out[mask].astype(float) - photo[mask]).mean()
    err_grey = np.abs(127.5 - photo[mask].astype(float)).mean()
    assert err_fill < 0.85 * err_grey, "the fill must look more like a face than the grey start"


def test_progress_renders_the_result_as_it_forms(net, setup):
    """The reconstruct stage's render() is the current result finished like the final one (for live previews)."""
    photo, w = setup
    mask = np.zeros(photo.shape[:2], bool)
    mask[30:50, 10:54] = True
    rendered: list[np.ndarray] = []

    def progress(ev: Event) -> None:
        if ev.stage == "reconstruct":
            assert ev.preview is not None
            rendered.append(ev.preview())

    res = apply_vector(net, photo, w, [2.0, 4.0], mask=mask, options=opts(8, feather=0.0), progress=progress)
    assert len(rendered) == 8
    for r in rendered:
        assert r.shape == photo.shape and r.dtype == photo.dtype
        assert np.array_equal(r[~mask], photo[~mask]), "composed through the selection like the result"
    assert not np.array_equal(rendered[-1], photo), "the edit shows while it forms"
    assert np.abs(rendered[-1].astype(float) - res.images[0]).mean() < np.abs(rendered[0].astype(float)
                                                                                - res.images[0]).mean() + 1e-9
