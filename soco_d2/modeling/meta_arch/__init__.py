"""Meta-architectures registered in detectron2's META_ARCH_REGISTRY, one file per method.

Each pretraining method subclasses :class:`SSLMetaArch` (``base.py``), or
:class:`EMATargetMetaArch` when it has an EMA target network, and registers its config namespace
with ``soco_d2.config.register_method_config``. The parts only one method uses live in
``soco_d2/modeling/<method>/``.
"""
from .base import EMATargetMetaArch, SSLMetaArch
from .soco import SoCo
from .detco import DetCo
from .moco import MoCoV2
from .densecl import DenseCL
from .sim import SIM
from .byol import BYOL

__all__ = ["SSLMetaArch", "EMATargetMetaArch", "SoCo", "DetCo", "MoCoV2", "DenseCL", "SIM", "BYOL"]
