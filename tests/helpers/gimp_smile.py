"""A real GIMP (3.0 or 3.2) with the plug-in installed, talking to a real daemon that serves a face database whose
attribute ``smile`` is a KNOWN warp (daemon/dfi_daemon/known_truth.py): the fixtures the Smile…, live-slider and
plug-in live-preview tests share. Import them into a test module to use them there (module scope: one GIMP and
one daemon per module and version)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from dfi_daemon import known_truth as kt
from PIL import Image

from helpers.daemon_process import DaemonProcess
from helpers.gimp_harness import free_port, gimp_for, versions

UNDO_RECT = (120, 60, 300, 360)  # image coordinates (x, y, w, h): grace_hopper's face, for a selection


@pytest.fixture(scope="module")
def smile_db(tmp_path_factory):
    """A two-folder database whose attribute is named ``smile`` (so the plug-in's Smile… uses it), from the
    known warp; built as known_truth.smile_set builds its ``smile_x`` set."""
    from dfi_engine.faces import database as dbm
    from dfi_engine.faces.builder import build

    root = tmp_path_factory.mktemp("smile-db")
    det = kt.detector()
    astro = kt.astronaut()
    without = kt.jitter_crops(astro, kt.dense_points(det, astro), 12, seed=1)
    shares = kt.LIFT * (1 + np.random.default_rng(5).uniform(-0.2, 0.2, len(without)))
    with_ = [kt.truth_warp(im, kt.dense_points(det, im), s) for im, s in zip(without, shares)]
    plan = dbm.plan_from_folders(kt.write(root / "with", with_), kt.write(root / "without", without), "smile",
                                 "Smile (known warp)")
    build(root / "db", plan, 128, progress=False)
    return root / "db"


@pytest.fixture(scope="module", params=versions(), ids=lambda v: f"gimp{v}")
def gimp(request, smile_db, tmp_path_factory):
    g = gimp_for(request.param, "pytest-smile")
    daemon = DaemonProcess(tmp_path_factory.mktemp("smile-daemon"), endpoint=f"tcp://127.0.0.1:{free_port()}",
                           threads=2, database=str(smile_db)).start()
    try:
        report = g.install(daemon.endpoint, daemon.config / "local-keys")
        assert "verified with GIMP's Python" in report, report
        buf = io.BytesIO()
        Image.fromarray(kt.grace()).save(buf, "PNG")
        g.photo = g.put("grace_hopper.png", buf.getvalue())
        g.daemon = daemon
        with daemon.client() as c:
            g.smile = next(a for a in c.attributes()["attributes"] if a["name"] == "smile")
        g.strength = f"{g.smile['default_strength']:g}"  # 100 % of the learnt smile
        yield g
    finally:
        daemon.stop()
        g.cleanup()
