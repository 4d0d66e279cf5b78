"""BYOL: bootstrap your own latent (Grill et al., NeurIPS 2020), image level, on detectron2's
ResNet. SoCo (``soco.py``) is its object-level counterpart: the same loss, heads and EMA target
on boxes instead of whole views.

Online network: ``backbone`` (detectron2 ResNet, res5) -> global average pool -> ``projector``
(Linear C->4096, BN, ReLU, Linear 4096->256) -> ``predictor`` (the same MLP, 256->4096->256).
Target network: an EMA copy of backbone and projector under ``target.`` (no predictor), never
trained by gradients, its momentum rising from m0 to 1 on a cosine (``MODEL.SSL.MOMENTUM``,
``MOMENTUM_SCHEDULE "cosine"``). Loss of an image: 2 - 2 cos(q(z1), sg(z2')) + 2 - 2 cos(q(z2),
sg(z1')), averaged over the batch (``byol_loss.symmetric_byol_loss``).

Details the paper leaves open follow the official implementation (google-deepmind/
deepmind-research ``byol/``; where and why this one differs: docs/methods/byol.md):
- each view passes the networks on its own, so BN statistics are per view;
- the target runs in the module's mode: in training its BNs use batch statistics and keep their
  own running statistics; only parameters are EMA'd;
- the MLPs' last Linear has no bias (official ``networks.MLP``);
- the momentum of step k (0-based) is applied after step k's optimizer update.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage
from torch import nn

from ...config import register_method_config
from ..byol_loss import symmetric_byol_loss
from ..heads import MLPHead
from .base import EMATargetMetaArch
from .moco import build_moco_backbone, global_pool, pooled_view_inference

__all__ = ["BYOL", "add_byol_method_config", "byol_mlp"]


@register_method_config
def add_byol_method_config(cfg: CN) -> None:
    """BYOL's own keys, ``MODEL.BYOL``.

    Shared keys it reads: ``MODEL.SSL.MOMENTUM`` / ``MOMENTUM_SCHEDULE`` (tau_base, "cosine"),
    ``MODEL.SSL.MLP_HIDDEN_DIM`` / ``MLP_OUT_DIM`` / ``MLP_NORM`` (4096, 256, "SyncBN": both
    MLPs), ``MODEL.SSL.ZERO_INIT_RESIDUAL``; views and colour are ``INPUT.SSL.*``.
    """
    if hasattr(cfg.MODEL, "BYOL"):
        return
    cfg.MODEL.BYOL = CN()
    # Backbone feature the projector pools (globally averaged): "res5", as BYOL's ResNet-50.
    cfg.MODEL.BYOL.IN_FEATURE = "res5"


def byol_mlp(in_dim: int, hidden_dim: int, out_dim: int, norm: str) -> MLPHead:
    """BYOL's projector / predictor: Linear -> norm -> ReLU -> Linear without bias.

    Args:
        in_dim, hidden_dim, out_dim: widths (R-50 projector: 2048, 4096, 256).
        norm: see :func:`soco_d2.modeling.heads.get_norm_1d`.

    Returns:
        an :class:`MLPHead` (submodules ``linear1``, ``bn1``, ``linear2``), (M, in_dim) ->
        (M, out_dim).
    """
    head = MLPHead(in_dim, hidden_dim, out_dim, norm)
    head.linear2 = nn.Linear(hidden_dim, out_dim, bias=False)
    return head


def _check_in_feature(backbone: nn.Module, name: str) -> None:
    if name not in backbone.output_shape():
        raise ValueError(
            f"MODEL.BYOL.IN_FEATURE {name!r} is not a backbone output; "
            f"MODEL.RESNETS.OUT_FEATURES gives {sorted(backbone.output_shape())}"
        )


@META_ARCH_REGISTRY.register()
class BYOL(EMATargetMetaArch):
    """BYOL meta-architecture (see the module docstring for the recipe).

    Input: a list of dicts, one per image, from the ``multi_view`` mapper: ``"views"``: at least
    two uint8 tensors (3, S, S); views 0 and 1 are BYOL's two views (their blur and solarize
    probabilities are ``INPUT.SSL.BLUR_PROB`` / ``SOLARIZE_PROB``, view 0 first).

    Training output: ``{"loss_byol": scalar}`` in [0, 8]; ``byol/projection_std`` (the std over
    the batch of the normalised target projections, averaged over dims: about D^-1/2 when
    healthy, 0 when collapsed) goes to the event storage.

    Eval output: a list (one per image) of ``{"features": [V tensors (C,)], "embeddings":
    [V tensors (D,)]}``: pooled online backbone features and normalised projections.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        projector: nn.Module,
        predictor: nn.Module,
        in_feature: str = "res5",
        **kwargs,
    ):
        """
        Args:
            backbone: detectron2 ResNet (``build_moco_backbone`` without split BN).
            projector: MLP on the pooled feature, (N, C) -> (N, D); copied to the target.
            predictor: MLP (N, D) -> (N, D); online only.
            in_feature: the backbone output the projector pools.
            kwargs: see :class:`EMATargetMetaArch` (normalisation, momentum, channels_last).
        """
        super().__init__(**kwargs)
        _check_in_feature(backbone, in_feature)
        self.backbone = backbone
        self.projector = projector
        self.predictor = predictor
        self.in_feature = in_feature
        self.finish_init()

    @classmethod
    def from_config(cls, cfg):
        s = cfg.MODEL.SSL
        # BN over each view's whole (per-process) batch, as BYOL's cross-replica BN: no split.
        backbone = build_moco_backbone(cfg, split_bn=0)
        in_feature = cfg.MODEL.BYOL.IN_FEATURE
        _check_in_feature(backbone, in_feature)
        channels = backbone.output_shape()[in_feature].channels
        return {
            **EMATargetMetaArch.base_config(cfg),
            "backbone": backbone,
            "projector": byol_mlp(channels, s.MLP_HIDDEN_DIM, s.MLP_OUT_DIM, s.MLP_NORM),
            "predictor": byol_mlp(s.MLP_OUT_DIM, s.MLP_HIDDEN_DIM, s.MLP_OUT_DIM, s.MLP_NORM),
            "in_feature": in_feature,
        }

    def online_parts(self) -> Dict[str, nn.Module]:
        return {"backbone": self.backbone, "projector": self.projector}

    # ----------------------------------------------------------------- inputs
    def preprocess_view(self, batched_inputs: List[dict], v: int) -> torch.Tensor:
        """(N, 3, S, S) normalised view ``v`` of every image."""
        if not batched_inputs:
            raise ValueError("BYOL got an empty batch")
        for x in batched_inputs:
            if len(x.get("views", ())) <= v:
                raise ValueError(
                    f"BYOL needs 2 views per image (INPUT.SSL.VIEW_SIZES, multi_view mapper); "
                    f"got an input with keys {sorted(x)} and {len(x.get('views', ()))} views"
                )
        images = [x["views"][v] for x in batched_inputs]
        return self.normalize(images, self.backbone.size_divisibility).tensor

    # ---------------------------------------------------------------- network
    def project(self, branch, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, D) projections z of one network (online or ``self.target``)."""
        return branch["projector"](global_pool(branch["backbone"](images)[self.in_feature]))

    def forward(self, batched_inputs: List[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        online = self._online_container()
        preds, targets = [], []
        for v in (0, 1):
            images = self.preprocess_view(batched_inputs, v)
            preds.append(self.predictor(self.project(online, images)))
            with torch.no_grad():
                targets.append(self.project(self.target, images))
        loss = symmetric_byol_loss(preds[0], targets[1], preds[1], targets[0], len(preds[0]))
        self._log_projection_std(targets[0])
        return {"loss_byol": loss}

    @torch.no_grad()
    def _log_projection_std(self, z: torch.Tensor) -> None:
        try:
            storage = get_event_storage()
        except AssertionError:  # no EventStorage outside a trainer (tests, scripts)
            return
        storage.put_scalar("byol/projection_std", F.normalize(z.float(), dim=1).std(0).mean())

    def floor(self, batched_inputs: List[dict]) -> torch.Tensor:
        """Online and target backbone forwards on both views (each view on its own)."""
        total = 0.0
        for v in (0, 1):
            images = self.preprocess_view(batched_inputs, v)
            feats = self.backbone(images)
            with torch.no_grad():
                self.target["backbone"](images)
            # A scalar touching every output so backward reaches the whole online backbone.
            total = total + sum(f.float().mean() for f in feats.values())
        return total

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[Dict[str, List[torch.Tensor]]]:
        """Pooled online features and normalised projections of every view of every image."""
        return pooled_view_inference(self, batched_inputs, self.projector)
