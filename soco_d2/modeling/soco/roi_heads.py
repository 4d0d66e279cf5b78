"""Box feature head of SoCo: RoIAlign + detectron2 box head (FPN) or res5 head (C4).

Attribute names follow detectron2's ROI heads (``box_head`` as in ``StandardROIHeads``, ``res5``
as in ``Res5ROIHeads``), so under a ``roi_heads.`` prefix the weights load into a detector.
"""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import BottleneckBlock, ResNet
from detectron2.modeling.poolers import ROIPooler, convert_boxes_to_pooler_format
from detectron2.modeling.roi_heads import build_box_head
from detectron2.structures import Boxes
from torch import nn

from .assign import assign_boxes_to_levels_by_size, pool_boxes_at_levels

__all__ = ["SoCoROIHeads", "build_res5_head"]


def build_res5_head(cfg) -> nn.Sequential:
    """The res5 stage used by detectron2's ``Res5ROIHeads`` (3 bottlenecks, first stride 2).

    Built with ``ResNet.make_stage`` from the same MODEL.RESNETS keys, so ``roi_heads.res5.*``
    keys and shapes are those of the detector's C4 head.
    """
    r = cfg.MODEL.RESNETS
    factor = 2**3  # res5 is 8x res2
    out_channels = r.RES2_OUT_CHANNELS * factor
    blocks = ResNet.make_stage(
        BottleneckBlock,
        3,
        stride_per_block=[2, 1, 1],
        in_channels=out_channels // 2,
        bottleneck_channels=r.NUM_GROUPS * r.WIDTH_PER_GROUP * factor,
        out_channels=out_channels,
        num_groups=r.NUM_GROUPS,
        norm=r.NORM,
        stride_in_1x1=r.STRIDE_IN_1X1,
    )
    return nn.Sequential(*blocks)


class SoCoROIHeads(nn.Module):
    """Pools boxes from one view's features and returns one vector per box.

    FPN: each box is RoIAligned at its scale-assigned level (see ``assign.py``) and the whole
    view's boxes go through the box head in ONE call (batch norm statistics per view).
    C4: boxes are RoIAligned on res4 (14x14), run through res5 and average-pooled.
    """

    @configurable
    def __init__(
        self,
        *,
        in_features: List[str],
        pooler: ROIPooler,
        level_ranges: List[float],
        box_head: Optional[nn.Module] = None,
        res5: Optional[nn.Module] = None,
    ):
        """
        Args:
            in_features: feature names, finest first (["p2", ..., "p5"] or ["res4"]).
            pooler: ROIPooler over ``in_features`` (scales 1 / stride).
            level_ranges: sqrt(w*h) upper bounds of all levels but the last.
            box_head: FPN head from ROI_BOX_HEAD_REGISTRY; exclusive with ``res5``.
            res5: C4 head from :func:`build_res5_head`.
        """
        super().__init__()
        if (box_head is None) == (res5 is None):
            raise ValueError("Give exactly one of box_head (FPN) and res5 (C4)")
        if len(in_features) > 1 and len(level_ranges) != len(in_features) - 1:
            raise ValueError(
                f"MODEL.SOCO.LEVEL_RANGES needs {len(in_features) - 1} bounds for "
                f"{in_features}, got {list(level_ranges)}"
            )
        self.in_features = list(in_features)
        self.pooler = pooler
        self.level_ranges = [float(r) for r in level_ranges]
        if box_head is not None:
            self.box_head = box_head
        else:
            self.res5 = res5

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        s = cfg.MODEL.SOCO
        # detectron2's own keys: the detector pools the same features at the same resolution.
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        box = cfg.MODEL.ROI_BOX_HEAD
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(f"MODEL.ROI_HEADS.IN_FEATURES {missing} not in backbone outputs "
                             f"{sorted(input_shape)}")
        resolution = box.POOLER_RESOLUTION
        pooler = ROIPooler(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[f].stride for f in in_features),
            sampling_ratio=box.POOLER_SAMPLING_RATIO,
            pooler_type=box.POOLER_TYPE,
        )
        ret = {"in_features": in_features, "pooler": pooler, "level_ranges": list(s.LEVEL_RANGES)}
        if s.HEAD_TYPE == "FPN":
            channels = {input_shape[f].channels for f in in_features}
            if len(channels) != 1:
                raise ValueError(f"FPN levels have different channels: {channels}")
            ret["box_head"] = build_box_head(
                cfg,
                ShapeSpec(channels=channels.pop(), height=resolution, width=resolution),
            )
        elif s.HEAD_TYPE == "C4":
            if len(in_features) != 1:
                raise ValueError(f"C4 pools from one feature map (res4), got {in_features}")
            ret["res5"] = build_res5_head(cfg)
        else:
            raise ValueError(f"MODEL.SOCO.HEAD_TYPE must be 'FPN' or 'C4', got {s.HEAD_TYPE!r}")
        return ret

    @property
    def num_levels(self) -> int:
        return len(self.in_features)

    @property
    def output_dim(self) -> int:
        """Width D of the box vectors (box head output, or res5 channels)."""
        if hasattr(self, "box_head"):
            shape = self.box_head.output_shape
            return shape.channels * (shape.height or 1) * (shape.width or 1)
        return self.res5[-1].out_channels

    def assign_levels(self, box_lists: List[Boxes]) -> torch.Tensor:
        """(M,) level index of every box of the view, image-major."""
        boxes = torch.cat([b.tensor for b in box_lists], dim=0)
        if self.num_levels == 1:
            return boxes.new_zeros(boxes.shape[0], dtype=torch.long)
        return assign_boxes_to_levels_by_size(boxes, self.level_ranges)

    def box_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """(M, C, R, R) pooled features -> (M, D) box vectors (D = FC_DIM or res5 channels)."""
        if hasattr(self, "box_head"):
            return self.box_head(pooled).flatten(1)
        return self.res5(pooled).mean(dim=(2, 3))

    def forward(
        self, features: Dict[str, torch.Tensor], box_lists: List[Boxes], levels: torch.Tensor
    ) -> torch.Tensor:
        """Pool each box at its level and run the head once over all of them.

        Args:
            features: backbone outputs of one view, each (N, C, H, W).
            box_lists: N Boxes (K each) in that view's pixels.
            levels: (M,) from :meth:`assign_levels`.

        Returns:
            (M, D) box vectors, image-major.
        """
        feats = [features[f] for f in self.in_features]
        return self.box_features(pool_boxes_at_levels(self.pooler, feats, box_lists, levels))

    def forward_all_levels(
        self, features: Dict[str, torch.Tensor], box_lists: List[Boxes]
    ) -> List[torch.Tensor]:
        """The official formulation: every box pooled at every level, one head call per level.

        Returns:
            L tensors (M, D), the box vectors when pooled at level l.
        """
        rois = convert_boxes_to_pooler_format(box_lists)
        return [
            self.box_features(level_pooler(features[name], rois))
            for name, level_pooler in zip(self.in_features, self.pooler.level_poolers)
        ]
