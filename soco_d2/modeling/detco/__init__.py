"""The parts only DetCo uses: per-level global and local heads (``heads.py``) and the per-level
InfoNCE terms and weights (``losses.py``). The meta-architecture is
``soco_d2/modeling/meta_arch/detco.py``; the jigsaw patches come from the ``detco`` mapper
(``soco_d2/data/dataset_mappers/detco.py``)."""
from .heads import DetCoHeads, patches_to_images, pool_levels
from .losses import CROSS_DIRECTIONS, detco_level_terms, weight_level_losses

__all__ = [
    "CROSS_DIRECTIONS",
    "DetCoHeads",
    "detco_level_terms",
    "patches_to_images",
    "pool_levels",
    "weight_level_losses",
]
