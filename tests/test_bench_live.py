"""``dfi bench --live --quick`` end to end with seeded random weights: a real daemon process, the demo's database,
one session and its slider moves, then the full render. No timing thresholds (speed is measured by the
benchmark, never asserted): the numbers exist, are finite and positive, and the ratios are their quotients.
"""

from __future__ import annotations

import json
import math

import pytest
from dfi_daemon.cli import main

pytestmark = pytest.mark.slow  # a daemon process serving the demo's database


def _positive(v: object) -> None:
    assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, v


def test_live_section_measures_every_step(tmp_path, capsys):
    out = tmp_path / "live.json"
    rc = main(["bench", "--live", "--quick", "--weights", "random:0", "--device", "cpu", "--threads", "1",
               "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert "RANDOM" in r["weights"] and r["attribute"] == "dark_glasses"
    for key in ("first_instant_s", "first_refined_s", "move_instant_s", "move_refined_s", "full_render_s",
                "full_edit_warm_s"):
        _positive(r[key])
    assert r["first_instant_s"] < r["first_refined_s"]  # the instant look comes first, in one request
    assert len(r["move_runs"]) == len(r["moves"]) >= 2 and all(m["reused"] for m in r["move_runs"])
    assert all(m["instant"] < m["refined"] for m in r["move_runs"])
    assert r["ratios"]["move_refined / full_render"] == pytest.approx(r["move_refined_s"] / r["full_render_s"])
    assert r["renders"][0]["iterations"] == 2  # the quick edit's own settings reached the daemon
    table = capsys.readouterr().out
    assert "after a slider move: refined" in table and "ratio move_refined / full_render" in table
