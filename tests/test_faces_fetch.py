"""`dfi db fetch lfw` against a loopback HTTP server: mirrors, Range resume, truncation, checksums."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dfi_daemon.cli import main as cli_main
from helpers.faces_fixtures import draw, lfw_rel, people, write_lfw

from dfi_engine.faces import database as dbm
from dfi_engine.faces.errors import FetchError
from dfi_engine.faces.fetch import Remote, download, fetch_lfw


class Server:
    """Serves in-memory files; /trunc/ paths cut their first full response short, /bad/ ones serve junk."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.sent = 0
        self.truncated: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append((self.path, self.headers.get("Range")))
                kind, _, name = self.path.lstrip("/").partition("/")
                if name not in outer.files:
                    self.send_error(404)
                    return
                body = outer.files[name]
                if kind == "bad":
                    body = bytes(b ^ 0x5A for b in body)
                start = 0
                rng = self.headers.get("Range")
                if rng and kind != "norange":
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if kind == "trunc" and self.path not in outer.truncated:
                    outer.truncated.add(self.path)
                    chunk = chunk[: len(chunk) // 3]
                outer.sent += len(chunk)  # before writing: the client may have it all before this thread goes on
                self.wfile.write(chunk)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, kind: str, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{kind}/{name}"

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory) -> dict[str, bytes]:
    """A tiny LFW: lfw-deepfunneled.tgz (person/person_000N.jpg) and lfw_attributes.txt."""
    root = tmp_path_factory.mktemp("lfwsrc")
    rows = people(8)
    draw(rows, root / "lfw-deepfunneled", 48)
    write_lfw(rows, root / "lfw_attributes.txt")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root / "lfw-deepfunneled", arcname="lfw-deepfunneled")
    return {"lfw-deepfunneled.tgz": buf.getvalue(), "lfw_attributes.txt": (root / "lfw_attributes.txt").read_bytes(),
            "rows": json.dumps([lfw_rel(r) for r in rows]).encode()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_mirrors_truncation_and_checksum(fixture_files, tmp_path):
    tgz = fixture_files["lfw-deepfunneled.tgz"]
    with Server(fixture_files) as srv:
        urls = {"images": [srv.url("missing", "nope.tgz"), srv.url("bad", "lfw-deepfunneled.tgz"),
                           srv.url("trunc", "lfw-deepfunneled.tgz")],
                "attributes": [srv.url("ok", "lfw_attributes.txt")]}
        folder, table = fetch_lfw(tmp_path, urls=urls, checksums={"images": sha(tgz)}, progress=False, timeout=10)
        paths = [p for p, _ in srv.requests]
        ranges = [r for p, r in srv.requests if p.startswith("/trunc/")]
    assert (tmp_path / "lfw-deepfunneled.tgz").read_bytes() == tgz
    assert not (tmp_path / "lfw-deepfunneled.tgz.part").exists()
    assert paths[0].startswith("/missing/") and paths[1].startswith("/bad/")
    # the truncated transfer was resumed with a Range request, not restarted
    assert ranges[0] is None and ranges[1] == f"bytes={len(tgz) // 3}-"
    assert folder == tmp_path / "lfw-deepfunneled" and table.name == "lfw_attributes.txt"
    names = json.loads(fixture_files["rows"])
    assert all((folder / n).is_file() for n in names)
    plan, missing = dbm.plan_from_table(folder, table)
    assert not missing and len(plan) == len(names)


def test_bad_checksum_everywhere_is_an_error(fixture_files, tmp_path):
    with Server(fixture_files) as srv:
        r = Remote("lfw_attributes.txt", (srv.url("bad", "lfw_attributes.txt"), srv.url("missing", "x")),
                   sha(fixture_files["lfw_attributes.txt"]))
        with pytest.raises(FetchError) as e:
            download(r, tmp_path, retries=2, progress=False, backoff=0)
    msg = str(e.value)
    assert "checksum mismatch" in msg and "404" in msg and e.value.code == "fetch_failed"
    assert not (tmp_path / "lfw_attributes.txt").exists()
    assert not (tmp_path / "lfw_attributes.txt.part").exists()


def test_resume_after_interruption_uses_range(fixture_files, tmp_path):
    tgz = fixture_files["lfw-deepfunneled.tgz"]
    cut = len(tgz) // 2
    (tmp_path / "lfw-deepfunneled.tgz.part").write_bytes(tgz[:cut])  # left by an interrupted run
    with Server(fixture_files) as srv:
        r = Remote("lfw-deepfunneled.tgz", (srv.url("ok", "lfw-deepfunneled.tgz"),), sha(tgz))
        path = download(r, tmp_path, progress=False)
        assert srv.requests == [("/ok/lfw-deepfunneled.tgz", f"bytes={cut}-")]
        assert srv.sent == len(tgz) - cut
        # a second call finds the verified file and downloads nothing
        download(r, tmp_path, progress=False)
        assert len(srv.requests) == 1
    assert path.read_bytes() == tgz


def test_server_ignoring_range_restarts_cleanly(fixture_files, tmp_path):
    data = fixture_files["lfw_attributes.txt"]
    (tmp_path / "lfw_attributes.txt.part").write_bytes(b"garbage from elsewhere")
    with Server(fixture_files) as srv:
        # no published checksum: accepted after a complete transfer and recorded for next time
        path = download(Remote("lfw_attributes.txt", (srv.url("norange", "lfw_attributes.txt"),)), tmp_path,
                        progress=False)
    assert path.read_bytes() == data
    assert (tmp_path / "lfw_attributes.txt.sha256").read_text().split()[0] == sha(data)


@pytest.mark.slow  # fetch and a database build, ~11 s here
def test_cli_fetch_builds_the_database(fixture_files, tmp_path, capsys):
    with Server(fixture_files) as srv:
        rc = cli_main(["db", "fetch", "lfw", "--dest", str(tmp_path / "dl"), "--db", str(tmp_path / "lfw.db"),
                       "--images-url", srv.url("trunc", "lfw-deepfunneled.tgz"),
                       "--attributes-url", srv.url("ok", "lfw_attributes.txt"),
                       "--images-sha256", sha(fixture_files["lfw-deepfunneled.tgz"]),
                       "--aligned", "--resolution", "48", "-q"])
    assert rc == 0
    db = dbm.Database(tmp_path / "lfw.db")
    assert db.count == 8 and db.identities[0] == "Person A" and "male" in db.columns
    assert "added 8 faces" in capsys.readouterr().out


def test_cli_fetch_failure_exits_2(tmp_path, capsys):
    with Server({}) as srv:
        rc = cli_main(["db", "fetch", "lfw", "--dest", str(tmp_path), "--no-build", "-q",
                       "--images-url", srv.url("missing", "x.tgz"), "--attributes-url", srv.url("missing", "y")])
    assert rc == 2
    assert "Could not download" in capsys.readouterr().err
    assert not list(Path(tmp_path).glob("*.tgz"))
