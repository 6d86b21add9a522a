"""Edit sessions (the live slider's engine): the per-photo work once, then instant shape-and-tone previews,
refined previews warm-started from the nearest strength, and a full render equal to ``edit_attribute``'s; and
several strengths with shape and tone edited as one batch, each from its own start."""

from __future__ import annotations

import numpy as np
import pytest
from dfi_daemon import known_truth as fx
from PIL import Image

from dfi_engine.edit import EditOptions
from dfi_engine.faces.attributes import AttributeDef
from dfi_engine.reconstruct import ReconstructConfig

FAST = EditOptions(reconstruct=ReconstructConfig(iterations=6))


@pytest.fixture(scope="module")
def patch(tmp_path_factory):
    """12 jittered astronaut crops, and each with a dark patch (opacity and place varying)."""
    det = fx.detector()
    return {**fx.patch_set(tmp_path_factory.mktemp("patch"), det), "det": det}


@pytest.fixture(scope="module")
def session(patch, net):
    from dfi_engine.faces.session import EditSession

    return EditSession(net, fx.grace(), patch["db"], AttributeDef.custom("dark_patch"), detector=patch["det"],
                       minimum=3, options=FAST)


def _small(photo: np.ndarray, box, shape) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.asarray(Image.fromarray(photo[y0:y1, x0:x1]).resize((shape[1], shape[0]), Image.LANCZOS), np.float64)


def test_instant_preview_is_the_photo_at_strength_zero_and_shape_and_tone_elsewhere(session):
    g = fx.grace()
    zero, on = session.instant(0.0), session.instant(0.3)
    x0, y0, x1, y1 = zero.box
    assert 0 <= x0 < x1 <= g.shape[1] and 0 <= y0 < y1 <= g.shape[0]
    assert max(zero.image.shape[:2]) <= session.side and zero.image.dtype == np.uint8 and zero.kind == "instant"
    assert np.abs(zero.image - _small(g, zero.box, zero.image.shape)).max() <= 1.0  # the photo itself
    start = session.shape_tone.apply(0.3).image  # what the full render starts from at 0.3
    assert np.abs(on.image - _small(start, on.box, on.image.shape)).max() <= 1.0
    darker = (zero.image.astype(float) - on.image).mean(-1)
    print(f"instant at 0.3: 99th percentile darkening {np.percentile(darker, 99):.1f}, mean {darker.mean():.2f}")
    assert np.percentile(darker, 99) > 15.0 and darker.mean() > 0.3  # the patch is there (a patch, not a warp)


def test_a_refined_preview_is_the_render_at_the_database_size_and_warm_starts_from_the_nearest(patch, net,
                                                                                                  session):
    from dfi_engine.faces.session import EditSession

    n0 = session.nbytes
    first = session.refine(0.3, iterations=6)
    assert first.kind == "refined" and session.nbytes > n0  # the refined crop is kept for warm starts
    full = session.render([0.3]).images[0]  # FAST: 6 iterations at the database's size, from the same start
    assert np.abs(first.image - _small(full, first.box, first.image.shape)).mean() < 1.0
    assert np.abs(first.image.astype(float) - session.instant(0.3).image).mean() > 0.2  # texture was added
    warm = session.refine(0.35, iterations=6)
    cold = EditSession(net, fx.grace(), patch["db"], AttributeDef.custom("dark_patch"), detector=patch["det"],
                       minimum=3, options=FAST).refine(0.35, iterations=6)
    assert warm.loss < cold.loss  # started from 0.3's result, it gets further in the same steps


def test_render_is_edit_attribute_and_several_strengths_run_as_one_batch_each_from_its_own_start(patch, net,
                                                                                                  session):
    from dfi_engine.faces.pipeline import edit_attribute

    g = fx.grace()
    attr = AttributeDef.custom("dark_patch")
    one = edit_attribute(net, g, patch["db"], attr, [0.3], detector=patch["det"], minimum=3, options=FAST)
    assert np.array_equal(session.render([0.3]).images[0], one.images[0])
    both = session.render([0.0, 0.3])
    assert len(both.images) == 2 and both.strengths == [0.0, 0.3]
    # strength 0 is the photo edited by texture 0 from the photo itself: (nearly) the photo, far less changed
    region = np.abs(one.images[0].astype(float) - g).sum(-1) > 0
    change0 = np.abs(both.images[0].astype(float) - g)[region].mean()
    change3 = np.abs(both.images[1].astype(float) - g)[region].mean()
    assert change0 < 0.25 * change3
    # the batched 0.3 lands where the single run does (the batch shares the optimiser, not the targets)
    assert np.abs(both.images[1].astype(float) - one.images[0])[region].mean() < 0.1 * change3


def test_fill_selection_has_no_session(patch, net):
    from dfi_engine.errors import InputError
    from dfi_engine.faces import load_definitions
    from dfi_engine.faces.session import EditSession

    fill = load_definitions().get("inpaint", patch["db"])
    with pytest.raises(InputError, match="Fill selection"):
        EditSession(net, fx.grace(), patch["db"], fill, detector=patch["det"], minimum=3)


def test_a_long_drag_keeps_the_session_bounded(session):
    from dfi_engine.faces.session import REFINED_KEPT

    sizes = []
    for i in range(REFINED_KEPT + 3):  # a drag over many strengths, one refined look each
        session.refine(0.05 * i, iterations=1)
        sizes.append(session.nbytes)
    assert sizes[REFINED_KEPT - 1] == sizes[-1] > sizes[0]  # the oldest warm starts go, the memory stays
