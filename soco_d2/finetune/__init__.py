"""Fine-tuning support: heads the SSL transfer configs need and mini-COCO splits.

Dataset registration for fine-tuning lives in ``soco_d2.data.datasets``.
"""
from . import roi_heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from .mini_coco import coco_subset_first_percent, write_coco_subset
from .roi_heads import Res5ROIHeadsExtraNorm

__all__ = ["Res5ROIHeadsExtraNorm", "coco_subset_first_percent", "write_coco_subset"]
