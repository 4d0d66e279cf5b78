"""Tiny SoCo configs and random inputs for the tests (CPU, seconds).

``tiny_soco_cfg()`` gives an R-18 SoCo config with small widths; ``random_soco_batch(cfg)``
gives inputs shaped like ``SoCoDatasetMapper``'s outputs for it, without reading images.
"""
from typing import List, Optional, Sequence

import torch
from detectron2.config import CfgNode, get_cfg

from soco_d2.config import add_ssl_config


def tiny_soco_cfg(
    head_type: str = "FPN",
    view_sizes: Optional[Sequence[int]] = None,
    num_proposals: int = 4,
    norm: str = "SyncBN",
) -> CfgNode:
    """A small SoCo config: ResNet-18, FPN 32 channels, head 32/64, MLPs 64 -> 32, CPU.

    Args:
        head_type: "FPN" (views 64/64/32, pairs (1,2),(1,3)) or "C4" (views 64/64, pair (1,2)).
        view_sizes: override the view sides; pairs become (1, v) for every other view.
        num_proposals: K boxes per image.
        norm: norm of backbone, FPN and box head ("SyncBN", "BN", "").

    Returns:
        a detectron2 CfgNode with soco_d2's keys; LEVEL_RANGES scaled to the small views.
    """
    cfg = get_cfg()
    add_ssl_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "SoCo"
    cfg.INPUT.DATASET_MAPPER_NAME = "soco"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    r = cfg.MODEL.RESNETS
    r.DEPTH, r.RES2_OUT_CHANNELS, r.STRIDE_IN_1X1, r.NORM = 18, 64, False, norm
    r.WIDTH_PER_GROUP = 8  # only the C4 res5 head (bottlenecks) uses it: keeps it small
    s = cfg.MODEL.SOCO
    s.HEAD_TYPE = head_type
    cfg.MODEL.SSL.MLP_HIDDEN_DIM, cfg.MODEL.SSL.MLP_OUT_DIM = 64, 32
    cfg.MODEL.SSL.ZERO_INIT_RESIDUAL = True  # the official SoCo init
    if head_type == "FPN":
        cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
        r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.FPN.OUT_CHANNELS, cfg.MODEL.FPN.NORM = 32, norm
        h = cfg.MODEL.ROI_BOX_HEAD
        h.NAME, h.NUM_CONV, h.NUM_FC, h.CONV_DIM, h.FC_DIM, h.NORM = (
            "FastRCNNConvFCHead", 4, 1, 32, 64, norm)
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
        s.LEVEL_RANGES = [16, 24, 40]  # 64 px views: every level gets boxes
        sizes = list(view_sizes or (64, 64, 32))
    elif head_type == "C4":
        cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        r.OUT_FEATURES = ["res4"]
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
        sizes = list(view_sizes or (64, 64))
    else:
        raise ValueError(f"head_type must be 'FPN' or 'C4', got {head_type!r}")
    s.PAIRS = [[0, v] for v in range(1, len(sizes))]
    cfg.INPUT.SSL.VIEW_SIZES = sizes
    cfg.INPUT.SOCO.NUM_PROPOSALS = num_proposals
    return cfg


def random_soco_batch(cfg: CfgNode, batch_size: int = 2, seed: int = 0) -> List[dict]:
    """Random SoCo mapper outputs for ``cfg``: uint8 views and valid XYXY_ABS boxes.

    Args:
        cfg: a SoCo config (INPUT.SSL.VIEW_SIZES, INPUT.SOCO.NUM_PROPOSALS are read).
        batch_size: number of images.
        seed: generator seed; the same seed gives the same batch.

    Returns:
        list of dicts with "file_name", "image_id", "views" and "boxes".
    """
    g = torch.Generator().manual_seed(seed)
    k = cfg.INPUT.SOCO.NUM_PROPOSALS
    batch = []
    for i in range(batch_size):
        views, boxes = [], []
        for side in cfg.INPUT.SSL.VIEW_SIZES:
            views.append(torch.randint(0, 256, (3, side, side), generator=g, dtype=torch.uint8))
            wh = side * (0.1 + 0.85 * torch.rand(k, 2, generator=g))
            xy = (side - wh) * torch.rand(k, 2, generator=g)
            boxes.append(torch.cat([xy, xy + wh], dim=1).float())
        batch.append({"file_name": f"random_{i}.jpg", "image_id": i, "views": views,
                      "boxes": boxes})
    return batch
