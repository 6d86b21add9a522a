"""Neighbour database: tables in three formats, neighbour sets, custom attributes, resume, errors, cache, CLI."""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from dfi_daemon.cli import main as cli_main
from helpers.faces_fixtures import (
    CELEBA_COLUMNS,
    LFW_COLUMNS,
    build_photos,
    draw,
    lfw_rel,
    people,
    write_celeba,
    write_csv,
    write_lfw,
)
from PIL import Image

from dfi_engine import EditOptions, ReconstructConfig
from dfi_engine.errors import CancelledError
from dfi_engine.faces import database as dbm
from dfi_engine.faces.attributes import AttributeDef, load_definitions
from dfi_engine.faces.builder import build
from dfi_engine.faces.cache import FeatureCache
from dfi_engine.faces.errors import (
    AttributeDefinitionError,
    DatabaseError,
    TableError,
    TooFewNeighboursError,
)
from dfi_engine.faces.neighbours import attribute_distance, select
from dfi_engine.faces.pipeline import edit_attribute
from dfi_engine.faces.tables import read_table
from dfi_engine.synthetic import face, faces

RES = 48
FAST = EditOptions(scaling="none", reconstruct=ReconstructConfig(iterations=3))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    rows = people(24)
    draw(rows, root / "images", RES)
    write_lfw(rows, root / "lfw_attributes.txt")
    write_celeba(rows, root / "list_attr_celeba.txt")
    write_csv(rows, root / "attrs.csv")
    return root, rows


@pytest.fixture(scope="module")
def lfw_db(dataset):
    root, rows = dataset
    plan, missing = dbm.plan_from_table(root / "images", root / "lfw_attributes.txt")
    assert not missing
    build(root / "lfw.db", plan, RES, assume_aligned=True, progress=False)
    return dbm.Database(root / "lfw.db")


def test_tables_parse_in_all_formats(dataset):
    root, rows = dataset
    for name, fmt in (("lfw_attributes.txt", "lfw"), ("list_attr_celeba.txt", "celeba"), ("attrs.csv", "csv")):
        t = read_table(root / name)
        assert t.format == fmt and len(t) == len(rows)
        assert t.files == [lfw_rel(r) for r in rows]
        male = t.scores[:, 0]
        assert ((male > 0) == np.array([r["scores"][0] > 0 for r in rows])).all()
    assert read_table(root / "lfw_attributes.txt").identities[0] == "Person A"


def test_bad_tables_are_clear_errors(tmp_path):
    (tmp_path / "a.txt").write_text("5\nMale Young\n001.jpg 1 -1\n")
    with pytest.raises(TableError, match="declares 5 images but lists 1"):
        read_table(tmp_path / "a.txt")
    (tmp_path / "b.txt").write_text("# 1 images\n#\tperson\timagenum\tMale\tYouth\nAl Bo\t1\t0.5\n")
    with pytest.raises(TableError, match=r"b.txt:3: 1 scores, expected 2"):
        read_table(tmp_path / "b.txt")
    (tmp_path / "c.txt").write_text("hello world\n")
    with pytest.raises(TableError, match="Cannot tell the format"):
        read_table(tmp_path / "c.txt")


def _expected(rows, inp, source, target, k):
    """Brute force, written independently: match gender and smile, exclude the person, nearest by RMS score."""
    x = rows[inp]["scores"]

    def ok(r, cons):
        return all((r["scores"][LFW_COLUMNS.index(c)] > 0) == want for c, want in cons.items())

    cands = [j for j, r in enumerate(rows) if r["person"] != rows[inp]["person"]
             and (r["scores"][0] > 0) == (x[0] > 0) and (r["scores"][2] > 0) == (x[2] > 0)]

    def dist(j):
        return math.sqrt(sum((a - b) ** 2 for a, b in zip(rows[j]["scores"], x)) / len(x))

    src = sorted([j for j in cands if ok(rows[j], source)], key=dist)[:k]
    tgt = sorted([j for j in cands if ok(rows[j], target)], key=dist)[:k]
    return src, tgt


def test_lfw_database_gives_the_expected_neighbour_sets(lfw_db, dataset):
    _, rows = dataset
    facehair = load_definitions().get("facehair")
    paths = lfw_db.paths()
    for inp in (1, 5, 13):
        x = lfw_db.scores[inp]
        sel = select(lfw_db, facehair, x, k=2, minimum=1, exclude=inp)
        src, tgt = _expected(rows, inp, {"No Beard": True, "Mustache": False}, {"No Beard": False, "Mustache": True},
                             2)
        assert [paths[j] for j in sel.source] == [lfw_rel(rows[j]) for j in src]
        assert [paths[j] for j in sel.target] == [lfw_rel(rows[j]) for j in tgt]
        assert inp not in sel.source and inp not in sel.target
        person = lfw_db.identity[inp]
        assert not (lfw_db.identity[np.concatenate([sel.source, sel.target])] == person).any()


@pytest.mark.parametrize("table", ["list_attr_celeba.txt", "attrs.csv"])
def test_celeba_and_csv_databases_select_the_same_people(dataset, lfw_db, tmp_path, table):
    root, rows = dataset
    plan, _ = dbm.plan_from_table(root / "images", root / table)
    build(tmp_path / "db", plan, RES, assume_aligned=True, progress=False)
    db = dbm.Database(tmp_path / "db")
    assert {"male", "young", "senior", "beard", "no_beard", "mustache", "smiling"} <= set(db.columns)
    assert (np.sign(db.column("senior")) == -np.sign(db.column("young"))).all()
    facehair = load_definitions().get("facehair")
    for inp in (1, 5):
        a = select(db, facehair, db.scores[inp], k=50, minimum=1, exclude=inp)
        b = select(lfw_db, facehair, lfw_db.scores[inp], k=50, minimum=1, exclude=inp)
        pa, pb = db.paths(), lfw_db.paths()
        same = rows[inp]["person"].replace(" ", "_") + "/"
        if table == "list_attr_celeba.txt":  # CelebA's attribute file has no identities: nothing to exclude by
            assert db.identities == []
            pa = [p if not p.startswith(same) else "(same person)" for p in pa]
        got_src = {pa[j] for j in a.source} - {"(same person)"}
        got_tgt = {pa[j] for j in a.target} - {"(same person)"}
        assert got_src == {pb[j] for j in b.source}
        assert got_tgt == {pb[j] for j in b.target}
        src, tgt = _expected(rows, inp, {"No Beard": True, "Mustache": False},
                             {"No Beard": False, "Mustache": True}, 50)
        assert got_src == {lfw_rel(rows[j]) for j in src}
        assert got_tgt == {lfw_rel(rows[j]) for j in tgt}
        if table == "attrs.csv":  # real-valued: the order matches the brute force too
            assert [pa[j] for j in a.source] == [lfw_rel(rows[j]) for j in src]


def test_attribute_distance_ignores_aliases(lfw_db):
    x = lfw_db.scores[0]
    d = attribute_distance(lfw_db, x)
    assert d[0] == 0.0
    use = [j for j, c in enumerate(lfw_db.columns) if c != "beard"]
    np.testing.assert_allclose(d, np.sqrt(((lfw_db.scores[:, use] - x[use]) ** 2).mean(1)), rtol=1e-5)


def test_too_few_neighbours_says_how_many_and_what_to_add(lfw_db):
    facehair = load_definitions().get("facehair")
    with pytest.raises(TooFewNeighboursError) as e:
        select(lfw_db, facehair, lfw_db.scores[1], k=100, minimum=10, exclude=1)
    msg = str(e.value)
    assert "source images" in msg and "target images" in msg and "at least 10" in msg
    assert "dfi db add" in msg and e.value.code == "too_few_neighbours"
    assert "male=True" in msg


def test_missing_attribute_is_a_clear_error(lfw_db):
    glasses = AttributeDef("hat", "Hat", source={"wearing_hat": False}, target={"wearing_hat": True})
    with pytest.raises(DatabaseError, match="no scores for wearing_hat"):
        select(lfw_db, glasses, lfw_db.scores[0])


def test_input_in_database_uses_its_scores_and_excludes_it(net, lfw_db, dataset):
    root, rows = dataset
    photo = np.asarray(Image.open(root / "images" / lfw_rel(rows[1])))
    res = edit_attribute(net, photo, lfw_db, load_definitions().get("facehair"), [1.0], options=FAST,
                         whole_image=True, k=2, minimum=1)
    how = res.info["input_scores"]
    assert how["source"] == "database" and how["index"] == 1 and how["identity"] == "Person A"
    assert res.info["neighbours"]["counts"]["excluded_self"] == 1
    assert res.info["neighbours"]["counts"]["excluded_same_person"] == 1


@pytest.mark.slow  # builds a database and edits, ~18 s here
def test_custom_two_folder_attribute_end_to_end(net, tmp_path):
    rng = np.random.default_rng(7)
    for sub, beard in (("with", True), ("without", False)):
        (tmp_path / sub).mkdir()
        for i in range(5):
            Image.fromarray(face(rng, beard, 64)).save(tmp_path / sub / f"{i}.png")
    rc = cli_main(["db", "build", str(tmp_path / "db"), "--with", str(tmp_path / "with"), "--without",
                   str(tmp_path / "without"), "--name", "Dark Beard", "--aligned", "--resolution", str(RES), "-q"])
    assert rc == 0
    db = dbm.Database(tmp_path / "db")
    assert db.columns == ["dark_beard"] and db.count == 10
    attr = load_definitions().get("dark_beard", db)
    photo = face(np.random.default_rng(99), False, 64)
    mask = np.zeros((64, 64), bool)
    mask[36:60, 12:52] = True
    cache = FeatureCache()
    # cartoons are not reliably faces to dlib: use the explicit whole-image (unaligned) option
    res = edit_attribute(net, photo, db, attr, [1.5], mask=mask, options=FAST, whole_image=True, k=4, minimum=2,
                         cache=cache)
    out = res.images[0]
    changed = np.any(out != photo, axis=2)
    assert changed.any() and not (changed & ~mask).any()
    assert res.info["input_scores"]["source"] == "estimated"
    assert cache.misses == 2 and len(cache) == 2
    res2 = edit_attribute(net, photo, db, attr, [0.5], mask=mask, options=FAST, whole_image=True, k=4, minimum=2,
                          cache=cache)
    assert cache.hits == 2, "the second strength recomputed the neighbour features"
    assert not np.array_equal(res2.images[0], out)


def test_resume_after_interruption_and_add(dataset, tmp_path):
    root, rows = dataset
    plan, _ = dbm.plan_from_table(root / "images", root / "lfw_attributes.txt")
    calls = {"n": 0}

    def stop_after_seven() -> bool:
        calls["n"] += 1
        return calls["n"] > 7

    with pytest.raises(CancelledError):
        build(tmp_path / "db", plan, RES, assume_aligned=True, shard_size=3, progress=False,
                  cancel=stop_after_seven)
    partial = dbm.Database(tmp_path / "db")
    assert not partial.complete and partial.count == 7
    report = build(tmp_path / "db", plan, RES, assume_aligned=True, shard_size=3, progress=False)
    assert report.resumed_at == 7 and report.added == len(rows) - 7 and report.complete
    db = dbm.Database(tmp_path / "db")
    assert db.complete and db.count == len(rows)
    assert db.paths() == [lfw_rel(r) for r in rows]
    assert dbm.check(tmp_path / "db")["ok"]
    # building again into the same folder is refused; adding the same images finds only duplicates
    with pytest.raises(DatabaseError, match="already exists"):
        build(tmp_path / "db", plan, RES, assume_aligned=True, progress=False)
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(root / "images" / lfw_rel(rows[0]), extra / "copy.jpg")
    Image.fromarray(face(np.random.default_rng(5), True, RES)).save(extra / "new.png")
    rep = build(tmp_path / "db", dbm.plan_from_folder(extra), RES, assume_aligned=True, mode="add",
                    progress=False)
    assert rep.added == 1 and len(rep.duplicates) == 1 and rep.duplicates[0][1] == lfw_rel(rows[0])
    db = dbm.Database(tmp_path / "db")
    assert db.count == len(rows) + 1 and np.isnan(db.scores[-1]).all()


def test_faces_not_found_are_skipped_and_reported(tmp_path):
    pytest.importorskip("dlib")
    skdata = pytest.importorskip("skimage.data")
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise"
    noise.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(noise / f"{i}.png")
    (noise / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DatabaseError, match="No usable face among the 3 images"):
        build(tmp_path / "empty", dbm.plan_from_folder(noise), RES, progress=False)
    with pytest.raises(DatabaseError, match="is empty"):
        dbm.Database(tmp_path / "empty")
    assert dbm.Database(tmp_path / "empty", allow_empty=True).info()["skipped"] == 3
    Image.fromarray(skdata.astronaut()[20:220, 120:320]).save(noise / "astronaut.png")
    report = build(tmp_path / "db", dbm.plan_from_folder(noise), RES, progress=False)
    assert report.added == 1
    reasons = dict((Path(p).name, why) for p, why in report.skipped)
    assert reasons["0.png"] == reasons["1.png"] == "no face found"
    assert reasons["broken.jpg"].startswith("unreadable")
    db = dbm.Database(tmp_path / "db")
    assert db.manifest["landmark_model"] == "5"
    # stored landmarks are the detected ones in the crop: close to the template, not equal to it
    from dfi_engine.faces.align import template

    err = np.abs(db.landmarks[0] - template(RES))
    assert 0 < err.max() < 2.0


def test_missing_foreign_corrupt_and_new_databases_are_clear_errors(dataset, lfw_db, tmp_path):
    with pytest.raises(DatabaseError, match="No neighbour database"):
        dbm.Database(tmp_path / "nothing")
    (tmp_path / "pics").mkdir()
    Image.fromarray(faces(0, 1, False, 48)[0]).save(tmp_path / "pics" / "a.png")
    with pytest.raises(DatabaseError, match="not a gimp-dfi neighbour database") as e:
        dbm.Database(tmp_path / "pics")
    assert "dfi db build" in str(e.value)
    (tmp_path / "pics" / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DatabaseError, match="foreign"):
        dbm.Database(tmp_path / "pics")
    bad = tmp_path / "bad"
    shutil.copytree(lfw_db.path, bad)
    man = json.loads((bad / "manifest.json").read_text())
    (bad / "manifest.json").write_text(json.dumps({**man, "version": 99}))
    with pytest.raises(DatabaseError, match="version 99"):
        dbm.Database(bad)
    (bad / "manifest.json").write_text("{ truncated")
    with pytest.raises(DatabaseError, match="corrupt"):
        dbm.Database(bad)
    (bad / "manifest.json").write_text(json.dumps(man))
    images = bad / "shards" / man["shards"][0]["name"] / "images.npy"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(DatabaseError, match=r"images.npy is corrupt.*dfi db check"):
        dbm.Database(bad)
    assert not dbm.check(bad)["ok"]
    assert cli_main(["db", "check", str(bad)]) == 1
    assert cli_main(["db", "check", str(lfw_db.path)]) == 0


def test_database_opens_fast_and_memory_maps_images(lfw_db):
    t0 = time.perf_counter()
    db = dbm.Database(lfw_db.path)
    assert time.perf_counter() - t0 < 1.0  # generous: measured figures are in the benchmark, not here
    assert isinstance(db._images[0], np.memmap)
    assert db.image(0).shape == (RES, RES, 3)


def test_feature_cache_is_lru_by_bytes():
    c = FeatureCache(max_bytes=3 * 4000)
    t = [torch.zeros(1000)]  # 4000 bytes
    for k in "abc":
        c.put(k, t)
    assert c.get("a") is not None  # a becomes most recent
    c.put("d", t)
    assert "b" not in c and "a" in c and "d" in c and c.bytes == 12000
    c.put("huge", [torch.zeros(10_000)])
    assert "huge" not in c


def test_attribute_definitions_ship_and_extend(tmp_path):
    d = load_definitions()
    for name in ("facehair", "older", "younger", "smile", "mouth_open", "eyes_open", "moustache", "eyeglasses",
                 "inpaint"):
        assert name in d.attributes
    assert d.attributes["inpaint"].kind == "inpaint"
    assert "smiling" in d.attributes["facehair"].match and "smiling" not in d.attributes["smile"].match
    user = tmp_path / "attributes.toml"
    user.write_text('[attribute.smile]\nlabel = "Grin"\nsource = { smiling = false }\ntarget = { smiling = true }\n'
                    '[attribute.hat]\nlabel = "Hat"\nsource = { "Wearing Hat" = false }\n'
                    'target = { wearing_hat = true }\nmatch = ["male"]\n')
    d2 = load_definitions([user, tmp_path / "absent.toml"])
    assert d2.attributes["smile"].label == "Grin" and d2.attributes["hat"].source == {"wearing_hat": False}
    assert d2.attributes["older"] == d.attributes["older"]
    user.write_text("[attribute.x]\nsource = 3\n")
    with pytest.raises(AttributeDefinitionError):
        load_definitions([user])
    user.write_text("not = [toml")
    with pytest.raises(AttributeDefinitionError, match="not valid TOML"):
        load_definitions([user])


def test_each_attribute_names_how_its_tone_is_carried(tmp_path):
    """Covers (beards, glasses, a two-folder paint) blend towards their own colour; shading and greying keep the
    face's colours under a ratio. A user file may change either; a wrong name is a one-line error."""
    d = load_definitions()
    assert {n for n, a in d.attributes.items() if a.tone_form == "alpha"} == {"facehair", "moustache", "eyeglasses"}
    assert d.attributes["older"].tone_form == "ratio" and d.custom_mix["tone_form"] == "alpha"
    user = tmp_path / "attributes.toml"
    user.write_text('[custom]\ntone_form = "ratio"\n[attribute.older]\nsource = { young = true }\n'
                    'target = { young = false }\ntone_form = "alpha"\n')
    d2 = load_definitions([user])
    assert d2.custom_mix["tone_form"] == "ratio" and d2.attributes["older"].tone_form == "alpha"

    class Db:
        custom = {"paint": {"label": "Paint"}}

    assert d.get("paint", Db()).tone_form == "alpha" and d2.get("paint", Db()).tone_form == "ratio"
    user.write_text('[attribute.older]\nsource = { young = true }\ntarget = { young = false }\ntone_form = "log"\n')
    with pytest.raises(AttributeDefinitionError, match="tone_form") as e:
        load_definitions([user])
    assert "\n" not in str(e.value) and "ratio, alpha, additive" in str(e.value)


@pytest.mark.slow  # coarse-to-fine fill, ~30 s of CPU here
def test_fill_above_the_databases_size_runs_coarse_to_fine_and_keeps_the_rest(net, lfw_db):
    photo = face(np.random.default_rng(42), True, 2 * RES)
    mask = np.zeros(photo.shape[:2], bool)
    mask[30:60, 24:72] = True
    cache = FeatureCache()
    steps: list[str] = []
    stages: list[str] = []

    def progress(ev):
        stages.append(ev.stage)
        if ev.stage == "reconstruct":
            steps.append(ev.message)

    fill = load_definitions().get("inpaint")
    res = edit_attribute(net, photo, lfw_db, fill, [2.8], mask=mask, options=replace(FAST, work_size=2 * RES),
                         whole_image=True, k=5, minimum=3, cache=cache, progress=progress)
    assert res.info["work_size"] == 2 * RES and res.crops[0].shape == (2 * RES, 2 * RES, 3)
    assert any(s.startswith(f"coarse ({RES} px)") for s in steps) and steps[-1].startswith(f"fine ({2 * RES} px)")
    first = stages.index("reconstruct")  # both stages' neighbour features come first: progress never goes back
    assert first > 0 and set(stages[first:]) == {"reconstruct"}, stages
    changed = np.any(res.images[0] != photo, axis=2)
    assert changed.any() and not (changed & ~mask).any()
    assert len(cache) == 4  # unmasked and masked means, at both sizes
    assert res.info["pixel_iterations"] > 3 * RES * RES
    at_db = edit_attribute(net, photo, lfw_db, fill, [2.8], mask=mask, options=FAST, whole_image=True, k=5, minimum=3,
                           cache=cache)
    assert at_db.info["work_size"] == RES  # no working size asked: the database's


def test_cli_info_lists_usable_edits(lfw_db, capsys):
    assert cli_main(["db", "info", str(lfw_db.path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == lfw_db.count and "facehair" in info["edits"] and "older" not in info["edits"]


@pytest.mark.slow  # an inpainting inversion, ~9 s here
def test_inpainting_from_the_database_changes_only_the_selection(net, lfw_db):
    photo = face(np.random.default_rng(42), True, 64)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 16:48] = True
    cache = FeatureCache()
    res = edit_attribute(net, photo, lfw_db, load_definitions().get("inpaint"), [2.8], mask=mask, options=FAST,
                         whole_image=True, k=5, minimum=3, cache=cache)
    changed = np.any(res.images[0] != photo, axis=2)
    assert changed.any() and not (changed & ~mask).any()
    assert res.info["neighbours"]["count"] == 5 and len(cache) == 2  # unmasked and masked means
    with pytest.raises(TooFewNeighboursError):
        edit_attribute(net, photo, lfw_db, load_definitions().get("inpaint"), [2.8], mask=mask, options=FAST,
                       whole_image=True, k=5, minimum=100)


@pytest.mark.slow  # worker processes, ~11 s here
def test_a_pool_of_workers_builds_the_same_database_as_one_process(tmp_path):
    """Detection in 2 worker processes (real dlib, real photos): the same shards, skips and duplicates, in order."""
    pytest.importorskip("dlib")
    pytest.importorskip("skimage.data")
    plan = dbm.plan_from_folder(build_photos(tmp_path / "photos"))
    one = build(tmp_path / "one", plan, RES, progress=False, workers=1, shard_size=2)
    two = build(tmp_path / "two", plan, RES, progress=False, workers=2, shard_size=2)
    assert two.workers == 2 and one.workers == 1
    assert (one.added, one.skipped, one.duplicates) == (two.added, two.skipped, two.duplicates)
    assert one.added == 5 and len(one.duplicates) == 1 and len(one.skipped) == 2
    a, b = dbm.Database(tmp_path / "one"), dbm.Database(tmp_path / "two")
    assert a.paths() == b.paths() and all(np.array_equal(x, y) for x, y in zip(a.images(range(5)), b.images(range(5))))
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert "2 workers" in two.summary()


def test_a_celeba_hq_style_set_builds_a_high_resolution_database(tmp_path):
    """CelebA-HQ / FFHQ-style: large aligned faces named 0.jpg, 1.jpg, ... in one folder, with an attribute table in
    CelebA's format (CelebAMask-HQ-attribute-anno.txt); built at 256 px, the faces are stored at 256 px."""
    rows = people(8, seed=3)
    rng = np.random.default_rng(5)
    images = tmp_path / "CelebA-HQ-img"
    images.mkdir()
    lines = [str(len(rows)), " ".join(CELEBA_COLUMNS)]
    for i, r in enumerate(rows):
        Image.fromarray(face(rng, r["beard"], 512)).save(images / f"{i}.jpg", quality=95)
        lines.append(f"{i}.jpg " + " ".join(f"{1 if v > 0 else -1:2d}" for v in r["scores"]))
    table = tmp_path / "CelebAMask-HQ-attribute-anno.txt"
    table.write_text("\n".join(lines) + "\n")
    assert read_table(table).format == "celeba"
    rc = cli_main(["db", "build", str(tmp_path / "db"), "--images", str(images), "--table", str(table), "--aligned",
                   "--resolution", "256", "--workers", "1", "-q"])
    assert rc == 0
    db = dbm.Database(tmp_path / "db")
    assert db.resolution == 256 and db.count == len(rows)
    assert db.image(0).shape[:2] == (256, 256)
    assert sorted(db.paths()) == sorted(f"{i}.jpg" for i in range(len(rows)))
    beard = np.array([r["beard"] for r in rows])
    got = {p: s for p, s in zip(db.paths(), db.column("beard"))}
    assert all((got[f"{i}.jpg"] > 0) == b for i, b in enumerate(beard))
