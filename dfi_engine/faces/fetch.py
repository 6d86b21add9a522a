"""Downloading public face data (LFW and its attribute table) with mirrors, resume and checksums.

Every file has a list of URLs tried in order; a partial download is kept as
``NAME.part`` and continued with an HTTP Range request, a short read is
retried from where it stopped, and the finished file is checked against its
SHA-256 where one is published. A file whose checksum is not published is
accepted after a complete download, and its SHA-256 is written next to it
(``NAME.sha256``) so that later runs verify it.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from .errors import FetchError

CHUNK = 1 << 16


@dataclass(frozen=True)
class Remote:
    name: str
    urls: tuple[str, ...]
    sha256: str | None = None


# scikit-learn's figshare mirror of lfw-funneled.tgz and its SHA-256 (sklearn.datasets.fetch_lfw_people).
CATALOG: dict[str, Remote] = {
    "lfw-deepfunneled": Remote("lfw-deepfunneled.tgz", ("https://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz",
                                                        "http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz")),
    "lfw-funneled": Remote("lfw-funneled.tgz", ("https://ndownloader.figshare.com/files/5976015",
                                                "https://vis-www.cs.umass.edu/lfw/lfw-funneled.tgz",
                                                "http://vis-www.cs.umass.edu/lfw/lfw-funneled.tgz"),
                           "b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a"),
    "lfw-attributes": Remote("lfw_attributes.txt",
                             ("https://www.cs.columbia.edu/CAVE/databases/pubfig/download/lfw_attributes.txt",
                              "http://www.cs.columbia.edu/CAVE/databases/pubfig/download/lfw_attributes.txt")),
}
LFW_VARIANTS = ("deepfunneled", "funneled")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Short(Exception):
    """The server closed the connection before the announced length."""


def _get(url: str, part: Path, timeout: float, progress: bool, label: str) -> None:
    """Fetch ``url`` into ``part``, continuing from its current size; raises on any shortfall."""
    from ..bars import bar as progress_bar

    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "gimp-dfi"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part is complete
            return
        raise
    with resp:
        status = getattr(resp, "status", 200)
        length = resp.headers.get("Content-Length")
        if have and status == 206:
            rng = resp.headers.get("Content-Range", "")
            if not rng.startswith(f"bytes {have}-"):
                have = 0  # unexpected range: start over
        elif have:
            have = 0  # server ignored Range: start over
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with open(part, mode) as f, progress_bar(total=total, initial=have, unit="B", unit_scale=True, desc=label,
                                         disable=not progress, leave=False) as bar:
            got = have
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                f.write(block)
                got += len(block)
                bar.update(len(block))
        if total is not None and got < total:
            raise _Short(f"connection closed after {got:,} of {total:,} bytes")


def download(remote: Remote, dest: str | Path, retries: int = 3, timeout: float = 60.0, progress: bool = True,
             backoff: float = 1.0) -> Path:
    """Download one file (trying each mirror, resuming short reads), verify it, return its path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / remote.name
    stamp = dest / (remote.name + ".sha256")
    expected = remote.sha256 or (stamp.read_text().split()[0] if stamp.is_file() else None)
    if final.is_file():
        if expected is None or sha256_file(final) == expected:
            return final
        final.unlink()  # damaged copy: download again
    part = dest / (remote.name + ".part")
    attempts: list[str] = []
    for url in remote.urls:
        ok = False
        for attempt in range(retries):
            try:
                _get(url, part, timeout, progress, remote.name)
                ok = True
                break
            except (_Short, HTTPError, URLError, HTTPException, OSError, TimeoutError) as e:
                attempts.append(f"{url}: {e}")
                if isinstance(e, HTTPError) and e.code in (403, 404, 410):
                    break  # this mirror does not have it
                if attempt + 1 < retries:
                    time.sleep(backoff * (attempt + 1))
        if not ok:
            continue
        digest = sha256_file(part)
        if expected is not None and digest != expected:
            attempts.append(f"{url}: checksum mismatch (got {digest[:16]}…, expected {expected[:16]}…)")
            part.unlink()
            continue
        os.replace(part, final)
        stamp.write_text(f"{digest}  {remote.name}\n")
        return final
    raise FetchError(f"Could not download {remote.name}: " + "; ".join(attempts or ["no URL to try"]) + ".",
                     f"Check the network, or download it yourself from {remote.urls[0] if remote.urls else '?'} "
                     f"and put it at {final}.")


def extract(archive: Path, dest: Path, progress: bool = True) -> Path:
    """Unpack a tar archive safely (no absolute paths, links out, devices) once; return its top folder."""
    from ..bars import bar as progress_bar

    done = dest / (archive.name + ".extracted")
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            tops = {m.name.split("/", 1)[0] for m in members if m.name and not m.name.startswith("/")}
            if not done.is_file():
                for m in progress_bar(members, desc=f"extract {archive.name}", unit="file", disable=not progress,
                              leave=False):
                    tar.extract(m, dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise FetchError(f"Cannot unpack {archive} ({e}).", f"Delete {archive} and fetch again.") from None
    done.write_text("ok\n")
    if len(tops) == 1:
        return dest / tops.pop()
    return dest


def fetch_lfw(dest: str | Path, variant: str = "deepfunneled", urls: Mapping[str, Sequence[str]] | None = None,
              checksums: Mapping[str, str] | None = None, retries: int = 3, timeout: float = 60.0,
              progress: bool = True) -> tuple[Path, Path]:
    """Download and unpack LFW images and the attribute table; returns (image folder, attribute table).

    ``urls``/``checksums`` override the catalogue per key ("images",
    "attributes"), e.g. for a local mirror.
    """
    if variant not in LFW_VARIANTS:
        raise FetchError(f"Unknown LFW variant {variant!r}.", f"Use one of {', '.join(LFW_VARIANTS)}.")
    urls = urls or {}
    checksums = checksums or {}
    dest = Path(dest)
    remotes = {"images": CATALOG[f"lfw-{variant}"], "attributes": CATALOG["lfw-attributes"]}
    for key, r in list(remotes.items()):
        if key in urls:
            r = replace(r, urls=tuple(urls[key]))
        if key in checksums:
            r = replace(r, sha256=checksums[key])
        remotes[key] = r
    archive = download(remotes["images"], dest, retries, timeout, progress)
    table = download(remotes["attributes"], dest, retries, timeout, progress)
    folder = extract(archive, dest, progress)
    return folder, table
