"""AdamW parameter groups: layer-wise lr decay for ViT backbones, no decay on 1-D parameters.

Layer-wise lr decay (ViTDet, MAE fine-tuning) scales the learning rate of each ViT block by
``decay^(L - i)`` (block i of L, 0-based), so early blocks, which carry the most general
pretrained features, move least. The rule is detectron2's own ``get_vit_lr_decay_rate``
(``detectron2/modeling/backbone/vit.py``), reused here, on parameter names of the whole model:

- ``backbone.*.blocks.i.*`` -> ``decay^(L + 1 - (i + 1))``;
- ``backbone.*.patch_embed.*`` and ``backbone.*.pos_embed`` -> ``decay^(L + 1)``;
- everything else (the pyramid ``backbone.simfp_*``, RPN, ROI heads) -> 1.0.

Weight decay follows the timm / SIM / MAE rule: none on 1-D parameters (biases, norm
weights) nor on position embeddings (ViTDet's ``pos_embed`` override); ``WEIGHT_DECAY`` on
the rest (relative-position tables included, as in ViTDet).
"""
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate

__all__ = [
    "vit_lr_decay_rate",
    "param_lr_and_decay",
    "adamw_param_groups",
    "adamw_param_groups_from_config",
]

# Parameter-name endings that never get weight decay besides 1-D parameters.
NO_DECAY_SUFFIXES: Tuple[str, ...] = ("pos_embed",)


def vit_lr_decay_rate(name: str, lr_decay_rate: float, num_layers: int) -> float:
    """The lr multiplier of parameter ``name`` (detectron2's ``get_vit_lr_decay_rate``).

    Args:
        name: full parameter name in the model, e.g. ``backbone.net.blocks.3.attn.qkv.weight``.
        lr_decay_rate: the per-block decay (SOLVER.LAYER_DECAY, e.g. 0.7).
        num_layers: number of ViT blocks L (MODEL.VIT.DEPTH).

    Returns:
        a factor in (0, 1].
    """
    return get_vit_lr_decay_rate(name, lr_decay_rate=lr_decay_rate, num_layers=num_layers)


def param_lr_and_decay(
    model: torch.nn.Module,
    weight_decay: float,
    layer_decay: float = 0.0,
    num_layers: int = 12,
    no_decay_suffixes: Sequence[str] = NO_DECAY_SUFFIXES,
) -> "OrderedDict[str, Tuple[float, float]]":
    """``name -> (lr factor, weight decay)`` for every trainable parameter, in model order.

    Args:
        model: the model (unwrapped: names start at its top-level modules, e.g. ``backbone.``).
        weight_decay: decay of the decayed parameters (SOLVER.WEIGHT_DECAY).
        layer_decay: per-block lr decay; 0 (or 1) gives every parameter factor 1.0.
        num_layers: ViT depth L.
        no_decay_suffixes: name endings without weight decay, besides 1-D parameters.

    Returns:
        OrderedDict over parameters with ``requires_grad`` (frozen ones and EMA targets are
        skipped; a shared parameter appears once).
    """
    if layer_decay < 0 or layer_decay > 1:
        raise ValueError(f"SOLVER.LAYER_DECAY must be in [0, 1] (0 = off), got {layer_decay}")
    out: "OrderedDict[str, Tuple[float, float]]" = OrderedDict()
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        factor = vit_lr_decay_rate(name, layer_decay, num_layers) if layer_decay > 0 else 1.0
        no_decay = p.ndim <= 1 or name.endswith(tuple(no_decay_suffixes))
        out[name] = (float(factor), 0.0 if no_decay else float(weight_decay))
    return out


def adamw_param_groups(
    model: torch.nn.Module,
    base_lr: float,
    weight_decay: float,
    layer_decay: float = 0.0,
    num_layers: int = 12,
) -> List[Dict]:
    """Optimizer parameter groups, one per distinct (lr factor, weight decay).

    Each group has ``params``, ``lr = base_lr * factor``, ``weight_decay`` and ``lr_factor``
    (kept for logging; detectron2's schedulers scale each group's own initial lr, so the
    factors survive warm-up and cosine decay).

    Args:
        model, weight_decay, layer_decay, num_layers: see :func:`param_lr_and_decay`.
        base_lr: SOLVER.BASE_LR.

    Returns:
        list of groups, decayed groups first, then by decreasing lr factor.
    """
    params = dict(model.named_parameters())
    groups: Dict[Tuple[float, float], List[torch.nn.Parameter]] = {}
    for name, key in param_lr_and_decay(model, weight_decay, layer_decay, num_layers).items():
        groups.setdefault(key, []).append(params[name])
    order = sorted(groups, key=lambda k: (k[1] == 0.0, -k[0]))
    return [
        {"params": groups[k], "lr": base_lr * k[0], "weight_decay": k[1], "lr_factor": k[0]}
        for k in order
    ]


def adamw_param_groups_from_config(cfg, model: torch.nn.Module) -> List[Dict]:
    """:func:`adamw_param_groups` from SOLVER.{BASE_LR, WEIGHT_DECAY, LAYER_DECAY} and
    MODEL.VIT.DEPTH."""
    return adamw_param_groups(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        layer_decay=cfg.SOLVER.LAYER_DECAY,
        num_layers=cfg.MODEL.VIT.DEPTH,
    )
