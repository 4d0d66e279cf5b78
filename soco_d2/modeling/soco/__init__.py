"""The parts only SoCo uses: the box feature head (``roi_heads.py``), the scale-aware assignment of
boxes to FPN levels (``assign.py``) and the official every-level loss (``losses.py``). The
meta-architecture is ``soco_d2/modeling/meta_arch/soco.py``; the views and proposals come from
the ``soco`` mapper (``soco_d2/data/dataset_mappers/soco.py``)."""
from .assign import assign_boxes_to_levels_by_size, box_sizes, pool_boxes_at_levels
from .losses import masked_level_byol_loss
from .roi_heads import SoCoROIHeads, build_res5_head

__all__ = [
    "SoCoROIHeads",
    "assign_boxes_to_levels_by_size",
    "box_sizes",
    "build_res5_head",
    "masked_level_byol_loss",
    "pool_boxes_at_levels",
]
