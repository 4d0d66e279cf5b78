"""Models of soco_d2: meta-architectures and the small parts they share.

Importing this package registers every method in detectron2's META_ARCH_REGISTRY.
"""
from . import backbone  # noqa: F401  (registers the ViT/ViTDet backbones, MODEL.VIT keys)
from .heads import MLPHead
from .meta_arch import SoCo, SSLMetaArch
from .momentum import build_momentum_target, constant_momentum, cosine_momentum, ema_update_
from .roi_heads import SoCoROIHeads

__all__ = [
    "MLPHead",
    "SoCo",
    "SoCoROIHeads",
    "SSLMetaArch",
    "constant_momentum",
    "build_momentum_target",
    "cosine_momentum",
    "ema_update_",
]
