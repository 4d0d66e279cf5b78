"""Training-step benchmark of any pretraining method, each against its own floor.

Inputs are real mapper outputs: synthetic images (random textures of ImageNet's typical 500x375,
with random proposals for mappers that use them) go through the config's registered mapper once,
before timing, so the benchmark needs no dataset and no disk, and measures exactly the batches the
method trains on. One measured step is forward (online + target), backward, optimizer (step +
EMA target update). The *floor* is what no implementation of the method can avoid: the model's
``floor(batch)`` (its backbone passes: online forward and backward, target forward), timed on
the same batch right after each step so load changes on a shared machine hit both alike.
``outside_backbone_share = 1 - floor / step``.

Peak memory is the process's peak RSS on CPU (``ru_maxrss``, lifetime-wide: compare modes in
fresh processes, as ``tools/benchmark.py --compare`` does) and ``max_memory_allocated`` on CUDA.
"""
import contextlib
import resource
import time
from typing import Callable, Dict, List

import numpy as np
import torch
from detectron2.config import CfgNode

from soco_d2.data.dataset_mappers import build_dataset_mapper
from soco_d2.solver import build_optimizer

from .trainer import Trainer

__all__ = ["benchmark_training", "peak_memory_gib", "synthetic_batches"]


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


def synthetic_batches(
    cfg: CfgNode, num_batches: int, batch_size: int, height: int = 375, width: int = 500,
    seed: int = 0,
) -> List[List[dict]]:
    """``num_batches`` batches of the config's mapper outputs on synthetic images.

    Args:
        cfg: a pretraining config (INPUT.DATASET_MAPPER_NAME picks the mapper).
        num_batches, batch_size: how many.
        height, width: image size (ImageNet's typical 375 x 500 by default).
        seed: seeds images, proposals and the mapper's random draws.

    Returns:
        list of batches, each a list of ``batch_size`` mapper outputs.
    """
    mapper = build_dataset_mapper(cfg, True)
    rng = np.random.default_rng(seed)
    np.random.seed(seed)
    batches = []
    for b in range(num_batches):
        batch = []
        for i in range(batch_size):
            # smooth random texture: a small random image upsampled, so crops are not pure noise
            small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
            image = np.ascontiguousarray(
                np.kron(small, np.ones((16, 16, 1), dtype=np.uint8))[:height, :width]
            )
            d = {"file_name": f"synthetic_{b}_{i}.png", "image_id": f"{b}_{i}", "image": image}
            if getattr(mapper, "uses_proposals", False):
                wh = rng.uniform(0.3, 0.8, (20, 1)) * np.sqrt(height * width)
                wh = np.concatenate([wh * rng.uniform(0.7, 1.3, (20, 1)), wh], 1)
                wh = np.minimum(wh, [width, height])
                xy = rng.uniform(0, 1, (20, 2)) * ([width, height] - wh)
                d["proposals"] = np.concatenate([xy, xy + wh], 1).astype(np.float32)
            out = mapper(d)
            if out is None:
                raise RuntimeError("the mapper skipped a synthetic image")
            batch.append(out)
        batches.append(batch)
    return batches


def benchmark_training(
    cfg: CfgNode,
    iters: int = 3,
    warmup: int = 1,
    amp_dtype=None,
    measure_floor: bool = True,
    log: Callable[[str], None] = print,
) -> Dict[str, float]:
    """Run ``warmup + iters`` training steps of the config's method and time them.

    Args:
        cfg: a pretraining config; SOLVER.IMS_PER_BATCH is the batch, MODEL.DEVICE the device.
        iters: measured iterations.
        warmup: unmeasured iterations first (allocator, caches).
        amp_dtype: torch.float16 / torch.bfloat16 for autocast (CUDA), or None for fp32.
        measure_floor: also time the model's floor (same batch, after each step).
        log: where progress lines go.

    Returns:
        dict with images_per_s, s_per_iter, forward_s, backward_s, optimizer_s (per
        iteration), floor_s_per_iter, step_over_floor, outside_backbone_share, peak_mem_gib.
    """
    device = torch.device(cfg.MODEL.DEVICE)
    batch_size = cfg.SOLVER.IMS_PER_BATCH
    total_iters = warmup + iters
    batches = synthetic_batches(cfg, total_iters, batch_size)
    model = Trainer.build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    clock, floor_clock = _Clock(device), _Clock(device)
    for it in range(total_iters):
        if it == warmup:
            clock.totals.clear()
            floor_clock.totals.clear()
        batch = batches[it]
        with clock.phase("forward"), _autocast(device, amp_dtype):
            losses = sum(model(batch).values())
        with clock.phase("backward"):
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses).backward()
        with clock.phase("optimizer"):
            scaler.step(optimizer)
            scaler.update()
            if hasattr(model, "update_target"):
                model.update_target(model.target_momentum(it, total_iters))
        if measure_floor:
            with floor_clock.phase("floor_forward"), _autocast(device, amp_dtype):
                floor = model.floor(batch)
            with floor_clock.phase("floor_backward"):
                floor.backward()
            model.zero_grad(set_to_none=True)
        log(f"iter {it}{' (warmup)' if it < warmup else ''}: loss {float(losses.detach()):.4f}")
    step = {k: clock.totals[k] / iters for k in ("forward", "backward", "optimizer")}
    s_per_iter = sum(step.values())
    out = {
        "images_per_s": batch_size / s_per_iter,
        "s_per_iter": s_per_iter,
        **{f"{k}_s": v for k, v in step.items()},
    }
    if measure_floor:
        t = floor_clock.totals
        floor_s = (t["floor_forward"] + t["floor_backward"]) / iters
        out["floor_s_per_iter"] = floor_s
        out["step_over_floor"] = s_per_iter / floor_s
        out["outside_backbone_share"] = max(0.0, 1.0 - floor_s / s_per_iter)
    out["peak_mem_gib"] = peak_memory_gib(device)
    return out
