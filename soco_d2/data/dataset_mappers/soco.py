"""SoCo's mapper: the multi-view mapper plus K selective-search proposals shared by all views.

Input: a dataset dict with ``"file_name"``, ``"image_id"`` and the proposals, either in memory
(``"proposals"``: (N, 4) XYXY_ABS in original-image pixels) or in a cache (``"proposal_cache"``:
path, ``"proposal_key"``: its key; the pretraining loader attaches these).

Output: the multi-view mapper's dict plus ``"boxes"``: V float32 tensors (K, 4), XYXY_ABS in
that view's pixels, row k of every view being the same proposal.

Steps per image: draw V1 (the whole image, aspect not kept) and the cropped views, redrawing
while too few proposals overlap them all; pick K (pad by duplicates; whole-view fallback);
jitter V1's boxes; move boxes with each view's detectron2 transforms; derive downsampled views
from V2; flip each view independently; colour-augment; cutout inside the boxes of views after V1.
"""
import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from detectron2.config import configurable
from detectron2.utils.logger import log_first_n

from ..sampling import cutout_in_boxes, draw_views_with_proposals, jitter_boxes
from ..views import ViewSpec, make_view_specs
from . import register_mapper
from .multi_view import MultiViewDatasetMapper

__all__ = ["SoCoDatasetMapper", "lookup_proposals"]

CacheSource = Union[Callable[[str], Any], Mapping[str, Any]]


def _open_proposal_cache(path: str):
    from ..proposals import ProposalCache  # imported lazily: owned by the proposals package

    return ProposalCache(path)


def lookup_proposals(cache: Any, key: str) -> Tuple[str, np.ndarray]:
    """Boxes of ``key`` from a proposal cache (``ProposalCache.resolve``'s key).

    Args:
        cache: object with ``resolve(key_or_path)`` and ``get(key)`` (a ``ProposalCache``).
        key: cache key or image path.

    Returns:
        (the cache's key, (N, 4) float32 XYXY_ABS boxes in original-image pixels).

    Raises:
        KeyError: if the cache has no entry for ``key``.
    """
    found = cache.resolve(key)
    return found, np.asarray(cache.get(found), dtype=np.float32).reshape(-1, 4)


@register_mapper("soco")
class SoCoDatasetMapper(MultiViewDatasetMapper):
    """SoCo's views and matched boxes (see module docstring)."""

    uses_proposals = True

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        num_proposals: int,
        max_crop_tries: int,
        box_jitter_prob: float,
        box_jitter: float,
        cutout_prob: float,
        cutout_scale: Sequence[float],
        cutout_fill: Sequence[float],
        proposal_caches: Optional[CacheSource] = None,
        **kwargs,
    ):
        """
        Args:
            is_train, kwargs: see :class:`MultiViewDatasetMapper` (V1 must be the only
                ``"whole"`` view).
            num_proposals: K.
            max_crop_tries: crop draws at most while too few proposals overlap.
            box_jitter_prob, box_jitter: V1 box jitter probability and magnitude.
            cutout_prob, cutout_scale: in-box cutout on views after V1 (0 disables).
            cutout_fill: fill colour in ``image_format`` order (the pixel mean).
            proposal_caches: opens a cache from its path (default: ``ProposalCache``), or a
                mapping path -> opened cache. Caches are opened lazily, once per process.
        """
        super().__init__(is_train, **kwargs)
        specs = self.view_specs
        if specs[0].kind != "whole" or any(s.kind == "whole" for s in specs[1:]):
            raise ValueError("V1 must be the only 'whole' view")
        self.num_proposals = int(num_proposals)
        self.max_crop_tries = int(max_crop_tries)
        self.box_jitter_prob = float(box_jitter_prob)
        self.box_jitter = float(box_jitter)
        self.cutout_prob = float(cutout_prob)
        self.cutout_scale = tuple(cutout_scale)
        self.cutout_fill = tuple(cutout_fill)
        self._cache_source = (
            proposal_caches if proposal_caches is not None else _open_proposal_cache
        )
        self._caches: Dict[str, Any] = {}

    @classmethod
    def view_specs_from_config(cls, cfg) -> List[ViewSpec]:
        s = cfg.INPUT.SOCO
        return make_view_specs(cfg.INPUT.SSL.VIEW_SIZES, s.V3_MODE, s.DOWNSAMPLED_VIEW)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, proposal_caches=None) -> Dict[str, Any]:
        ret = super().from_config(cfg, is_train)
        s = cfg.INPUT.SOCO
        ret.update(
            num_proposals=s.NUM_PROPOSALS,
            max_crop_tries=s.MAX_CROP_TRIES,
            box_jitter_prob=s.BOX_JITTER_PROB,
            box_jitter=s.BOX_JITTER,
            cutout_prob=s.CUTOUT_PROB,
            cutout_scale=s.CUTOUT_SCALE,
            # MODEL.PIXEL_MEAN is given in INPUT.FORMAT order, as the model normalizes with it.
            cutout_fill=list(cfg.MODEL.PIXEL_MEAN),
            proposal_caches=proposal_caches,
        )
        return ret

    # ------------------------------------------------------------------ proposals
    def _cache(self, path: str):
        cache = self._caches.get(path)
        if cache is None:
            src = self._cache_source
            cache = src[path] if isinstance(src, Mapping) else src(path)
            self._caches[path] = cache
        return cache

    def proposals(self, dataset_dict: dict, width: int, height: int) -> np.ndarray:
        """(N, 4) proposals in this image's pixels; the whole image when there are none."""
        boxes = np.zeros((0, 4), dtype=np.float32)
        path = dataset_dict.get("proposal_cache")
        if "proposals" in dataset_dict:
            boxes = np.asarray(dataset_dict["proposals"], dtype=np.float32).reshape(-1, 4)
        elif path:
            key = str(dataset_dict.get("proposal_key", dataset_dict["file_name"]))
            try:
                cache = self._cache(str(path))
                resolved, boxes = lookup_proposals(cache, key)
            except KeyError:
                log_first_n(
                    logging.WARNING, f"No proposals for '{key}' in {path}: whole image used", n=5
                )
            else:
                if len(boxes):
                    boxes = self._rescale_to_image(cache, resolved, boxes, width, height)
        else:
            log_first_n(logging.WARNING, "Dataset dict without proposals: whole image used", n=1)
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

    # ------------------------------------------------------------------ hooks
    def prepare(self, dataset_dict: dict, image: np.ndarray) -> Dict[str, Any]:
        # full-size pixels, as the views' geometry, even when the image was decoded reduced
        height, width = dataset_dict["height"], dataset_dict["width"]
        return {"proposals": self.proposals(dataset_dict, width, height), "size": (height, width)}

    def draw_geometry(self, height: int, width: int, ctx: Dict[str, Any]):
        proposals = ctx["proposals"]

        def draw():
            tfms, regions = self.draw_regions(height, width)
            return (tfms, regions), [r for r in regions if r is not None]

        (tfms, regions), idx = draw_views_with_proposals(
            draw, proposals, self.num_proposals, self.max_crop_tries
        )
        # idx None: nothing overlaps all views, so each view's whole extent is its one box
        # (official behaviour). Otherwise the K proposals, V1's copy jittered.
        ctx["base"] = None if idx is None else proposals[idx]
        if ctx["base"] is not None:
            ctx["v1_boxes"] = jitter_boxes(
                ctx["base"], self.box_jitter_prob, self.box_jitter, width, height
            )
        return tfms, regions

    def view_boxes(self, index: int, spec: ViewSpec, tfm, ctx: Dict[str, Any]) -> np.ndarray:
        if ctx["base"] is None:
            s = spec.size
            return np.tile(np.array([[0, 0, s, s]], dtype=np.float32), (self.num_proposals, 1))
        src = ctx["v1_boxes"] if index == 0 else ctx["base"]
        return tfm.apply_box(src.copy())

    def finish_view(self, index: int, img: np.ndarray, boxes, ctx: Dict[str, Any]) -> np.ndarray:
        if index > 0 and self.cutout_prob > 0:
            cutout_in_boxes(img, boxes, self.cutout_prob, self.cutout_scale, self.cutout_fill)
        return img
