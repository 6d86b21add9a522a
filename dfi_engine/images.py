"""Image and mask handling at the engine's edge.

The engine works on float32 RGB in 0..255 (H, W, 3). Anything a user can hand
us (greyscale, grey+alpha, RGB, RGBA; 8- or 16-bit; odd sizes) is converted on
the way in and restored on the way out, with alpha passed through untouched.
Size limits are checked from the shape alone, before anything is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageTooLargeError, ImageTooSmallError, InputError

MIN_SIDE = 32
DEFAULT_MAX_PIXELS = 2_000_000


@dataclass(frozen=True)
class ImageSpec:
    """How an input image was laid out, so the result can be laid out the same way."""

    height: int
    width: int
    channels: int  # 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
    dtype: np.dtype
    squeeze: bool  # input was (H, W) rather than (H, W, 1)

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @property
    def scale(self) -> float:
        """Factor from the input's value range to 0..255."""
        if self.dtype == np.uint16:
            return 255.0 / 65535.0
        if self.dtype.kind == "f":
            return 255.0
        return 1.0


def check_size(height: int, width: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse sizes the engine cannot or should not handle; call before allocating."""
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ImageTooSmallError(
            f"Image is {width}x{height} pixels; DFI needs at least {MIN_SIDE}x{MIN_SIDE}.",
            "Select a larger region or scale the image up.",
        )
    if height * width > max_pixels:
        raise ImageTooLargeError(
            f"Image is {width}x{height} = {height * width:,} pixels, over the limit of {max_pixels:,}.",
            "Select a smaller region (the face), scale the image down, or raise max_pixels "
            "if your device has the memory.",
        )


def split_image(
    array: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, np.ndarray | None, ImageSpec]:
    """Array in any supported layout -> (rgb float32 0..255, alpha or None, spec)."""
    if not isinstance(array, np.ndarray):
        raise InputError(f"Expected a numpy array, got {type(array).__name__}.")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
        raise InputError(
            f"Unsupported image shape {array.shape}.",
            "Pass (H, W) greyscale or (H, W, C) with C = 1, 2, 3 or 4 channels.",
        )
    if array.dtype not in (np.uint8, np.uint16) and array.dtype.kind != "f":
        raise InputError(
            f"Unsupported pixel type {array.dtype}.",
            "Use 8- or 16-bit unsigned integers, or floats in 0..1.",
        )
    check_size(array.shape[0], array.shape[1], max_pixels)
    squeeze = array.ndim == 2
    a = array[:, :, None] if squeeze else array
    spec = ImageSpec(a.shape[0], a.shape[1], a.shape[2], array.dtype, squeeze)
    colour = a[:, :, : 3 if spec.channels >= 3 else 1].astype(np.float32) * spec.scale
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    alpha = a[:, :, -1].copy() if spec.has_alpha else None
    if spec.dtype.kind == "f":
        colour = np.clip(colour, 0.0, 255.0)
    return colour, alpha, spec


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def merge_image(rgb: np.ndarray, spec: ImageSpec, alpha: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`split_image`: float RGB 0..255 back to the input's layout."""
    colour = np.clip(rgb, 0.0, 255.0) / spec.scale
    if spec.channels in (1, 2):
        colour = (colour @ _LUMA)[:, :, None]
    if spec.dtype.kind != "f":
        colour = np.rint(colour).astype(spec.dtype)
    else:
        colour = colour.astype(spec.dtype)
    out = np.concatenate([colour, alpha[:, :, None]], axis=2) if spec.has_alpha else colour
    return out[:, :, 0] if spec.squeeze else out


def to_mask(mask: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """Selection mask (bool, 8/16-bit or float; (H, W) or (H, W, 1)) -> float32 0..1."""
    if mask is None:
        return np.ones((height, width), np.float32)
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.shape != (height, width):
        raise InputError(
            f"Mask is {m.shape[1] if m.ndim > 1 else '?'}x{m.shape[0]} but the image is {width}x{height}.",
            "Pass a mask of exactly the image's size.",
        )
    if m.dtype == bool:
        return m.astype(np.float32)
    if m.dtype == np.uint8:
        return m.astype(np.float32) / 255.0
    if m.dtype == np.uint16:
        return m.astype(np.float32) / 65535.0
    if m.dtype.kind == "f":
        return np.clip(m.astype(np.float32), 0.0, 1.0)
    raise InputError(f"Unsupported mask type {m.dtype}.", "Use bool, uint8, uint16 or float in 0..1.")


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file into an array the engine accepts (8/16-bit, grey/RGB(A)).

    The header is read first so oversized files are refused before decoding.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            check_size(im.height, im.width, max_pixels)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im, dtype=np.int64).clip(0, 65535).astype(np.uint16)
            if im.mode not in ("L", "LA", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
            return np.asarray(im).copy()
    except FileNotFoundError:
        raise InputError(f"No such image file: {path}.", "Check the path.") from None
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image Pillow can read.", "Use PNG, JPEG or TIFF.") from None
