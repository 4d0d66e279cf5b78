"""Geometry and colour of SoCo's views.

A view is one detectron2 ``TransformList`` (crop / resize, later a flip) applied to the original
image; the same list moves the proposal boxes, so boxes are never rescaled by hand.

View kinds (``ViewSpec.kind``):

- ``"whole"``: the whole image resized to ``size x size``, aspect ratio not kept (SoCo's V1).
- ``"crop"``: a RandomResizedCrop drawn independently of the other views (V2, and V3 as the
  official code makes it).
- ``"downsample"``: the un-flipped V2 resized to ``size x size`` (the paper's V3, SoCo*'s V4);
  it gets its own flip and colour draws, as in the official SoCo* code.

Colour ops work on ``(H, W, 3)`` uint8 arrays with OpenCV look-up tables and blends; on
224 px views they are several times faster than torchvision's PIL path and avoid its
float conversions.
"""

import math
import os
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data.transforms import (
    CropTransform,
    HFlipTransform,
    ResizeTransform,
    Transform,
    TransformList,
)

__all__ = [
    "ViewSpec",
    "make_view_specs",
    "random_resized_crop_region",
    "view_transform",
    "apply_image",
    "ColorAugmentation",
    "single_threaded_opencv",
]

VIEW_KINDS = ("whole", "crop", "downsample")


@dataclass(frozen=True)
class ViewSpec:
    """How one view is made.

    Attributes:
        size: output side in pixels (views are square).
        kind: one of ``"whole"``, ``"crop"``, ``"downsample"``.
        source: for ``"downsample"``, the index of the cropped view it is resized from.
    """

    size: int
    kind: str
    source: int = -1


def make_view_specs(
    sizes: Sequence[int], v3_mode: str = "crop", downsampled_view: int = -1
) -> List[ViewSpec]:
    """Turn SoCo's view keys (``INPUT.SSL.VIEW_SIZES``, ``INPUT.SOCO``) into one ``ViewSpec`` per view (V1 first).

    Args:
        sizes: ``VIEW_SIZES``; V1 is the whole image, the others are crops unless below.
        v3_mode: ``"crop"`` (independent crop, official code) or ``"downsample"`` (V3 = V2
            resized, paper text); ignored with fewer than 3 views.
        downsampled_view: index of one more view made by resizing V2 (SoCo*'s V4), or -1.

    Returns:
        list[ViewSpec] of ``len(sizes)``.
    """
    if len(sizes) < 2:
        raise ValueError(f"SoCo needs at least two views, got VIEW_SIZES={list(sizes)}")
    if v3_mode not in ("crop", "downsample"):
        raise ValueError(f"INPUT.SOCO.V3_MODE must be 'crop' or 'downsample', got {v3_mode!r}")
    if downsampled_view != -1 and not 2 <= downsampled_view < len(sizes):
        raise ValueError(
            f"INPUT.SOCO.DOWNSAMPLED_VIEW={downsampled_view} must be -1 or in [2, {len(sizes)})"
        )
    specs = [ViewSpec(int(sizes[0]), "whole")]
    for i, size in enumerate(sizes[1:], start=1):
        downsample = i == downsampled_view or (i == 2 and v3_mode == "downsample")
        specs.append(
            ViewSpec(int(size), "downsample", 1) if downsample else ViewSpec(int(size), "crop")
        )
    return specs


def random_resized_crop_region(
    height: int,
    width: int,
    scale: Tuple[float, float],
    ratio: Tuple[float, float],
) -> Tuple[int, int, int, int]:
    """Draw a RandomResizedCrop region with torchvision's algorithm (10 tries, then centre).

    Uses ``np.random`` (seeded per dataloader worker by detectron2).

    Args:
        height, width: image size.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio w / h (drawn log-uniformly).

    Returns:
        (x0, y0, w, h) in integer pixels, inside the image.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * np.random.uniform(scale[0], scale[1])
        aspect = math.exp(np.random.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return (
                int(np.random.randint(0, width - w + 1)),
                int(np.random.randint(0, height - h + 1)),
                w,
                h,
            )
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def view_transform(
    spec: ViewSpec,
    height: int,
    width: int,
    scale: Tuple[float, float],
    ratio: Tuple[float, float],
) -> Tuple[TransformList, np.ndarray]:
    """Draw the geometric (pre-flip) transform of a ``"whole"`` or ``"crop"`` view.

    Args:
        spec: the view (not ``"downsample"``: those reuse their source's transform).
        height, width: original image size.
        scale, ratio: RandomResizedCrop ranges.

    Returns:
        (transform, region): the TransformList from original pixels to view pixels, and the
        view's region of the original image as float ``(4,)`` XYXY.
    """
    s = spec.size
    if spec.kind == "whole":
        return TransformList([ResizeTransform(height, width, s, s)]), np.array(
            [0, 0, width, height], dtype=np.float32
        )
    if spec.kind != "crop":
        raise ValueError(f"view_transform() draws whole/crop views, not {spec.kind!r}")
    x0, y0, w, h = random_resized_crop_region(height, width, scale, ratio)
    tfm = TransformList([CropTransform(x0, y0, w, h), ResizeTransform(h, w, s, s)])
    return tfm, np.array([x0, y0, x0 + w, y0 + h], dtype=np.float32)


def _resize(img: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """Antialiased resize close to PIL's bilinear filter (what torchvision and SoCo use).

    Shrinking by more than 1.5x goes bilinear to twice the target, then an exact 2x area
    average: ~1.7 grey levels (mean absolute) from PIL's output on a 500x375 photo-like image,
    and ~2.5x faster than a direct ``INTER_AREA``.
    """
    h, w = img.shape[:2]
    if max(w / new_w, h / new_h) > 1.5:
        img = cv2.resize(img, (2 * new_w, 2 * new_h), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def _resize_region(
    img: np.ndarray, x0: float, y0: float, w: float, h: float, new_w: int, new_h: int
) -> np.ndarray:
    """Region (x0, y0, w, h) of ``img`` in continuous pixel coordinates (pixel i spans
    [i, i + 1)), resampled to (new_w, new_h) the way :func:`_resize` resamples an exact crop:
    bilinear (to twice the target, then a 2x area average, when shrinking by more than 1.5x)."""
    twice = max(w / new_w, h / new_h) > 1.5
    out_w, out_h = (2 * new_w, 2 * new_h) if twice else (new_w, new_h)
    sx, sy = out_w / w, out_h / h
    # pixel centres: out + 0.5 = (in + 0.5 - x0) * s
    m = np.array([[sx, 0.0, sx * (0.5 - x0) - 0.5], [0.0, sy, sy * (0.5 - y0) - 0.5]])
    img = cv2.warpAffine(img, m, (out_w, out_h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA) if twice else img


def apply_image(tfm: Transform, img: np.ndarray, reduction: int = 1) -> np.ndarray:
    """``tfm.apply_image(img)`` with OpenCV doing crops, resizes and flips of uint8 images.

    detectron2's ``ResizeTransform`` goes through PIL (two full copies per call), which was
    the largest cost of the mapper; a crop here is a slice handed straight to ``cv2.resize``.
    Boxes still move with ``tfm.apply_box``.

    Args:
        tfm: a Transform or TransformList.
        img: (H, W, C) uint8.
        reduction: ``img`` is the image ``tfm`` was drawn for, decoded at 1/reduction of its
            size (``soco_d2.data.decode``; pixel i covers original pixels [k*i, k*i + k)); then
            ``tfm`` must be a view's ``[CropTransform, ResizeTransform]`` or ``[ResizeTransform]``
            (:func:`view_transform`), and the region it names is resampled from ``img``.

    Returns:
        (H', W', C) uint8.
    """
    parts = tfm.transforms if isinstance(tfm, TransformList) else [tfm]
    if reduction != 1:
        crop = parts[0] if isinstance(parts[0], CropTransform) else None
        resize = parts[-1]
        if len(parts) != 1 + (crop is not None) or not isinstance(resize, ResizeTransform):
            raise ValueError(f"a reduced image takes a view's crop and resize, not {parts}")
        x0, y0 = (crop.x0, crop.y0) if crop is not None else (0, 0)
        k = float(reduction)
        return _resize_region(img, x0 / k, y0 / k, resize.w / k, resize.h / k, resize.new_w,
                              resize.new_h)
    for t in parts:
        if isinstance(t, CropTransform):
            img = img[t.y0 : t.y0 + t.h, t.x0 : t.x0 + t.w]
        elif isinstance(t, ResizeTransform) and img.dtype == np.uint8:
            assert img.shape[:2] == (t.h, t.w), (img.shape, t.h, t.w)
            img = _resize(img, t.new_w, t.new_h)
        elif isinstance(t, HFlipTransform) and img.dtype == np.uint8:
            img = cv2.flip(img, 1)
        else:
            img = t.apply_image(img)
    return img


_OPENCV_SINGLE_THREADED_IN = None  # the process that has set it


def single_threaded_opencv() -> None:
    """Give OpenCV one thread in this process (once per process; cheap to call per image).

    A mapper runs in each loader worker, one worker per core. OpenCV's own thread pool would
    add a thread per core to every worker, spinning between the small per-view operations:
    measured at 2 cores, the worker used 1.4 cores for the images one core maps.
    """
    global _OPENCV_SINGLE_THREADED_IN
    if _OPENCV_SINGLE_THREADED_IN != os.getpid():
        cv2.setNumThreads(1)
        _OPENCV_SINGLE_THREADED_IN = os.getpid()


def _per_view(values: Sequence[float], index: int) -> float:
    """Per-view probability; views past the end of the list reuse its last entry."""
    return float(values[min(index, len(values) - 1)])


class ColorAugmentation:
    """SoCo's colour pipeline: jitter (p), grayscale (p), Gaussian blur (p), solarize (p).

    Args:
        channel_order: ``"RGB"`` or ``"BGR"`` (cfg.INPUT.FORMAT), for grey weights and hue.
        jitter: (brightness, contrast, saturation, hue) strengths as in torchvision.
        jitter_prob, grayscale_prob: probabilities.
        blur_prob, solarize_prob: per-view probabilities, V1 first (the last entry repeats).
        blur_sigma: Gaussian sigma range (PIL's ``GaussianBlur(radius)`` uses radius as sigma).
    """

    def __init__(
        self,
        *,
        channel_order: str,
        jitter: Sequence[float],
        jitter_prob: float,
        grayscale_prob: float,
        blur_prob: Sequence[float],
        blur_sigma: Sequence[float],
        solarize_prob: Sequence[float],
    ):
        if channel_order not in ("RGB", "BGR"):
            raise ValueError(f"SoCo views need INPUT.FORMAT RGB or BGR, got {channel_order!r}")
        rgb = channel_order == "RGB"
        self._to_gray = cv2.COLOR_RGB2GRAY if rgb else cv2.COLOR_BGR2GRAY
        self._to_hsv = cv2.COLOR_RGB2HSV if rgb else cv2.COLOR_BGR2HSV
        self._from_hsv = cv2.COLOR_HSV2RGB if rgb else cv2.COLOR_HSV2BGR
        self.jitter = tuple(float(x) for x in jitter)
        self.jitter_prob = float(jitter_prob)
        self.grayscale_prob = float(grayscale_prob)
        self.blur_prob = list(blur_prob)
        self.blur_sigma = tuple(blur_sigma)
        self.solarize_prob = list(solarize_prob)
        # PIL's solarize(threshold=128) inverts every value >= 128.
        lut = np.arange(256, dtype=np.uint8)
        self._solarize_lut = np.where(lut >= 128, 255 - lut, lut).astype(np.uint8)

    def _gray(self, img: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(cv2.cvtColor(img, self._to_gray), cv2.COLOR_GRAY2RGB)

    def _color_jitter(self, img: np.ndarray) -> np.ndarray:
        b, c, s, h = self.jitter
        # torchvision draws all four factors, then applies them in a random order.
        factors = [
            np.random.uniform(max(0.0, 1 - b), 1 + b) if b > 0 else None,
            np.random.uniform(max(0.0, 1 - c), 1 + c) if c > 0 else None,
            np.random.uniform(max(0.0, 1 - s), 1 + s) if s > 0 else None,
            np.random.uniform(-h, h) if h > 0 else None,
        ]
        for op in np.random.permutation(4):
            f = factors[op]
            if f is None:
                continue
            if op == 0:  # brightness: blend with black
                img = cv2.convertScaleAbs(img, alpha=f)
            elif op == 1:  # contrast: blend with the mean grey level
                mean = float(cv2.cvtColor(img, self._to_gray).mean())
                img = cv2.addWeighted(img, f, img, 0.0, (1.0 - f) * mean)
            elif op == 2:  # saturation: blend with the grey image
                img = cv2.addWeighted(img, f, self._gray(img), 1.0 - f, 0.0)
            else:  # hue: rotate H (OpenCV's uint8 hue spans 0..179, i.e. 2 degrees a step)
                hsv = cv2.cvtColor(img, self._to_hsv)
                shift = int(round(f * 180.0))
                lut = ((np.arange(256) + shift) % 180).astype(np.uint8)
                hsv[..., 0] = cv2.LUT(hsv[..., 0], lut)
                img = cv2.cvtColor(hsv, self._from_hsv)
        return img

    def __call__(self, img: np.ndarray, view_index: int) -> np.ndarray:
        """Augment one view.

        Args:
            img: (H, W, 3) uint8 view in ``channel_order``.
            view_index: 0 for V1 (selects the per-view blur / solarize probabilities).

        Returns:
            (H, W, 3) uint8 contiguous array.
        """
        img = np.ascontiguousarray(img)
        if self.jitter_prob > 0 and np.random.rand() < self.jitter_prob:
            img = self._color_jitter(img)
        if self.grayscale_prob > 0 and np.random.rand() < self.grayscale_prob:
            img = self._gray(img)
        if np.random.rand() < _per_view(self.blur_prob, view_index):
            sigma = np.random.uniform(self.blur_sigma[0], self.blur_sigma[1])
            img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma)
        if np.random.rand() < _per_view(self.solarize_prob, view_index):
            img = cv2.LUT(img, self._solarize_lut)
        return img
