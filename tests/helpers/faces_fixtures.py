"""Synthetic face datasets in the LFW, CelebA and CSV table formats (shared by tests/test_faces_*.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from dfi_engine.synthetic import face

# LFW-style column names; the CelebA/CSV files carry the same facts under their own names.
LFW_COLUMNS = ["Male", "Youth", "Smiling", "No Beard", "Mustache", "Eyeglasses"]
CELEBA_COLUMNS = ["Male", "Young", "Smiling", "No_Beard", "Mustache", "Eyeglasses"]


def people(n: int = 24, seed: int = 0) -> list[dict]:
    """Rows with known scores: person, imagenum, six real-valued scores, beard drawn when No Beard < 0."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        person = f"Person {chr(65 + i // 2)}"  # two photos per person
        male = 1.0 if i % 3 else -1.0
        beard = male > 0 and i % 2 == 1
        rows.append({
            "person": person, "num": i % 2 + 1,
            "scores": [male * rng.uniform(0.5, 2.0), rng.uniform(-2, 2), (1 if i % 4 < 2 else -1) * rng.uniform(0.3, 2),
                       (-1 if beard else 1) * rng.uniform(0.3, 2), (1 if beard else -1) * rng.uniform(0.3, 2),
                       rng.uniform(-2, -0.2)],
            "beard": beard,
        })
    return rows


def draw(rows: list[dict], root: Path, size: int = 48, seed: int = 1) -> list[Path]:
    """One PNG-in-JPEG-name image per row at LFW's paths (person/person_000N.jpg)."""
    rng = np.random.default_rng(seed)
    paths = []
    for r in rows:
        name = r["person"].replace(" ", "_")
        p = root / name / f"{name}_{r['num']:04d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face(rng, r["beard"], size)).save(p, quality=95)
        paths.append(p)
    return paths


def write_lfw(rows: list[dict], path: Path) -> None:
    lines = [f"# {len(rows)} images, {len(LFW_COLUMNS)} attributes",
             "\t".join(["#", "person", "imagenum", *LFW_COLUMNS])]
    lines += ["\t".join([r["person"], str(r["num"]), *[f"{v:.5f}" for v in r["scores"]]]) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def lfw_rel(r: dict) -> str:
    name = r["person"].replace(" ", "_")
    return f"{name}/{name}_{r['num']:04d}.jpg"


def write_celeba(rows: list[dict], path: Path) -> None:
    lines = [str(len(rows)), " ".join(CELEBA_COLUMNS) + " "]
    for r in rows:
        lines.append(lfw_rel(r) + " " + " ".join(f"{1 if v > 0 else -1:2d}" for v in r["scores"]))
    path.write_text("\n".join(lines) + "\n")


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "identity", *CELEBA_COLUMNS])
        for r in rows:
            w.writerow([lfw_rel(r), r["person"], *[f"{v:.5f}" for v in r["scores"]]])


ASTRONAUT_CROPS = [(0, 100, 260), (20, 120, 200), (10, 90, 300), (30, 130, 180), (0, 110, 240)]


def build_photos(folder: Path, faces: int = 5) -> Path:
    """Real photos for a database build: ``faces`` crops of scikit-image's astronaut (one face each), one upside
    down (no face found), a duplicate of the second crop and a truncated JPEG."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    astro = skimage.data.astronaut()
    for i, (y, x, s) in enumerate(ASTRONAUT_CROPS[:faces]):
        Image.fromarray(np.ascontiguousarray(astro[y:y + s, x:x + s])).save(folder / f"a{i}.png")
    Image.fromarray(np.ascontiguousarray(astro[::-1, ::-1])).save(folder / "upside_down.png")
    (folder / "a1_copy.png").write_bytes((folder / "a1.png").read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return folder
