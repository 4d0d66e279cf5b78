"""The SIM mapper: two independently cropped and flipped views, and a block mask of view 1.

Output: the multi-view mapper's dict (``views``, ``view_regions``, ``view_flipped``,
``image_size``; see ``multi_view.py``) plus::

    "mask": (g*g,) bool, True for the patches of view 1 the online encoder does not see
            (exactly INPUT.SIM.NUM_MASKING_PATCHES; g = view side / MODEL.VIT.PATCH_SIZE)

Views: two RandomResizedCrops of ``INPUT.SSL.VIEW_SIZES`` (two equal sides), each flipped on
its own (``INPUT.SSL.FLIP_PROB``). The official code flips before cropping; flipping after the
crop shows the same pixel distribution, and ``view_regions`` / ``view_flipped`` still give the
model each view's exact geometry (``soco_d2/modeling/sim/pos_embed.py``). Colour follows SIM
through the per-view ``INPUT.SSL`` lists: view 1 blur p 1.0 and no solarize, view 2 blur p 0.1
and solarize p 0.2.
"""
from typing import Any, Dict

import torch
from detectron2.config import configurable

from ..masking import BlockMaskingGenerator
from . import register_mapper
from .multi_view import MultiViewDatasetMapper

__all__ = ["SIMDatasetMapper"]


@register_mapper("sim")
class SIMDatasetMapper(MultiViewDatasetMapper):
    """Two SIM views and the mask of view 1 (see module docstring)."""

    uses_proposals = False

    @configurable
    def __init__(self, is_train: bool = True, *, mask_generator: BlockMaskingGenerator, **kwargs):
        """
        Args:
            is_train: see :class:`MultiViewDatasetMapper`.
            mask_generator: draws view 1's mask on its patch grid.
            kwargs: see :class:`MultiViewDatasetMapper`.
        """
        super().__init__(is_train, **kwargs)
        if len(self.view_specs) != 2 or self.view_specs[0].size != self.view_specs[1].size:
            raise ValueError(
                "the sim mapper needs INPUT.SSL.VIEW_SIZES of two equal sides, got "
                f"{[s.size for s in self.view_specs]}"
            )
        self.mask_generator = mask_generator

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        ret = super().from_config(cfg, is_train)
        size, patch = int(cfg.INPUT.SSL.VIEW_SIZES[0]), int(cfg.MODEL.VIT.PATCH_SIZE)
        if size % patch:
            raise ValueError(
                f"INPUT.SSL.VIEW_SIZES[0] ({size}) must be a multiple of MODEL.VIT.PATCH_SIZE "
                f"({patch})"
            )
        s = cfg.INPUT.SIM
        ret["mask_generator"] = BlockMaskingGenerator(
            (size // patch, size // patch),
            num_masked=s.NUM_MASKING_PATCHES,
            min_block=s.MIN_BLOCK_PATCHES,
            max_block=s.MAX_BLOCK_PATCHES or None,
            min_aspect=s.MIN_ASPECT,
        )
        return ret

    def finish(self, out: Dict[str, Any], ctx: Dict[str, Any]) -> Dict[str, Any]:
        out["mask"] = torch.from_numpy(self.mask_generator().reshape(-1))
        return out
