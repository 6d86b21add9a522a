"""Image files <-> wire images for the CLI, and safe output paths.

Inputs are only ever read; outputs are written to a temporary file in the
target folder and moved into place with ``os.replace``, so a crash never
leaves a half-written file and an input can never be clobbered.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfi_wire import protocol as P


class ImageFileError(Exception):
    """A file cannot be used as given; the message says what to do."""


@dataclass
class Loaded:
    """An input file as sent on the wire, plus what is needed to save results like it."""

    path: Path
    wire: dict[str, Any]
    mode: str  # the PIL mode results are converted back to
    info: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.wire["width"], self.wire["height"]


def _open(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # our own pixel limit speaks instead of Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageFileError(f"{path} is too large to open safely ({e}). Crop it to the face or scale it "
                             "down.") from None
    except FileNotFoundError:
        raise ImageFileError(f"No such file: {path}.") from None
    except UnidentifiedImageError:
        raise ImageFileError(f"{path} is not an image file Pillow can read; use PNG, JPEG or TIFF.") from None
    except OSError as e:
        raise ImageFileError(f"Cannot read {path}: {e}.") from None


def load_image(path: str | Path, max_pixels: int | None = None) -> Loaded:
    """Read an image as RGB8/RGBA8 (the wire formats); remembers the mode to convert results back to."""
    path = Path(path)
    with _open(path) as im:
        w, h = im.size
        if max_pixels and w * h > max_pixels:
            raise ImageFileError(f"{path} is {w}x{h} = {w * h:,} pixels; the daemon accepts at most {max_pixels:,}. "
                                 "Crop it to the face or scale it down.")
        if min(w, h) < P.MIN_SIDE:
            raise ImageFileError(f"{path} is {w}x{h}; DFI needs at least {P.MIN_SIDE}x{P.MIN_SIDE} pixels.")
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as e:  # truncated or damaged data shows only when decoding
            raise ImageFileError(f"{path} cannot be decoded ({e}); the file is truncated or damaged. Export it "
                                 "again.") from None
        mode, note = im.mode, None
        if mode.startswith("I") or mode == "F":  # Pillow's convert() would clip 16-bit values, not scale them
            im = _to_8bit(im)
        has_alpha = "A" in im.getbands() or "transparency" in im.info
        if mode in ("RGBA", "LA") or has_alpha:
            rgb = im.convert("RGBA")
            back = "LA" if mode in ("LA", "La") else "RGBA"
        else:
            rgb = im.convert("RGB")
            back = "L" if mode in ("L", "1") else "RGB"
        if mode.startswith("I") or mode == "F":
            note = f"{path.name}: {mode} image reduced to 8 bits per channel"
            back = "L"
        info = {k: im.info[k] for k in ("icc_profile", "dpi") if k in im.info}
        fmt = "RGBA8" if rgb.mode == "RGBA" else "RGB8"
        return Loaded(path, P.image_map(rgb.tobytes(), w, h, fmt), back, info, note)


def _to_8bit(im: Any) -> Any:
    """16-bit / 32-bit integer or float greyscale -> 8-bit L, scaled (not clipped)."""
    import numpy as np
    from PIL import Image

    a = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        top = 1.0 if a.size and a.max() <= 1.0 else 255.0
    else:
        top = 255.0 if a.size and a.max() <= 255 else 65535.0
    return Image.fromarray(np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def load_mask(path: str | Path, size: tuple[int, int]) -> dict[str, Any]:
    """A mask file as L8: white = edit, black = keep; a mask with alpha uses its alpha channel."""
    path = Path(path)
    with _open(path) as im:
        if im.size != size:
            raise ImageFileError(f"Mask {path} is {im.size[0]}x{im.size[1]} but the image is {size[0]}x{size[1]}; "
                                 "the mask must have exactly the image's size.")
        if "A" in im.getbands():
            m = im.getchannel("A")
        elif im.mode.startswith("I") or im.mode == "F":
            m = _to_8bit(im)
        else:
            m = im.convert("L")
        return P.image_map(m.tobytes(), size[0], size[1], "L8")


def to_pil(wire: dict[str, Any]) -> Any:
    from PIL import Image

    mode = {"RGB8": "RGB", "RGBA8": "RGBA", "L8": "L"}[wire["format"]]
    return Image.frombytes(mode, (wire["width"], wire["height"]), wire["data"])


def save_atomic(image: Any, out: Path, info: dict[str, Any] | None = None) -> None:
    """Write a PIL image via a temporary file in the same folder + os.replace."""

    fmt = output_format(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise ImageFileError(f"Cannot write {out}: {e.strerror or e}. Choose a writable folder with -o.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format=fmt, **(info or {}))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_format(out: Path) -> str:
    from PIL import Image

    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None:
        raise ImageFileError(f"Cannot tell the image format from {out.name!r}; end the name in .png, .jpg or .tif.")
    return fmt


def check_writable(outputs: list[Path]) -> None:
    """Before any work: every output has a known format and lands in a folder we can create and write."""
    for out in outputs:
        output_format(out)
        folder = out.parent if str(out.parent) else Path(".")
        existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
        if not existing.is_dir():
            raise ImageFileError(f"Cannot write {out}: {existing} is not a folder.")
        if not os.access(existing, os.W_OK | os.X_OK) or _read_only_fs(existing):
            raise ImageFileError(f"Cannot write {out}: {existing} is not writable. Choose another folder with -o.")
        if out.is_dir():
            raise ImageFileError(f"Cannot write {out}: it is a folder.")


def _read_only_fs(folder: Path) -> bool:
    """root passes os.access on a read-only mount (/proc, a read-only bind): ask the file system itself."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or str(folder.resolve()).startswith(("/proc", "/sys"))
    except OSError:
        return False


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def save_result(wire: dict[str, Any], like: Loaded, out: Path) -> None:
    """Save a result in the input's mode (grey stays grey, alpha stays alpha)."""
    im = to_pil(wire)
    if im.mode != like.mode:
        im = im.convert(like.mode)
    if out.suffix.lower() in (".jpg", ".jpeg") and im.mode in ("RGBA", "LA"):
        raise ImageFileError(f"{out.name}: JPEG cannot store the alpha channel of {like.path.name}; use .png.")
    save_atomic(im, out, like.info)


def render(pattern: str, src: Path, **fields: Any) -> Path:
    """Fill an output pattern: {dir} {stem} {name} {ext} plus the given fields (e.g. {strength})."""
    values = {"dir": str(src.parent), "stem": src.stem, "name": src.name, "ext": src.suffix, **fields}
    try:
        return Path(pattern.format(**values))
    except (KeyError, IndexError, ValueError) as e:
        raise ImageFileError(f"Bad output pattern {pattern!r} ({e}); use fields "
                             f"{', '.join('{' + k + '}' for k in values)}.") from None


def check_outputs(inputs: list[Path], outputs: list[Path]) -> None:
    """Refuse before any work if an output would overwrite an input or two outputs collide."""
    def key(p: Path) -> str:
        return os.path.realpath(p)

    ins = {key(p) for p in inputs}
    seen: dict[str, Path] = {}
    for out in outputs:
        k = key(out)
        if k in ins or any(out.exists() and p.exists() and os.path.samefile(out, p) for p in inputs):
            raise ImageFileError(f"Output {out} would overwrite an input file; inputs are never modified. "
                                 "Choose another -o pattern.")
        if k in seen:
            raise ImageFileError(f"Two results would both be written to {out}; put {{stem}} and {{strength}} "
                                 "in the -o pattern.")
        seen[k] = out
