"""Large-scale jitter (LSJ) for detector fine-tuning, from yacs keys ``INPUT.LSJ.*``.

ViTDet trains with detectron2's own ``RandomFlip``, ``ResizeScale`` (scale 0.1-2.0 of a
1024 px square) and ``FixedSizeCrop`` (1024, no padding: the backbone's square padding pads the
batch), built in its LazyConfig files. detectron2's yacs ``DatasetMapper.from_config`` cannot
express them, so the Trainer asks :func:`build_detection_train_mapper` for a mapper first and
falls back to detectron2's default loader when it returns None (``INPUT.LSJ.ENABLED`` False).
"""
from typing import List, Optional

from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

__all__ = ["build_lsj_augmentations", "build_detection_train_mapper"]


def build_lsj_augmentations(cfg) -> List[T.Augmentation]:
    """Flip, ResizeScale to ``[MIN_SCALE, MAX_SCALE] x IMAGE_SIZE``, crop to ``IMAGE_SIZE``.

    Raises:
        ValueError: naming the INPUT.LSJ key when the scale range or size is invalid.
    """
    s = cfg.INPUT.LSJ
    if not 0 < s.MIN_SCALE <= s.MAX_SCALE:
        raise ValueError(
            f"INPUT.LSJ.MIN_SCALE ({s.MIN_SCALE}) must be > 0 and <= INPUT.LSJ.MAX_SCALE "
            f"({s.MAX_SCALE})"
        )
    if s.IMAGE_SIZE <= 0:
        raise ValueError(f"INPUT.LSJ.IMAGE_SIZE must be > 0, got {s.IMAGE_SIZE}")
    size = int(s.IMAGE_SIZE)
    return [
        T.RandomFlip(horizontal=True),
        T.ResizeScale(
            min_scale=s.MIN_SCALE, max_scale=s.MAX_SCALE, target_height=size, target_width=size
        ),
        T.FixedSizeCrop(crop_size=(size, size), pad=False),
    ]


def build_detection_train_mapper(cfg) -> Optional[DatasetMapper]:
    """detectron2's ``DatasetMapper`` with LSJ augmentations, or None when LSJ is off.

    Boxes are recomputed from masks after the crop when masks are on (as ViTDet does).
    """
    if not cfg.INPUT.LSJ.ENABLED:
        return None
    return DatasetMapper(
        cfg,
        is_train=True,
        augmentations=build_lsj_augmentations(cfg),
        recompute_boxes=bool(cfg.MODEL.MASK_ON),
    )
