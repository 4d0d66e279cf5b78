"""Optimizer construction: SGD (detectron2's), LARS and AdamW with bias/norm exclusion.

Learning-rate schedules are detectron2's (``detectron2.solver.build_lr_scheduler``): SoCo uses
``WarmupCosineLR`` with ``WARMUP_FACTOR 0.01``, ``RESCALE_INTERVAL True`` (the cosine spans
the iterations after warmup) and ``BASE_LR_END 1e-6``.
"""
import logging
from typing import Any, Dict, List, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.solver import build_optimizer as d2_build_optimizer

from .clip import maybe_add_gradient_clipping
from .lars import LARS
from .llrd import adamw_param_groups_from_config

__all__ = ["build_optimizer", "split_excluded_params", "NORM_MODULE_TYPES"]

logger = logging.getLogger(__name__)

# Modules whose parameters are normalization affine parameters. detectron2's
# NaiveSyncBatchNorm subclasses BatchNorm2d; its FrozenBatchNorm2d has no parameters.
NORM_MODULE_TYPES: Tuple[type, ...] = (
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.GroupNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)


def split_excluded_params(
    model: torch.nn.Module,
) -> Tuple[List[torch.nn.Parameter], List[torch.nn.Parameter], List[str]]:
    """Split trainable parameters into adapted ones and biases/norm parameters.

    Args:
        model: the model; parameters with ``requires_grad=False`` (e.g. the EMA target) are
            skipped, shared parameters counted once.

    Returns:
        (regular params, excluded params, names of the excluded params).
    """
    regular, excluded, excluded_names = [], [], []
    seen = set()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, NORM_MODULE_TYPES)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if is_norm or name == "bias":
                excluded.append(p)
                excluded_names.append(f"{module_name}.{name}" if module_name else name)
            else:
                regular.append(p)
    return regular, excluded, excluded_names


def _param_groups(cfg: CfgNode, model: torch.nn.Module) -> List[Dict[str, Any]]:
    regular, excluded, _ = split_excluded_params(model)
    if not cfg.SOLVER.LARS_EXCLUDE_BIAS_AND_NORM:
        return [{"params": regular + excluded}]
    return [
        {"params": regular},
        # Biases and norm parameters: no trust-ratio scaling, no weight decay.
        {"params": excluded, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer named by ``cfg.SOLVER.OPTIMIZER``.

    Args:
        cfg: config; reads SOLVER.{OPTIMIZER, BASE_LR, MOMENTUM, WEIGHT_DECAY, LARS_TRUST,
            LARS_EXCLUDE_BIAS_AND_NORM, CLIP_GRADIENTS} (``SGD`` also reads detectron2's
            WEIGHT_DECAY_NORM/BIAS keys).
        model: the model to optimize.

    Returns:
        The optimizer, wrapped with gradient clipping when SOLVER.CLIP_GRADIENTS.ENABLED.
    """
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        return d2_build_optimizer(cfg, model)
    groups = _param_groups(cfg, model)
    if name == "LARS":
        optimizer = LARS(
            groups,
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            trust_coefficient=cfg.SOLVER.LARS_TRUST,
        )
    elif name == "ADAMW":
        # No decay on 1-D params and pos_embed; layer-wise lr decay when SOLVER.LAYER_DECAY > 0.
        groups = adamw_param_groups_from_config(cfg, model)
        optimizer = torch.optim.AdamW(
            groups, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            betas=tuple(cfg.SOLVER.ADAMW_BETAS),
        )
    else:
        raise ValueError(f"Unknown SOLVER.OPTIMIZER {cfg.SOLVER.OPTIMIZER!r}: SGD, LARS or AdamW")
    logger.info(
        "%s over %d tensors in %d groups (%d without weight decay)",
        name,
        sum(len(g["params"]) for g in groups),
        len(groups),
        sum(len(g["params"]) for g in optimizer.param_groups if g["weight_decay"] == 0),
    )
    # detectron2's per-tensor "value"/"norm" clipping, or the global norm ("full_model")
    return maybe_add_gradient_clipping(cfg, optimizer)
