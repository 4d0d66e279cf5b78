"""Training-step benchmark on random views and boxes (no disk), split by phase.

One measured step is: data (make a random mapper-shaped batch), forward (online + target),
backward, optimizer (LARS step + EMA target update). The *floor* is the part no SoCo
implementation can avoid: online backbone(+FPN) forward and backward plus the target
backbone(+FPN) forward on every used view (for C4, plus the res5 head on the boxes).
``outside_backbone_share = 1 - floor / step``.

Peak memory is the process's peak RSS on CPU (``ru_maxrss``, lifetime-wide: compare modes in
fresh processes, as ``tools/benchmark.py --compare`` does) and ``max_memory_allocated`` on CUDA.
"""
import contextlib
import resource
import time
from typing import Callable, Dict, List

import torch
from detectron2.config import CfgNode

from soco_d2.modeling.momentum import cosine_momentum
from soco_d2.modeling.testing import random_soco_batch
from soco_d2.solver import build_optimizer

from .trainer import Trainer

__all__ = ["benchmark_training", "peak_memory_gib"]


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA allocated on ``device``, else RSS (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """Accumulates wall time per phase, synchronizing CUDA around each phase."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: Dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        _sync(self.device)
        t0 = time.perf_counter()
        yield
        _sync(self.device)
        self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0


def _autocast(device: torch.device, amp_dtype):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def _floor_step(model, batch: List[dict], used_views: List[int], amp_dtype, clock: _Clock):
    """Online backbone fwd+bwd and target backbone fwd on every used view, nothing else.

    For C4 the res5 head over the pooled boxes is part of the floor too: it is the detector's
    own last stage, which every C4 implementation must run on every box (REFERENCE.md measures
    the official C4 step against this "res5 floor").
    """
    c4 = hasattr(model.roi_heads, "res5")
    with clock.phase("floor_forward"), _autocast(model.device, amp_dtype):
        total = 0.0
        for v in used_views:
            images = model.preprocess_view(batch, v)
            feats = model.backbone(images.tensor)
            outs = list(feats.values())
            with torch.no_grad():
                target_feats = model.target["backbone"](images.tensor)
            if c4:
                boxes = model.view_boxes(batch, v)
                levels = model.roi_heads.assign_levels(boxes)
                outs.append(model.roi_heads(feats, boxes, levels))
                with torch.no_grad():
                    model.target["roi_heads"](target_feats, boxes, levels)
            # A scalar touching every output so backward reaches the whole floor network.
            total = total + sum(f.float().mean() for f in outs)
    with clock.phase("floor_backward"):
        total.backward()
    model.zero_grad(set_to_none=True)


def benchmark_training(
    cfg: CfgNode,
    iters: int = 3,
    warmup: int = 1,
    amp_dtype=None,
    measure_floor: bool = True,
    log: Callable[[str], None] = print,
) -> Dict[str, float]:
    """Run ``warmup + iters`` SoCo training steps on random batches and time them.

    Args:
        cfg: a SoCo config; SOLVER.IMS_PER_BATCH is the batch, MODEL.DEVICE the device.
        iters: measured iterations.
        warmup: unmeasured iterations first (allocator, caches).
        amp_dtype: torch.float16 / torch.bfloat16 for autocast (CUDA), or None for fp32.
        measure_floor: also time the backbone+FPN floor (same batch, after each step).
        log: where progress lines go.

    Returns:
        dict with images_per_s, s_per_iter, data_s, forward_s, backward_s, optimizer_s
        (per iteration), floor_s_per_iter, outside_backbone_share, peak_mem_gib.
    """
    device = torch.device(cfg.MODEL.DEVICE)
    batch_size = cfg.SOLVER.IMS_PER_BATCH
    model = Trainer.build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    used = sorted({v for p in cfg.MODEL.SOCO.PAIRS for v in p})
    total_iters = warmup + iters
    clock, floor_clock = _Clock(device), _Clock(device)
    for it in range(total_iters):
        if it == warmup:
            clock.totals.clear()
            floor_clock.totals.clear()
        with clock.phase("data"):
            batch = random_soco_batch(cfg, batch_size, seed=it)
        with clock.phase("forward"), _autocast(device, amp_dtype):
            losses = sum(model(batch).values())
        with clock.phase("backward"):
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses).backward()
        with clock.phase("optimizer"):
            scaler.step(optimizer)
            scaler.update()
            model.update_target(cosine_momentum(cfg.MODEL.SOCO.MOMENTUM, it, total_iters))
        if measure_floor:
            # Interleaved with the steps, on the same batch, so load changes on a shared
            # machine hit both measurements alike.
            _floor_step(model, batch, used, amp_dtype, floor_clock)
        log(f"iter {it}{' (warmup)' if it < warmup else ''}: loss {float(losses.detach()):.4f}")
    step = {k: clock.totals[k] / iters for k in ("data", "forward", "backward", "optimizer")}
    s_per_iter = sum(step.values())
    out = {
        "images_per_s": batch_size / s_per_iter,
        "s_per_iter": s_per_iter,
        **{f"{k}_s": v for k, v in step.items()},
    }
    if measure_floor:
        t = floor_clock.totals
        floor = (t["floor_forward"] + t["floor_backward"]) / iters
        out["floor_s_per_iter"] = floor
        out["outside_backbone_share"] = max(0.0, 1.0 - floor / s_per_iter)
    out["peak_mem_gib"] = peak_memory_gib(device)
    return out
