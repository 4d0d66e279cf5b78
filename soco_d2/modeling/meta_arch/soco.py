"""SoCo: selective object contrastive pretraining of backbone, FPN and box head.

Online network: ``backbone`` (ResNet+FPN or ResNet C4), ``roi_heads`` (RoIAlign + box head /
res5), ``projector``, ``predictor``. Target network: an EMA copy of the online backbone, ROI
head and projector under ``target.``, never trained by gradients. For each view pair (i, j) the
online prediction of box k in view i regresses the target projection of box k in view j and
vice versa (BYOL loss, ``soco_d2/modeling/byol_loss.py``); SoCo's own parts are in
``soco_d2/modeling/soco/``.

Details the paper leaves open follow the official implementation (hologerry/SoCo):
- the target runs in the module's mode, so in training its BatchNorms use batch statistics;
  only parameters are EMA-updated, BN running statistics come from its own forward passes;
- the projector takes the box head's 1024-d fc output (after ReLU) or res5's pooled 2048-d;
- the last norm of every residual block starts at zero (MODEL.SSL.ZERO_INIT_RESIDUAL);
- one head call per view (official: per view and level), so BN statistics stay per view;
- the official code updates the target at the start of a step, this one after it, through
  :meth:`SoCo.update_target` (called by the engine's hook): the same sequence of targets.
"""
from typing import Dict, List

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import Boxes, ImageList
from torch import nn

from ...config import register_method_config
from ..byol_loss import symmetric_byol_loss
from ..heads import MLPHead
from ..init import zero_init_residual_
from ..soco import SoCoROIHeads, masked_level_byol_loss
from .base import EMATargetMetaArch

__all__ = ["SoCo", "add_soco_method_config"]

ASSIGNMENTS = ("level", "all_levels")


@register_method_config
def add_soco_method_config(cfg: CN) -> None:
    """SoCo's own keys: ``MODEL.SOCO`` (heads, levels, pairs) and ``INPUT.SOCO`` (proposals).

    Shared keys (EMA, MLPs, views, colour) are ``MODEL.SSL`` / ``INPUT.SSL``; pooling reads
    detectron2's ``MODEL.ROI_HEADS.IN_FEATURES`` and ``MODEL.ROI_BOX_HEAD.POOLER_*``.
    """
    if hasattr(cfg.MODEL, "SOCO"):
        return
    _C = cfg
    _C.MODEL.SOCO = CN()
    # Head layout: "FPN" (RoIAlign on P2-P5 + 4conv1fc box head) or "C4" (res4 RoIAlign + res5).
    _C.MODEL.SOCO.HEAD_TYPE = "FPN"
    # sqrt(w*h) thresholds (view pixels) for P2/P3/P4; larger boxes go to the last level.
    _C.MODEL.SOCO.LEVEL_RANGES = [48, 96, 192]
    # "level": pool each box only at its assigned level; "all_levels": the official
    # formulation (every box at every level, loss masked); same loss, slower.
    _C.MODEL.SOCO.ASSIGNMENT = "level"
    # View-index pairs the loss is computed over (symmetric within each pair).
    # SoCo: [[0, 1], [0, 2]]; SoCo*: [[0, 1], [0, 2], [0, 3]]; C4: [[0, 1]].
    _C.MODEL.SOCO.PAIRS = [[0, 1], [0, 2]]

    _C.INPUT.SOCO = CN()
    # How V3 is made: "crop" (independent crop, as the official code) or "downsample"
    # (V2 resized to INPUT.SSL.VIEW_SIZES[2], as the paper text). V1 is always the whole image.
    _C.INPUT.SOCO.V3_MODE = "crop"
    # Index of a view that is V2 resized (SoCo*'s V4), or -1 for none.
    _C.INPUT.SOCO.DOWNSAMPLED_VIEW = -1
    # Proposals sampled per image (K).
    _C.INPUT.SOCO.NUM_PROPOSALS = 4
    # Crop redraws while fewer than K proposals overlap all views.
    _C.INPUT.SOCO.MAX_CROP_TRIES = 5
    # Probability of jittering each V1 box.
    _C.INPUT.SOCO.BOX_JITTER_PROB = 0.5
    # Jitter magnitude: shift by U(-a, a) * size, scale by 1 + U(-a, a).
    _C.INPUT.SOCO.BOX_JITTER = 0.1
    # Probability of a cutout square inside each box (0 disables).
    _C.INPUT.SOCO.CUTOUT_PROB = 0.0
    # Cutout area range as a fraction of the box area.
    _C.INPUT.SOCO.CUTOUT_SCALE = (0.1, 0.3)


@META_ARCH_REGISTRY.register()
class SoCo(EMATargetMetaArch):
    """SoCo meta-architecture (FPN, SoCo* and C4 variants, chosen by config).

    Input: a list of dicts, one per image, as produced by ``SoCoDatasetMapper``:
    ``"views"``: V uint8 tensors (3, S_v, S_v); ``"boxes"``: V float tensors (K, 4), XYXY_ABS
    in that view's pixels, row k of every view being the same proposal.

    Training output: ``{"loss_v{i}_v{j}": scalar}`` for each pair of MODEL.SOCO.PAIRS (1-based
    names), each the sum of both directions of 2 - 2 cos, averaged over boxes.

    Eval output: a list (one per image) of dicts ``{"box_features": [V tensors (K, C)],
    "embeddings": [V tensors (K, D)]}``: online box-head vectors and projector outputs.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        roi_heads: SoCoROIHeads,
        projector: nn.Module,
        predictor: nn.Module,
        pairs: List[List[int]],
        assignment: str = "level",
        **kwargs,
    ):
        """
        Args:
            backbone: detectron2 backbone (``build_backbone``).
            roi_heads: pooling + box head, see :class:`SoCoROIHeads`.
            projector: MLP on box vectors (online; copied into the target).
            predictor: MLP on projections (online only).
            pairs: 0-based view index pairs, e.g. [[0, 1], [0, 2]].
            assignment: "level" (each box pooled once, at its level) or "all_levels" (the
                official formulation: every level, loss masked; for checks and benchmarks).
            kwargs: see :class:`EMATargetMetaArch` (normalisation, momentum, channels_last).
        """
        super().__init__(**kwargs)
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"MODEL.SOCO.ASSIGNMENT must be one of {ASSIGNMENTS}")
        if not pairs or any(len(p) != 2 or p[0] == p[1] for p in pairs):
            raise ValueError(f"MODEL.SOCO.PAIRS must be pairs of distinct views, got {pairs}")
        self.backbone = backbone
        self.roi_heads = roi_heads
        self.projector = projector
        self.predictor = predictor
        self.pairs = [(int(i), int(j)) for i, j in pairs]
        self.assignment = assignment
        self.finish_init()

    @classmethod
    def from_config(cls, cfg):
        s, m = cfg.MODEL.SOCO, cfg.MODEL.SSL
        backbone = build_backbone(cfg)
        roi_heads = SoCoROIHeads(cfg, backbone.output_shape())
        if m.ZERO_INIT_RESIDUAL:
            zero_init_residual_(backbone)
            zero_init_residual_(roi_heads)
        return {
            **EMATargetMetaArch.base_config(cfg),
            "backbone": backbone,
            "roi_heads": roi_heads,
            "projector": MLPHead(roi_heads.output_dim, m.MLP_HIDDEN_DIM, m.MLP_OUT_DIM, m.MLP_NORM),
            "predictor": MLPHead(m.MLP_OUT_DIM, m.MLP_HIDDEN_DIM, m.MLP_OUT_DIM, m.MLP_NORM),
            "pairs": [list(p) for p in s.PAIRS],
            "assignment": s.ASSIGNMENT,
        }

    def online_parts(self) -> Dict[str, nn.Module]:
        return {"backbone": self.backbone, "roi_heads": self.roi_heads, "projector": self.projector}

    # ----------------------------------------------------------------- inputs
    def _check_inputs(self, batched_inputs: List[dict]) -> int:
        if not batched_inputs:
            raise ValueError("SoCo got an empty batch")
        num_views = None
        for x in batched_inputs:
            if "views" not in x or "boxes" not in x:
                raise KeyError(f"SoCo inputs need 'views' and 'boxes', got keys {sorted(x)}")
            if len(x["views"]) != len(x["boxes"]):
                raise ValueError(f"{len(x['views'])} views but {len(x['boxes'])} box sets")
            num_views = num_views or len(x["views"])
            if len(x["views"]) != num_views:
                raise ValueError("All images of a batch need the same number of views")
        num_boxes = {tuple(b.shape) for x in batched_inputs for b in x["boxes"]}
        if len(num_boxes) != 1 or next(iter(num_boxes))[1:] != (4,):
            raise ValueError(f"Every view of every image needs the same (K, 4) boxes: {num_boxes}")
        return num_views

    def preprocess_view(self, batched_inputs: List[dict], v: int) -> ImageList:
        """Normalize view ``v`` of every image, padded right/bottom to the backbone's divisor."""
        return self.normalize([x["views"][v] for x in batched_inputs],
                              self.backbone.size_divisibility)

    def view_boxes(self, batched_inputs: List[dict], v: int) -> List[Boxes]:
        """Boxes of view ``v`` of every image, as float32 on the model's device."""
        return [Boxes(x["boxes"][v].to(self.device, torch.float32)) for x in batched_inputs]

    # ---------------------------------------------------------------- network
    def _embed(self, branch: nn.Module, images, boxes, levels, predict: bool) -> torch.Tensor:
        """Box embeddings of one view: (M, D) in "level" mode, (L, M, D) in "all_levels"."""
        feats = branch["backbone"](images.tensor)
        if self.assignment == "level":
            z = branch["projector"](branch["roi_heads"](feats, boxes, levels))
            return self.predictor(z) if predict else z
        # Official: head, projector and predictor called once per level (BN stats per level).
        out = []
        for h in branch["roi_heads"].forward_all_levels(feats, boxes):
            z = branch["projector"](h)
            out.append(self.predictor(z) if predict else z)
        return torch.stack(out)

    def forward(self, batched_inputs: List[dict]):
        num_views = self._check_inputs(batched_inputs)
        if not self.training:
            return self.inference(batched_inputs)
        used = sorted({v for p in self.pairs for v in p})
        if used[-1] >= num_views:
            raise ValueError(f"MODEL.SOCO.PAIRS uses view {used[-1]} but inputs have {num_views}")
        n = len(batched_inputs)
        images = {v: self.preprocess_view(batched_inputs, v) for v in used}
        boxes = {v: self.view_boxes(batched_inputs, v) for v in used}
        levels = {v: self.roi_heads.assign_levels(boxes[v]) for v in used}

        online = self._online_container()
        preds = {v: self._embed(online, images[v], boxes[v], levels[v], True) for v in used}
        with torch.no_grad():
            targets = {
                v: self._embed(self.target, images[v], boxes[v], levels[v], False) for v in used
            }
        return {
            f"loss_v{i + 1}_v{j + 1}": self._pair_loss(preds, targets, levels, i, j, n)
            for i, j in self.pairs
        }

    def _pair_loss(self, preds, targets, levels, i: int, j: int, n: int) -> torch.Tensor:
        if self.assignment == "level":
            return symmetric_byol_loss(preds[i], targets[j], preds[j], targets[i], n)

        def per_image(t):  # (L, M, D) -> (L, N, K, D)
            return t.view(t.shape[0], n, -1, t.shape[-1])

        li, lj = levels[i].view(n, -1), levels[j].view(n, -1)
        return masked_level_byol_loss(
            per_image(preds[i]), per_image(targets[j]), li, lj
        ) + masked_level_byol_loss(per_image(preds[j]), per_image(targets[i]), lj, li)

    def floor(self, batched_inputs: List[dict]) -> torch.Tensor:
        """Online backbone(+FPN) forward and target backbone forward on every used view.

        For C4 the res5 head over the pooled boxes is part of the floor too: it is the
        detector's own last stage, which every C4 implementation runs on every box.
        """
        c4 = hasattr(self.roi_heads, "res5")
        total = 0.0
        for v in sorted({v for p in self.pairs for v in p}):
            images = self.preprocess_view(batched_inputs, v)
            feats = self.backbone(images.tensor)
            outs = list(feats.values())
            with torch.no_grad():
                target_feats = self.target["backbone"](images.tensor)
            if c4:
                boxes = self.view_boxes(batched_inputs, v)
                levels = self.roi_heads.assign_levels(boxes)
                outs.append(self.roi_heads(feats, boxes, levels))
                with torch.no_grad():
                    self.target["roi_heads"](target_feats, boxes, levels)
            # A scalar touching every output so backward reaches the whole floor network.
            total = total + sum(f.float().mean() for f in outs)
        return total

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[Dict[str, List[torch.Tensor]]]:
        """Online box vectors and projections of every view (each box at its level)."""
        n = len(batched_inputs)
        results = [{"box_features": [], "embeddings": []} for _ in range(n)]
        for v in range(len(batched_inputs[0]["views"])):
            images = self.preprocess_view(batched_inputs, v)
            boxes = self.view_boxes(batched_inputs, v)
            feats = self.backbone(images.tensor)
            h = self.roi_heads(feats, boxes, self.roi_heads.assign_levels(boxes))
            z = self.projector(h)
            h, z = h.view(n, -1, h.shape[-1]), z.view(n, -1, z.shape[-1])
            for r, h_img, z_img in zip(results, h, z):
                r["box_features"].append(h_img)
                r["embeddings"].append(z_img)
        return results
