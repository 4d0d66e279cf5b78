"""Pretrained backbones as state dicts of other frameworks: torchvision ResNets, timm ViTs.

Both exports read the checkpoint through the table of layouts (``layouts/``), so they accept what
the detectron2 converter accepts:

- ``"torchvision"``: any ResNet layout -> ``torchvision.models.resnet18/34/50/101/152`` keys
  (the inverse of the renames of ``layouts.base.torchvision_to_detectron2``). It loads with
  ``strict=True`` but for the classifier ``fc.*``, which no pretraining provides. BatchNorm
  step counters absent from the source (FrozenBN) are written as 0. torchvision ResNets stride
  in the 3x3 convolution, as every pretraining config here (``MODEL.RESNETS.STRIDE_IN_1X1
  False``); a ResNet trained with the stride in the 1x1 has the same shapes but other features.
- ``"timm"``: a ViT layout (this plugin's SIM ``backbone.net.*``, official SIM, MAE) ->
  ``timm.models.vision_transformer.VisionTransformer`` keys (``cls_token``, ``pos_embed``,
  ``patch_embed.proj``, ``blocks.N.*``, ``norm``); ViT-B/16 at 224 px gives
  ``vit_base_patch16_224``'s keys and shapes. It loads with ``strict=True`` but for the classifier
  ``head.*``. An encoder without a final norm (SIM) gets ``norm`` at timm's initialisation
  (weight 1, bias 0): its pretrained features are the tokens before that norm. The
  relative-position tables of a ViTDet detector checkpoint have no place in timm and are dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import torch

from soco_d2.utils.io import atomic_write

from .convert import convert_state_dict, detect_layout
from .layouts import detectron2_to_torchvision, get_layout
from .layouts.vit import VIT_ARCH

__all__ = ["EXPORTS", "ExportResult", "export_state_dict", "format_export", "save_export"]

EXPORTS = ("torchvision", "timm")

# (block type, blocks per stage) -> torchvision constructor
_TORCHVISION_RESNETS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}
# (width, depth) -> timm model size and heads
_TIMM_VITS = {(192, 12): ("tiny", 3), (384, 12): ("small", 6), (768, 12): ("base", 12),
              (1024, 24): ("large", 16), (1280, 32): ("huge", 16)}


@dataclass
class ExportResult:
    """An exported backbone.

    Attributes:
        state_dict: key -> tensor, for ``model.load_state_dict``.
        target: the model it is for (``torchvision.models.resnet18``, a timm model name or
            ``VisionTransformer(...)`` arguments).
        layout: the layout the checkpoint was read as.
        notes: what the export added or left out, one line each.
    """

    state_dict: Dict[str, torch.Tensor]
    target: str
    layout: str
    notes: List[str] = field(default_factory=list)


def _to_torchvision(state: Mapping, layout: Optional[str]) -> ExportResult:
    lay = detect_layout(list(state)) if layout is None else get_layout(layout)
    if "resnet" not in lay.archs:
        raise ValueError(f"--to torchvision exports a ResNet; layout {lay.name} is not one "
                         "(a ViT exports with --to timm)")
    result = convert_state_dict(state, layout=lay.name, arch="resnet", groups=("backbone",))
    out = {detectron2_to_torchvision(k): torch.as_tensor(v) for k, v in result.model.items()}
    notes = []
    added = [k[: -len("running_mean")] + "num_batches_tracked" for k in out
             if k.endswith("running_mean")]
    added = [k for k in added if k not in out]
    for k in added:
        out[k] = torch.tensor(0, dtype=torch.long)
    if added:
        notes.append(f"{len(added)} BatchNorm step counters written as 0 (the source has none)")
    blocks = {}
    for k in out:
        m = re.match(r"^layer(\d)\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    kind = "bottleneck" if any(".conv3." in k for k in out) else "basic"
    depths = tuple(len(blocks.get(i, ())) for i in range(1, 5))
    name = _TORCHVISION_RESNETS.get((kind, depths))
    if name is None:
        raise ValueError(f"no torchvision ResNet has {kind} blocks {list(depths)} per stage")
    notes.append("fc.* (the classifier) is not pretrained: load with strict=False or replace it")
    return ExportResult(out, f"torchvision.models.{name}", lay.name, notes)


def _first(state: Mapping, names) -> Optional[torch.Tensor]:
    for name in names:
        if name in state:
            return torch.as_tensor(state[name])
    return None


def _to_timm(state: Mapping, layout: Optional[str]) -> ExportResult:
    lay = detect_layout(list(state)) if layout is None else get_layout(layout)
    if VIT_ARCH not in lay.archs:
        raise ValueError(f"--to timm exports a ViT; layout {lay.name} is not one "
                         "(a ResNet exports with --to torchvision)")
    result = convert_state_dict(state, layout=lay.name, arch=VIT_ARCH, groups=("backbone",))
    out, notes = {}, []
    rel_pos = 0
    for k, v in result.model.items():
        k = k[len("backbone.net.") :]
        if re.search(r"\.attn\.rel_pos_[hw]$", k):
            rel_pos += 1
            continue
        out[k] = torch.as_tensor(v)
    if rel_pos:
        notes.append(f"{rel_pos} relative-position tables dropped (timm's ViT has none)")
    cls = _first(state, ("backbone.net.cls_token", "cls_token"))
    if cls is None:
        raise ValueError(f"layout {lay.name}: the checkpoint has no cls token, which timm's "
                         "VisionTransformer needs (a ViTDet detector checkpoint has none)")
    out["cls_token"] = cls
    dim = cls.shape[-1]
    patch = out["patch_embed.proj.weight"].shape[-1]
    grid = out["pos_embed"].shape[1] - 1
    side = int(round(grid**0.5))
    if side * side != grid:
        raise ValueError(f"pos_embed has {grid + 1} entries: not a cls entry plus a square grid")
    norm = (_first(state, ("norm.weight",)), _first(state, ("norm.bias",)))
    if norm[0] is None or norm[1] is None:  # bare encoders (MAE) may have one
        norm = (torch.ones(dim), torch.zeros(dim))
        notes.append("norm (the final norm) is not pretrained: weight 1, bias 0 as timm "
                     "initialises it; the pretrained features are the tokens before it")
    out["norm.weight"], out["norm.bias"] = norm
    depth = len({k.split(".")[1] for k in out if k.startswith("blocks.")})
    mlp_ratio = out["blocks.0.mlp.fc1.weight"].shape[0] / dim
    size = _TIMM_VITS.get((dim, depth))
    if size is not None and mlp_ratio == 4.0:
        target = f"timm vit_{size[0]}_patch{patch}_{side * patch}"
    else:
        target = (f"timm VisionTransformer(img_size={side * patch}, patch_size={patch}, "
                  f"embed_dim={dim}, depth={depth}, num_heads=MODEL.VIT.NUM_HEADS of the "
                  f"pretraining, mlp_ratio={mlp_ratio:g})")
    notes.append("head.* (the classifier) is not pretrained: load with strict=False or "
                 "create the model with num_classes=0")
    return ExportResult(out, target, lay.name, notes)


def export_state_dict(state: Mapping, to: str, layout: Optional[str] = None) -> ExportResult:
    """Export the backbone of a pretraining state dict for another framework.

    Args:
        state: the checkpoint's state dict (``soco_d2.checkpoint.load_state_dict``).
        to: ``"torchvision"`` (a ResNet) or ``"timm"`` (a ViT).
        layout: a layout name, or None to detect it.

    Raises:
        ValueError: unknown ``to``, a checkpoint of the other backbone family, or shapes no
            model of that framework has (``UnknownLayoutError`` is a ValueError too).
    """
    if to == "torchvision":
        return _to_torchvision(state, layout)
    if to == "timm":
        return _to_timm(state, layout)
    raise ValueError(f"export target must be one of {EXPORTS}, got {to!r}")


def save_export(result: ExportResult, path: str) -> None:
    """Write ``result.state_dict`` with ``torch.save``, atomically (``torch.load`` reads it,
    ``weights_only`` included)."""
    with atomic_write(path, "wb") as f:
        torch.save(result.state_dict, f)


def format_export(result: ExportResult) -> List[str]:
    """Lines for the converter CLI: layout, target model, tensor count, notes."""
    lines = [f"layout: {result.layout}, export: {result.target}",
             f"  {len(result.state_dict)} tensors"]
    return lines + [f"  {note}" for note in result.notes]
