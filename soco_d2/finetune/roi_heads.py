"""ROI heads needed to fine-tune SSL-pretrained backbones.

``Res5ROIHeadsExtraNorm``: detectron2's ``Res5ROIHeads`` (C4 detector, res5 as the box head)
with one more normalization layer after res5. Detectron2's bottleneck blocks end in a residual
sum with no norm, so res5's output scale is whatever pretraining left it; SSL-pretrained
weights (MoCo, SoCo C4) are fine-tuned with a norm there so the box predictor sees
normalized features. Select it with ``MODEL.ROI_HEADS.NAME: "Res5ROIHeadsExtraNorm"``; the norm
type is ``MODEL.RESNETS.NORM`` (``SyncBN`` in the SSL configs).
"""
from typing import Tuple

from detectron2.config import CfgNode
from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from torch import nn

__all__ = ["Res5ROIHeadsExtraNorm"]


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """``Res5ROIHeads`` whose res5 block ends with ``get_norm(MODEL.RESNETS.NORM, C)``.

    The norm is appended to the ``res5`` Sequential (as ``roi_heads.res5.norm``), so weights of
    the plain head still load by name; the new norm starts from its defaults.
    """

    @classmethod
    def _build_res5_block(cls, cfg: CfgNode) -> Tuple[nn.Sequential, int]:
        seq, out_channels = super()._build_res5_block(cfg)
        seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return seq, out_channels
