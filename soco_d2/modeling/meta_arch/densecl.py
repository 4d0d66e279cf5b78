"""DenseCL: MoCo v2 plus a dense contrastive loss between matched cells of the two views.

Online (query) encoder: ``backbone`` (detectron2 ResNet, res5), ``head`` (MoCo v2's global MLP
on the pooled res5) and ``dense_head`` (1x1-conv MLP on every res5 cell, ``dense.py``). Target
(key) encoder: an EMA copy of all three under ``target.``. Two queues of past keys:
``queue`` (global keys) and ``queue2`` (per image, the dense key grid averaged over cells, then
normalised).

The official DenseCL recipe (WXinlong/DenseCL ``openselfsup/models/densecl.py``,
``necks.py::DenseCLNeck``, ``configs/selfsup/densecl/``), as this file implements it:
- everything MoCo v2 does (``moco.py``: K = 65536, D = 128, T = 0.2, m = 0.999 constant,
  shuffle-BN, keys gathered over processes then enqueued), the global loss being MoCo's;
- the positive of query cell i is the key-view *dense-head* embedding at the key cell whose
  *backbone* res5 feature (L2-normalised over channels) is most similar to query cell i's;
  negatives are ``queue2``; one InfoNCE term per query cell, averaged, same T;
- loss = (1 - w) * global + w * dense, w = 0.5 (MODEL.DENSECL.LOSS_WEIGHT);
- optional warm-up (the official ``DenseCLWarmupHook``, unused by its shipped configs): w = 0
  for the first MODEL.DENSECL.WARMUP_ITERS iterations, so the global loss has weight 1 then.
  The dense term is still computed (times 0) and ``queue2`` still filled, as officially, so
  every parameter gets a gradient in every step (no DDP unused-parameter search);
- the global head's Linear layers start Kaiming-normal (fan_in, ReLU) with zero biases.
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
from ..comm import concat_all_gather
from ..contrastive import info_nce_logits
from ..densecl import DenseHead, dense_correspondence, dense_info_nce
from ..precision import at_least_float32
from ..queue import KeyQueue, gather_ids
from ..shuffle_bn import batch_shuffle, batch_unshuffle
from .moco import MoCoV2, global_pool

__all__ = ["DenseCL", "add_densecl_method_config"]


@register_method_config
def add_densecl_method_config(cfg: CN) -> None:
    """DenseCL's own keys, ``MODEL.DENSECL``.

    Everything DenseCL shares with MoCo v2 is read from ``MODEL.MOCO`` (QUEUE_SIZE, also the
    size of ``queue2``; TEMPERATURE, of both losses; DIM, of both heads; IN_FEATURE; SPLIT_BN;
    SHUFFLE_BN) and ``MODEL.SSL`` (MOMENTUM, MOMENTUM_SCHEDULE, MLP_HIDDEN_DIM: the hidden width
    of both heads, MLP_NORM: "" as officially).
    """
    if hasattr(cfg.MODEL, "DENSECL"):
        return
    _C = cfg
    _C.MODEL.DENSECL = CN()
    # Weight w of the dense loss; the global loss gets 1 - w (official loss_lambda: 0.5).
    _C.MODEL.DENSECL.LOSS_WEIGHT = 0.5
    # Iterations with w = 0 at the start (official warm-up hook: 1000; its configs: 0 = off).
    _C.MODEL.DENSECL.WARMUP_ITERS = 0


def kaiming_init_linears_(module: nn.Module) -> None:
    """Kaiming-normal (fan_in, ReLU) weights and zero biases on every Linear (official init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@META_ARCH_REGISTRY.register()
class DenseCL(MoCoV2):
    """DenseCL meta-architecture (see the module docstring for the recipe).

    Input: as :class:`MoCoV2`: a list of dicts from the ``multi_view`` mapper, ``"views"``: at
    least two uint8 tensors (3, S, S); view 0 is the query's, view 1 the key's.

    Training output: ``{"loss_global": (1 - w) * global InfoNCE, "loss_dense": w * dense
    InfoNCE}``; ``moco/acc1``, ``densecl/loss_weight`` (w) and ``densecl/dense_infonce`` (the
    dense InfoNCE before weighting, informative during the warm-up) go to the event storage.

    Eval output: as :class:`MoCoV2` (pooled features and global embeddings of every view).
    """

    @configurable
    def __init__(
        self,
        *,
        dense_head: nn.Module,
        loss_weight: float = 0.5,
        warmup_iters: int = 0,
        **kwargs,
    ):
        """
        Args:
            dense_head: per-cell head, (N, C, S, S) -> ((N, D, S*S), (N, D)); see
                :class:`~soco_d2.modeling.densecl.DenseHead`. Online, copied to the target.
            loss_weight: w in [0, 1].
            warmup_iters: iterations at the start with w = 0 (>= 0).
            kwargs: see :class:`MoCoV2` (backbone, head, dim, queue_size, temperature, ...).
        """
        if not 0.0 <= loss_weight <= 1.0:
            raise ValueError(f"MODEL.DENSECL.LOSS_WEIGHT must be in [0, 1], got {loss_weight}")
        if warmup_iters < 0:
            raise ValueError(f"MODEL.DENSECL.WARMUP_ITERS must be >= 0, got {warmup_iters}")
        super().__init__(**kwargs)  # builds backbone, head, queue; target waits (finish_init)
        if getattr(dense_head, "out_dim", self.queue.dim) != self.queue.dim:
            raise ValueError("The dense head's width must equal MODEL.MOCO.DIM")
        self.dense_head = dense_head
        self.queue2 = KeyQueue(self.queue.dim, self.queue.size, self.queue.track_ids)
        self.loss_weight = float(loss_weight)
        self.warmup_iters = int(warmup_iters)
        self.finish_init()

    def finish_init(self) -> None:
        # MoCoV2.__init__ ends with finish_init(); build the target once, when the dense head
        # it must mirror exists.
        if hasattr(self, "dense_head"):
            super().finish_init()

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        kaiming_init_linears_(ret["head"])
        channels = ret["backbone"].output_shape()[cfg.MODEL.MOCO.IN_FEATURE].channels
        ret.update(
            dense_head=DenseHead(channels, cfg.MODEL.SSL.MLP_HIDDEN_DIM, cfg.MODEL.MOCO.DIM),
            loss_weight=cfg.MODEL.DENSECL.LOSS_WEIGHT,
            warmup_iters=cfg.MODEL.DENSECL.WARMUP_ITERS,
        )
        return ret

    def online_parts(self) -> Dict[str, nn.Module]:
        return {"backbone": self.backbone, "head": self.head, "dense_head": self.dense_head}

    # ---------------------------------------------------------------- network
    def _encode_dense(self, branch, images: torch.Tensor):
        """One encoder on (N, 3, S, S) images.

        Returns:
            feats: (N, C, s, s) backbone feature (MODEL.MOCO.IN_FEATURE), for the matching.
            emb: (N, D) global embedding, L2-normalised.
            grid: (N, D, s*s) dense embeddings, each cell L2-normalised.
            pooled: (N, D) cell average of the unnormalised dense embeddings, then normalised.
        """
        feats = branch["backbone"](images)[self.in_feature]
        emb = F.normalize(branch["head"](global_pool(feats)), dim=1)
        grid, pooled = branch["dense_head"](feats)
        return feats, emb, F.normalize(grid, dim=1), F.normalize(pooled, dim=1)

    def dense_weight(self) -> float:
        """w at the current iteration (detectron2's EventStorage): 0 during the warm-up."""
        if self.warmup_iters == 0:
            return self.loss_weight
        try:
            it = get_event_storage().iter
        except AssertionError:
            raise RuntimeError(
                "MODEL.DENSECL.WARMUP_ITERS > 0 reads the iteration from detectron2's "
                "EventStorage: train inside a trainer or within `with EventStorage(iter):`"
            ) from None
        return 0.0 if it < self.warmup_iters else self.loss_weight

    def forward(self, batched_inputs: List[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        im_q = self.preprocess_view(batched_inputs, 0)
        im_k = self.preprocess_view(batched_inputs, 1)
        w = self.dense_weight()
        q_feats, q, q_grid, _ = self._encode_dense(self._online_container(), im_q)
        with torch.no_grad():
            k_feats, k, k_grid, k_pooled = self._dense_keys(im_k)
            match = dense_correspondence(q_feats, k_feats)
        ids = self.queue.batch_ids(batched_inputs)
        logits, labels = info_nce_logits(
            q, k, self.queue.clone_keys(), self.temperature, self.queue.exclusion(ids)
        )
        loss_global = F.cross_entropy(at_least_float32(logits), labels)
        loss_dense = dense_info_nce(
            q_grid, k_grid, match, self.queue2.keys_view(), self.temperature,
            self.queue2.exclusion(ids, repeat=q_grid.shape[2]),
        )
        # Every process enqueues the same gathered keys, so the queues stay identical.
        all_ids = gather_ids(ids)
        self.queue.enqueue(concat_all_gather(k), all_ids)
        self.queue2.enqueue(concat_all_gather(k_pooled), all_ids)
        self._log_accuracy(logits)
        self._log_dense(w, loss_dense)
        return {"loss_global": (1.0 - w) * loss_global, "loss_dense": w * loss_dense}

    @torch.no_grad()
    def _dense_keys(self, im_k: torch.Tensor):
        """:meth:`_encode_dense` of the target on the key view, in input order."""
        if not self.shuffle_bn:
            return self._encode_dense(self.target, im_k)
        im_k, idx_unshuffle = batch_shuffle(im_k)
        outs = self._encode_dense(self.target, im_k)
        return tuple(batch_unshuffle(t, idx_unshuffle) for t in outs)

    @torch.no_grad()
    def _log_dense(self, w: float, loss_dense: torch.Tensor) -> None:
        try:
            storage = get_event_storage()
        except AssertionError:  # no EventStorage outside a trainer (tests, scripts)
            return
        storage.put_scalar("densecl/loss_weight", w, smoothing_hint=False)
        storage.put_scalar("densecl/dense_infonce", loss_dense.detach())
