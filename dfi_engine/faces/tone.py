"""The tone component's maps: how the sets' colour change is read off their crops and carried onto a face.

Both sets' crops are placed on the mean shape and compared; the difference is shrunk where the sets
disagree (their identities) and lightly low-passed. Three forms (per attribute, ``tone_form``):

- **ratio**: the mean log ratio per channel, multiplied in: shading, greying, a flush; the face's own
  colours stay under the change (a dark attribute darkens pale and dark skin alike);
- **alpha**: the ratio where the examples are not repainted, and where they are (an area darker or
  lighter as a whole: glasses, a beard, paint) a *cover* ``(1 − a)·face + a·C`` on top, which brings the
  attribute's own colour ``C`` whatever the skin under it;
- **additive**: the difference of levels (kept to compare; it measured worst).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FORMS = ("ratio", "alpha", "additive")  # the first is the default; each attribute names its own (attributes.toml)
TONE_SIGMA = 0.01  # low-pass of the tone maps, as a share of the crop side (after the shrinkage below)
TONE_Z = 2.0  # a tone difference this many standard errors of the sets' means is kept about half
TONE_OFFSET = 8.0  # levels added before the log: dark pixels' noise must not dominate the ratio
LUMA = np.array((0.299, 0.587, 0.114))  # BT.601
ALPHA_FLOOR = 4.0  # levels: a smaller luminance change is not read as a cover
COVER_SHARE = 0.25  # the share of the target examples, most covered at a place, whose colour is the attribute's
COVER_REACH = 0.05  # how far (share of the crop) the cover's colour is carried from where it is well seen
REPAINT = (0.3, 0.5)  # low-passed |mean log ratio| where an area starts to count as repainted, and fully is
REPAINT_AREA = 0.03  # that low-pass (share of the crop): it tells an area's repaint from an edge's misregistration
COVER_AREA = (8.0, 20.0)  # levels of that low-passed luminance change where the cover starts, and is whole
CHANNELS = {"ratio": 3, "additive": 3, "alpha": 8}  # ratio (3), opacity a, a·C (3), the luminance change


def repaint_area(log_ratio: np.ndarray) -> np.ndarray:
    """(S, S) low-passed |mean log ratio|: large where an area is darker or lighter as a whole; a misregistered
    edge is a thin +/- pair that the low-pass cancels (a smile's lips, a moved fold)."""
    return np.abs(ndimage.gaussian_filter(log_ratio, REPAINT_AREA * log_ratio.shape[0], mode="nearest"))


def repaint_weight(area: np.ndarray) -> np.ndarray:
    """0 (kept) … 1 (repainted) from :func:`repaint_area`."""
    return np.clip((area - REPAINT[0]) / (REPAINT[1] - REPAINT[0]), 0.0, 1.0)


def cover_weight(luma_change: np.ndarray) -> np.ndarray:
    """0 … 1: where the sets' mean luminance change, low-passed like :func:`repaint_area`, is an area's."""
    area = np.abs(ndimage.gaussian_filter(luma_change, REPAINT_AREA * luma_change.shape[0], mode="nearest"))
    return np.clip((area - COVER_AREA[0]) / (COVER_AREA[1] - COVER_AREA[0]), 0.0, 1.0)


def shrunk_difference(target: np.ndarray, source: np.ndarray, sigma: float) -> np.ndarray:
    """Low-passed mean target − mean source of (n, S, S, 3) stacks, shrunk where the sets disagree more than
    they differ (Wiener-like: there the difference is the neighbours' identities, not the attribute)."""
    def moments(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return v.mean(0, dtype=np.float64), v.var(0, dtype=np.float64) / max(len(v) - 1, 1)

    (mt, vt), (ms, vs) = moments(target), moments(source)
    diff = mt - ms
    diff = diff * diff * diff / (diff * diff + TONE_Z * TONE_Z * (vt + vs) + 1e-12)
    s = sigma * diff.shape[0]
    return ndimage.gaussian_filter(diff, (s, s, 0), mode="nearest")


def most_covered(placed: np.ndarray, darker: np.ndarray, share: float = COVER_SHARE) -> np.ndarray:
    """(S, S, 3) per place, the mean of the ``share`` of the target crops (n, S, S, 3) darkest there (where
    ``darker``) or lightest: the attribute's own colour, as its most covered examples show it."""
    y = placed @ LUMA
    order = np.argsort(np.where(darker, y, -y), axis=0)
    k = max(1, int(round(share * len(placed))))
    return np.take_along_axis(placed, order[:k, ..., None], axis=0).mean(0)


def spread_cover(cover: np.ndarray, a: np.ndarray, reach: float = COVER_REACH) -> np.ndarray:
    """C read where the examples are well covered (weight a²) and carried outwards over ``reach`` of the crop.

    Where the examples' patches move, the most covered examples at a place near the edge show skin, not the
    attribute: that C would carry the examples' skin colour into the halo (measured: a 16-level fringe in one
    channel); C from the covered core, and the cover's mean colour beyond, leave the halo only dimmed."""
    w = a * a
    sig = reach * cover.shape[0]
    everywhere = (w[..., None] * cover).sum((0, 1)) / max(float(w.sum()), 1e-9)
    eps = 1e-3
    near = ndimage.gaussian_filter(w[..., None] * cover, (sig, sig, 0), mode="nearest")
    return (near + eps * everywhere) / (ndimage.gaussian_filter(w, sig, mode="nearest")[..., None] + eps)


def cover_map(diff: np.ndarray, source_mean: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """(S, S, 5): opacity a, the colour it brings a·C (3), the mean luminance change (its direction), from a
    level difference, the sets' mean source and C as the most covered examples show it.

    The opacity is what brings the mean source's luminance to the mean target's on the way to C."""
    d = diff @ LUMA
    s = source_mean @ LUMA

    def opacity(c: np.ndarray) -> np.ndarray:
        a = np.abs(d) / np.maximum(np.abs(c @ LUMA - s), 1.0)
        return np.clip(a, 0.0, 1.0) * (d * d / (d * d + ALPHA_FLOOR ** 2))

    c = spread_cover(cover, opacity(cover))
    a = opacity(c)
    return np.concatenate([a[..., None], a[..., None] * c, d[..., None]], -1)


def tone_map(target: np.ndarray, source: np.ndarray, form: str, sigma: float | None = None) -> np.ndarray:
    """The map of ``form`` (:data:`CHANNELS`) from the sets' crops (n, S, S, 3, levels) on the mean shape."""
    if form not in FORMS:
        raise ValueError(f"unknown tone form {form!r}")
    sigma = TONE_SIGMA if sigma is None else sigma
    if form == "additive":
        return shrunk_difference(target, source, sigma).astype(np.float32)
    ratio = shrunk_difference(np.log(target + TONE_OFFSET), np.log(source + TONE_OFFSET), sigma)
    if form == "ratio":
        return ratio.astype(np.float32)
    # the cover only where an area's luminance changes as a whole: at a smile's lips and moved folds (edges,
    # which the low-pass cancels) its C would be the examples' own skin, brought on as pale streaks (looked at)
    levels = shrunk_difference(target, source, sigma)
    cover = cover_map(levels, source.mean(0), most_covered(target, (levels @ LUMA) < 0))
    w = cover_weight(levels @ LUMA)[..., None]
    return np.concatenate([ratio * (1 - w), cover[..., :4] * w, cover[..., 4:]], -1).astype(np.float32)


def apply_tone(rgb: np.ndarray, t: np.ndarray, form: str) -> np.ndarray:
    """``rgb`` (levels) changed by the tone map ``t`` (already scaled by the strength; 0 is the identity)."""
    if form == "additive":
        return rgb + t
    out = (rgb + TONE_OFFSET) * np.exp(t[..., :3]) - TONE_OFFSET
    if form == "ratio":
        return out
    a, way = t[..., 3:4], np.sign(t[..., 7:8])  # way: −1 a darkening cover, +1 a lightening one (0: no cover)
    change = (t[..., 4:7] - a * out) / np.maximum(a, 1.0)  # beyond full cover: the cover's own colour, no further
    # a darkening cover never brightens a channel (nor a lightening one darkens one): where C is read a little
    # off (the most covered examples still show some skin) a saturated skin's weak channel would rise at the rim
    return out + way * np.maximum(way * change, 0.0)
