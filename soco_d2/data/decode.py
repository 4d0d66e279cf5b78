"""Image decoding for the pretraining mappers: OpenCV for JPEGs, reduced-size decode of large ones.

:func:`read_image` returns what ``detectron2.data.detection_utils.read_image`` returns (an
(H, W, 3) uint8 array in ``"RGB"`` or ``"BGR"`` order, EXIF orientation applied), pixel for
pixel, with less work per image:

- A JPEG of 1 or 3 components (greyscale, YCbCr; nearly every photo) is decoded by
  ``cv2.imdecode`` straight into an array: the same libjpeg-turbo decode as PIL's, without
  PIL's copy through ``tobytes`` and its EXIF and mode handling in Python (about 0.2 ms of
  the 0.9 ms a 500x375 photo takes). Anything else (CMYK JPEGs, PNGs, ...) goes to detectron2.
- With ``reduction`` > 1 (``INPUT.SSL.DRAFT_DECODE``), a JPEG is decoded at 1/2, 1/4 or 1/8 of
  its size by libjpeg's scaled inverse DCT (PIL's ``draft``), which skips most of the decode
  work: pixel ``i`` of the result covers original pixels ``[k*i, k*i + k)``. The caller keeps its
  geometry in original pixels and maps it (``soco_d2.data.views.apply_image``). Images with an
  EXIF orientation other than "upright" are decoded at full size.
"""
import io
from typing import Callable, Optional, Tuple

import cv2
import numpy as np
from detectron2.data import detection_utils
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["jpeg_header", "read_image"]

# start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic)
_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_EXIF_ORIENTATION = 0x0112


def jpeg_header(data: bytes) -> Tuple[int, int, int]:
    """(height, width, components) from a JPEG's frame header; (0, 0, 0) if ``data`` is not a
    JPEG or its header cannot be found. Orientation is not applied."""
    if data[:2] != b"\xff\xd8":
        return 0, 0, 0
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return 0, 0, 0
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _SOF:
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return height, width, data[i + 9]
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return 0, 0, 0


def _to_format(rgb_or_bgr: np.ndarray, is_bgr: bool, image_format: str) -> np.ndarray:
    if (image_format == "BGR") == is_bgr:
        return rgb_or_bgr
    return cv2.cvtColor(rgb_or_bgr, cv2.COLOR_BGR2RGB if is_bgr else cv2.COLOR_RGB2BGR)


def _draft(data: bytes, reduction: int, image_format: str):
    """The JPEG decoded at 1/``reduction`` by PIL's draft mode, or None if it has an EXIF
    orientation or PIL does not give exactly that scale."""
    im = Image.open(io.BytesIO(data))
    if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        return None
    w, h = im.size
    im.draft("RGB", (w // reduction, h // reduction))
    expected = (-(-w // reduction), -(-h // reduction))  # ceil: libjpeg keeps partial blocks
    if im.size != expected:
        return None
    return _to_format(np.asarray(im.convert("RGB")), False, image_format)


def read_image(
    file_name: str, image_format: str, reduction: Optional[Callable[[int, int], int]] = None
) -> Tuple[np.ndarray, Tuple[int, int], int]:
    """Decode ``file_name`` as ``detectron2``'s ``read_image(file_name, image_format)`` does.

    Args:
        file_name: any path detectron2's ``PathManager`` opens.
        image_format: "RGB" or "BGR".
        reduction: ``(height, width) -> k`` (1, 2, 4 or 8), the fraction of its full size a
            JPEG of that size may be decoded at; None: full size.

    Returns:
        (image, (height, width) of the full-size image, the reduction used: 1 unless the file
        is a JPEG without EXIF rotation and ``reduction`` allowed more).

    Raises:
        whatever the decoders raise on a file they cannot read.
    """
    with PathManager.open(file_name, "rb") as f:
        data = f.read()
    height, width, components = jpeg_header(data)
    if components in (1, 3):
        k = reduction(height, width) if reduction is not None else 1
        if k > 1:
            image = _draft(data, k, image_format)
            if image is not None:
                return image, (height, width), k
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is not None:  # BGR, EXIF orientation applied
            return _to_format(image, True, image_format), image.shape[:2], 1
    image = detection_utils.read_image(file_name, format=image_format)
    return image, image.shape[:2], 1
