"""``dfi bench --quick`` end to end: every field present and sane, and both optimisers on one objective.

No timing thresholds (speed is measured by the benchmark, never asserted):
the checks are that the numbers exist, are finite and positive, and that the
SciPy baseline and the engine evaluate the same function.
"""

from __future__ import annotations

import json
import math

import pytest
from dfi_daemon.cli import main

pytestmark = pytest.mark.slow  # runs `dfi bench --quick` (minutes here), its daemon row a daemon process


def _positive(d: dict, *keys: str) -> None:
    for k in keys:
        v = d[k]
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, f"{k} = {v!r}"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    rc = main(["bench", "--quick", "--device", "cpu", "--threads", "2", "--json", str(out)])
    assert rc == 0
    return json.loads(out.read_text())


def test_header_fields(report):
    assert report["device"]["type"] == "cpu"
    assert report["torch"] and report["weights"]["mode"] == "random"
    assert "RANDOM" in report["weights"]["label"]
    _positive(report["peak"], "float32_gflops", "matmul_n")
    # the FLOP count is derived from the network and must match DESIGN §4 (28.8 GFLOP at 200x200)
    assert report["forward_gflop_200x200"] == pytest.approx(28.8, abs=0.1)


def test_compute_modes_are_compared_with_fp32_in_one_run(report):
    c = report["compute"]
    assert c["modes"][0] == "fp32" and "channels-last" in c["modes"] and "bf16" in c["modes"]
    assert report["compute_mode"] in c["modes"]
    for row in c["sizes"]:
        assert row["time_ratio"]["fp32"] == 1.0 and row["objective_ratio"]["fp32"] == 1.0
        for m in c["modes"]:
            _positive(row["fwd_bwd_s"], m)
            _positive(row["time_ratio"], m)
            _positive(row["same_time_objective_ratio"], m)
        # channels-last changes the layout, not the arithmetic: the optimiser ends in the same place
        assert row["objective_ratio"]["channels-last"] == pytest.approx(1.0, abs=1e-3)
    _positive(c["threads"], "ratio_all_to_one")
    _positive(c["features"], "ratio_inference_mode")


def test_reconstruction_rows(report):
    rows = report["reconstruction"]
    assert {(r["size"], r["batch"]) for r in rows} == {("48x48", 1), ("48x48", 2)}
    for r in rows:
        _positive(r, "fwd_bwd_s", "optimizer_iteration_s", "fwd_bwd_in_optimizer_s", "per_strength_s",
                  "gflop_per_iteration", "achieved_gflops", "fraction_of_peak", "iterations")
        assert math.isfinite(r["overhead_fraction"]) and r["overhead_fraction"] > -1
    b1, b2 = sorted(rows, key=lambda r: r["batch"])
    assert b2["gflop_per_iteration"] == pytest.approx(2 * b1["gflop_per_iteration"])


def test_features_and_memory(report):
    f = report["features"]
    assert f["images"] == 2 * f["k"]
    _positive(f, "seconds", "per_image_s", "achieved_gflops", "fraction_of_peak")
    m = report["memory"]
    _positive(m, "peak_rss_bytes")
    assert m["peak_cuda_bytes"] is None  # CPU run
    for name in ("reconstruction", "features", "baseline"):
        _positive(m["sections"][name], "peak_rss_bytes")


def test_baseline_same_objective(report):
    b = report["baseline"]
    c = b["check"]
    # SciPy's float64 wrapper and the engine's objective agree at the same points
    assert c["rel_diff_at_x0"] < 1e-4 and c["rel_diff_at_reconstruct_x"] < 1e-4 and c["grad_rel_diff_at_x0"] < 1e-4
    sp = b["scipy"]
    _positive(sp, "seconds", "evaluations", "final_loss", "initial_loss", "seconds_per_evaluation")
    assert sp["final_loss"] < sp["initial_loss"]  # SciPy made progress, so f* is a non-trivial target
    for name in ("ours", "torch_lbfgs"):
        r = b[name]
        _positive(r, "seconds", "evaluations_run", "best_loss", "seconds_per_evaluation")
        if r["reached"]:
            assert r["best_loss"] <= sp["final_loss"]
            _positive(r, "ratio_time_vs_scipy", "ratio_evaluations_vs_scipy")
    assert b["ours"]["reached"], "the device L-BFGS should reach SciPy's objective within 3x its evaluations"


def test_daemon_row(report):
    d = report["daemon"]
    if "status" in d:  # only acceptable if the daemon package is absent in this checkout
        assert d["status"].startswith("n/a")
    else:
        _positive(d, "startup_s", "cold_s", "warm_s", "daemon_rss_bytes")


def test_bad_options_are_clear_errors():
    with pytest.raises(SystemExit, match="at least 32 px"):
        main(["bench", "--quick", "--sizes", "20x20"])
    with pytest.raises(SystemExit, match="WIDTHxHEIGHT"):
        main(["bench", "--quick", "--baseline-size", "200"])
    with pytest.raises(SystemExit, match="unknown --skip"):
        main(["bench", "--quick", "--skip", "everything"])


def test_the_presets_section_times_a_real_aligned_face_edit_through_a_daemon():
    """The section run alone with random weights (the speed does not depend on them): a private daemon with the
    demo's painted-examples database edits grace_hopper as a 128-px face and in a 1000-px portrait."""
    import argparse

    from dfi_daemon.bench import presets

    args = argparse.Namespace(presets="fast", real_weights="random:0", threads=2)
    r = presets.run(args, lambda s: None, "cpu")
    assert [(x["photo"].split()[-1], x["quality"]) for x in r["rows"]] == [("face", "fast"), ("portrait", "fast")]
    fast = r["presets"]["fast"]
    for x in r["rows"]:
        assert x["iterations"] == fast["iterations"] and x["work_size"] == 128  # "fast" on a CPU: the 128-px crop
        _positive(x, "cold_s", "warm_s", "estimate_warm_s")
    text = "\n".join(presets.format_presets(r))
    assert "853x1000 portrait" in text and "fast" in text
