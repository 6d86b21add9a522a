"""Shape prototypes: the landmark change of a set, learnt and applied with a known truth.

Synthetic landmarks test the arithmetic (frames, per-face fit, outliers) exactly; real photos (astronaut examples,
grace_hopper held out) test the whole path through dlib, the database and the warp. dlib's 68-point predictor
reports only ~55–75 % of a known mouth-corner move on these photos (its shape prior resists): the change as
detected is checked against what dlib measures on the example pairs, the change with the detector's gain undone
(``calibrate.py``) against the truth, and the warp against the learnt change exactly (by warping a coordinate
image).
"""

from __future__ import annotations

import numpy as np
import pytest
from dfi_daemon import known_truth as fx

from dfi_engine.faces import align as al
from dfi_engine.faces import calibrate as cb
from dfi_engine.faces import prototype as pr
from dfi_engine.faces import shape_tone as st


def _similar(pts: np.ndarray, rng) -> np.ndarray:
    a, s = rng.uniform(-0.1, 0.1), rng.uniform(0.9, 1.1)
    rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (pts - 64) @ rot.T + 64 + rng.uniform(-4, 4, 2)


def test_the_learnt_change_is_the_known_one_despite_jitter_noise_and_an_outlier():
    rng = np.random.default_rng(0)
    det = fx.detector()
    astro = fx.astronaut()
    face = det.detect(astro)[0]
    base = al.apply(al.face_matrix(face.landmarks, 128), det.dense(astro, face))  # a real face's 68 points
    delta = fx.smile_moves(base, fx.LIFT)
    src = np.stack([_similar(base + rng.normal(0, 0.4, base.shape), rng) for _ in range(15)])
    tgt = np.stack([_similar(base + delta + rng.normal(0, 0.4, base.shape), rng) for _ in range(15)])
    tgt[3, 48:68] += 25.0  # one face whose mouth dlib got badly wrong
    mean, learnt = pr.shape_prototype(src, tgt)
    m = al.similarity(base[list(pr.STABLE)], mean[list(pr.STABLE)])
    truth = delta @ m[:, :2].T  # the same change, in the mean shape's frame and scale
    size = np.linalg.norm(truth[[48, 54]], axis=1)
    corners = np.linalg.norm(learnt[[48, 54]] - truth[[48, 54]], axis=1) / size
    anywhere = np.linalg.norm(learnt - truth, axis=1).max() / size.mean()  # 0.4 px noise on all 68 points
    assert corners.max() < 0.1 and anywhere < 0.2, (corners, anywhere)


@pytest.fixture(scope="module")
def smile(tmp_path_factory):
    """A two-folder database: 12 jittered astronaut crops, and each warped by a known smile (8 % ± 20 %)."""
    det = fx.detector()
    out = fx.smile_set(tmp_path_factory.mktemp("smile"), det)
    sets = fx.sets(out["db"], out["column"])
    return {**out, "det": det, "proto": pr.learn(out["db"], *sets, tone=False),
            "calibrated": cb.learn_calibrated(out["db"], *sets, det, tone=False)}


@pytest.mark.slow  # builds a face database, ~7 s here
def test_the_database_keeps_every_face_s_68_points_in_the_crop_frame(smile):
    db = smile["db"]
    assert db.dense.shape == (24, 68, 2) and db.has_dense().all()
    # the 68-point model's eye corners agree with the 5-point alignment's template (same crop frame)
    five = db.dense[:, list((45, 42, 36, 39, 33))]
    assert np.abs(five - al.template(128)).mean() < 3.0


@pytest.mark.slow  # dlib on real photos and a database build, ~14 s here
def test_the_smile_learnt_from_real_photos_is_what_dlib_measures_on_the_pairs(smile):
    proto = smile["proto"]
    e_crop = fx.eye_distance(proto.mean_shape)
    # dlib's own measure of the pairs' corner moves, in eye distances along the face's axes
    share = []
    for p, mv in zip(smile["pts"], smile["measured"]):
        across, up = fx.face_axes(p)
        share.append([mv[48] @ -across, mv[54] @ across, mv[48] @ up, mv[54] @ up] / np.float64(fx.eye_distance(p)))
    dlib_says = np.mean(share, 0)
    across, up = fx.face_axes(proto.mean_shape)
    d = proto.shape_delta
    learnt = np.array([d[48] @ -across, d[54] @ across, d[48] @ up, d[54] @ up]) / e_crop
    assert np.all(learnt > 0.5 * fx.LIFT * 0.5)  # up and outward, as the truth
    rel = np.abs(learnt - dlib_says).max() / np.abs(dlib_says).max()
    truth = fx.LIFT * smile["shares"].mean() / fx.LIFT
    print(f"learnt {learnt.round(4)} dlib on pairs {dlib_says.round(4)} truth {truth:.4f} rel {rel:.3f}")
    assert rel < 0.25, rel
    still = np.r_[17:48]  # brows, nose, eyes: the truth leaves them (dlib's jaw contour follows a smile a little)
    assert np.linalg.norm(d[still], axis=1).max() < 0.35 * np.linalg.norm(d[[48, 54]], axis=1).mean()


def test_with_dlib_s_gain_undone_the_learnt_smile_is_the_true_one(smile):
    """What dlib reports of a smile is ~2/3 of it; measured on the neighbours and undone, the learnt change is
    within 10 % of the true move (the issue's bar), where the change as detected is ~25-50 % short."""
    proto, detected = smile["calibrated"], smile["proto"]
    truth = fx.smile_moves(proto.mean_shape, smile["shares"].mean())
    c = list(fx.CORNERS)

    def off(delta: np.ndarray) -> np.ndarray:
        return np.linalg.norm(delta[c] - truth[c], axis=1) / np.linalg.norm(truth[c], axis=1)

    print(f"corners off the truth: detected {off(detected.shape_delta).round(3)}, calibrated "
          f"{off(proto.shape_delta).round(3)}; {proto.calibration}")
    assert off(proto.shape_delta).max() < 0.1 < off(detected.shape_delta).max()
    assert 0.5 < proto.calibration["gain"] <= 1.0
    assert proto.calibration["shape_kept"] == 1.0 and proto.calibration["colour_read"] < 0.55  # a real move
    still = np.r_[17:48]  # brows, nose, eyes: undoing the gain does not turn their noise into a move
    assert np.linalg.norm(proto.shape_delta[still], axis=1).max() < 0.2 * np.linalg.norm(truth[c], axis=1).mean()


def test_the_edit_moves_grace_hopper_s_mouth_by_the_learnt_change_and_nothing_outside_the_face(smile):
    from dfi_engine.faces.pipeline import align_photo

    det, proto = smile["det"], smile["calibrated"]
    g = fx.grace()
    af = align_photo(g, 128, det)
    pts = det.dense(g / 255.0, af.face)
    res = st.apply_prototype(g, af, pts, proto, shape=1.0, tone=0.0)
    region, _ = al.region_in_photo(af.matrix, 128, g.shape[:2])
    assert np.array_equal(res.image[region == 0], g[region == 0])
    assert not res.info["damped"]
    # where the warp takes each photo point, read off a coordinate image warped the same way
    scale = np.sqrt(abs(np.linalg.det(af.matrix[:, :2])))  # crop (128) pixels per photo pixel
    origin = _origin_reader(g.shape[:2], af, pts, proto)
    want = pts[[48, 54]] + proto.shape_delta[[48, 54]] @ al.invert(af.matrix)[:, :2].T
    for c, target in zip((48, 54), want):
        assert np.linalg.norm(origin(target) - pts[c]) * scale < 0.35, (c, origin(target), pts[c])
    # the pixels at the truth's corners are her corners: the true move, to a fraction of a crop pixel
    share = smile["shares"].mean()
    truth = pts[[48, 54]] + fx.corner_moves(pts, share)
    off = [np.linalg.norm(origin(t) - pts[c]) * scale for c, t in zip((48, 54), truth)]
    detected = _origin_reader(g.shape[:2], af, pts, smile["proto"])
    off_detected = [np.linalg.norm(detected(t) - pts[c]) * scale for c, t in zip((48, 54), truth)]
    # dlib, looking at the edited photo, sees the corners moved (its reading is ~1 px noisy here: a photo
    # pixel is 0.4 crop pixels and it answers in whole pixels)
    again = fx.dense_points(det, res.image)[[48, 54]]
    before = np.linalg.norm(pts[[48, 54]] - truth, axis=1) * scale
    after = np.linalg.norm(again - truth, axis=1) * scale
    print(f"grace corners off the truth (128 px): warp {np.round(off, 2)} (detected change "
          f"{np.round(off_detected, 2)}), re-detected {before.round(2)} -> {after.round(2)}")
    assert max(off) < 0.5 < max(off_detected) and np.all(after < 0.6 * before)


def _origin_reader(shape: tuple[int, int], af, pts: np.ndarray, proto):
    return fx.origin_reader(shape, lambda im: st.apply_prototype(im, af, pts, proto, shape=1.0, tone=0.0).image)


def test_strength_zero_returns_the_photo_bit_for_bit(smile):
    from dfi_engine.faces.pipeline import align_photo

    g = fx.grace()
    af = align_photo(g, 128, smile["det"])
    out = st.apply_prototype(g, af, smile["det"].dense(g / 255.0, af.face), smile["proto"], 0.0, 0.0).image
    assert out.dtype == g.dtype and np.array_equal(out, g)


def test_the_licence_switch_keeps_the_68_point_model_unloaded(monkeypatch):
    """DFI_NO_68_POINT_MODEL: commercial users never load the non-commercial model; the 5 points still align."""
    from dfi_engine.errors import DFIError
    from dfi_engine.faces import landmarks

    monkeypatch.setenv(landmarks.NO_68, "1")
    det = landmarks.FaceDetector()
    astro = fx.astronaut()
    face = det.detect(astro)[0]
    assert face.landmarks.shape == (5, 2)
    with pytest.raises(DFIError, match="switched off"):
        det.dense(astro, face)
    from dfi_engine.faces.prepare_pool import align_source_dense

    crop, _, dense = align_source_dense(astro, 128, det)
    assert crop.shape == (128, 128, 3) and dense is None  # a database built so serves texture-only edits


@pytest.mark.slow  # learns the smile's tone twice, ~5 s here
def test_a_smile_learnt_as_a_two_folder_attribute_is_not_taken_for_a_cover(smile):
    """Two-folder attributes carry their tone as a cover where an area is repainted (tone_form "alpha"). A smile
    repaints no area at the mouth: its lips and folds only move, so the cover stays off there (where it was on,
    the examples' own skin came onto grace_hopper as pale streaks along her folds) and the shape stays whole."""
    from dfi_engine.faces.pipeline import align_photo

    sets = fx.sets(smile["db"], smile["column"])
    ratio, alpha = (pr.learn(smile["db"], *sets, form=f) for f in ("ratio", "alpha"))
    (x0, y0), (x1, y1) = alpha.mean_shape[48:68].min(0) - 6, alpha.mean_shape[48:68].max(0) + 6
    assert alpha.tone[int(y0):int(y1), int(x0):int(x1), 3].max() < 0.1  # the cover's opacity around the mouth
    assert np.allclose(alpha.shape_delta, ratio.shape_delta)  # the same points under a repaint, in any form
    g = fx.grace()
    af = align_photo(g, 128, smile["det"])
    pts = smile["det"].dense(g / 255.0, af.face)
    a, r = (st.apply_prototype(g, af, pts, p, 1.0, 1.0).image.astype(float) for p in (alpha, ratio))
    (x0, y0), (x1, y1) = pts[48:68].min(0).astype(int) - 15, pts[48:68].max(0).astype(int) + 15
    assert np.abs(a - r)[y0:y1, x0:x1].max() <= 4.0  # around the mouth the face keeps its own colours
