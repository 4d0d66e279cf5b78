"""Robust image reading for proposal search: any common file in, 8-bit BGR out, or a reason.

Every problem is classified. Files that cannot give trustworthy pixels (unreadable, empty,
not an image, truncated, undecodable) raise :class:`BadImageError` and are skipped by the
runner. Files that decode but are unusual (grayscale, palette, alpha, 16-bit, CMYK, tiny, very
large) are converted and processed; the conversion is returned as a note so the run report
lists them too.

Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale by libjpeg (DCT scaling) when the search only
needs ``max_size`` pixels, which is both faster and keeps a 12000x9000 photo at a few MB.
"""
import io
import os
import warnings
from dataclasses import dataclass, field
from typing import List

import cv2
import numpy as np
from PIL import Image, ImageOps

__all__ = ["BadImageError", "LoadedImage", "load_image", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
                    ".pgm", ".pbm", ".jfif")
# Beyond this many pixels an image is reported as "very large" (it is still processed).
LARGE_IMAGE_PIXELS = 50_000_000
# Images with a side below this cannot hold a box of the filters' minimum size.
MIN_SIDE = 32
_MODE_NOTES = {
    "L": "grayscale converted to 3 channels",
    "LA": "grayscale+alpha converted to 3 channels",
    "1": "1-bit image converted to 3 channels",
    "P": "palette image converted to 3 channels",
    "PA": "palette+alpha image converted to 3 channels",
    "RGBA": "alpha channel dropped (RGBA)",
    "I;16": "16-bit converted to 8-bit",
    "I;16B": "16-bit converted to 8-bit",
    "I": "32-bit integer image converted to 8-bit",
    "F": "floating-point image converted to 8-bit",
    "CMYK": "CMYK converted to RGB",
}


class BadImageError(Exception):
    """The file gives no trustworthy pixels; ``str(err)`` says why (in ``.report.json``)."""


@dataclass
class LoadedImage:
    """A decoded image ready for search.

    Attributes:
        image: (h, w, 3) uint8 BGR, possibly downscaled so max(h, w) <= the requested size.
        width, height: size of the original (EXIF-oriented) image in pixels; boxes found on
            ``image`` are mapped back to this size.
        notes: conversions applied (empty for a plain 8-bit RGB/BGR photo).
    """

    image: np.ndarray
    width: int
    height: int
    notes: List[str] = field(default_factory=list)


def _exif_transposed(img: Image.Image) -> bool:
    try:
        return img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # a broken EXIF block must not make a good image bad
        return False


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return ((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _decode_with_pil(data: bytes, max_size: int) -> np.ndarray:
    """Fallback decoder (CMYK JPEGs, formats OpenCV lacks); returns BGR uint8."""
    with Image.open(io.BytesIO(data)) as img:
        if max_size > 0 and img.format == "JPEG":
            img.draft("RGB", (max_size, max_size))  # DCT-scaled decode, never below max_size
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I", "F"):
            gray = _to_uint8(np.asarray(img))
            return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])


def _reduced_flag(fmt: str, longer: int, max_size: int) -> int:
    if fmt != "JPEG" or max_size <= 0:
        return cv2.IMREAD_COLOR
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if longer // factor >= max_size:
            return flag
    return cv2.IMREAD_COLOR


def load_image(path: str, max_size: int = 0) -> LoadedImage:
    """Read an image file for proposal search.

    Args:
        path: image file.
        max_size: if > 0, the returned pixels are downscaled so their longer side is at most
            this (area interpolation); the original size is still reported.

    Returns:
        LoadedImage with (h, w, 3) uint8 BGR pixels.

    Raises:
        BadImageError: unreadable, empty, not an image, truncated or undecodable file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadImageError(f"unreadable: {e.strerror or e}") from None
    if len(data) == 0:
        raise BadImageError("empty file (0 bytes)")
    notes: List[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(io.BytesIO(data)) as header:
                    fmt, mode, (width, height) = header.format, header.mode, header.size
                    if _exif_transposed(header):
                        width, height = height, width
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except Exception:
        raise BadImageError("not an image (unrecognised file content)") from None
    if fmt == "JPEG" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        raise BadImageError("truncated JPEG (no end-of-image marker)")
    if mode in _MODE_NOTES:
        notes.append(_MODE_NOTES[mode])
    elif fmt == "PNG" and len(data) > 24 and data[24] == 16:  # IHDR bit depth; PIL says "RGB"
        notes.append("16-bit converted to 8-bit")
    if width * height > LARGE_IMAGE_PIXELS:
        notes.append(f"very large ({width}x{height}): decoded at reduced resolution")
    if min(width, height) < MIN_SIDE:
        notes.append(f"smaller than {MIN_SIDE} px ({width}x{height}): whole image used")

    image = None
    if mode != "CMYK":  # OpenCV ignores Adobe's inverted CMYK; PIL gets it right
        buf = np.frombuffer(data, np.uint8)
        image = cv2.imdecode(buf, _reduced_flag(fmt, max(width, height), max_size))
    if image is None:
        try:
            image = _decode_with_pil(data, max_size)
        except Exception as e:
            raise BadImageError(f"decode failed: {type(e).__name__}: {e}") from None
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise BadImageError(f"decode failed: unexpected pixel array {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if max_size > 0 and max(h, w) > max_size:
        scale = max_size / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return LoadedImage(image=image, width=int(width), height=int(height), notes=notes)


def list_images(root: str) -> List[str]:
    """All files under ``root`` (recursive) with a common image extension, sorted, relative
    POSIX paths."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                out.append(rel.replace(os.sep, "/"))
    return sorted(out)
