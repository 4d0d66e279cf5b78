"""Models of soco_d2: meta-architectures and the small parts they share.

Importing this package registers every method in detectron2's META_ARCH_REGISTRY and its config
namespace with ``soco_d2.config.register_method_config``. The methods themselves are in
``meta_arch/`` (one file each) and the parts only one method uses in ``<method>/``; this package
exports only what every method shares.
"""
from . import backbone  # noqa: F401  (registers the ViT/ViTDet backbones, MODEL.VIT keys)
from . import meta_arch  # noqa: F401  (registers every method)
from .heads import MLPHead
from .meta_arch import EMATargetMetaArch, SSLMetaArch
from .momentum import build_momentum_target, constant_momentum, cosine_momentum, ema_update_

__all__ = [
    "EMATargetMetaArch",
    "MLPHead",
    "SSLMetaArch",
    "build_momentum_target",
    "constant_momentum",
    "cosine_momentum",
    "ema_update_",
]
