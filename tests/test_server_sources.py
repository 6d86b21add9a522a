"""Neighbour sources in-process: the synthetic source's rendered sets, opening a source from its spec, and one
edit and one fill through the typed parameter object (``SourceJob``) on a tiny face database.

Seeded random weights and 48-pixel cartoon faces; no daemon.
"""

from __future__ import annotations

import numpy as np
import pytest
from dfi_daemon.server.jobs import Settings
from dfi_daemon.server.sources import (
    Chain,
    FaceDatabaseSource,
    SourceJob,
    SourceUnavailable,
    SyntheticSource,
    UnknownAttribute,
    open_source,
    real_database_status,
)
from helpers.faces_fixtures import draw, people, write_lfw

from dfi_engine import EditOptions, ReconstructConfig
from dfi_engine.errors import CancelledError, InputError
from dfi_engine.progress import Event, never

RES = 48
FAST = EditOptions(scaling="none", reconstruct=ReconstructConfig(iterations=2))


def settings(op: str = "edit", **over) -> Settings:
    base = {"op": op, "height": RES, "width": RES, "k": 2, "align": False, "work_size": 0, "iterations": 2,
            "quality": "fast", "scaling": "none", "color": None, "feather": None, "preview_s": 0.0}
    if op == "edit":
        base.update(attribute="facehair", strengths=(1.0,))
    return Settings(**{**base, **over})


def job(net, s: Settings, image: np.ndarray, mask: np.ndarray | None = None, events: list | None = None,
        cancel=never) -> SourceJob:
    return SourceJob(s, net, image, mask, FAST, (events if events is not None else []).append, cancel)


def test_rendered_sets_are_deterministic_sized_and_cancellable():
    src = SyntheticSource(3)
    a, b = list(src._render("source", False, (40, 56), 3)), list(src._render("source", False, (40, 56), 3))
    assert len(a) == 3 and all(x.shape == (40, 56, 3) for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), "the same set twice (it is read twice)"
    other = list(src._render("target", True, (40, 56), 3))
    assert not np.array_equal(a[0], other[0])
    chain = Chain(src._render("a", False, (32, 32), 2), src._render("b", True, (32, 32), 1))
    assert len(chain) == 3 and len(list(chain)) == 3
    stop = src._render("source", False, (32, 32), 5, cancel=lambda: True)
    with pytest.raises(CancelledError):
        next(iter(stop))


def test_synthetic_source_says_what_it_is_and_what_a_job_costs():
    src = SyntheticSource()
    assert src.synthetic and not src.can_align and "SYNTHETIC" in src.label
    assert [a["name"] for a in src.attributes()] == ["facehair"]
    assert src.work(40, 60, False, 0, 10) == (10 * 40 * 60, 60)


def test_synthetic_edit_refuses_unknown_attributes_and_shape_or_tone(net):
    src, photo = SyntheticSource(), np.full((RES, RES, 3), 128, np.uint8)
    with pytest.raises(UnknownAttribute):
        src.edit(job(net, settings(attribute="smile"), photo))
    with pytest.raises(InputError) as e:
        src.edit(job(net, settings(components=("shape",)), photo))
    assert "texture" in e.value.hint


def test_synthetic_edit_and_fill_run_through_the_parameter_object(net):
    src = SyntheticSource()
    photo = np.random.default_rng(1).integers(0, 256, (RES, RES, 3), np.uint8)
    events: list[Event] = []
    res = src.edit(job(net, settings(strengths=(0.5, 1.0)), photo, events=events))
    assert len(res.images) == 2 and res.images[0].shape == photo.shape
    assert {e.stage for e in events} >= {"target features", "source features", "reconstruct"}
    assert all(isinstance(e, Event) for e in events)
    mask = np.zeros((RES, RES), np.uint8)
    mask[10:30, 10:30] = 255
    fill = src.inpaint(job(net, settings("inpaint"), photo, mask))
    changed = np.any(fill.images[0] != photo, axis=2)
    assert changed.any() and not changed[mask == 0].any(), "a fill changes the selection only"


def test_open_source_by_spec(tmp_path):
    assert open_source("synthetic:5").seed == 5 and open_source("synthetic").seed == 0
    assert open_source("none") is None and open_source("") is None
    with pytest.raises(SourceUnavailable) as e:
        open_source(str(tmp_path / "nothing-here"))
    assert "cannot be opened" in str(e.value)
    assert "dfi db fetch lfw" in real_database_status("synthetic")


@pytest.fixture(scope="module")
def face_db(tmp_path_factory):
    from dfi_engine.faces import database as dbm
    from dfi_engine.faces.builder import build

    root = tmp_path_factory.mktemp("faces")
    rows = people(64)  # enough faces of each kind for the sources' default minimum of 10 neighbours
    draw(rows, root / "images", RES)
    write_lfw(rows, root / "lfw_attributes.txt")
    plan, missing = dbm.plan_from_table(root / "images", root / "lfw_attributes.txt")
    assert not missing
    build(root / "lfw.db", plan, RES, assume_aligned=True, progress=False)
    return root / "lfw.db"


def test_face_database_source_edits_and_fills_unaligned_through_the_parameter_object(net, face_db):
    src = open_source(str(face_db))
    assert isinstance(src, FaceDatabaseSource) and src.can_align and src.resolution == RES
    assert real_database_status(str(face_db)) is None
    names = [a["name"] for a in src.attributes()]
    assert "facehair" in names and "inpaint" not in names, "Fill selection is not an attribute to pick"
    assert src.work(RES, RES, False, 0, 10)[1] == RES, "no larger working size asked: the database's"
    photo = np.random.default_rng(2).integers(0, 256, (RES, RES, 3), np.uint8)
    with pytest.raises(UnknownAttribute):
        src.edit(job(net, settings(attribute="no_such_thing"), photo))
    res = src.edit(job(net, settings(k=3), photo))
    assert len(res.images) == 1 and res.face.choice == "whole image, unaligned" and res.info["neighbours"]
    mask = np.zeros((RES, RES), np.uint8)
    mask[8:24, 8:40] = 255
    fill = src.inpaint(job(net, settings("inpaint", k=3), photo, mask))
    changed = np.any(fill.images[0] != photo, axis=2)
    assert changed.any() and not changed[mask == 0].any()
