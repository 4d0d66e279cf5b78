"""DetCo's mapper: the multi-view mapper's two global views, plus one 3x3 jigsaw per view.

Input: a dataset dict with ``"file_name"`` and ``"image_id"``.

Output: the multi-view mapper's dict (``"views"``: 2 uint8 (3, S, S) global views, query
first, ``"view_regions"``, ``"view_flipped"``, ``"image_size"``) plus, per global view i::

    "jigsaw":         2 uint8 tensors (G*G, 3, P, P): the patches of view i's jigsaw, patch k
                      cut from cell k = r * G + c (row-major) of the jigsaw crop
    "jigsaw_boxes":   (2, G*G, 4) float32 XYXY of each patch in its jigsaw crop's pixels
                      (the J x J image after its flip; see soco_d2/data/jigsaw.py)
    "jigsaw_regions": (2, 4) float32 XYXY region of the original image each jigsaw crop shows
    "jigsaw_flipped": (2,) bool, whether the jigsaw crop was flipped before it was cut

with J = INPUT.DETCO.JIGSAW_SIZE (255), G = INPUT.DETCO.JIGSAW_GRID (3), cells J / G (85)
and P = INPUT.DETCO.PATCH_SIZE (64) as in the DetCo paper (arXiv 2102.04803).

Choices the paper leaves open (docs/methods/detco.md):

- ``INPUT.DETCO.JIGSAW_SOURCE = "view"`` (default): jigsaw i is view i's own crop region,
  resized from the original image to J x J and flipped with view i (our reading of the paper's
  pipeline, where a branch's global view and patch set come from one transformed image); the
  cross global<->local positive then covers exactly the content of the global<->global one;
  ``"crop"`` draws an independent RandomResizedCrop (INPUT.DETCO.JIGSAW_CROP_SCALE) and flip
  instead, the PIRL-style jigsaw.
- ``INPUT.DETCO.PATCH_COLOR = "patch"`` (default): colour augmentation (``INPUT.SSL.*`` with
  view i's per-view blur / solarize probabilities) drawn independently for every patch, as
  jigsaw pretext tasks do, so the concatenated local vector cannot lean on one colour cast
  shared by all nine patches; ``"jigsaw"`` draws it once for the whole crop before cutting.
- Patches stay in cell order: DetCo concatenates the nine features into one vector, and a
  fixed order keeps that vector's layout meaningful.
"""
from typing import Any, Dict, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data.transforms import CropTransform, HFlipTransform, ResizeTransform, TransformList

from ..jigsaw import cell_side, cut_patches, patch_boxes, sample_patch_offsets
from ..views import apply_image, random_resized_crop_region
from . import register_mapper
from .multi_view import MultiViewDatasetMapper

__all__ = ["DetCoDatasetMapper", "JIGSAW_SOURCES", "PATCH_COLORS"]

JIGSAW_SOURCES = ("view", "crop")
PATCH_COLORS = ("patch", "jigsaw")


@register_mapper("detco")
class DetCoDatasetMapper(MultiViewDatasetMapper):
    """Two global views and their jigsaw patch sets (see module docstring)."""

    uses_proposals = False
    # the jigsaw crops come from the decoded image itself: always decode it at full size
    draft_decode_safe = False

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        jigsaw_size: int,
        jigsaw_grid: int,
        patch_size: int,
        jigsaw_source: str = "view",
        jigsaw_crop_scale: Sequence[float] = (0.6, 1.0),
        patch_color: str = "patch",
        **kwargs,
    ):
        """
        Args:
            is_train: see :class:`MultiViewDatasetMapper`.
            jigsaw_size: side J of the square jigsaw crop.
            jigsaw_grid: cells per side G.
            patch_size: side P of the patch cut from each cell.
            jigsaw_source: "view" (the global view's crop and flip) or "crop" (independent).
            jigsaw_crop_scale: RandomResizedCrop area range of "crop" jigsaws.
            patch_color: "patch" (colour drawn per patch) or "jigsaw" (once per crop).
            kwargs: see :class:`MultiViewDatasetMapper` (views, colour, flips).
        """
        super().__init__(is_train, **kwargs)
        if len(self.view_specs) != 2:
            raise ValueError(
                f"DetCo needs exactly 2 global views (INPUT.SSL.VIEW_SIZES), got "
                f"{[s.size for s in self.view_specs]}"
            )
        if jigsaw_source not in JIGSAW_SOURCES:
            raise ValueError(
                f"INPUT.DETCO.JIGSAW_SOURCE must be one of {JIGSAW_SOURCES}, got {jigsaw_source!r}"
            )
        if patch_color not in PATCH_COLORS:
            raise ValueError(
                f"INPUT.DETCO.PATCH_COLOR must be one of {PATCH_COLORS}, got {patch_color!r}"
            )
        self.cell = cell_side(int(jigsaw_size), int(jigsaw_grid), int(patch_size))
        self.jigsaw_size = int(jigsaw_size)
        self.jigsaw_grid = int(jigsaw_grid)
        self.patch_size = int(patch_size)
        self.jigsaw_source = jigsaw_source
        self.jigsaw_crop_scale = tuple(jigsaw_crop_scale)
        self.patch_color = patch_color

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        d = cfg.INPUT.DETCO
        return {
            **super().from_config(cfg, is_train),
            "jigsaw_size": d.JIGSAW_SIZE,
            "jigsaw_grid": d.JIGSAW_GRID,
            "patch_size": d.PATCH_SIZE,
            "jigsaw_source": d.JIGSAW_SOURCE,
            "jigsaw_crop_scale": d.JIGSAW_CROP_SCALE,
            "patch_color": d.PATCH_COLOR,
        }

    # ------------------------------------------------------------------ hooks
    def prepare(self, dataset_dict: dict, image: np.ndarray) -> Dict[str, Any]:
        ctx = super().prepare(dataset_dict, image)
        ctx["image"] = image  # the jigsaw is resampled from the original pixels
        return ctx

    def draw_geometry(self, height: int, width: int, ctx: Dict[str, Any]):
        tfms, regions = super().draw_geometry(height, width, ctx)
        ctx["regions"] = [np.asarray(r, dtype=np.float32) for r in regions]
        return tfms, regions

    def finish(self, out: Dict[str, Any], ctx: Dict[str, Any]) -> Dict[str, Any]:
        image = ctx.pop("image")
        jigsaws, boxes, regions, flips = [], [], [], []
        for i in range(len(self.view_specs)):
            patches, box, region, flip = self.make_jigsaw(
                image, i, ctx["regions"][i], bool(out["view_flipped"][i])
            )
            jigsaws.append(torch.from_numpy(np.ascontiguousarray(patches.transpose(0, 3, 1, 2))))
            boxes.append(box)
            regions.append(region)
            flips.append(flip)
        out["jigsaw"] = jigsaws
        out["jigsaw_boxes"] = torch.from_numpy(np.stack(boxes).astype(np.float32))
        out["jigsaw_regions"] = torch.from_numpy(np.stack(regions).astype(np.float32))
        out["jigsaw_flipped"] = torch.tensor(flips, dtype=torch.bool)
        return out

    # ------------------------------------------------------------------ jigsaw
    def make_jigsaw(self, image: np.ndarray, index: int, view_region: np.ndarray, view_flip: bool):
        """The patch set of global view ``index``.

        Args:
            image: (H, W, 3) uint8 original image.
            index: global view index (selects per-view colour probabilities).
            view_region: (4,) XYXY crop region of that view in original pixels.
            view_flip: whether that view was flipped.

        Returns:
            (patches (G*G, P, P, 3) uint8, boxes (G*G, 4) XYXY in the J x J crop,
            region (4,) XYXY in original pixels, flipped).
        """
        height, width = image.shape[:2]
        if self.jigsaw_source == "view":
            x0, y0, x1, y1 = (int(round(float(v))) for v in view_region)
            w, h, flip = x1 - x0, y1 - y0, view_flip
        else:
            x0, y0, w, h = random_resized_crop_region(
                height, width, self.jigsaw_crop_scale, self.crop_ratio
            )
            flip = bool(self.flip_prob > 0 and np.random.rand() < self.flip_prob)
        j = self.jigsaw_size
        steps = [CropTransform(x0, y0, w, h), ResizeTransform(h, w, j, j)]
        if flip:
            steps.append(HFlipTransform(j))
        crop = apply_image(TransformList(steps), image)
        if self.color_augmentation is not None and self.patch_color == "jigsaw":
            crop = self.color_augmentation(crop, index)
        offsets = sample_patch_offsets(self.jigsaw_grid, self.cell, self.patch_size)
        boxes = patch_boxes(j, self.jigsaw_grid, self.patch_size, offsets)
        patches = cut_patches(crop, boxes)
        if self.color_augmentation is not None and self.patch_color == "patch":
            patches = np.stack([self.color_augmentation(p, index) for p in patches])
        region = np.array([x0, y0, x0 + w, y0 + h], dtype=np.float32)
        return np.ascontiguousarray(patches), boxes, region, flip

