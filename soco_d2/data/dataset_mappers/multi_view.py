"""The multi-view mapper: one unlabeled image -> V augmented views and where each came from.

Input: a dataset dict with ``"file_name"`` and ``"image_id"`` (any other field is ignored here).

Output::

    {"file_name", "image_id",
     "views":        V uint8 tensors (3, S_v, S_v) in cfg.INPUT.FORMAT order (not normalised),
     "view_regions": (V, 4) float32 XYXY_ABS region of the original image each view shows,
     "view_flipped": (V,) bool, whether the view was flipped horizontally after its crop,
     "image_size":   (H, W) of the original image}

A view's geometry is fully given by its region, its flip and its side S_v (the scale is
S_v / region size): methods that need cross-view correspondence (dense matching, relative
positions) compute it from these. Subclasses add per-view boxes (``"boxes"``: V tensors
(K, 4) XYXY_ABS in that view's pixels, moved by the same detectron2 transforms) through the
hooks :meth:`draw_geometry`, :meth:`view_boxes` and :meth:`finish_view`.

Every view is a ``"crop"`` (RandomResizedCrop, ``INPUT.SSL.CROP_SCALE`` / ``CROP_RATIO``) unless a
subclass returns other :class:`~soco_d2.data.views.ViewSpec` s from :meth:`view_specs_from_config`.
Colour augmentation (jitter, grayscale, blur, solarize; per-view probabilities) is
``INPUT.SSL.*``. An unreadable image is logged and None returned; detectron2's ``MapDataset``
then retries another index, so one corrupt file never stops a run.

Images are decoded by ``soco_d2.data.decode.read_image`` (detectron2's ``read_image``, pixel for
pixel, faster for JPEGs). With ``INPUT.SSL.DRAFT_DECODE`` a JPEG much larger than the views is
decoded at 1/2, 1/4 or 1/8 of its size (:meth:`draft_reduction`: the largest reduction that
leaves every view's source region at least as large as the view, whatever crop is drawn);
regions, boxes and ``image_size`` stay in full-size pixels, only the resampling differs.
"""
import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data.transforms import HFlipTransform, ResizeTransform

from ..decode import read_image
from ..sampling import clip_boxes
from ..views import (
    ColorAugmentation,
    ViewSpec,
    apply_image,
    single_threaded_opencv,
    view_transform,
)
from . import register_mapper

__all__ = ["MultiViewDatasetMapper"]

logger = logging.getLogger(__name__)


@register_mapper("multi_view")
class MultiViewDatasetMapper:
    """V independently augmented views of an image, with their crop regions and flips."""

    # Read by the pretraining loader: this mapper needs no proposal cache.
    uses_proposals = False
    # Whether views may come from a reduced decode: the hooks use only the views (and the
    # image's full size), never the decoded pixels themselves.
    draft_decode_safe = True

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        image_format: str,
        view_specs: Sequence[ViewSpec],
        crop_scale: Sequence[float],
        crop_ratio: Sequence[float],
        flip_prob: float,
        color_augmentation: Optional[ColorAugmentation],
        draft_decode: bool = False,
    ):
        """
        Args:
            is_train: kept for detectron2's mapper signature; views are always random.
            image_format: cfg.INPUT.FORMAT ("RGB" or "BGR").
            view_specs: one per view, V1 first.
            crop_scale, crop_ratio: RandomResizedCrop ranges of the cropped views.
            flip_prob: horizontal flip probability, drawn per view.
            color_augmentation: colour pipeline, or None for none.
            draft_decode: decode large JPEGs at reduced size (:meth:`draft_reduction`).
        """
        if not view_specs:
            raise ValueError("INPUT.SSL.VIEW_SIZES must name at least one view")
        for i, spec in enumerate(view_specs):
            if spec.kind == "downsample" and not 0 <= spec.source < i:
                raise ValueError(f"View {i} resizes view {spec.source}, which must come before it")
        self.is_train = is_train
        self.image_format = image_format
        self.view_specs = list(view_specs)
        self.crop_scale = tuple(crop_scale)
        self.crop_ratio = tuple(crop_ratio)
        self.flip_prob = float(flip_prob)
        self.color_augmentation = color_augmentation
        self.draft_decode = bool(draft_decode) and self.draft_decode_safe

    @classmethod
    def view_specs_from_config(cls, cfg) -> List[ViewSpec]:
        """Every view a RandomResizedCrop of side ``INPUT.SSL.VIEW_SIZES[i]``."""
        return [ViewSpec(int(s), "crop") for s in cfg.INPUT.SSL.VIEW_SIZES]

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        s = cfg.INPUT.SSL
        return {
            "is_train": is_train,
            "image_format": cfg.INPUT.FORMAT,
            "view_specs": cls.view_specs_from_config(cfg),
            "crop_scale": s.CROP_SCALE,
            "crop_ratio": s.CROP_RATIO,
            "flip_prob": s.FLIP_PROB,
            "color_augmentation": ColorAugmentation(
                channel_order=cfg.INPUT.FORMAT,
                jitter=s.COLOR_JITTER,
                jitter_prob=s.COLOR_JITTER_PROB,
                grayscale_prob=s.GRAYSCALE_PROB,
                blur_prob=s.BLUR_PROB,
                blur_sigma=s.BLUR_SIGMA,
                solarize_prob=s.SOLARIZE_PROB,
            ),
            "draft_decode": s.DRAFT_DECODE,
        }

    # ------------------------------------------------------------------ hooks
    def draw_regions(self, height: int, width: int):
        """Draw every non-derived view's transform once.

        Returns:
            (tfms, regions): V entries each, ``None`` for ``"downsample"`` views (they reuse
            their source's); regions are (4,) float32 XYXY in original pixels.
        """
        tfms, regions = [], []
        for spec in self.view_specs:
            if spec.kind == "downsample":
                tfms.append(None)
                regions.append(None)
                continue
            tfm, region = view_transform(spec, height, width, self.crop_scale, self.crop_ratio)
            tfms.append(tfm)
            regions.append(region)
        return tfms, regions

    def prepare(self, dataset_dict: dict, image: np.ndarray) -> Dict[str, Any]:
        """Per-image state shared by the hooks below (subclasses: proposals, the image, ...).

        Args:
            dataset_dict: the dict being mapped, with the image's full-size ``"height"`` and
                ``"width"``.
            image: its decoded image, from :meth:`read`: (height, width, 3), or 1/k of that
                under ``INPUT.SSL.DRAFT_DECODE`` unless the class sets ``draft_decode_safe``
                False.
        """
        return {}

    def draw_geometry(self, height: int, width: int, ctx: Dict[str, Any]):
        """The views' transforms and regions (see :meth:`draw_regions`); may redraw."""
        return self.draw_regions(height, width)

    def view_boxes(self, index: int, spec: ViewSpec, tfm, ctx: Dict[str, Any]):
        """(K, 4) boxes of view ``index`` in its pixels before clipping and flip, or None."""
        return None

    def finish_view(self, index: int, img: np.ndarray, boxes, ctx: Dict[str, Any]) -> np.ndarray:
        """Last per-view step, after flip and colour (``img`` is writable)."""
        return img

    def finish(self, out: Dict[str, Any], ctx: Dict[str, Any]) -> Dict[str, Any]:
        """Add per-image outputs to the mapped dict."""
        return out

    # ------------------------------------------------------------------ mapping
    def draft_reduction(self, height: int, width: int) -> int:
        """The largest k in (8, 4, 2) such that every non-derived view's source region, any
        crop drawn, is at least ``k x`` its side in both directions; 1 if none (or off).

        RandomResizedCrop regions have sides of at least sqrt(A * scale_min * ratio_min) and
        sqrt(A * scale_min / ratio_max) (A = height * width), and its fallback keeps
        min(height, width); a whole view spans the image.
        """
        if not self.draft_decode:
            return 1
        area, smallest = height * width, float(min(height, width))
        limit = math.inf
        for spec in self.view_specs:
            if spec.kind == "crop":
                s, (r0, r1) = self.crop_scale[0], (min(self.crop_ratio), max(self.crop_ratio))
                side = min(math.sqrt(area * s * r0), math.sqrt(area * s / r1), smallest) - 1
            elif spec.kind == "whole":
                side = smallest
            else:  # derived from another view
                continue
            limit = min(limit, side / spec.size)
        return next((k for k in (8, 4, 2) if k <= limit), 1)

    def read(self, dataset_dict: dict) -> Optional[Tuple[np.ndarray, Tuple[int, int], int]]:
        """(image in ``image_format``, (height, width) of the full image, reduction k), or None
        (logged) when it cannot be used. The image is the full one unless k > 1 (see
        :meth:`draft_reduction`).

        A dict may carry the decoded image itself as ``"image"`` ((H, W, 3) uint8 in
        ``image_format``; the benchmark and tests use this to map without disk).
        """
        file_name = dataset_dict["file_name"]
        if "image" in dataset_dict:
            image = np.asarray(dataset_dict["image"])
            return image, image.shape[:2], 1
        try:
            image, size, k = read_image(file_name, self.image_format, self.draft_reduction)
        except Exception as e:  # any decoder error: skip this image, keep the run alive
            logger.warning(f"Skipping unreadable image {file_name}: {type(e).__name__}: {e}")
            return None
        if image.ndim != 3 or image.shape[2] != 3 or min(size) < 2:
            logger.warning(f"Skipping image {file_name} of unusable shape {image.shape}")
            return None
        return image, size, k

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        """Map one dataset dict to one model input (see module docstring), or None."""
        single_threaded_opencv()  # this process maps on one core
        decoded = self.read(dataset_dict)
        if decoded is None:
            return None
        image, (height, width), reduction = decoded
        ctx = self.prepare({**dataset_dict, "height": height, "width": width}, image)
        tfms, regions = self.draw_geometry(height, width, ctx)

        views: List[torch.Tensor] = []
        boxes_out: List[torch.Tensor] = []
        flipped: List[bool] = []
        pre_flip: Dict[int, tuple] = {}  # view -> (image, boxes) before flip and colour
        for i, spec in enumerate(self.view_specs):
            s = spec.size
            if spec.kind == "downsample":
                src_img, src_boxes = pre_flip[spec.source]
                src_size = self.view_specs[spec.source].size
                resize = ResizeTransform(src_size, src_size, s, s)
                img = apply_image(resize, src_img)
                boxes = None if src_boxes is None else resize.apply_box(src_boxes.copy())
                regions[i] = regions[spec.source]
            else:
                img = apply_image(tfms[i], image, reduction)
                boxes = self.view_boxes(i, spec, tfms[i], ctx)
            if boxes is not None:
                boxes = clip_boxes(boxes, s, s)
            pre_flip[i] = (img, boxes)
            flip = bool(self.flip_prob > 0 and np.random.rand() < self.flip_prob)
            if flip:
                hflip = HFlipTransform(s)
                img = apply_image(hflip, img)
                if boxes is not None:
                    boxes = hflip.apply_box(boxes.copy())
            if self.color_augmentation is not None:
                img = self.color_augmentation(img, i)
            if not (img.flags.writeable and img.flags.c_contiguous):
                img = np.array(img)  # in-place steps write to it; torch wants writable memory
            img = self.finish_view(i, img, boxes, ctx)
            views.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
            flipped.append(flip)
            if boxes is not None:
                boxes_out.append(torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)))

        out = {
            "file_name": dataset_dict["file_name"],
            "image_id": dataset_dict.get("image_id", dataset_dict["file_name"]),
            "views": views,
            "view_regions": torch.from_numpy(np.stack(regions).astype(np.float32)),
            "view_flipped": torch.tensor(flipped, dtype=torch.bool),
            "image_size": (height, width),
        }
        if boxes_out:
            if len(boxes_out) != len(views):
                raise RuntimeError("view_boxes() must give boxes for every view or for none")
            out["boxes"] = boxes_out
        return self.finish(out, ctx)
