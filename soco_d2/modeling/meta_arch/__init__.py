"""Meta-architectures registered in detectron2's META_ARCH_REGISTRY."""
from .soco import SoCo

__all__ = ["SoCo"]
