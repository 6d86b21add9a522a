"""``dfi bench --quality`` part ``prototype``: the shape and tone components against known truths.

* **known warp**: a smile (mouth corners up and out by 8 % ± 20 % of the eye distance) made on 12
  jittered astronaut crops by a known warp; the learnt corner change (as dlib detects it, and with
  its gain undone, ``calibrate.py``) against the truth; on grace_hopper (128-px crop pixels): where
  the warp takes her corners' pixels against the true move (read off a warped coordinate image),
  and her re-detected corners against the true move and against dlib's reading of grace warped by
  the truth; whether anything outside the face region changed;
* **tone**: a dark patch whose darkness and place vary between 12 examples; on grace_hopper:
  progress towards the painted truth inside, the chroma of (result − truth) inside (BT.601 CbCr,
  levels), the largest brightening in a ring around it (luminance, and any one channel); in the form
  a two-folder attribute uses (alpha: towards the cover's colour) and, to compare, the ratio;
* **speed**: shape and tone applied to a ~1000-px portrait (grace_hopper enlarged), median of 5 runs,
  without the face detection (which the daemon does once per image).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CBCR = np.array(((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312)))  # BT.601 chroma of an RGB change
LUMA = np.array((0.299, 0.587, 0.114))


def _shares(fx: Any, proto: Any) -> np.ndarray:
    """The corners' change (outward 48, 54; up 48, 54) in eye distances."""
    across, up = fx.face_axes(proto.mean_shape)
    d = proto.shape_delta
    return np.array([d[48] @ -across, d[54] @ across, d[48] @ up, d[54] @ up]) / fx.eye_distance(proto.mean_shape)


def _known_warp(fx: Any, det: Any, root: Path, grace: np.ndarray, out: Path) -> dict[str, Any]:
    from dfi_engine.faces import align as al
    from dfi_engine.faces import calibrate as cb
    from dfi_engine.faces import prototype as pr
    from dfi_engine.faces import shape_tone as st
    from dfi_engine.faces.pipeline import align_photo

    s = fx.smile_set(root / "smile", det)
    sets = fx.sets(s["db"], s["column"])
    detected = _shares(fx, pr.learn(s["db"], *sets, tone=False))
    t0 = time.perf_counter()
    proto = cb.learn_calibrated(s["db"], *sets, det, tone=False)
    calibration_s = time.perf_counter() - t0
    learnt = _shares(fx, proto)
    truth = float(s["shares"].mean())
    af = align_photo(grace, 128, det)
    pts = det.dense(grace / 255.0, af.face)
    res = st.apply_prototype(grace, af, pts, proto, shape=1.0, tone=0.0)
    region, _ = al.region_in_photo(af.matrix, 128, grace.shape[:2])
    scale = np.sqrt(abs(np.linalg.det(af.matrix[:, :2])))
    want = pts[[48, 54]] + fx.corner_moves(pts, truth)
    seen_truth = fx.dense_points(det, fx.truth_warp(grace, pts, truth))[[48, 54]]
    again = fx.dense_points(det, res.image)[[48, 54]]
    origin = fx.origin_reader(grace.shape[:2], lambda im: st.apply_prototype(im, af, pts, proto, 1.0, 0.0).image)
    warp_off = [np.linalg.norm(origin(t) - pts[c]) * scale for c, t in zip((48, 54), want)]
    fx.sheet(str(out / "known_warp.png"), [grace, res.image, 128 + 4 * (res.image.astype(float) - grace)], None, 1)
    return {"truth_share": truth, "detected_share": detected.round(4).tolist(),
            "detected_vs_truth": float(np.abs(detected - truth).max() / truth),
            "learnt_share": learnt.round(4).tolist(), "learnt_vs_truth": float(np.abs(learnt - truth).max() / truth),
            "calibration": proto.calibration, "calibration_s": round(calibration_s, 2),
            "corners_before_px": (np.linalg.norm(pts[[48, 54]] - want, axis=1) * scale).round(2).tolist(),
            "corners_warp_px": np.round(warp_off, 2).tolist(),
            "corners_after_px": (np.linalg.norm(again - want, axis=1) * scale).round(2).tolist(),
            "corners_after_vs_seen_truth_px": (np.linalg.norm(again - seen_truth, axis=1) * scale).round(2).tolist(),
            "outside_unchanged": bool(np.array_equal(res.image[region == 0], grace[region == 0]))}


def _tone(fx: Any, det: Any, s: dict[str, Any], grace: np.ndarray, out: Path, form: str | None = None,
          ) -> dict[str, Any]:
    """The patch set's (``fx.patch_set``) tone in ``form`` (default: what a two-folder attribute uses)."""
    from scipy import ndimage

    from dfi_engine.faces import prototype as pr
    from dfi_engine.faces import shape_tone as st
    from dfi_engine.faces.attributes import load_definitions
    from dfi_engine.faces.pipeline import align_photo

    form = form or load_definitions().get(s["column"], s["db"]).tone_form
    proto = pr.learn(s["db"], *fx.sets(s["db"], s["column"]), form=form)
    af = align_photo(grace, 128, det)
    pts = det.dense(grace / 255.0, af.face)
    truth = fx.paint_patch(grace, pts, s["opacity"]).astype(np.float64)
    res = st.apply_prototype(grace, af, pts, proto, shape=0.0, tone=1.0).image.astype(np.float64)
    photo = grace.astype(np.float64)
    centre, radius = fx.patch_place(pts)
    m = fx.patch_mask(grace.shape[:2], centre, radius)
    inside = m > 0.99
    ring = ndimage.binary_dilation(m > 0, iterations=int(radius)) & ~(m > 0)
    x0, y0, side = int(centre[0] - 3 * radius), int(centre[1] - 3 * radius), int(6 * radius)
    fx.sheet(str(out / f"tone_{form}.png"), [grace, truth, res], (x0, y0, x0 + side, y0 + side), 3)
    chroma = np.linalg.norm((res - truth) @ CBCR.T, axis=-1)
    return {"form": form,
            "progress": float(1 - np.abs(res - truth)[inside].mean() / np.abs(photo - truth)[inside].mean()),
            "chroma_error": float(chroma[inside].mean()),
            "chroma_error_unedited": float(np.linalg.norm((photo - truth) @ CBCR.T, axis=-1)[inside].mean()),
            "rim_brighter_max": float(np.maximum((res - photo) @ LUMA, 0)[ring].max()),
            "rim_channel_max": float(np.maximum(res - photo, 0)[ring].max()), "proto": proto}


def _speed(det: Any, grace: np.ndarray, proto: Any, runs: int = 5) -> dict[str, Any]:
    from PIL import Image

    from dfi_engine.faces import shape_tone as st
    from dfi_engine.faces.pipeline import align_photo

    big = np.asarray(Image.fromarray(grace).resize((853, 1000), Image.BICUBIC))
    af = align_photo(big, 128, det)
    pts = det.dense(big / 255.0, af.face)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        st.apply_prototype(big, af, pts, proto, shape=1.0, tone=1.0)
        times.append(time.perf_counter() - t0)
    return {"size": list(big.shape[:2]), "median_ms": round(1000 * statistics.median(times), 1),
            "min_ms": round(1000 * min(times), 1)}


def measure(out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from .. import known_truth as fx
    from ..samples import portrait

    out.mkdir(parents=True, exist_ok=True)
    det = fx.detector()
    grace = portrait("grace_hopper")
    with tempfile.TemporaryDirectory(prefix="dfi-bench-proto-") as tmp:
        log("quality: prototype: known warp (smile)")
        warp = _known_warp(fx, det, Path(tmp), grace, out)
        log("quality: prototype: tone (dark patch)")
        patch = fx.patch_set(Path(tmp) / "patch", det)
        tone = _tone(fx, det, patch, grace, out)
        ratio = _tone(fx, det, patch, grace, out, "ratio") if tone["form"] != "ratio" else None
        speed = _speed(det, grace, tone.pop("proto"))
    if ratio:
        ratio.pop("proto")
    return {"known_warp": warp, "tone": tone, "tone_ratio": ratio, "speed": speed}


def format_prototype(r: dict[str, Any]) -> list[str]:
    w, t, s = r["known_warp"], r["tone"], r["speed"]
    return ["", "shape and tone (known truths, no optimisation)",
            f"  known warp: corner change as dlib detects it {w['detected_share']} eye distances "
            f"({100 * w['detected_vs_truth']:.0f} % off the truth {w['truth_share']:.4f}), its gain undone "
            f"{w['learnt_share']} ({100 * w['learnt_vs_truth']:.0f} % off; {w['calibration_s']} s)",
            f"  grace's corners off the truth (128-px crop) {w['corners_before_px']} px -> warped to "
            f"{w['corners_warp_px']} px; re-detected {w['corners_after_px']} px, off dlib's reading of the truth "
            f"{w['corners_after_vs_seen_truth_px']} px; outside the face unchanged: {w['outside_unchanged']}",
            *[f"  tone ({x['form']}{', as shipped' if x is t else ''}): progress {x['progress']:.2f}, chroma error "
              f"{x['chroma_error']:.1f} levels (unedited {x['chroma_error_unedited']:.1f}), brightest rim "
              f"{x['rim_brighter_max']:.1f} levels (a channel {x['rim_channel_max']:.1f})"
              for x in (t, r.get("tone_ratio")) if x],
            f"  speed: shape+tone on {s['size'][1]}x{s['size'][0]}: median {s['median_ms']} ms (min {s['min_ms']})"]
