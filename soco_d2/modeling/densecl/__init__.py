"""The parts only DenseCL uses: the dense head, cross-view cell matching and the dense InfoNCE
(``dense.py``). The meta-architecture is ``soco_d2/modeling/meta_arch/densecl.py`` (MoCo v2's,
``meta_arch/moco.py``, plus the dense branch); its views come from the ``multi_view`` mapper."""
from .dense import (
    DenseHead,
    dense_correspondence,
    dense_info_nce,
    flatten_grid,
    gather_matched_cells,
)

__all__ = [
    "DenseHead",
    "dense_correspondence",
    "dense_info_nce",
    "flatten_grid",
    "gather_matched_cells",
]
