"""The wire protocol on its own: encoding, strict validation, typed errors (no daemon, no torch)."""

from __future__ import annotations

import random

import msgpack
import pytest
from dfi_wire import protocol as P


def img(w: int = 48, h: int = 40, fmt: str = "RGBA8") -> dict:
    return P.image_map(bytes(range(256)) * (w * h * P.FORMATS[fmt] // 256) + bytes(w * h * P.FORMATS[fmt] % 256),
                       w, h, fmt)


def mask(w: int = 48, h: int = 40) -> dict:
    return P.image_map(bytes(w * h), w, h, "L8")


def edit(**over) -> dict:
    msg = P.edit_request(img(), "facehair", [0.4, 0.8], mask(), req_id=7, iterations=10, k=4)
    msg.update(over)
    return msg


def roundtrip(msg: dict, limits: P.Limits = P.Limits()) -> P.Request:
    return P.validate_request(P.unpack(msgpack.packb(msg, use_bin_type=True)), limits)


def code_of(msg: dict, limits: P.Limits = P.Limits()) -> str:
    with pytest.raises(P.ProtocolError) as e:
        roundtrip(msg, limits)
    assert e.value.message and e.value.hint, "every error says what went wrong and what to do"
    return e.value.code


def test_valid_edit_request_is_decoded_exactly():
    req = roundtrip(edit())
    assert isinstance(req, P.Edit)
    assert req.op == "edit" and req.id == 7
    assert isinstance(req.image, P.Image)
    assert (req.image.width, req.image.height, req.image.channels) == (48, 40, 4)
    assert req.image.data == img()["data"]
    assert req.mask.format == "L8"
    assert list(req.strengths) == [0.4, 0.8]
    assert req.options.given() == {"iterations": 10, "k": 4}
    assert req.options == P.Options(iterations=10, k=4)


def test_pack_adds_version_and_replies_are_typed():
    assert P.unpack(P.pack({"op": "ping"}))["v"] == P.PROTOCOL_VERSION
    err = P.error_reply("queue_full", "Queue full.", req_id=3)
    assert err["type"] == "error" and err["code"] == "queue_full" and err["hint"] and err["id"] == 3


@pytest.mark.parametrize("msg,code", [
    ({"op": "ping"}, "unsupported_version"),
    ({"v": 99, "op": "ping"}, "unsupported_version"),
    ({"v": "1", "op": "ping"}, "unsupported_version"),
    ({"v": True, "op": "ping"}, "unsupported_version"),
    ({"v": 1, "op": "explode"}, "unknown_op"),
    ({"v": 1, "op": 5}, "unknown_op"),
    ({"v": 1}, "unknown_op"),
    ({"v": 1, "op": "ping", "extra": 1}, "bad_field"),
    ({"v": 1, "op": "ping", "id": [1]}, "bad_field"),
    ({"v": 1, "op": "ping", "id": "x" * 65}, "bad_field"),
    ({"v": 1, "op": "cancel"}, "bad_field"),
    ({"v": 1, "op": "cancel", "job": 3}, "bad_field"),
    ({"v": 1, "op": "heartbeat", "jobs": "job-1"}, "bad_field"),
])
def test_envelope_errors(msg, code):
    assert code_of(msg) == code


@pytest.mark.parametrize("change,code", [
    ({"image": "pixels"}, "bad_field"),
    ({"image": {**img(), "width": "48"}}, "bad_field"),
    ({"image": {**img(), "width": -5}}, "bad_field"),
    ({"image": {**img(), "width": 10**9}}, "bad_field"),
    ({"image": {**img(), "width": 2**40, "height": 2**40}}, "bad_field"),
    ({"image": {**img(), "width": 5000, "height": 5000}}, "image_too_large"),
    ({"image": {**img(), "width": 31}}, "image_too_small"),
    ({"image": {**img(), "data": img()["data"][:-1]}}, "bad_field"),
    ({"image": {**img(), "data": img()["data"] + b"x"}}, "bad_field"),
    ({"image": {**img(), "data": "text"}}, "bad_field"),
    ({"image": {**img(), "format": "RGB16"}}, "bad_field"),
    ({"image": {**img(), "alpha": True}}, "bad_field"),
    ({"mask": mask(40, 48)}, "bad_field"),
    ({"mask": img()}, "bad_field"),
    ({"strengths": []}, "bad_field"),
    ({"strengths": 0.4}, "bad_field"),
    ({"strengths": [float("nan")]}, "bad_field"),
    ({"strengths": [float("inf")]}, "bad_field"),
    ({"strengths": ["0.4"]}, "bad_field"),
    ({"strengths": [0.1] * 17}, "bad_field"),
    ({"attribute": None}, "bad_field"),
    ({"options": {"iterations": 0}}, "bad_field"),
    ({"options": {"iterations": 2.5}}, "bad_field"),
    ({"options": {"K": 3}}, "bad_field"),
    ({"options": {"align": "yes"}}, "bad_field"),
    ({"options": {"scaling": "log"}}, "bad_field"),
    ({"options": {"quality": "ultra"}}, "bad_field"),
    ({"options": {"quality": 3}}, "bad_field"),
    ({"options": []}, "bad_field"),
])
def test_edit_field_errors(change, code):
    assert code_of(edit(**change)) == code


def test_pixel_limit_is_checked_before_the_byte_count():
    # a header claiming a big image with almost no data: refused on its size, never allocated
    big = {"width": 4000, "height": 4000, "format": "RGBA8", "data": b"\0"}
    assert code_of(edit(image=big, mask=None)) == "image_too_large"
    assert code_of(edit(image={**img(), "width": 64, "height": 64}), P.Limits(max_pixels=64 * 63)) == \
        "image_too_large"


def test_inpaint_needs_a_mask_and_takes_one_strength():
    ok = roundtrip(P.inpaint_request(img(), mask(), 1.5))
    assert isinstance(ok, P.Inpaint) and ok.strength == 1.5 and ok.mask.width == 48
    assert code_of({**P.inpaint_request(img(), mask()), "mask": None}) == "bad_field"
    bad = P.inpaint_request(img(), mask())
    del bad["mask"]
    assert code_of(bad) == "bad_field"
    assert code_of({**P.inpaint_request(img(), mask()), "options": {"feather": 3.0}}) == "bad_field"
    aligned = roundtrip({**P.inpaint_request(img(), mask()), "options": {"align": False}})
    assert aligned.options.given() == {"align": False}


def test_unpack_rejects_non_maps_and_garbage():
    for frame in [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb("op"), b"\x81\xa2op",
                  b"\xc6\xff\xff\xff\xff" + b"\0" * 10, b"\xdd\xff\xff\xff\xff", b"\x91" * 5000 + b"\x00"]:
        with pytest.raises(P.ProtocolError) as e:
            P.unpack(frame)
        assert e.value.code == "bad_message"
    with pytest.raises(P.ProtocolError) as e:
        P.unpack(b"\0" * 100, max_bytes=50)
    assert e.value.code == "too_large"


def test_fuzzed_messages_only_ever_raise_protocol_errors():
    """Mutated valid requests: every outcome is a valid request or a typed ProtocolError, never a crash."""
    rng = random.Random(1)
    base = P.pack(edit())
    data = img()["data"]
    start = base.find(data)
    # most mutations go to the structure (header, sizes, keys), not to the pixel bytes
    spots = [i for i in range(len(base)) if not start <= i < start + len(data)]
    outcomes = {"ok": 0}
    for _ in range(3000):
        b = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            kind = rng.random()
            pos = rng.choice(spots) if rng.random() < 0.9 else rng.randrange(len(b))
            pos = min(pos, len(b) - 1)
            if kind < 0.6:
                b[pos] = rng.randrange(256)
            elif kind < 0.8:
                del b[pos:]
                if not b:
                    b = bytearray(b"\x80")
            else:
                b[pos:pos + 1] = rng.randbytes(rng.randint(1, 8))
        try:
            P.validate_request(P.unpack(bytes(b)), P.Limits())
            outcomes["ok"] += 1
        except P.ProtocolError as e:
            assert e.code in P.ERRORS
            outcomes[e.code] = outcomes.get(e.code, 0) + 1
    assert outcomes.get("bad_message", 0) > 100 and outcomes.get("bad_field", 0) > 20, outcomes


def test_error_codes_have_hints():
    assert all(isinstance(h, str) and h for h in P.ERRORS.values())
    for code in ("queue_full", "unknown_op", "unsupported_version", "cancelled", "client_gone", "align_unavailable"):
        assert code in P.ERRORS


def test_one_option_table_names_every_option_and_where_it_is_allowed():
    """EDIT_OPTIONS, INPAINT_OPTIONS, PREVIEW_OPTIONS and the typed Options are one table: every option of a
    list is a field of Options, is checked by its row, and an option missing from a request is None in the object."""
    import dataclasses

    names = [f.name for f in dataclasses.fields(P.Options)]
    assert set(P.EDIT_OPTIONS) | set(P.INPAINT_OPTIONS) | set(P.PREVIEW_OPTIONS) == set(names)
    assert "feather" in P.EDIT_OPTIONS and "feather" not in P.INPAINT_OPTIONS
    assert "components" in P.EDIT_OPTIONS and "components" not in P.INPAINT_OPTIONS
    assert P.validate_option("components", ["tone", "shape"]) == ["shape", "tone"]
    with pytest.raises(P.ProtocolError):
        P.validate_option("k", 0)
    req = roundtrip(P.edit_request(img(), "facehair", [1.0], components=["texture"], quality="fast"))
    assert req.options.components == ("texture",) and req.options.quality == "fast" and req.options.k is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.options.k = 3  # type: ignore[misc]


def test_requests_without_fields_and_about_jobs_are_typed():
    assert type(roundtrip(P.simple("ping", req_id="a"))) is P.Request
    cancel = roundtrip(P.simple("cancel", job="job-3"))
    assert isinstance(cancel, P.JobRef) and cancel.job == "job-3" and cancel.op == "cancel"
    beat = roundtrip(P.simple("heartbeat", jobs=["job-1", "job-2"]))
    assert isinstance(beat, P.Heartbeat) and beat.jobs == ("job-1", "job-2")
    hello = roundtrip(P.hello("test"))
    assert isinstance(hello, P.Hello) and hello.versions == tuple(P.SUPPORTED_VERSIONS) and hello.client == "test"


# ---------------------------------------------------------------------- live previews (issue 23)
def preview(**over) -> dict:
    msg = P.preview_request("s1", "facehair", 0.5, img(), mask(), req_id=9, iterations=3, k=4, refine=False)
    msg.update(over)
    return msg


def test_a_preview_request_is_decoded_exactly():
    req = roundtrip(preview())
    assert isinstance(req, P.Preview) and req.op == "preview" and req.id == 9
    assert (req.session, req.attribute, req.strength) == ("s1", "facehair", 0.5)
    assert req.image.data == img()["data"] and req.mask.format == "L8"
    assert req.options == P.Options(iterations=3, k=4, refine=False)
    later = roundtrip(P.preview_request("s1", "facehair", 0.7))  # later previews of a session: no image
    assert later.image is None and later.mask is None and later.options == P.Options()
    assert "preview" in P.OPS and isinstance(P.validate_request(P.unpack(P.pack(preview()))), P.JobRequest)


def test_preview_options_are_the_preview_rows_of_the_one_table():
    assert set(P.PREVIEW_OPTIONS) == {"align", "k", "components", "iterations", "refine"}
    assert "refine" not in P.EDIT_OPTIONS and "refine" not in P.INPAINT_OPTIONS
    assert roundtrip(preview(options={"components": ["tone", "shape"]})).options.components == ("shape", "tone")
    for bad in ({"refine": 1}, {"scaling": "none"}, {"preview": 1.0}, {"k": 0}, {"components": []}):
        assert code_of(preview(options=bad)) == "bad_field", bad
    assert code_of(edit(options={"refine": True})) == "bad_field"


@pytest.mark.parametrize("over", [
    {"session": ""}, {"session": "x" * 65}, {"session": 3}, {"strength": "0.5"}, {"strength": float("nan")},
    {"strength": 101.0}, {"attribute": None}, {"strengths": [0.5]}, {"image": None, "mask": mask()},
])
def test_bad_preview_requests_are_refused_with_bad_field(over):
    assert code_of(preview(**over)) == "bad_field"


def test_preview_without_session_or_strength_is_refused():
    for key in ("session", "attribute", "strength"):
        msg = preview()
        del msg[key]
        assert code_of(msg) == "bad_field", key
    assert code_of(preview(image=P.image_map(bytes(16 * 16 * 3), 16, 16, "RGB8"), mask=None)) == "image_too_small"


def test_live_preview_error_codes_say_what_to_do():
    assert "image" in P.ERRORS["unknown_session"] and P.ERRORS["superseded"]
    err = P.error_reply("superseded", "Replaced.", req_id=4)
    assert err["hint"] == P.ERRORS["superseded"]


def test_request_builders_stay_importable_from_protocol():
    """The plug-in imports ``dfi_wire.protocol`` only: the builders moved to ``requests`` are there too, and
    ``requests`` can be imported first without an import cycle."""
    import subprocess
    import sys

    for name in ("edit_request", "inpaint_request", "preview_request", "image_map", "hello", "simple"):
        assert getattr(P, name).__module__ == "dfi_wire.requests", name
    code = "import dfi_wire.requests as R; print(R.simple('ping')['v'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == str(P.PROTOCOL_VERSION), out.stderr
