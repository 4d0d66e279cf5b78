"""DetCo: MoCo v2 contrast on every ResNet stage, between global views and jigsaw patch sets.

Xie et al., "DetCo: Unsupervised Contrastive Learning for Object Detection" (arXiv 2102.04803).
Online network: ``backbone`` (detectron2 ResNet, res2-res5 out) and ``heads`` (per level a
global and a local MLP, :class:`~soco_d2.modeling.detco.DetCoHeads`). Target: an EMA copy
of both under ``target.`` (constant momentum 0.999). Per level two key queues,
``queues.<level>_global`` and ``queues.<level>_local`` (8 for res2-res5).

Per level L: loss_L = w_L * (global + local + cross terms), InfoNCE with the query from view 1
and the key from view 2 (MoCo v2's asymmetric pair); the terms are in
``soco_d2/modeling/detco/losses.py``. Choices the paper leaves open (``docs/methods/detco.md``):
the cross directions (MODEL.DETCO.CROSS_DIRECTIONS, default both) and the MLP widths (default:
hidden width = the level's channel count, MoCo v2's 2048 -> 2048 -> 128 on res5, for global and
local heads alike).

Shuffle-BN as MoCo (``soco_d2.modeling.shuffle_bn``): the key images (and, separately, the key
patch sets, image by image) are shuffled across processes before the target backbone; in one
process ``MODEL.MOCO.SPLIT_BN`` > 1 turns every BatchNorm2d into a ``SplitBatchNorm``
(as :class:`~soco_d2.modeling.meta_arch.moco.MoCoV2`, whose contrast keys DetCo reads).
"""
from typing import Dict, List, Mapping, Sequence

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage
from torch import nn

from ...config import register_method_config
from ..comm import concat_all_gather
from ..detco import CROSS_DIRECTIONS, DetCoHeads, detco_level_terms, weight_level_losses
from ..queue import KeyQueue, gather_ids
from ..shuffle_bn import batch_shuffle, batch_unshuffle
from .base import EMATargetMetaArch
from .moco import add_moco_method_config  # noqa: F401  (registers MODEL.MOCO, read here)
from .moco import build_moco_backbone

__all__ = ["DetCo", "add_detco_method_config"]

@register_method_config
def add_detco_method_config(cfg: CN) -> None:
    """DetCo's own keys: ``MODEL.DETCO`` (levels, heads, terms) and ``INPUT.DETCO`` (jigsaw).

    DetCo is MoCo v2 at every level, so its contrast settings are MoCo's keys:
    ``MODEL.MOCO.TEMPERATURE``, ``QUEUE_SIZE`` (per queue), ``DIM`` (embedding width),
    ``SHUFFLE_BN`` and ``SPLIT_BN`` (``MODEL.MOCO.IN_FEATURE`` is not read: LEVELS replaces it).
    Shared keys (EMA momentum, MLP norm, global views, colour) are ``MODEL.SSL`` / ``INPUT.SSL``.
    """
    if hasattr(cfg.MODEL, "DETCO"):
        return
    _C = cfg
    _C.MODEL.DETCO = CN()
    # Backbone outputs that get heads and a loss (each must be in MODEL.RESNETS.OUT_FEATURES).
    _C.MODEL.DETCO.LEVELS = ["res2", "res3", "res4", "res5"]
    # Weight of each level's loss, same order as LEVELS (the paper's 0.1, 0.4, 0.7, 1.0).
    _C.MODEL.DETCO.LEVEL_WEIGHTS = [0.1, 0.4, 0.7, 1.0]
    # Use the jigsaw patch sets (local heads, local and cross terms); False: multi-level MoCo.
    _C.MODEL.DETCO.LOCAL = True
    # Cross terms: "global_to_local" (global query, local key) and/or "local_to_global"
    # (local query, global key); [] keeps only the global and local terms.
    _C.MODEL.DETCO.CROSS_DIRECTIONS = ["global_to_local", "local_to_global"]
    # Hidden width of each level's global MLP, same order as LEVELS; [] = that level's channels.
    _C.MODEL.DETCO.GLOBAL_HIDDEN_DIMS = []
    # Hidden width of each level's local MLP (input G*G * channels); [] = that level's channels.
    _C.MODEL.DETCO.LOCAL_HIDDEN_DIMS = []

    _C.INPUT.DETCO = CN()
    # Side of the square crop cut into the jigsaw (paper: 255).
    _C.INPUT.DETCO.JIGSAW_SIZE = 255
    # Cells per side of the jigsaw grid (paper: 3, i.e. 9 patches of 85 px cells).
    _C.INPUT.DETCO.JIGSAW_GRID = 3
    # Side of the random patch taken from each cell (paper: 64).
    _C.INPUT.DETCO.PATCH_SIZE = 64
    # Where a view's jigsaw comes from: "view" (its global view's crop and flip) or "crop"
    # (an independent RandomResizedCrop with JIGSAW_CROP_SCALE and its own flip).
    _C.INPUT.DETCO.JIGSAW_SOURCE = "view"
    # RandomResizedCrop area range of "crop" jigsaws.
    _C.INPUT.DETCO.JIGSAW_CROP_SCALE = (0.6, 1.0)
    # Colour augmentation of the patches: "patch" (drawn per patch) or "jigsaw" (once per crop).
    _C.INPUT.DETCO.PATCH_COLOR = "patch"


@META_ARCH_REGISTRY.register()
class DetCo(EMATargetMetaArch):
    """DetCo meta-architecture (see module docstring).

    Input: a list of dicts from ``DetCoDatasetMapper``: ``"views"``: 2 uint8 (3, S, S) global
    views (query, key); ``"jigsaw"``: 2 uint8 (G*G, 3, P, P) patch sets, one per view.

    Training output: ``{"loss_<level>": scalar}`` per level (weight included); each term is
    logged as ``detco/<level>_<term>``.

    Eval output: a list (one per image) of ``{"embeddings": {level: (D,)}}``, the online
    global embeddings of view 1.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        heads: DetCoHeads,
        levels: Sequence[str],
        level_weights: Sequence[float],
        local: bool,
        cross_directions: Sequence[str],
        temperature: float,
        queue_size: int,
        shuffle_bn: bool = True,
        exclude_same_image: bool = False,
        **kwargs,
    ):
        """
        Args:
            backbone: detectron2 ResNet (``build_backbone``) with every level in its outputs.
            heads: the per-level heads (local heads present iff ``local``).
            levels: backbone outputs to contrast, e.g. ["res2", "res3", "res4", "res5"].
            level_weights: one weight per level.
            local: use the jigsaw patch sets.
            cross_directions: cross terms, see :func:`detco_level_terms`.
            temperature: InfoNCE T.
            queue_size: keys per queue.
            shuffle_bn: shuffle key batches before the target backbone.
            exclude_same_image: leave queue keys of the query's own image out of its negatives
                (``MODEL.MOCO.EXCLUDE_SAME_IMAGE``).
            kwargs: see :class:`EMATargetMetaArch` (normalisation, momentum, channels_last).
        """
        super().__init__(**kwargs)
        levels = list(levels)
        if not levels or len(level_weights) != len(levels):
            raise ValueError(
                f"MODEL.DETCO.LEVEL_WEIGHTS ({list(level_weights)}) needs one weight per "
                f"MODEL.DETCO.LEVELS entry ({levels})"
            )
        missing = [lvl for lvl in levels if lvl not in backbone.output_shape()]
        if missing:
            raise ValueError(
                f"MODEL.DETCO.LEVELS {missing} are not backbone outputs "
                f"(MODEL.RESNETS.OUT_FEATURES: {sorted(backbone.output_shape())})"
            )
        bad = [d for d in cross_directions if d not in CROSS_DIRECTIONS]
        if bad:
            raise ValueError(f"MODEL.DETCO.CROSS_DIRECTIONS {bad} not in {CROSS_DIRECTIONS}")
        if temperature <= 0:
            raise ValueError(f"MODEL.MOCO.TEMPERATURE must be > 0, got {temperature}")
        if local != (heads.local_heads is not None):
            raise ValueError("DetCoHeads must have local heads exactly when MODEL.DETCO.LOCAL")
        self.backbone = backbone
        self.heads = heads
        self.levels = levels
        self.level_weights = {lvl: float(w) for lvl, w in zip(levels, level_weights)}
        self.local = bool(local)
        self.cross_directions = tuple(cross_directions)
        self.temperature = float(temperature)
        self.shuffle_bn = bool(shuffle_bn)
        dim = next(iter(heads.global_heads.values())).out_dim
        kinds = ("global", "local") if self.local else ("global",)
        self.queues = nn.ModuleDict(
            {f"{lvl}_{kind}": KeyQueue(dim, queue_size, exclude_same_image)
             for lvl in levels for kind in kinds}
        )
        self.finish_init()

    @classmethod
    def from_config(cls, cfg):
        d, moco, m = cfg.MODEL.DETCO, cfg.MODEL.MOCO, cfg.MODEL.SSL
        # Fail at start, not at the first enqueue: each step writes IMS_PER_BATCH keys.
        KeyQueue(1, moco.QUEUE_SIZE).check_batch(
            cfg.SOLVER.IMS_PER_BATCH, "MODEL.MOCO.QUEUE_SIZE"
        )
        backbone = build_moco_backbone(cfg)
        shapes = backbone.output_shape()
        channels = {lvl: shapes[lvl].channels for lvl in d.LEVELS if lvl in shapes}
        heads = DetCoHeads(
            channels,
            out_dim=moco.DIM,
            global_hidden=_widths(d.GLOBAL_HIDDEN_DIMS, channels, "GLOBAL_HIDDEN_DIMS"),
            local_hidden=(
                _widths(d.LOCAL_HIDDEN_DIMS, channels, "LOCAL_HIDDEN_DIMS") if d.LOCAL else None
            ),
            num_patches=cfg.INPUT.DETCO.JIGSAW_GRID**2,
            norm=m.MLP_NORM,
        )
        return {
            **EMATargetMetaArch.base_config(cfg),
            "backbone": backbone,
            "heads": heads,
            "levels": list(d.LEVELS),
            "level_weights": list(d.LEVEL_WEIGHTS),
            "local": d.LOCAL,
            "cross_directions": list(d.CROSS_DIRECTIONS),
            "temperature": moco.TEMPERATURE,
            "queue_size": moco.QUEUE_SIZE,
            "shuffle_bn": moco.SHUFFLE_BN,
            "exclude_same_image": moco.EXCLUDE_SAME_IMAGE,
        }

    def online_parts(self) -> Dict[str, nn.Module]:
        return {"backbone": self.backbone, "heads": self.heads}

    # ----------------------------------------------------------------- inputs
    def _check_inputs(self, batched_inputs: List[dict]) -> None:
        if not batched_inputs:
            raise ValueError("DetCo got an empty batch")
        for x in batched_inputs:
            if len(x.get("views", ())) != 2:
                raise ValueError(
                    "DetCo inputs need 2 global 'views' (INPUT.DATASET_MAPPER_NAME 'detco')"
                )
            if self.local and len(x.get("jigsaw", ())) != 2:
                raise ValueError(
                    "DetCo with MODEL.DETCO.LOCAL needs 'jigsaw' patch sets for both views: set "
                    "INPUT.DATASET_MAPPER_NAME 'detco'"
                )

    def global_batch(self, batched_inputs: List[dict], v: int) -> torch.Tensor:
        """(N, 3, S, S) normalised global view ``v`` of every image."""
        return self.normalize([x["views"][v] for x in batched_inputs]).tensor

    def patch_batch(self, batched_inputs: List[dict], v: int) -> torch.Tensor:
        """(N, G*G, 3, P, P) normalised patches of view ``v``'s jigsaw, image-major."""
        x = torch.stack([b["jigsaw"][v] for b in batched_inputs]).to(self.device)
        return (x.float() - self.pixel_mean) / self.pixel_std

    def _cell_major(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, G*G, 3, P, P) -> (G*G * N, 3, P, P), row k * N + n = patch k of image n."""
        out = patches.transpose(0, 1).flatten(0, 1)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    # ---------------------------------------------------------------- network
    def _embed(self, branch, images: torch.Tensor, patches, shuffle: bool):
        """Global and local embeddings (level -> (N, D)) of one view through one branch."""
        idx = None
        if shuffle:
            images, idx = batch_shuffle(images)
        z_g = branch["heads"].forward_global(branch["backbone"](images))
        if idx is not None:
            z_g = {lvl: batch_unshuffle(z, idx) for lvl, z in z_g.items()}
        if patches is None:
            return z_g, None
        n = patches.shape[0]
        if shuffle:  # whole patch sets move together: image n's 9 patches stay one group
            patches, idx = batch_shuffle(patches)
        feats = branch["backbone"](self._cell_major(patches))
        z_l = branch["heads"].forward_local(feats, n)
        if shuffle:
            z_l = {lvl: batch_unshuffle(z, idx) for lvl, z in z_l.items()}
        return z_g, z_l

    def forward(self, batched_inputs: List[dict]):
        self._check_inputs(batched_inputs)
        if not self.training:
            return self.inference(batched_inputs)
        images = [self.global_batch(batched_inputs, v) for v in (0, 1)]
        patches = [self.patch_batch(batched_inputs, v) if self.local else None for v in (0, 1)]

        q_g, q_l = self._embed(self._online_container(), images[0], patches[0], False)
        with torch.no_grad():
            k_g, k_l = self._embed(self.target, images[1], patches[1], self.shuffle_bn)

        first = self.queues[f"{self.levels[0]}_global"]  # every queue holds the same ids
        ids = first.batch_ids(batched_inputs)
        exclude = first.exclusion(ids)
        terms = {}
        for lvl in self.levels:
            local = {}
            if self.local:
                local = dict(q_local=q_l[lvl], k_local=k_l[lvl],
                             queue_local=self.queues[f"{lvl}_local"].keys_view())
            terms[lvl] = detco_level_terms(
                q_g[lvl], k_g[lvl], self.queues[f"{lvl}_global"].keys_view(), self.temperature,
                cross_directions=self.cross_directions, exclude=exclude, **local,
            )
        all_ids = gather_ids(ids)
        for lvl in self.levels:  # after every loss: each saw the pre-step queues
            self.queues[f"{lvl}_global"].enqueue(concat_all_gather(k_g[lvl]), all_ids)
            if self.local:
                self.queues[f"{lvl}_local"].enqueue(concat_all_gather(k_l[lvl]), all_ids)
        self._log_terms(terms)
        return weight_level_losses(terms, self.level_weights)

    @torch.no_grad()
    def _log_terms(self, terms: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        try:
            storage = get_event_storage()
        except AssertionError:  # no EventStorage outside a trainer (tests, scripts)
            return
        names = [f"detco/{lvl}_{name}" for lvl, t in terms.items() for name in t]
        # One device-to-host copy for all terms, not one sync per scalar.
        values = torch.stack([v.float() for t in terms.values() for v in t.values()]).tolist()
        storage.put_scalars(**dict(zip(names, values)))

    def floor(self, batched_inputs: List[dict]) -> torch.Tensor:
        """Online backbone on view 1 and its patches, target backbone on view 2 and its patches."""
        total = 0.0
        for v, branch in ((0, self.backbone), (1, self.target["backbone"])):
            inputs = [self.global_batch(batched_inputs, v)]
            if self.local:
                inputs.append(self._cell_major(self.patch_batch(batched_inputs, v)))
            for x in inputs:
                with torch.set_grad_enabled(v == 0 and torch.is_grad_enabled()):
                    feats = branch(x)
                if v == 0:  # a scalar touching every output: backward reaches the whole pass
                    total = total + sum(f.float().mean() for f in feats.values())
        return total

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[Dict[str, Dict[str, torch.Tensor]]]:
        """Online global embeddings of view 1, per image and level."""
        z = self.heads.forward_global(self.backbone(self.global_batch(batched_inputs, 0)))
        return [
            {"embeddings": {lvl: z[lvl][i] for lvl in self.levels}}
            for i in range(len(batched_inputs))
        ]


def _widths(values: Sequence[int], channels: Mapping[str, int], key: str) -> Dict[str, int]:
    """Per-level hidden widths from a config list ([] = each level's channel count)."""
    if not values:
        return dict(channels)
    if len(values) != len(channels):
        raise ValueError(
            f"MODEL.DETCO.{key} ({list(values)}) needs one width per MODEL.DETCO.LEVELS entry "
            f"({list(channels)}) or [] for the channel counts"
        )
    return {lvl: int(w) for lvl, w in zip(channels, values)}
