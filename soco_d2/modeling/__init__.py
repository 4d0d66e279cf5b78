"""Models of soco_d2: meta-architectures and the small parts they share.

Importing this package registers ``SoCo`` in detectron2's META_ARCH_REGISTRY.
"""
from .heads import MLPHead
from .meta_arch import SoCo
from .momentum import build_momentum_target, cosine_momentum, ema_update_
from .roi_heads import SoCoROIHeads

__all__ = [
    "MLPHead",
    "SoCo",
    "SoCoROIHeads",
    "build_momentum_target",
    "cosine_momentum",
    "ema_update_",
]
