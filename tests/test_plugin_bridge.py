"""The plug-in's dfi_bridge.py as `dfi gimp install` installs it (with dfi_wire beside it), outside GIMP.

Logic (strengths, crop boxes, names, settings) is tested directly; the daemon
connection against real daemons and the real ``dfi`` command (auto-start).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from helpers.daemon_process import DaemonProcess, kill_daemons
from helpers.installed_plugin import installed_module

REPO = Path(__file__).resolve().parent.parent
DFI = str(Path(sys.executable).parent / "dfi")
FAST_DAEMON = ["--weights", "random:0", "--database", "synthetic", "--threads", "1"]


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    """dfi_bridge imported from a plug-in folder made by the installer."""
    with installed_module(tmp_path_factory.mktemp("gimp") / "3.0", "dfi_bridge") as module:
        yield module


@pytest.fixture(scope="module")
def link(tmp_path_factory):
    """dfi_link (the daemon connection) imported from a plug-in folder made by the installer."""
    with installed_module(tmp_path_factory.mktemp("gimp") / "3.0", "dfi_link") as module:
        yield module


def test_strengths(bridge):
    assert bridge.parse_strengths("0.4, 0.8 1.2;2") == [0.4, 0.8, 1.2, 2.0]
    assert bridge.parse_strengths("  ") is None
    assert bridge.parse_strengths("-1") == [-1.0]
    with pytest.raises(bridge.PluginError, match="'lots' is not a number"):
        bridge.parse_strengths("0.5, lots")
    with pytest.raises(bridge.PluginError, match="out of range"):
        bridge.parse_strengths("nan")
    with pytest.raises(bridge.PluginError, match="at most 16"):
        bridge.parse_strengths(" ".join(["1"] * 17))


def test_the_dialog_names_a_sensible_strength_range_from_the_daemon(bridge):
    attrs = [{"name": "facehair", "label": "Add facial hair", "default_strength": 0.3, "strength_max": 1.0,
              "scaling": "relative"}]
    hair = bridge.MENU_BY_PROC["plug-in-dfi-facial-hair"]
    hint = bridge.strength_hint(hair, attrs)
    assert "comma-separated" in hint and "0–1" in hint and "default 0.3" in hint
    assert bridge.strength_hint(hair, []) == ""  # an old daemon without ranges: no invented numbers
    fill = next(m for m in bridge.MENU if m.inpaint)
    assert "default" in bridge.strength_hint(fill, attrs)
    smile = [{**attrs[0], "name": "smile", "components": {"shape": 1.0, "tone": 0.5, "texture": 0.5}}]
    assert "its mix: shape 1, tone 0.5, texture 0.5" in bridge.strength_hint(bridge.MENU_BY_PROC["plug-in-dfi-smile"],
                                                                            smile)


def test_the_dialog_says_what_each_quality_costs_on_the_daemons_device(bridge):
    server = {"device": "cpu", "presets": {"fast": {"text": "150 iterations, faces up to 128 px"},
                                           "balanced": {"text": "150 iterations, faces up to 256 px"},
                                           "best": {"text": "300 iterations, faces up to 256 px"}}}
    hint = bridge.quality_hint(server)
    assert hint.startswith("Quality on this daemon (cpu): Fast = 150 iterations, faces up to 128 px;"), hint
    assert "Best = 300 iterations" in hint
    assert bridge.quality_hint({"device": "cpu"}) == ""  # an older daemon: nothing invented


def test_crop_box_adds_context_and_stays_inside_the_layer(bridge):
    assert bridge.crop_box(400, 300, None) == (0, 0, 400, 300)
    assert bridge.crop_box(400, 300, (100, 100, 200, 180)) == (75, 80, 150, 120)  # 25 % of each side added
    assert bridge.crop_box(400, 300, (-50, -50, 40, 40)) == (0, 0, 50, 50)  # clipped to the layer
    assert bridge.crop_box(1000, 1000, (200, 200, 800, 700)) == (136, 136, 728, 628)  # context capped at 64 px
    x, y, w, h = bridge.crop_box(400, 300, (390, 295, 400, 300))  # tiny selection in a corner
    assert (w, h) == (32, 32) and x + w == 400 and y + h == 300
    with pytest.raises(bridge.PluginError, match="does not overlap"):
        bridge.crop_box(400, 300, (500, 10, 600, 50))
    with pytest.raises(bridge.PluginError, match="at least 32x32"):
        bridge.crop_box(20, 300, None)


def test_layer_names(bridge):
    assert bridge.layer_name(bridge.layer_noun("Add _facial hair..."), 0.8) == "DFI facial hair 0.8"
    assert bridge.layer_name(bridge.layer_noun("Add facial hair (synthetic)"), 1.0) == "DFI facial hair 1"
    assert bridge.layer_name(bridge.layer_noun("_Older..."), 0.4) == "DFI older 0.4"
    assert bridge.layer_name(bridge.layer_noun("_Fill selection..."), None) == "DFI fill selection"


def test_options(bridge):
    # the preset is sent by name: the daemon decides what it costs on its device
    assert bridge.edit_options("fast", 0, "channel", "auto") == {"quality": "fast", "color": "channel"}
    assert bridge.edit_options("best", 7, "none", "off") == {"quality": "best", "iterations": 7, "color": "none",
                                                             "align": False}
    with pytest.raises(bridge.PluginError, match="Unknown quality"):
        bridge.edit_options("ultra", 0, "channel", "auto")
    # the parts of the edit: the attribute's mix unless asked, each choice a list the daemon accepts
    assert "components" not in bridge.edit_options("fast", 0, "channel", "auto", "auto")
    for parts in ("shape-tone", "all", "texture"):
        comps = bridge.edit_options("fast", 0, "channel", "auto", parts)["components"]
        assert bridge.P.validate_option("components", comps) == comps
    assert bridge.edit_options("fast", 0, "channel", "auto", "shape-tone")["components"] == ["shape", "tone"]
    with pytest.raises(bridge.PluginError, match="Unknown parts"):
        bridge.edit_options("fast", 0, "channel", "auto", "colour")


def test_the_edit_box_is_the_selection_in_layer_coordinates_with_context(bridge):
    # a layer at (20, 12) in the image: the selection's image box (120, 112)-(220, 192) is (100, 100)-(200, 180) on it
    assert bridge.edit_box(400, 300, (20, 12), (120, 112, 220, 192), False, 10**6) == (75, 80, 150, 120)
    assert bridge.edit_box(400, 300, (20, 12), None, False, 10**6) == (0, 0, 400, 300)
    with pytest.raises(bridge.PluginError, match="Fill selection needs a selection"):
        bridge.edit_box(400, 300, (0, 0), None, True, 10**6)
    with pytest.raises(bridge.PluginError) as e:
        bridge.edit_box(400, 300, (0, 0), None, False, 1000)
    assert str(e.value) == ("The region to edit is 400x300 pixels, over the daemon's limit of 1,000.\n"
                            "Select just the face, or scale the image down (Image → Scale Image).")


def test_the_mask_sent_is_every_pixel_the_selection_touches_in_any_format(bridge):
    import struct

    assert bridge.touched(bytes([0, 1, 128, 255]), 1) == bytes([0, 255, 255, 255])
    u16 = struct.pack("<4H", 0, 1, 256, 65535)  # Y u16: a weight in either byte counts
    assert bridge.touched(u16, 2) == bytes([0, 255, 255, 255])
    floats = struct.pack("<4f", 0.0, 1e-40, 0.5, 1.0)  # Y float, down to a denormal
    assert bridge.touched(floats, 4) == bytes([0, 255, 255, 255])


def test_above_8_bits_only_changed_pixels_are_merged_keeping_the_weights_bytes(bridge):
    import struct

    sent = bytes([10, 20, 30, 255] * 3)
    result = sent[:4] + bytes([11, 20, 30, 255]) + sent[8:]  # only the middle pixel changed (by one level)
    weights = struct.pack("<3H", 65535, 300, 7)
    assert bridge.only_changed(weights, sent, result) == struct.pack("<3H", 0, 300, 0)
    assert bridge.only_changed(bytes([255, 9, 255]), sent, result) == bytes([0, 9, 0])


def test_a_region_without_a_selection_merges_everywhere_and_sends_no_mask(bridge):
    pixels = bytes(range(256)) * 16  # 32x32 RGBA8
    whole = bridge.Region.read((0, 0, 32, 32), pixels, None)
    assert whole.mask is None and whole.weights == b"\xff" * 1024 and whole.weights_format == "Y u8"
    assert whole.photo == bridge.P.image_map(pixels, 32, 32, "RGBA8")
    soft = bridge.Region.read((4, 5, 32, 32), pixels, (bytes([0, 0, 1, 0]) * 512, "Y u16"))
    assert soft.mask == bridge.P.image_map(bytes([0, 255]) * 512, 32, 32, "L8"), "a faint weight is still edited"
    changed = bytes([pixels[0] ^ 1]) + pixels[1:]
    assert soft.merge_weights(changed, exact=False) is soft.weights, "8 bits: the selection as read"
    assert soft.merge_weights(changed, exact=True) == bytes(2048), "only the first pixel changed, unselected"


ATTRS = [{"name": "facehair", "label": "Add facial hair", "default_strength": 0.3},
         {"name": "glasses", "label": "Glasses"}]
DIALOG = {"quality": "fast", "iterations": 0, "color": "channel", "alignment": "auto", "parts": "auto",
          "strengths": None, "strength": 0.0}  # GIMP gives None for an empty string


def _request(bridge, proc, preview_s=0.0, **changed):
    item = bridge.MENU_BY_PROC[proc]
    args = {name: {**DIALOG, **changed}.get(name) for name in bridge.argument_names(item)}
    selection = (b"\xff" * 1024, "Y u8")
    return bridge.build_request(item, args, ATTRS, bridge.Region.read((0, 0, 32, 32), bytes(4096), selection),
                                preview_s)


def test_the_request_is_a_valid_plain_map_named_for_its_layers(bridge):
    plan = _request(bridge, "plug-in-dfi-facial-hair")
    assert (plan.noun, plan.strengths) == ("facial hair", [0.3]), "no strengths: the attribute's default"
    assert plan.msg["options"] == {"quality": "fast", "color": "channel"} and "preview" not in plan.msg["options"]
    assert bridge.P.unpack(bridge.P.pack(plan.msg)) == plan.msg
    bridge.P.validate_request(bridge.P.unpack(bridge.P.pack(plan.msg)))  # raises if the daemon would refuse it
    chosen = _request(bridge, "plug-in-dfi-attribute", 2.0, attribute=" glasses ", strengths="0.2, 0.4")
    assert (chosen.noun, chosen.strengths, chosen.msg["attribute"]) == ("glasses", [0.2, 0.4], "glasses")
    assert chosen.msg["options"]["preview"] == 2.0
    fill = _request(bridge, "plug-in-dfi-fill", strength=0.0)
    assert (fill.noun, fill.strengths, fill.msg["op"]) == ("fill selection", [None], "inpaint")
    assert "strength" not in fill.msg, "0 means the daemon's default"
    assert _request(bridge, "plug-in-dfi-fill", strength=1.5).msg["strength"] == 1.5
    bridge.P.validate_request(fill.msg)


def test_bad_request_arguments_say_what_to_do(bridge):
    with pytest.raises(bridge.PluginError) as e:
        _request(bridge, "plug-in-dfi-attribute", attribute="hat")
    assert str(e.value) == "The DFI daemon does not define the attribute 'hat'.\nDefined: facehair, glasses."
    with pytest.raises(bridge.PluginError, match="'x' is not a number"):
        _request(bridge, "plug-in-dfi-facial-hair", strengths="x")
    with pytest.raises(bridge.PluginError, match="Unknown quality"):  # checked before the attribute, as before
        _request(bridge, "plug-in-dfi-attribute", attribute="hat", quality="ultra")


def test_the_result_must_hold_one_rgba8_image_per_layer(bridge):
    good = {"width": 32, "height": 32, "format": "RGBA8", "data": bytes(4096)}
    assert bridge.check_images({"images": [good, good]}, 2, 32, 32) == [good, good]
    with pytest.raises(bridge.PluginError, match="returned 1 images for 2 strengths"):
        bridge.check_images({"images": [good]}, 2, 32, 32)
    with pytest.raises(bridge.PluginError, match="wrong size or format") as e:
        bridge.check_images({"images": [{**good, "data": bytes(4095)}]}, 1, 32, 32)
    assert "dfi daemon logs" in str(e.value)
    with pytest.raises(bridge.PluginError, match="wrong size or format"):
        bridge.check_images({"images": [{**good, "format": "RGB8"}]}, 1, 32, 32)


def test_settings_from_file_and_environment(bridge, tmp_path):
    (tmp_path / bridge.CONFIG_NAME).write_text(json.dumps(
        {"endpoint": "ipc:///a.sock", "dfi": ["/x/dfi"], "autostart": True, "installed_from": "/repo"}))
    s = bridge.Settings.load(tmp_path, env={})
    assert (s.endpoint, s.dfi, s.autostart) == ("ipc:///a.sock", ["/x/dfi"], True)
    s = bridge.Settings.load(tmp_path, env={"DFI_ENDPOINT": "tcp://127.0.0.1:9", "DFI_AUTOSTART": "0"})
    assert (s.endpoint, s.autostart) == ("tcp://127.0.0.1:9", False)
    with pytest.raises(bridge.PluginError, match="does not know the daemon's endpoint"):
        bridge.Settings.load(tmp_path / "empty", env={})
    (tmp_path / bridge.CONFIG_NAME).write_text("{not json")
    with pytest.raises(bridge.PluginError, match="unreadable"):
        bridge.Settings.load(tmp_path, env={})


def test_no_daemon_and_no_autostart_fails_fast(bridge, tmp_path, link):
    s = bridge.Settings(endpoint=f"ipc://{tmp_path}/none.sock", autostart=False, connect_timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(bridge.PluginError, match="not running") as e:
        link.connect(s)
    assert time.monotonic() - t0 < 5
    assert "dfi daemon start" in str(e.value)


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """Private daemon folders for daemons that dfi starts; they are killed afterwards."""
    monkeypatch.setenv("DFI_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("DFI_STATE_DIR", str(tmp_path / "state"))
    yield tmp_path / "run"
    kill_daemons(tmp_path / "run")


@pytest.mark.slow  # the real dfi starts a daemon process
def test_autostart_through_the_real_dfi(bridge, runtime, link):
    s = bridge.Settings(endpoint=f"ipc://{runtime}/daemon.sock", dfi=[DFI], daemon_args=FAST_DAEMON,
                        connect_timeout_s=1.0, start_timeout_s=120)
    said, pulses = [], []
    client = link.connect(s, said.append, lambda: pulses.append(1))
    try:
        assert client.ping()["type"] == "pong"
        assert "RANDOM" in client.hello()["weights"]
    finally:
        client.close()
    assert said[0].startswith("Starting the DFI daemon") and pulses, "no visible status while starting"


@pytest.mark.slow  # the real dfi tries to start a daemon process
def test_autostart_failure_says_why(bridge, runtime, link):
    s = bridge.Settings(endpoint=f"ipc://{runtime}/daemon.sock", dfi=[DFI], connect_timeout_s=0.5,
                        daemon_args=["--weights", str(runtime / "missing.pth"), "--database", "none"])
    with pytest.raises(bridge.PluginError, match="Starting the DFI daemon failed") as e:
        link.connect(s)
    assert "missing.pth" in str(e.value)
    s.dfi = [str(runtime / "no-such-dfi")]
    with pytest.raises(bridge.PluginError, match="Could not run"):
        link.connect(s)


@pytest.mark.slow  # a daemon process runs the job
def test_progress_events_reach_the_callback(bridge, tmp_path, link):
    import numpy as np

    rgba = np.random.default_rng(0).integers(0, 255, (40, 48, 4), np.uint8).tobytes()
    with DaemonProcess(tmp_path) as daemon:
        client = link.connect(bridge.Settings(endpoint=daemon.endpoint))
        try:
            msg = bridge.P.edit_request(bridge.P.image_map(rgba, 48, 40, "RGBA8"), "facehair", [1.0, 2.0],
                                        **bridge.edit_options("fast", 2, "channel", "auto"))
            seen = []
            result = link.run_job(client, msg, lambda f, text: seen.append((f, text)))
            hint = bridge.quality_hint(client.server)  # the line the dialog shows, from a real daemon's hello
        finally:
            client.close()
    assert hint.startswith("Quality on this daemon (cpu): Fast = 150 iterations"), hint
    assert len(result["images"]) == 2
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(seen) >= 3
    assert any("iteration" in text for _, text in seen), seen


def test_the_progress_text_estimates_the_time_left(link):
    now = [0.0]
    eta = link.Eta(lambda: now[0])
    assert eta.update("features", 0.1) is None, "only the reconstruction's pace counts"
    assert eta.update("reconstruct", 0.25) is None
    now[0] = 10.0
    left = eta.update("reconstruct", 0.50)  # a quarter of the job in 10 s: half of it in 20 s
    assert left == pytest.approx(20.0)
    told = link.Eta(lambda: now[0])  # the daemon's estimate counts until the reconstruction's pace is known
    told.expect(30.0)
    assert told.update("queued", 0.0) is None, "waiting behind other jobs is not this job's time"
    now[0] = 15.0
    assert told.update("started", 0.0) == pytest.approx(30.0), "the job's own time starts when it does"
    now[0] = 23.0
    assert told.update("features", 0.1) == pytest.approx(22.0)
    assert told.update("reconstruct", 0.25) == pytest.approx(22.0)
    now[0] = 33.0
    assert told.update("reconstruct", 0.50) == pytest.approx(20.0), "then the measured pace takes over"
    assert [link.duration(s) for s in (0.2, 44.6, 200, 1500, 3900)] == ["1 s", "45 s", "3 min 20 s", "25 min",
                                                                            "1 h 5 min"]


def test_a_wedged_job_is_cancelled_after_the_stall_timeout(bridge, link):
    """A daemon that answers heartbeats but never progresses (a fake: the real one cannot be wedged on purpose)."""
    import threading

    import zmq

    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    cancelled = []

    def serve():
        while router.poll(5000):
            peer, frame = router.recv_multipart()
            msg = bridge.P.unpack(frame)
            if msg["op"] == "edit":
                reply = bridge.P.reply("accepted", msg["id"], job="job-1", position=0, heartbeat_interval_s=0.2)
            elif msg["op"] == "heartbeat":
                reply = bridge.P.reply("heartbeat", msg["id"], jobs={"job-1": "running"})
            else:
                cancelled.append(msg.get("job"))
                return
            router.send_multipart([peer, bridge.P.pack(reply)])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = link.Client(f"tcp://127.0.0.1:{port}", timeout=5.0)
    try:
        msg = bridge.P.edit_request(bridge.P.image_map(b"\0" * 32 * 32 * 3, 32, 32, "RGB8"), "facehair", [1.0])
        t0 = time.monotonic()
        with pytest.raises(link.DaemonError, match="made no progress") as e:
            link.run_job(client, msg, lambda f, t: None, stall_timeout=1.5)
        assert e.value.code == "stalled" and 1.5 <= time.monotonic() - t0 < 5
        thread.join(5)
        assert cancelled == ["job-1"], "the stalled job was not cancelled on the daemon"
    finally:
        client.close()
        router.close(linger=0)


def test_the_gimp_side_uses_only_names_the_bridge_and_the_link_define(bridge, link):
    """gimp-dfi.py and dfi_live.py run only inside GIMP (they import gi): a name they take from dfi_bridge (``B.``)
    or dfi_link (``L.``) that is not there fails only there, and only on that path (an error's handler, say).
    Read them and check every such name against the installed modules."""
    import re

    for name in ("gimp-dfi.py", "dfi_live.py"):
        text = (REPO / "plugin" / "dfi_plugin" / name).read_text(encoding="utf-8")
        for alias, module in (("B", bridge), ("L", link)):
            used = set(re.findall(rf"(?<![\w.]){alias}\.([A-Za-z_]\w*)", text))
            assert used, f"{name} uses nothing from {alias}: the check reads the wrong alias"
            missing = sorted(n for n in used if not hasattr(module, n))
            assert not missing, f"{name}: {alias}.{missing} do not exist in {module.__name__}"
