"""A contact sheet: images side by side with captions and a title, for ``dfi demo``'s results."""

from __future__ import annotations

from typing import Any

import numpy as np


def contact_sheet(images: list[np.ndarray], captions: list[str], title: str, scale: int = 1,
                  title_color: str = "red") -> Any:
    """Images side by side with a caption each and a title line (red by default: the demo's carries warnings)."""
    from PIL import Image, ImageDraw

    title = title.replace("—", "-").encode("latin-1", "replace").decode("latin-1")  # PIL's built-in font
    h, w = images[0].shape[0] * scale, images[0].shape[1] * scale
    top = 34 if title else 18
    sheet = Image.new("RGB", (max(w * len(images), 8 * len(title) // 2 + 10), h + top), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (im, cap) in enumerate(zip(images, captions)):
        tile = Image.fromarray(np.ascontiguousarray(im[:, :, :3])).resize((w, h), Image.NEAREST)
        sheet.paste(tile, (i * w, top))
        draw.text((i * w + 3, top - 14), cap, fill="black")
    if title:
        draw.text((3, 2), title, fill=title_color)
    return sheet
