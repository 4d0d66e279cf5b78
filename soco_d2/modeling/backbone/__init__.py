"""Backbones soco_d2 adds to detectron2's BACKBONE_REGISTRY (detectron2's own ViT / ViTDet
classes, built from yacs keys)."""
from .vit import (
    LN_EPS,
    add_vit_config,
    build_vit_backbone,
    build_vit_sfp_backbone,
    vit_kwargs_from_config,
)

__all__ = [
    "LN_EPS",
    "add_vit_config",
    "build_vit_backbone",
    "build_vit_sfp_backbone",
    "vit_kwargs_from_config",
]
