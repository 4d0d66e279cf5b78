"""MoCo v2: momentum contrast with a queue of negatives, on detectron2's ResNet.

Online (query) encoder: ``backbone`` (detectron2 ResNet, res5) -> global average pool -> ``head``
(Linear C->H, ReLU, Linear H->D, no norm). Target (key) encoder: an EMA copy of both under
``target.``, never trained by gradients. Loss: InfoNCE of the query of view 1 against the key of
view 2 (positive, column 0) and the ``queue`` of past keys (negatives), temperature T.

The official MoCo v2 recipe (facebookresearch/moco ``moco/builder.py``, ``main_moco.py``):
- K = 65536 keys of D = 128, m = 0.999 constant, T = 0.2, q and k L2-normalised;
- the momentum step moves parameters only (buffers are the key encoder's own); the official
  code does it inside the forward before the key pass, this one after the optimizer step
  (:meth:`EMATargetMetaArch.update_target`, called by the engine): the same sequence of key
  encoders;
- keys gathered from every process, then enqueued; the queue size must be a multiple of the
  global batch (checked at construction);
- Shuffle-BN: with several processes the key images are shuffled across processes before the
  key encoder and the keys unshuffled after it (``shuffle_bn.batch_shuffle``); BN is per process.
  In one process the official single-GPU notebook's recipe: a single-process shuffle plus
  ``SplitBatchNorm`` imitating MODEL.MOCO.SPLIT_BN devices, in the query AND the key encoder
  (the notebook builds both encoders with the same split norm layer).
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.utils.events import get_event_storage
from torch import nn

from ...config import register_method_config
from ..comm import concat_all_gather, get_world_size
from ..contrastive import info_nce_logits
from ..heads import MLPHead
from ..init import zero_init_residual_
from ..precision import at_least_float32
from ..queue import KeyQueue, gather_ids
from ..shuffle_bn import batch_shuffle, batch_unshuffle, convert_to_split_batchnorm
from .base import EMATargetMetaArch

__all__ = ["MoCoV2", "add_moco_method_config"]


@register_method_config
def add_moco_method_config(cfg: CN) -> None:
    """MoCo v2's own keys, ``MODEL.MOCO``.

    Shared keys it reads: ``MODEL.SSL.MOMENTUM`` / ``MOMENTUM_SCHEDULE`` (0.999, constant),
    ``MODEL.SSL.MLP_HIDDEN_DIM`` (the head's hidden width: the backbone's width, 2048 for R-50)
    and ``MODEL.SSL.MLP_NORM`` ("" in MoCo v2); ``MODEL.SSL.MLP_OUT_DIM`` is not read: the
    key width is ``MODEL.MOCO.DIM``, which also sizes the queue.
    """
    if hasattr(cfg.MODEL, "MOCO"):
        return
    _C = cfg
    _C.MODEL.MOCO = CN()
    # Number of keys K in the queue of negatives; a multiple of SOLVER.IMS_PER_BATCH.
    _C.MODEL.MOCO.QUEUE_SIZE = 65536
    # InfoNCE temperature T (MoCo v2: 0.2; MoCo v1: 0.07).
    _C.MODEL.MOCO.TEMPERATURE = 0.2
    # Width D of queries and keys (the head's output).
    _C.MODEL.MOCO.DIM = 128
    # Backbone feature the head pools (globally averaged): "res5" as MoCo.
    _C.MODEL.MOCO.IN_FEATURE = "res5"
    # In a single process, imitate this many devices' BN statistics with SplitBatchNorm in both
    # encoders (official single-GPU notebook: 8); 0 or 1 disables; ignored with > 1 process.
    _C.MODEL.MOCO.SPLIT_BN = 8
    # Shuffle the key encoder's batch (across processes, or within the one): True or False.
    _C.MODEL.MOCO.SHUFFLE_BN = True
    # Leave keys of the query's own image (enqueued at an earlier step) out of its negatives.
    # False as officially: there the queue holds 5 % of ImageNet. On a pool smaller than the
    # queue, every query meets earlier keys of its own image as negatives (MoCo v2, DenseCL and
    # DetCo read this key; docs/methods/mocov2.md).
    _C.MODEL.MOCO.EXCLUDE_SAME_IMAGE = False


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C): the global average pool of torchvision's ResNet."""
    return x.mean(dim=(2, 3))


def _check_in_feature(backbone: nn.Module, name: str) -> None:
    if name not in backbone.output_shape():
        raise ValueError(
            f"MODEL.MOCO.IN_FEATURE {name!r} is not a backbone output; "
            f"MODEL.RESNETS.OUT_FEATURES gives {sorted(backbone.output_shape())}"
        )


def build_moco_backbone(cfg: CN, split_bn: Optional[int] = None) -> Backbone:
    """detectron2's ResNet as the plugin's neck-free methods use it (MoCo v2, DenseCL, DetCo,
    BYOL).

    ``MODEL.SSL.ZERO_INIT_RESIDUAL`` zeroes each residual branch's last norm; in a single
    process ``split_bn`` > 1 turns every BatchNorm2d into a ``SplitBatchNorm`` imitating that
    many devices (with several processes shuffle-BN needs no imitation).

    Args:
        cfg: the config (``MODEL.BACKBONE`` / ``MODEL.RESNETS``, ``MODEL.SSL``).
        split_bn: imitated devices; None reads ``MODEL.MOCO.SPLIT_BN`` (the shuffle-BN methods),
            0 for methods whose BN spans the whole batch (BYOL).

    Raises:
        ValueError: SPLIT_BN in one process with norms that are not plain "BN" (nothing would
            be split) or with a batch it does not divide.
    """
    split = cfg.MODEL.MOCO.SPLIT_BN if split_bn is None else split_bn
    backbone = build_backbone(cfg)
    if cfg.MODEL.SSL.ZERO_INIT_RESIDUAL:
        zero_init_residual_(backbone)
    if split > 1 and get_world_size() == 1:
        if cfg.MODEL.RESNETS.NORM != "BN" or cfg.SOLVER.IMS_PER_BATCH % split:
            raise ValueError(
                f"MODEL.MOCO.SPLIT_BN ({split}) in one process needs MODEL.RESNETS.NORM "
                f"'BN' (got {cfg.MODEL.RESNETS.NORM!r}) and must divide SOLVER.IMS_PER_BATCH "
                f"({cfg.SOLVER.IMS_PER_BATCH}): each imitated device normalises an equal share "
                f"of the batch. Set MODEL.MOCO.SPLIT_BN 0 to disable."
            )
        convert_to_split_batchnorm(backbone, split)
    return backbone


@META_ARCH_REGISTRY.register()
class MoCoV2(EMATargetMetaArch):
    """MoCo v2 meta-architecture (see the module docstring for the recipe).

    Input: a list of dicts, one per image, from the ``multi_view`` mapper: ``"views"``: at least
    two uint8 tensors (3, S, S); view 0 is the query's, view 1 the key's.

    Training output: ``{"loss_moco": scalar}``; ``moco/acc1`` (how often the positive has the
    largest logit) goes to the event storage.

    Eval output: a list (one per image) of ``{"features": [V tensors (C,)], "embeddings":
    [V tensors (D,)]}``: pooled online backbone features and normalised head outputs.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        queue: KeyQueue,
        temperature: float,
        in_feature: str = "res5",
        shuffle_bn: bool = True,
        **kwargs,
    ):
        """
        Args:
            backbone: detectron2 ResNet (``build_backbone``), norms already split if wanted.
            head: MLP on the pooled feature, (N, C) -> (N, dim); online, copied to the target.
            queue: the ring of past keys (its width is the head's output width D).
            temperature: InfoNCE T > 0.
            in_feature: the backbone output the head pools.
            shuffle_bn: shuffle the key encoder's batch (see :mod:`..shuffle_bn`).
            kwargs: see :class:`EMATargetMetaArch` (normalisation, momentum, channels_last).
        """
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"MODEL.MOCO.TEMPERATURE must be > 0, got {temperature}")
        _check_in_feature(backbone, in_feature)
        self.backbone = backbone
        self.head = head
        self.in_feature = in_feature
        self.temperature = float(temperature)
        self.shuffle_bn = bool(shuffle_bn)
        self.queue = queue
        self.finish_init()

    @classmethod
    def from_config(cls, cfg):
        m, s = cfg.MODEL.MOCO, cfg.MODEL.SSL
        queue = KeyQueue(m.DIM, m.QUEUE_SIZE, track_ids=m.EXCLUDE_SAME_IMAGE)
        # Fail at start, not at the first enqueue: each step writes IMS_PER_BATCH keys.
        queue.check_batch(cfg.SOLVER.IMS_PER_BATCH, "MODEL.MOCO.QUEUE_SIZE")
        backbone = build_moco_backbone(cfg)
        _check_in_feature(backbone, m.IN_FEATURE)
        channels = backbone.output_shape()[m.IN_FEATURE].channels
        return {
            **EMATargetMetaArch.base_config(cfg),
            "backbone": backbone,
            "head": MLPHead(channels, s.MLP_HIDDEN_DIM, m.DIM, s.MLP_NORM),
            "queue": queue,
            "temperature": m.TEMPERATURE,
            "in_feature": m.IN_FEATURE,
            "shuffle_bn": m.SHUFFLE_BN,
        }

    def online_parts(self) -> Dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head}

    # ----------------------------------------------------------------- inputs
    def preprocess_view(self, batched_inputs: List[dict], v: int) -> torch.Tensor:
        """(N, 3, S, S) normalised view ``v`` of every image."""
        if not batched_inputs:
            raise ValueError("MoCoV2 got an empty batch")
        for x in batched_inputs:
            if "views" not in x or len(x["views"]) <= v:
                raise ValueError(
                    f"MoCoV2 needs 2 views per image (INPUT.SSL.VIEW_SIZES, multi_view mapper); "
                    f"got an input with keys {sorted(x)} and "
                    f"{len(x.get('views', ()))} views"
                )
        images = [x["views"][v] for x in batched_inputs]
        return self.normalize(images, self.backbone.size_divisibility).tensor

    # ---------------------------------------------------------------- network
    def _encode(self, branch, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, D) L2-normalised embeddings of one encoder."""
        pooled = global_pool(branch["backbone"](images)[self.in_feature])
        return F.normalize(branch["head"](pooled), dim=1)

    def forward(self, batched_inputs: List[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        im_q = self.preprocess_view(batched_inputs, 0)
        im_k = self.preprocess_view(batched_inputs, 1)
        q = self._encode(self._online_container(), im_q)
        with torch.no_grad():
            k = self._keys(im_k)
        ids = self.queue.batch_ids(batched_inputs)
        logits, labels = info_nce_logits(
            q, k, self.queue.clone_keys(), self.temperature, self.queue.exclusion(ids)
        )
        loss = F.cross_entropy(at_least_float32(logits), labels)
        # Every process enqueues the same gathered keys, so the queues stay identical.
        self.queue.enqueue(concat_all_gather(k), gather_ids(ids))
        self._log_accuracy(logits)
        return {"loss_moco": loss}

    @torch.no_grad()
    def _keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """(N, D) keys of the key view, in input order (shuffled through the key encoder)."""
        if not self.shuffle_bn:
            return self._encode(self.target, im_k)
        im_k, idx_unshuffle = batch_shuffle(im_k)
        return batch_unshuffle(self._encode(self.target, im_k), idx_unshuffle)

    @torch.no_grad()
    def _log_accuracy(self, logits: torch.Tensor) -> None:
        try:
            storage = get_event_storage()
        except AssertionError:  # no EventStorage outside a trainer (tests, scripts)
            return
        acc = (logits.argmax(dim=1) == 0).float().mean()
        storage.put_scalar("moco/acc1", acc)

    def floor(self, batched_inputs: List[dict]) -> torch.Tensor:
        """Online backbone forward on the query view + target backbone forward on the key view."""
        im_q = self.preprocess_view(batched_inputs, 0)
        im_k = self.preprocess_view(batched_inputs, 1)
        feats = self.backbone(im_q)
        with torch.no_grad():
            self.target["backbone"](im_k)
        # A scalar touching every output so backward reaches the whole online backbone.
        return sum(f.float().mean() for f in feats.values())

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[Dict[str, List[torch.Tensor]]]:
        """Pooled online features and normalised embeddings of every view of every image."""
        return pooled_view_inference(self, batched_inputs, self.head)


@torch.no_grad()
def pooled_view_inference(
    model: EMATargetMetaArch, batched_inputs: List[dict], head: torch.nn.Module
) -> List[Dict[str, List[torch.Tensor]]]:
    """Inference of the image-level ResNet methods: per image, per view, the globally pooled
    online feature ``model.in_feature`` and its L2-normalised ``head`` embedding.

    Returns:
        one ``{"features": [(C,) per view], "embeddings": [(D,) per view]}`` per image.
    """
    results = [{"features": [], "embeddings": []} for _ in batched_inputs]
    for v in range(min(len(x["views"]) for x in batched_inputs)):
        images = model.preprocess_view(batched_inputs, v)
        pooled = global_pool(model.backbone(images)[model.in_feature])
        emb = F.normalize(head(pooled), dim=1)
        for r, f, e in zip(results, pooled, emb):
            r["features"].append(f)
            r["embeddings"].append(e)
    return results
