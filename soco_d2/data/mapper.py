"""The SoCo dataset mapper: one pretraining dataset dict -> views and matched boxes.

Input (contract 2): ``{"file_name", "image_id", "proposal_cache", "proposal_key"}``.
Output (contract 3): ``{"file_name", "image_id", "views": [V x (3, S_v, S_v) uint8 tensors in
cfg.INPUT.FORMAT order], "boxes": [V x (K, 4) float32 XYXY_ABS in that view's pixels]}``,
row k of every view being the same proposal. Normalization is left to the model.

An unreadable image is logged and the mapper returns None; detectron2's ``MapDataset`` then
retries another random index, so one corrupt file never stops a run.
"""

import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data.transforms import HFlipTransform, ResizeTransform, TransformList
from detectron2.utils.logger import log_first_n

from .sampling import clip_boxes, cutout_in_boxes, draw_views_with_proposals, jitter_boxes
from .views import ColorAugmentation, ViewSpec, apply_image, make_view_specs, view_transform

__all__ = ["SoCoDatasetMapper", "lookup_proposals"]

logger = logging.getLogger(__name__)

CacheSource = Union[Callable[[str], Any], Mapping[str, Any]]


def _open_proposal_cache(path: str):
    from .proposals import ProposalCache  # imported lazily: owned by the proposals module

    return ProposalCache(path)


def lookup_proposals(cache: Any, key: str) -> Tuple[Optional[str], np.ndarray]:
    """Boxes of ``key`` from a proposal cache (exact key, else ``cache.find``'s match).

    Args:
        cache: object with ``get(key)`` and ``find(key_or_path)`` (contract 1).
        key: cache key or image path.

    Returns:
        (resolved key or None if ``find`` returned boxes directly,
        (N, 4) float32 XYXY_ABS boxes in original-image pixels).

    Raises:
        KeyError: if the cache has no entry for ``key``.
    """
    found = key if key in cache else cache.find(key)
    if isinstance(found, str):
        return found, np.asarray(cache.get(found), dtype=np.float32).reshape(-1, 4)
    # find() may hand back the boxes themselves rather than the matching key.
    return None, np.asarray(found, dtype=np.float32).reshape(-1, 4)


class SoCoDatasetMapper:
    """Build SoCo's views, sample K proposals shared by all views, and move them per view.

    Steps per image: read; draw V1 (whole) and the cropped views, redrawing while too few
    proposals overlap them all; pick K (pad by duplicates; whole-view fallback); jitter V1's
    boxes; apply each view's crop/resize to image and boxes with detectron2 transforms;
    derive downsampled views from V2; flip each view independently; colour-augment; cutout
    inside the boxes of views after V1.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        image_format: str,
        view_specs: Sequence[ViewSpec],
        crop_scale: Sequence[float],
        crop_ratio: Sequence[float],
        num_proposals: int,
        max_crop_tries: int,
        box_jitter_prob: float,
        box_jitter: float,
        cutout_prob: float,
        cutout_scale: Sequence[float],
        cutout_fill: Sequence[float],
        flip_prob: float,
        color_augmentation: Optional[ColorAugmentation],
        proposal_caches: Optional[CacheSource] = None,
    ):
        """
        Args:
            is_train: kept for detectron2's mapper signature; SoCo views are always random.
            image_format: cfg.INPUT.FORMAT ("RGB" or "BGR").
            view_specs: one per view, V1 first (see ``views.make_view_specs``).
            crop_scale, crop_ratio: RandomResizedCrop ranges of the cropped views.
            num_proposals: K.
            max_crop_tries: crop draws at most while too few proposals overlap.
            box_jitter_prob, box_jitter: V1 box jitter probability and magnitude.
            cutout_prob, cutout_scale: in-box cutout on views after V1 (0 disables).
            cutout_fill: fill colour in ``image_format`` order (the pixel mean).
            flip_prob: horizontal flip probability, drawn per view.
            color_augmentation: colour pipeline, or None for none.
            proposal_caches: opens a cache from its path (default: ``ProposalCache``), or a
                mapping path -> opened cache. Caches are opened lazily, once per process.
        """
        if view_specs[0].kind != "whole" or any(s.kind == "whole" for s in view_specs[1:]):
            raise ValueError("V1 must be the only 'whole' view")
        self.is_train = is_train
        self.image_format = image_format
        self.view_specs = list(view_specs)
        self.crop_scale = tuple(crop_scale)
        self.crop_ratio = tuple(crop_ratio)
        self.num_proposals = int(num_proposals)
        self.max_crop_tries = int(max_crop_tries)
        self.box_jitter_prob = float(box_jitter_prob)
        self.box_jitter = float(box_jitter)
        self.cutout_prob = float(cutout_prob)
        self.cutout_scale = tuple(cutout_scale)
        self.cutout_fill = tuple(cutout_fill)
        self.flip_prob = float(flip_prob)
        self.color_augmentation = color_augmentation
        self._cache_source = (
            proposal_caches if proposal_caches is not None else _open_proposal_cache
        )
        self._caches: Dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, proposal_caches: Optional[CacheSource] = None):
        s = cfg.INPUT.SOCO
        views = make_view_specs(s.VIEW_SIZES, s.V3_MODE, s.DOWNSAMPLED_VIEW)
        mean = list(cfg.MODEL.PIXEL_MEAN)
        # MODEL.PIXEL_MEAN is given in INPUT.FORMAT order, as the model normalizes with it.
        return {
            "is_train": is_train,
            "image_format": cfg.INPUT.FORMAT,
            "view_specs": views,
            "crop_scale": s.CROP_SCALE,
            "crop_ratio": s.CROP_RATIO,
            "num_proposals": s.NUM_PROPOSALS,
            "max_crop_tries": s.MAX_CROP_TRIES,
            "box_jitter_prob": s.BOX_JITTER_PROB,
            "box_jitter": s.BOX_JITTER,
            "cutout_prob": s.CUTOUT_PROB,
            "cutout_scale": s.CUTOUT_SCALE,
            "cutout_fill": mean,
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
            "proposal_caches": proposal_caches,
        }

    # ------------------------------------------------------------------ proposals
    def _cache(self, path: str):
        cache = self._caches.get(path)
        if cache is None:
            src = self._cache_source
            cache = src[path] if isinstance(src, Mapping) else src(path)
            self._caches[path] = cache
        return cache

    def _proposals(self, dataset_dict: dict, width: int, height: int) -> np.ndarray:
        """(N, 4) proposals in this image's pixels; the whole image when there are none."""
        boxes = np.zeros((0, 4), dtype=np.float32)
        path = dataset_dict.get("proposal_cache")
        if path:
            key = str(dataset_dict.get("proposal_key", dataset_dict["file_name"]))
            try:
                cache = self._cache(str(path))
                resolved, boxes = lookup_proposals(cache, key)
            except KeyError:
                log_first_n(
                    logging.WARNING, f"No proposals for '{key}' in {path}: whole image used", n=5
                )
            else:
                if resolved is not None and len(boxes):
                    boxes = self._rescale_to_image(cache, resolved, boxes, width, height)
        else:
            log_first_n(
                logging.WARNING, "Dataset dict without 'proposal_cache': whole image used", n=1
            )
        if len(boxes) == 0:
            # The official code's fallback for an image without proposals.
            boxes = np.array([[0, 0, width, height]], dtype=np.float32)
        return boxes

    @staticmethod
    def _rescale_to_image(
        cache, key: str, boxes: np.ndarray, width: int, height: int
    ) -> np.ndarray:
        """Rescale boxes if the cache saw the image at another size (e.g. a resized copy)."""
        info = cache.info(key) if hasattr(cache, "info") else {}
        cw, ch = int(info.get("width") or width), int(info.get("height") or height)
        if (cw, ch) != (width, height):
            log_first_n(
                logging.WARNING,
                f"Proposal cache size {cw}x{ch} != image size {width}x{height} for '{key}': "
                "boxes rescaled",
                n=5,
            )
            boxes = boxes * np.array([width / cw, height / ch] * 2, dtype=np.float32)
        return boxes

    # ------------------------------------------------------------------ views
    def _draw_regions(self, height: int, width: int):
        tfms, regions = [], []
        for spec in self.view_specs:
            if spec.kind == "downsample":
                tfms.append(None)
                continue
            tfm, region = view_transform(spec, height, width, self.crop_scale, self.crop_ratio)
            tfms.append(tfm)
            regions.append(region)
        return tfms, regions

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        """Map one dataset dict (contract 2) to one SoCo model input (contract 3), or None."""
        file_name = dataset_dict["file_name"]
        try:
            image = utils.read_image(file_name, format=self.image_format)
        except Exception as e:  # any decoder error: skip this image, keep the run alive
            logger.warning(f"Skipping unreadable image {file_name}: {type(e).__name__}: {e}")
            return None
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 2:
            logger.warning(f"Skipping image {file_name} of unusable shape {image.shape}")
            return None
        height, width = image.shape[:2]
        proposals = self._proposals(dataset_dict, width, height)

        tfms, idx = draw_views_with_proposals(
            lambda: self._draw_regions(height, width),
            proposals,
            self.num_proposals,
            self.max_crop_tries,
        )
        # idx None: nothing overlaps all views, so each view's whole extent is its one box
        # (official behaviour). Otherwise the K proposals, V1's copy jittered.
        base = None if idx is None else proposals[idx]
        v1_boxes = None
        if base is not None:
            v1_boxes = jitter_boxes(base, self.box_jitter_prob, self.box_jitter, width, height)

        views: List[torch.Tensor] = []
        boxes_out: List[torch.Tensor] = []
        pre_flip: Dict[int, tuple] = {}  # view -> (image, boxes) before flip and colour
        for i, spec in enumerate(self.view_specs):
            s = spec.size
            if spec.kind == "downsample":
                src_img, src_boxes = pre_flip[spec.source]
                src_size = self.view_specs[spec.source].size
                resize = ResizeTransform(src_size, src_size, s, s)
                img = apply_image(resize, src_img)
                boxes = resize.apply_box(src_boxes.copy())
            else:
                tfm: TransformList = tfms[i]
                img = apply_image(tfm, image)
                if base is None:
                    boxes = np.tile(
                        np.array([[0, 0, s, s]], dtype=np.float32), (self.num_proposals, 1)
                    )
                else:
                    src = v1_boxes if i == 0 else base
                    boxes = tfm.apply_box(src.copy())
            boxes = clip_boxes(boxes, s, s)
            pre_flip[i] = (img, boxes)
            if self.flip_prob > 0 and np.random.rand() < self.flip_prob:
                flip = HFlipTransform(s)
                img = apply_image(flip, img)
                boxes = flip.apply_box(boxes.copy())
            if self.color_augmentation is not None:
                img = self.color_augmentation(img, i)
            if not (img.flags.writeable and img.flags.c_contiguous):
                img = np.array(img)  # cutout writes in place; torch wants writable memory
            if i > 0 and self.cutout_prob > 0:
                cutout_in_boxes(img, boxes, self.cutout_prob, self.cutout_scale, self.cutout_fill)
            views.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
            boxes_out.append(torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)))

        return {
            "file_name": file_name,
            "image_id": dataset_dict.get("image_id", file_name),
            "views": views,
            "boxes": boxes_out,
        }
