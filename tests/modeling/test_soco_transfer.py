"""The online SoCo weights load into detectron2 detectors by prefix, with zero missing keys.

The detector configs are written out here as a fine-tune config would be (Mask R-CNN FPN with
the 4conv1fc+norm box head; Faster R-CNN C4 with Res5ROIHeads), FREEZE_AT 0, STRIDE_IN_1X1
False, sharing only the widths of the tiny SoCo config.
"""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from _configs import tiny_soco_cfg

PRETRAIN_ONLY = ("target.", "projector.", "predictor.")


def _detector_cfg(head_type: str, soco_cfg):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    r = cfg.MODEL.RESNETS
    r.DEPTH, r.RES2_OUT_CHANNELS, r.STRIDE_IN_1X1, r.NORM = 18, 64, False, "SyncBN"
    r.WIDTH_PER_GROUP = soco_cfg.MODEL.RESNETS.WIDTH_PER_GROUP
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    if head_type == "FPN":
        cfg.MODEL.MASK_ON = True
        cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
        r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.FPN.OUT_CHANNELS = soco_cfg.MODEL.FPN.OUT_CHANNELS
        cfg.MODEL.FPN.NORM = "SyncBN"
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
        cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
        cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        h = cfg.MODEL.ROI_BOX_HEAD
        h.NAME, h.NUM_CONV, h.NUM_FC, h.NORM, h.POOLER_RESOLUTION = (
            "FastRCNNConvFCHead", 4, 1, "SyncBN", 7)
        h.CONV_DIM = soco_cfg.MODEL.ROI_BOX_HEAD.CONV_DIM
        h.FC_DIM = soco_cfg.MODEL.ROI_BOX_HEAD.FC_DIM
        m = cfg.MODEL.ROI_MASK_HEAD
        m.NAME, m.NUM_CONV, m.NORM = "MaskRCNNConvUpsampleHead", 4, "SyncBN"
    else:
        cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        r.OUT_FEATURES = ["res4"]
        cfg.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
    return cfg


@pytest.mark.parametrize("head_type,prefixes", [
    ("FPN", ("backbone.bottom_up.", "backbone.fpn_", "roi_heads.box_head.")),
    ("C4", ("backbone.", "roi_heads.res5.")),
])
def test_online_weights_load_into_detector_by_prefix(head_type, prefixes):
    soco_cfg = tiny_soco_cfg(head_type)
    soco = build_model(soco_cfg)
    online = {k: v for k, v in soco.state_dict().items() if not k.startswith(PRETRAIN_ONLY)}
    assert all(k.startswith(prefixes) for k in online)

    detector = build_model(_detector_cfg(head_type, soco_cfg))
    result = detector.load_state_dict(online, strict=False)
    assert result.unexpected_keys == []
    missing = [k for k in result.missing_keys if k.startswith(prefixes)]
    assert missing == []
    for prefix in prefixes:  # every pretrained part is really covered
        assert any(k.startswith(prefix) for k in online)
    det_sd = detector.state_dict()
    for k, v in online.items():
        assert torch.equal(det_sd[k], v), k

    # The target (EMA) weights have the same layout under "target.".
    target = {k[len("target."):]: v for k, v in soco.state_dict().items()
              if k.startswith("target.") and not k.startswith("target.projector.")}
    assert set(target) == set(online)
