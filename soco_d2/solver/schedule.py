"""Turn a schedule written in epochs and a reference batch into detectron2's iteration keys.

SSL papers state schedules in epochs and learning rates per 256 images; detectron2 counts
iterations and uses absolute learning rates. ``resolve_schedule`` converts once, at setup, and
rewrites the config so that a dumped ``config.yaml`` reloads to the same numbers (it zeroes
``SOLVER.BASE_LR_BATCH`` after scaling, so scaling never applies twice).
"""
import logging
import math

from detectron2.config import CfgNode

__all__ = ["iterations_per_epoch", "resolve_schedule"]

logger = logging.getLogger(__name__)


def iterations_per_epoch(num_images: int, batch_size: int) -> int:
    """Iterations in one pass over ``num_images`` at ``batch_size`` (last partial batch dropped,
    as the official loaders do with ``drop_last=True``); at least 1.

    Args:
        num_images: training-set size (> 0).
        batch_size: total batch over all workers (SOLVER.IMS_PER_BATCH, > 0).

    Returns:
        floor(num_images / batch_size), at least 1.
    """
    if num_images <= 0 or batch_size <= 0:
        raise ValueError(f"need num_images > 0 and batch_size > 0, got {num_images}, {batch_size}")
    return max(1, num_images // batch_size)


def resolve_schedule(cfg: CfgNode, num_train_images: int = 0) -> CfgNode:
    """Apply SOLVER.BASE_LR_BATCH and SOLVER.*EPOCHS to ``cfg`` in place (cfg must be mutable).

    - BASE_LR_BATCH > 0: BASE_LR *= IMS_PER_BATCH / BASE_LR_BATCH, then BASE_LR_BATCH = 0.
    - EPOCHS > 0: MAX_ITER = EPOCHS * iterations_per_epoch; WARMUP_EPOCHS > 0 sets
      WARMUP_ITERS; CHECKPOINT_EPOCHS > 0 sets CHECKPOINT_PERIOD (at least 1 each).
    - WARMUP_ITERS >= MAX_ITER (short test runs) is cut to MAX_ITER - 1.

    Args:
        cfg: a config with soco_d2's keys.
        num_train_images: size of DATASETS.TRAIN (summed); only needed when EPOCHS > 0.

    Returns:
        ``cfg``.
    """
    s = cfg.SOLVER
    if s.BASE_LR_BATCH > 0:
        scaled = s.BASE_LR * s.IMS_PER_BATCH / s.BASE_LR_BATCH
        logger.info(
            "BASE_LR %g at batch %d -> %g at batch %d", s.BASE_LR, s.BASE_LR_BATCH, scaled,
            s.IMS_PER_BATCH,
        )
        s.BASE_LR = scaled
        s.BASE_LR_BATCH = 0
    if s.EPOCHS > 0:
        if num_train_images <= 0:
            raise ValueError(
                "SOLVER.EPOCHS > 0 needs the training-set size; got num_train_images="
                f"{num_train_images} for DATASETS.TRAIN={tuple(cfg.DATASETS.TRAIN)}"
            )
        ipe = iterations_per_epoch(num_train_images, s.IMS_PER_BATCH)
        s.MAX_ITER = int(math.ceil(s.EPOCHS * ipe))
        if s.WARMUP_EPOCHS > 0:
            s.WARMUP_ITERS = max(1, int(round(s.WARMUP_EPOCHS * ipe)))
        if s.CHECKPOINT_EPOCHS > 0:
            s.CHECKPOINT_PERIOD = max(1, int(round(s.CHECKPOINT_EPOCHS * ipe)))
        logger.info(
            "%g epochs of %d images at batch %d: %d iterations/epoch, MAX_ITER %d, "
            "WARMUP_ITERS %d, CHECKPOINT_PERIOD %d",
            s.EPOCHS, num_train_images, s.IMS_PER_BATCH, ipe, s.MAX_ITER, s.WARMUP_ITERS,
            s.CHECKPOINT_PERIOD,
        )
    if s.WARMUP_ITERS >= s.MAX_ITER:
        # detectron2's warmup+rescaled-cosine schedule divides by the post-warmup length.
        clamped = max(0, s.MAX_ITER - 1)
        logger.warning("WARMUP_ITERS %d >= MAX_ITER %d: warmup cut to %d iterations",
                       s.WARMUP_ITERS, s.MAX_ITER, clamped)
        s.WARMUP_ITERS = clamped
    return cfg
