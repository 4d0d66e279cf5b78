"""Gradient clipping over the whole model's norm (SIM, MAE: ``clip_grad_norm_`` of all
parameters at 1.0), as ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model"``.

detectron2's yacs clipping (``"value"``, ``"norm"``) acts on each parameter tensor on its own;
a global norm needs every gradient at once, so the optimizer's ``step`` clips them all first
(the approach of Mask2Former's ``train_net.py``). Under AMP, detectron2's trainer calls
``GradScaler.step``, which unscales the gradients before this ``step`` runs, so the threshold
applies to true gradients.
"""
import torch
from detectron2.config import CfgNode
from detectron2.solver.build import maybe_add_gradient_clipping as d2_maybe_add_gradient_clipping

__all__ = ["FULL_MODEL", "maybe_add_gradient_clipping"]

FULL_MODEL = "full_model"


def maybe_add_gradient_clipping(cfg: CfgNode, optimizer: torch.optim.Optimizer):
    """detectron2's clipping for "value" / "norm"; for "full_model", clip the total norm of
    every parameter's gradient at ``CLIP_VALUE`` (``NORM_TYPE``) before each step.

    Args:
        cfg: reads SOLVER.CLIP_GRADIENTS.{ENABLED, CLIP_TYPE, CLIP_VALUE, NORM_TYPE}.
        optimizer: the optimizer; its class is replaced in place by a clipping subclass.

    Returns:
        the optimizer.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == FULL_MODEL):
        return d2_maybe_add_gradient_clipping(cfg, optimizer)
    if clip.CLIP_VALUE <= 0:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0, got {clip.CLIP_VALUE}")
    max_norm, norm_type = float(clip.CLIP_VALUE), float(clip.NORM_TYPE)
    base = type(optimizer)

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        return base.step(self, closure)

    optimizer.__class__ = type(base.__name__ + "WithFullModelGradientClip", (base,), {"step": step})
    return optimizer
