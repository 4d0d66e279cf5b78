"""Tiny configs for the tests (CPU, seconds), one home for all of them.

- :func:`tiny_pretrain_cfg`: a pretraining YAML of ``configs/`` (``*_tiny.yaml``) on a folder of
  test images (``_data.write_random_images``), registered under a name of its own;
  :func:`folder_dataset_opts`: the overrides that train on such a folder (for a subprocess).
- :func:`tiny_detector_cfg`: a small GeneralizedRCNN (R-18 or a narrow R-50, FPN or C4), the
  detector that converted weights must fit.
- :func:`tiny_soco_cfg`: an R-18 SoCo model config with small widths (no YAML, no images;
  ``_data.random_soco_batch`` gives inputs for it).
- ``PIPELINE_PRETRAIN_OPTS`` / ``PIPELINE_FINETUNE_OPTS``: the overrides that make the
  pipeline's pretrainings and fine-tunes tiny (2 iterations, 64 px).
"""
from pathlib import Path
from typing import Optional, Sequence

from detectron2.config import CfgNode, get_cfg

from soco_d2.config import add_ssl_config

PIPELINE_PRETRAIN_OPTS = [
    "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "0",
    "SOLVER.CHECKPOINT_PERIOD", "1", "INPUT.SSL.VIEW_SIZES", "[64, 64, 32]",
    "DATALOADER.NUM_WORKERS", "0",
]
PIPELINE_FINETUNE_OPTS = [
    "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.STEPS", "()",
    "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1", "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
]


def folder_dataset_opts(name: str, image_root, proposals: Optional[str] = None) -> list:
    """``DATASETS.TRAIN`` and ``DATASETS.SSL.REGISTER`` overrides that train on the image folder
    ``image_root`` (with its proposal cache, if given) registered as ``name``."""
    spec = f"{name}=folder:{image_root}" + (f":{proposals}" if proposals else "")
    return ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.SSL.REGISTER", f"('{spec}',)"]


def tiny_pretrain_cfg(
    config_file: str, image_root: str, out_dir, *opts: str, proposals: Optional[str] = None
) -> CfgNode:
    """The config ``config_file`` trained on the images under ``image_root``.

    The folder is registered through DATASETS.SSL.REGISTER under a name unique to it, so the
    test modules of one pytest process never collide in the DatasetCatalog.

    Args:
        config_file: path of a YAML under ``configs/``.
        image_root: folder of images (see ``_data.write_random_images``).
        out_dir: OUTPUT_DIR of the run.
        opts: further ``KEY, VALUE`` overrides, applied last.
        proposals: proposal cache of the folder, for methods that read one (SoCo).

    Returns:
        The loaded config, checkpointing every 2 iterations unless ``opts`` says otherwise.
    """
    from soco_d2.engine import load_cfg

    name = f"{Path(config_file).stem}_{abs(hash(str(image_root))) % 10**8}"
    return load_cfg(
        config_file,
        [
            *folder_dataset_opts(name, image_root, proposals),
            "OUTPUT_DIR", str(out_dir),
            "SOLVER.CHECKPOINT_PERIOD", "2",
            *opts,
        ],
    )


def tiny_detector_cfg(arch: str = "fpn", depth: int = 18) -> CfgNode:
    """A small GeneralizedRCNN config: R-18 or a narrow R-50, BN everywhere (FPN or C4)."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    if depth == 18:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    else:  # bottleneck blocks (conv3, shortcut in res2) at a fraction of the width
        cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 8
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    if arch == "fpn":
        cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.FPN.OUT_CHANNELS = 32
        cfg.MODEL.FPN.NORM = "BN"
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
        cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
        cfg.MODEL.ROI_BOX_HEAD.NUM_CONV = 4
        cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
        cfg.MODEL.ROI_BOX_HEAD.CONV_DIM = 32
        cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
        cfg.MODEL.ROI_BOX_HEAD.NORM = "BN"
    return cfg


def tiny_soco_cfg(
    head_type: str = "FPN",
    view_sizes: Optional[Sequence[int]] = None,
    num_proposals: int = 4,
    norm: str = "SyncBN",
) -> CfgNode:
    """A small SoCo config: ResNet-18, FPN 32 channels, head 32/64, MLPs 64 -> 32, CPU.

    Args:
        head_type: "FPN" (views 64/64/32, pairs (1,2),(1,3)) or "C4" (views 64/64, pair (1,2)).
        view_sizes: override the view sides; pairs become (1, v) for every other view.
        num_proposals: K boxes per image.
        norm: norm of backbone, FPN and box head ("SyncBN", "BN", "").

    Returns:
        a detectron2 CfgNode with soco_d2's keys; LEVEL_RANGES scaled to the small views.
    """
    cfg = get_cfg()
    add_ssl_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "SoCo"
    cfg.INPUT.DATASET_MAPPER_NAME = "soco"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    r = cfg.MODEL.RESNETS
    r.DEPTH, r.RES2_OUT_CHANNELS, r.STRIDE_IN_1X1, r.NORM = 18, 64, False, norm
    r.WIDTH_PER_GROUP = 8  # only the C4 res5 head (bottlenecks) uses it: keeps it small
    s = cfg.MODEL.SOCO
    s.HEAD_TYPE = head_type
    cfg.MODEL.SSL.MLP_HIDDEN_DIM, cfg.MODEL.SSL.MLP_OUT_DIM = 64, 32
    cfg.MODEL.SSL.ZERO_INIT_RESIDUAL = True  # the official SoCo init
    if head_type == "FPN":
        cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
        r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.FPN.OUT_CHANNELS, cfg.MODEL.FPN.NORM = 32, norm
        h = cfg.MODEL.ROI_BOX_HEAD
        h.NAME, h.NUM_CONV, h.NUM_FC, h.CONV_DIM, h.FC_DIM, h.NORM = (
            "FastRCNNConvFCHead", 4, 1, 32, 64, norm)
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
        s.LEVEL_RANGES = [16, 24, 40]  # 64 px views: every level gets boxes
        sizes = list(view_sizes or (64, 64, 32))
    elif head_type == "C4":
        cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        r.OUT_FEATURES = ["res4"]
        cfg.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
        cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
        sizes = list(view_sizes or (64, 64))
    else:
        raise ValueError(f"head_type must be 'FPN' or 'C4', got {head_type!r}")
    s.PAIRS = [[0, v] for v in range(1, len(sizes))]
    cfg.INPUT.SSL.VIEW_SIZES = sizes
    cfg.INPUT.SOCO.NUM_PROPOSALS = num_proposals
    return cfg
