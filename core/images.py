"""The one place images are decoded: any file a user can upload becomes a PIL RGB image or an ImageError.

Pillow opens lazily: ``Image.open`` reads only the header, so the pixel count is checked there,
before a single pixel is decoded (a 30000x30000 PNG of zeros is a few hundred KB on disk and
900 MB in memory). Everything else that can go wrong while decoding (truncated file, not an
image at all, zero bytes, a broken palette) is turned into ``ImageError`` naming the file.

Mode handling (why each branch exists):
- EXIF orientation: phone photos are stored sideways with a rotation tag; apply it.
- 16-bit greyscale (I;16*, I): ``convert("RGB")`` clips every value above 255 to white, so the
  values are rescaled to 8 bit first.
- float (F): assumed in [0, 1] when its maximum is <= 1, else in [0, 255].
- transparency (RGBA, LA, PA, La, RGBa, P or L with a transparency entry): ``convert("RGB")`` keeps
  the colour stored under fully transparent pixels (often black); composite on white instead.
- CMYK, YCbCr, LAB, HSV, 1, L, P: Pillow's own conversion to RGB.
- animated GIF / APNG / multi-page TIFF: the first frame.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from core.errors import InvalidInputError

DEFAULT_MAX_PIXELS = 40_000_000

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, Image.Image]


class ImageError(InvalidInputError):
    """An image that cannot be used; the message names the file and says why."""


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return "<uploaded bytes>"
    if isinstance(source, Image.Image):
        return "<PIL image>"
    return str(getattr(source, "name", "<file object>"))


def _rescale_to_8bit(img: Image.Image) -> Image.Image:
    """Greyscale 16/32-bit int or float image -> mode L, keeping the full tonal range."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        finite = np.isfinite(arr)
        arr = np.where(finite, arr, 0.0)
        scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
        out = np.clip(arr * scale, 0, 255)
    else:
        arr = arr.astype(np.int64)
        # I;16 is 16-bit by definition; an "I" image (Pillow's mode for some 16-bit PNGs) holding
        # values above 255 is treated as 16-bit too. Values that fit 8 bit are kept as they are.
        sixteen_bit = img.mode.startswith("I;16") or (arr.size and arr.max() > 255)
        out = np.clip(arr, 0, 65535) / 257.0 if sixteen_bit else np.clip(arr, 0, 255)
    return Image.fromarray(np.round(out).astype(np.uint8), mode="L")


def _has_transparency(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB (see the module docstring for why each mode is handled as it is)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = _rescale_to_8bit(img)
    if _has_transparency(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def load_image(
    source: ImageSource,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    name: str | None = None,
) -> Image.Image:
    """Decode ``source`` (path, bytes, binary file object or PIL image) into an RGB PIL image.

    Returns a fully loaded ``Image`` of mode ``"RGB"`` (H x W x 3 uint8 when turned into an array).
    Raises ``ImageError`` (message names ``name`` or the path) for empty, truncated, unreadable,
    non-image files and for images with more than ``max_pixels`` pixels; the last is decided from
    the header alone, before decoding.
    """
    label = _describe(source, name)
    if isinstance(source, Image.Image):
        img = source
        if img.width * img.height > max_pixels:
            raise ImageError(f"{label}: {img.width}x{img.height} pixels is more than the limit of {max_pixels:,}")
        return to_rgb(ImageOps.exif_transpose(img) or img)

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageError(f"{label}: file not found") from None
        except OSError as exc:
            raise ImageError(f"{label}: cannot be read ({exc.strerror or exc})") from None
        if size == 0:
            raise ImageError(f"{label}: the file is empty (0 bytes)")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()
    else:
        raise ImageError(f"{label}: unsupported image source of type {type(source).__name__}")
    if not data:
        raise ImageError(f"{label}: the file is empty (0 bytes)")

    try:
        with warnings.catch_warnings():
            # Our own limit below replaces Pillow's bomb warning; its hard error is still caught.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image Pillow can read (unknown or corrupt format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{label}: refused as a decompression bomb ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{label}: cannot be opened as an image: truncated or corrupt ({exc})") from None

    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{label}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{label}: {width}x{height} = {width * height:,} pixels is more than the limit of "
            f"{max_pixels:,}; refused before decoding"
        )

    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF / APNG / multi-page TIFF: the first frame
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()  # truncated files fail here, not in open()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{label}: image data is truncated or corrupt ({exc})") from None

    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose an otherwise good image
        pass
    try:
        return to_rgb(img)
    except (OSError, ValueError) as exc:
        raise ImageError(f"{label}: cannot convert mode {img.mode} to RGB ({exc})") from None
