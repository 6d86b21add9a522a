"""Tone prototypes and the components option: a painted dark patch learnt from astronaut examples and applied to
grace_hopper without optimisation; texture-only databases (built before the 68 points) say how to rebuild."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dfi_daemon import known_truth as fx
from scipy import ndimage

from dfi_engine.faces import align as al
from dfi_engine.faces import database as dbm
from dfi_engine.faces import prototype as pr
from dfi_engine.faces import shape_tone as st


@pytest.fixture(scope="module")
def patch(tmp_path_factory):
    """12 jittered astronaut crops, and each with a dark patch (opacity 0.6–0.9, moved ±6 % of the eye distance)."""
    det = fx.detector()
    root = tmp_path_factory.mktemp("patch")
    return {**fx.patch_set(root, det), "root": root, "det": det}


def _sets(db):
    col = db.column("dark_patch")
    return np.flatnonzero(col < 0), np.flatnonzero(col > 0)


# halo: the share of the ring's pixel channels above the photo. The ratio keeps the colours there; the additive
# form (kept to compare) leaves identities' ±1-level noise; alpha's cover never lifts a channel. chroma: the colour
# error to the truth inside (CbCr levels; 37 unedited): only alpha carries the paint's own colour onto another skin.
@pytest.mark.parametrize("form, least, halo, chroma", [("ratio", 0.6, 0.01, 12.0), ("alpha", 0.6, 0.01, 7.0),
                                                       ("additive", 0.5, 0.03, 30.0)])
def test_the_tone_reaches_the_painted_truth_without_a_bright_rim(patch, form, least, halo, chroma, tmp_path):
    from dfi_daemon.bench.prototype import CBCR, LUMA

    from dfi_engine.faces.pipeline import align_photo

    det, db = patch["det"], patch["db"]
    proto = pr.learn(db, *_sets(db), form=form)
    g = fx.grace()
    af = align_photo(g, 128, det)
    pts = det.dense(g / 255.0, af.face)
    truth = fx.paint_patch(g, pts, patch["opacity"]).astype(np.float64)
    out = st.apply_prototype(g, af, pts, proto, shape=0.0, tone=1.0).image
    res, photo = out.astype(np.float64), g.astype(np.float64)
    centre, radius = fx.patch_place(pts)
    m = fx.patch_mask(g.shape[:2], centre, radius)
    inside = m > 0.99
    ring = ndimage.binary_dilation(m > 0, iterations=int(radius)) & ~(m > 0)
    progress = 1 - np.abs(res - truth)[inside].mean() / np.abs(photo - truth)[inside].mean()
    colour = np.abs(res - truth)[inside].mean()
    chroma_error = np.linalg.norm((res - truth) @ CBCR.T, axis=-1)[inside].mean()
    rim = np.maximum(res - photo, 0)[ring]
    brighter = np.maximum((res - photo) @ LUMA, 0)[ring].max()
    print(f"{form}: progress {progress:.3f}, colour error {colour:.1f} levels, chroma error {chroma_error:.1f}, "
          f"rim brighter {brighter:.1f} (a channel {rim.max():.1f}, share {(rim > 0.5).mean():.4f})")
    if form == "ratio":
        x0, y0 = int(centre[0] - 3 * radius), int(centre[1] - 3 * radius)
        box = (x0, y0, x0 + int(6 * radius), y0 + int(6 * radius))
        fx.sheet(str(tmp_path / "tone_test.png"), [g, truth, res], box, 3)  # to look at when this fails
    assert progress >= least and colour < 35 and chroma_error <= chroma
    assert brighter <= 1.5 and rim.max() <= 2.0 and (rim > 0.5).mean() < halo  # no halo brighter than the photo
    region, _ = al.region_in_photo(af.matrix, 128, g.shape[:2])
    assert np.array_equal(out[region == 0], g[region == 0])
    told = proto.summary()  # what `components` reports: a cover's opacity and colour, or a ratio's range
    if form == "alpha":  # the paint (40, 28, 30) at 0.6–0.9 over a pale skin: mostly covered, darker than skin
        assert 0.6 < told["opacity_max"] <= 1.0 and max(told["cover_rgb"]) < 110
    else:
        assert told["tone_range"][0] < -0.5 if form == "ratio" else told["tone_range"][0] < -50


def test_shape_and_tone_through_the_face_edit_need_no_optimisation_and_keep_the_outside(patch, net):
    from dfi_engine.faces.attributes import AttributeDef
    from dfi_engine.faces.pipeline import edit_attribute

    g = fx.grace()
    attr = AttributeDef.custom("dark_patch")
    assert attr.weights() == {"shape": 1.0, "tone": 1.0, "texture": 1.0}
    res = edit_attribute(net, g, patch["db"], attr, [0.0, 0.3], detector=patch["det"], minimum=3,
                         components=["shape", "tone"])
    assert np.array_equal(res.images[0], g)  # strength 0: the input, bit for bit
    region, _ = al.region_in_photo(res.face.matrix, 128, g.shape[:2])
    assert np.array_equal(res.images[1][region == 0], g[region == 0]) and not np.array_equal(res.images[1], g)
    assert res.info["components"] == {"shape": 1.0, "tone": 1.0, "texture": 0.0} and res.weights_label == "shape+tone"


def test_a_database_without_the_68_points_says_how_to_rebuild_when_shape_or_tone_is_asked_for(patch, net, tmp_path):
    import shutil

    from dfi_engine.faces.attributes import AttributeDef
    from dfi_engine.faces.errors import DatabaseError
    from dfi_engine.faces.pipeline import edit_attribute

    old = tmp_path / "old"
    shutil.copytree(patch["root"] / "db", old)
    for f in old.glob("shards/*/dense.npy"):
        f.unlink()
    man = json.loads((old / "manifest.json").read_text())
    man["version"] = 1
    (old / "manifest.json").write_text(json.dumps(man))
    db = dbm.Database(old)
    assert not db.has_dense().any()
    with pytest.raises(DatabaseError, match="dfi db build") as e:
        edit_attribute(net, fx.grace(), db, AttributeDef.custom("dark_patch"), [0.3], detector=patch["det"],
                       minimum=3, components=["tone"])
    assert "\n" not in str(e.value)


def test_a_repaint_with_no_shape_change_moves_nothing(patch):
    """dlib answers the painted cheek with moved brows and jaw (1.6 crop px, 3.2 with its gain undone: the photo's
    glasses frame moved beside the patch). It reads all of that off the colour change alone, so no shape is kept:
    the edit with shape and tone is the tone alone, bit for bit."""
    from dfi_engine.faces import calibrate as cb
    from dfi_engine.faces.pipeline import align_photo

    det, db = patch["det"], patch["db"]
    detected = pr.learn(db, *_sets(db), form="alpha")
    proto = cb.learn_calibrated(db, *_sets(db), det, form="alpha")
    assert np.linalg.norm(detected.shape_delta, axis=1).max() > 1.0  # what dlib reports, the photo unmoved
    assert proto.calibration["colour_read"] > 0.9 and not proto.shape_delta.any(), proto.calibration
    g = fx.grace()
    af = align_photo(g, 128, det)
    pts = det.dense(g / 255.0, af.face)
    both, tone = (st.apply_prototype(g, af, pts, proto, shape=s, tone=1.0).image for s in (1.0, 0.0))
    assert np.array_equal(both, tone)


@pytest.mark.slow  # the bench part, ~15 s of CPU here
def test_the_bench_part_measures_both_known_truths(tmp_path):
    """``dfi bench --quality --quality-parts prototype`` end to end: its numbers are the tests' numbers."""
    from dfi_daemon.bench import prototype as bench

    r = bench.measure(tmp_path, lambda line: None)
    w = r["known_warp"]
    assert w["outside_unchanged"] and w["learnt_vs_truth"] < 0.15 < w["detected_vs_truth"]
    assert max(w["corners_warp_px"]) < 0.5 < min(w["corners_before_px"])
    t, ratio = r["tone"], r["tone_ratio"]
    assert t["form"] == "alpha" and ratio["form"] == "ratio"  # as a two-folder attribute ships, and to compare
    assert t["progress"] >= 0.6 and t["chroma_error"] <= 8.0 < ratio["chroma_error"]
    assert t["rim_brighter_max"] <= 1.0 and t["rim_channel_max"] <= 2.0 and r["speed"]["median_ms"] > 0
    text = "\n".join(bench.format_prototype(r))
    assert "known warp" in text and "tone (alpha, as shipped)" in text and "tone (ratio)" in text
    assert all((tmp_path / f).is_file() for f in ("known_warp.png", "tone_alpha.png", "tone_ratio.png"))


@pytest.mark.slow  # two whole edits with real features, ~40 s here
def test_the_whole_edit_adds_no_colour_fringes_to_the_tone(patch, hed, monkeypatch):
    """Shape, tone and DFI's texture on the painted patch, as a two-folder attribute ships (alpha tone, texture at
    half): within 8 levels of the truth's colour. The texture's colour change is low-passed, so the inversion's red
    and green fringes do not undo the tone's colour."""
    from dfi_daemon.bench.prototype import CBCR

    from dfi_engine.backbones import defaults_for
    from dfi_engine.edit import EditOptions
    from dfi_engine.faces import pipeline
    from dfi_engine.faces.attributes import load_definitions
    from dfi_engine.faces.session import EditSession
    from dfi_engine.reconstruct import ReconstructConfig

    g = fx.grace()
    opts = EditOptions(reconstruct=ReconstructConfig(iterations=60))
    attr = load_definitions().get("dark_patch", patch["db"])
    session = EditSession(hed, g, patch["db"], attr, detector=patch["det"], minimum=3, options=opts)
    pts = patch["det"].dense(g / 255.0, session.face.face)
    truth = fx.paint_patch(g, pts, patch["opacity"]).astype(np.float64)
    inside = fx.patch_mask(g.shape[:2], *fx.patch_place(pts)) > 0.99
    strength = defaults_for(hed.backbone).strength

    def measured() -> tuple[float, float]:
        res = session.render([strength]).images[0].astype(np.float64)
        progress = 1 - np.abs(res - truth)[inside].mean() / np.abs(g - truth)[inside].mean()
        return float(np.linalg.norm((res - truth) @ CBCR.T, axis=-1)[inside].mean()), float(progress)

    smoothed, progress = measured()
    monkeypatch.setattr(pipeline, "smooth_chroma", lambda change, sigma: change)
    raw, _ = measured()
    print(f"whole edit: progress {progress:.2f}, colour error to the truth {smoothed:.1f} levels ({raw:.1f} without "
          "the texture's colour low-passed)")
    assert progress >= 0.6 and smoothed <= 8.0 and smoothed < raw
