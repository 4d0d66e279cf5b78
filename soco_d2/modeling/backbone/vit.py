"""detectron2's ViT and ViTDet backbones, buildable from yacs configs.

detectron2 ships ``ViT`` and ``SimpleFeaturePyramid`` (``detectron2/modeling/backbone/vit.py``)
but neither is in ``BACKBONE_REGISTRY``: its ViTDet recipes exist only as LazyConfig files. The
two builders here construct those very classes from ``MODEL.VIT.*`` / ``MODEL.VIT_SFP.*`` keys,
so a yacs config (``MODEL.BACKBONE.NAME``) gets:

- ``"build_vit_backbone"``: the plain ViT, one output ``MODEL.VIT.OUT_FEATURE`` at stride
  ``PATCH_SIZE``;
- ``"build_vit_sfp_backbone"``: the ViTDet detector backbone, the ViT under ``backbone.net``
  plus the simple feature pyramid (``backbone.simfp_*``) and a max-pool top level.

Parameter names are detectron2's (``net.patch_embed.proj``, ``net.pos_embed``, ``net.blocks.N``),
which are also MAE's and SIM's encoder names under a ``backbone.net.`` prefix: converted
weights load by name (``soco_d2/checkpoint/layouts/vit.py``). ``Block`` imports ``timm`` when
built (pinned in requirements.txt).

This module also adds the keys the ViTDet recipe needs beyond the backbone: layer-wise lr decay
and AdamW betas (read by ``soco_d2/solver/llrd.py``) and large-scale jitter
(``INPUT.LSJ``, read by ``soco_d2/data/lsj.py``).
"""
import math
from functools import partial
from typing import Any, Dict

from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid, ViT
from torch import nn

from ...config import register_method_config

__all__ = [
    "add_vit_config",
    "build_vit_backbone",
    "build_vit_sfp_backbone",
    "vit_kwargs_from_config",
    "LN_EPS",
]

# MAE, SIM and ViTDet all build their LayerNorms with eps 1e-6 (torch's default is 1e-5).
LN_EPS = 1e-6


@register_method_config
def add_vit_config(cfg: CN) -> None:
    """``MODEL.VIT`` / ``MODEL.VIT_SFP`` (backbone), ``SOLVER.LAYER_DECAY`` /
    ``SOLVER.ADAMW_BETAS`` (ViT optimisation) and ``INPUT.LSJ`` (large-scale jitter).

    Defaults are ViTDet-B's (detectron2 ``projects/ViTDet`` COCO Mask R-CNN ViT-B).
    """
    if hasattr(cfg.MODEL, "VIT"):
        return
    _C = cfg
    _C.MODEL.VIT = CN()
    # Input image side the relative-position tables of global blocks are sized for (pixels).
    _C.MODEL.VIT.IMG_SIZE = 1024
    # Patch side in pixels (the ViT's single stride).
    _C.MODEL.VIT.PATCH_SIZE = 16
    # Token width.
    _C.MODEL.VIT.EMBED_DIM = 768
    # Number of transformer blocks.
    _C.MODEL.VIT.DEPTH = 12
    # Attention heads per block.
    _C.MODEL.VIT.NUM_HEADS = 12
    # MLP hidden width as a multiple of EMBED_DIM.
    _C.MODEL.VIT.MLP_RATIO = 4.0
    # Stochastic depth, rising linearly over the blocks to this rate (0 disables).
    _C.MODEL.VIT.DROP_PATH_RATE = 0.1
    # Window side (tokens) of the windowed-attention blocks.
    _C.MODEL.VIT.WINDOW_SIZE = 14
    # Blocks with windowed attention; the others attend globally (ViTDet-B: 2, 5, 8, 11).
    _C.MODEL.VIT.WINDOW_BLOCK_INDEXES = [0, 1, 3, 4, 6, 7, 9, 10]
    # Decomposed relative-position bias in attention (tables start at zero).
    _C.MODEL.VIT.USE_REL_POS = True
    # Image side of the pretraining views: the absolute position table has
    # (PRETRAIN_IMG_SIZE / PATCH_SIZE)^2 (+1) entries and is interpolated to the input grid.
    _C.MODEL.VIT.PRETRAIN_IMG_SIZE = 224
    # The pretrained position table has a leading cls-token entry (MAE, SIM: True).
    _C.MODEL.VIT.PRETRAIN_USE_CLS_TOKEN = True
    # Name of the ViT's output feature.
    _C.MODEL.VIT.OUT_FEATURE = "last_feat"

    _C.MODEL.VIT_SFP = CN()
    # Resampling factors of the ViT map for the pyramid levels: 4.0, 2.0, 1.0, 0.5 allowed;
    # with PATCH_SIZE 16, (4, 2, 1, 0.5) gives p2-p5 (a max-pool top level adds p6).
    _C.MODEL.VIT_SFP.SCALE_FACTORS = [4.0, 2.0, 1.0, 0.5]
    # Channels of every pyramid level.
    _C.MODEL.VIT_SFP.OUT_CHANNELS = 256
    # Norm of the pyramid convolutions: "LN" (ViTDet), "BN", "SyncBN", "GN" or "" (none).
    _C.MODEL.VIT_SFP.NORM = "LN"
    # Pad every batch to this square side (ViTDet: 1024); 0 pads to the size divisibility only.
    _C.MODEL.VIT_SFP.SQUARE_PAD = 1024

    # Layer-wise lr decay for ViT backbones (AdamW only): block i of L gets
    # LAYER_DECAY^(L - i), patch/position embeddings LAYER_DECAY^(L + 1), other modules 1.0.
    # 0 disables (every parameter at BASE_LR). ViTDet-B: 0.7.
    _C.SOLVER.LAYER_DECAY = 0.0
    # AdamW (beta1, beta2). ViTDet and SIM: (0.9, 0.999) and (0.9, 0.95).
    _C.SOLVER.ADAMW_BETAS = (0.9, 0.999)

    _C.INPUT.LSJ = CN()
    # Large-scale jitter for detector training (flip, ResizeScale, FixedSizeCrop) in place of
    # detectron2's MIN_SIZE_TRAIN resizing; test-time resizing stays MIN/MAX_SIZE_TEST.
    _C.INPUT.LSJ.ENABLED = False
    # Target square side of ResizeScale and crop side of FixedSizeCrop (pixels).
    _C.INPUT.LSJ.IMAGE_SIZE = 1024
    # ResizeScale range, as multiples of IMAGE_SIZE.
    _C.INPUT.LSJ.MIN_SCALE = 0.1
    # Upper end of the ResizeScale range.
    _C.INPUT.LSJ.MAX_SCALE = 2.0


def vit_kwargs_from_config(cfg) -> Dict[str, Any]:
    """The keyword arguments of detectron2's ``ViT`` from ``MODEL.VIT`` (checked).

    Raises:
        ValueError: naming the key, when widths, heads, window blocks or sizes disagree.
    """
    v = cfg.MODEL.VIT
    if v.EMBED_DIM % v.NUM_HEADS:
        raise ValueError(
            f"MODEL.VIT.EMBED_DIM ({v.EMBED_DIM}) must be divisible by MODEL.VIT.NUM_HEADS "
            f"({v.NUM_HEADS})"
        )
    bad = [i for i in v.WINDOW_BLOCK_INDEXES if not 0 <= i < v.DEPTH]
    if bad:
        raise ValueError(
            f"MODEL.VIT.WINDOW_BLOCK_INDEXES {list(bad)} out of range for MODEL.VIT.DEPTH "
            f"{v.DEPTH}"
        )
    for key in ("IMG_SIZE", "PRETRAIN_IMG_SIZE"):
        if getattr(v, key) % v.PATCH_SIZE:
            raise ValueError(
                f"MODEL.VIT.{key} ({getattr(v, key)}) must be a multiple of MODEL.VIT.PATCH_SIZE "
                f"({v.PATCH_SIZE})"
            )
    return dict(
        img_size=v.IMG_SIZE,
        patch_size=v.PATCH_SIZE,
        embed_dim=v.EMBED_DIM,
        depth=v.DEPTH,
        num_heads=v.NUM_HEADS,
        mlp_ratio=v.MLP_RATIO,
        qkv_bias=True,
        drop_path_rate=v.DROP_PATH_RATE,
        norm_layer=partial(nn.LayerNorm, eps=LN_EPS),
        window_size=v.WINDOW_SIZE,
        window_block_indexes=list(v.WINDOW_BLOCK_INDEXES),
        use_rel_pos=v.USE_REL_POS,
        pretrain_img_size=v.PRETRAIN_IMG_SIZE,
        pretrain_use_cls_token=v.PRETRAIN_USE_CLS_TOKEN,
        out_feature=v.OUT_FEATURE,
    )


@BACKBONE_REGISTRY.register()
def build_vit_backbone(cfg, input_shape: ShapeSpec) -> ViT:
    """detectron2's plain ``ViT`` from ``MODEL.VIT`` (output ``MODEL.VIT.OUT_FEATURE``)."""
    if input_shape.channels not in (None, 3):
        raise ValueError(f"the ViT patch embedding takes 3 channels, got {input_shape.channels}")
    return ViT(**vit_kwargs_from_config(cfg))


@BACKBONE_REGISTRY.register()
def build_vit_sfp_backbone(cfg, input_shape: ShapeSpec) -> SimpleFeaturePyramid:
    """The ViTDet backbone: ``ViT`` + ``SimpleFeaturePyramid`` + a max-pool top level.

    Outputs ``p<k>`` for every scale factor (stride PATCH_SIZE / factor) plus one more level
    from the max-pool over the last one, as detectron2's ViTDet configs build it.
    """
    s = cfg.MODEL.VIT_SFP
    allowed = {4.0, 2.0, 1.0, 0.5}
    if not s.SCALE_FACTORS or set(map(float, s.SCALE_FACTORS)) - allowed:
        raise ValueError(
            f"MODEL.VIT_SFP.SCALE_FACTORS {list(s.SCALE_FACTORS)} must be a non-empty subset of "
            f"{sorted(allowed, reverse=True)}"
        )
    factors = sorted(map(float, s.SCALE_FACTORS), reverse=True)  # high resolution first
    net = build_vit_backbone(cfg, input_shape)
    top = LastLevelMaxPool()
    # The max-pool reads the coarsest pyramid level, whatever its name for this patch size.
    stride = cfg.MODEL.VIT.PATCH_SIZE / factors[-1]
    top.in_feature = f"p{int(round(math.log2(stride)))}"
    return SimpleFeaturePyramid(
        net=net,
        in_feature=cfg.MODEL.VIT.OUT_FEATURE,
        out_channels=s.OUT_CHANNELS,
        scale_factors=factors,
        top_block=top,
        norm=s.NORM,
        square_pad=s.SQUARE_PAD,
    )
