"""Every YAML under configs/ parses and builds its model; the fine-tune protocol holds."""
import glob
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import soco_d2  # noqa: F401  (registers meta-architectures and heads)
import soco_d2.finetune  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from soco_d2.config import add_ssl_config

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
ALL_CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True))
FINETUNE_DIRS = ("coco", "voc", "cityscapes")
FINETUNE_LEAVES = [
    p
    for p in ALL_CONFIGS
    if os.path.basename(os.path.dirname(p)) in FINETUNE_DIRS
    and not os.path.basename(p).startswith("Base-")
]


def _load(path: str):
    cfg = get_cfg()
    add_ssl_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _rel(path: str) -> str:
    return os.path.relpath(path, CONFIG_DIR)


def test_finetune_configs_present():
    names = {_rel(p) for p in FINETUNE_LEAVES}
    for leaf in (
        "coco/mask_rcnn_R_50_FPN_1x",
        "coco/mask_rcnn_R_50_FPN_2x",
        "coco/mask_rcnn_R_50_C4_1x",
        "coco/retinanet_R_50_FPN_1x",
        "coco/mask_rcnn_R_50_FPN_mini5pct",
        "coco/mask_rcnn_R_50_FPN_mini10pct",
        "voc/faster_rcnn_R_50_C4_24k",
        "cityscapes/mask_rcnn_R_50_FPN",
    ):
        assert leaf + ".yaml" in names and leaf + "_scratch.yaml" in names, leaf


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_rel)
def test_config_parses_and_builds(path):
    cfg = _load(path)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("path", FINETUNE_LEAVES, ids=_rel)
def test_finetune_protocol(path):
    cfg = _load(path)
    if "vit" in cfg.MODEL.BACKBONE.NAME:
        # ViTDet's own protocol (detectron2's ViTDet-B LazyConfig): AdamW with layer-wise
        # decay 0.7, weight decay 0.1, drop path 0.1, large-scale jitter, LN heads.
        assert cfg.SOLVER.OPTIMIZER.upper() == "ADAMW" and cfg.SOLVER.LAYER_DECAY == 0.7
        assert cfg.SOLVER.WEIGHT_DECAY == pytest.approx(0.1)
        assert cfg.MODEL.VIT.DROP_PATH_RATE == pytest.approx(0.1)
        assert cfg.INPUT.LSJ.ENABLED and cfg.INPUT.FORMAT == "RGB"
        assert cfg.MODEL.ROI_BOX_HEAD.NORM == cfg.MODEL.ROI_MASK_HEAD.NORM == "LN"
        return
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.MODEL.RESNETS.NORM == "SyncBN"
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.PIXEL_MEAN == pytest.approx([123.675, 116.28, 103.53])
    assert cfg.MODEL.PIXEL_STD == pytest.approx([58.395, 57.12, 57.375])
    assert cfg.SOLVER.WEIGHT_DECAY == pytest.approx(2.5e-5)
    assert cfg.TEST.PRECISE_BN.ENABLED
    if "FPN" in cfg.MODEL.BACKBONE.NAME:
        assert cfg.MODEL.FPN.NORM == "SyncBN"
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and "fpn" in cfg.MODEL.BACKBONE.NAME:
        assert (cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.NUM_FC) == (4, 1)
        assert cfg.MODEL.ROI_BOX_HEAD.NORM == cfg.MODEL.ROI_MASK_HEAD.NORM == "SyncBN"
    if path.endswith("_scratch.yaml"):
        assert cfg.MODEL.WEIGHTS == ""
        # The scratch leaf differs from its pretrained sibling only in MODEL.WEIGHTS.
        sibling = _load(path.replace("_scratch.yaml", ".yaml"))
        assert sibling.MODEL.WEIGHTS.endswith(".pkl")
        sibling.MODEL.WEIGHTS = ""
        assert sibling.dump() == cfg.dump()


@pytest.mark.parametrize(
    "leaf,train,max_iter,steps",
    [
        ("coco/mask_rcnn_R_50_FPN_1x.yaml", ("coco_2017_train",), 90000, (60000, 80000)),
        ("coco/mask_rcnn_R_50_FPN_2x.yaml", ("coco_2017_train",), 180000, (120000, 160000)),
        ("coco/mask_rcnn_R_50_FPN_mini5pct.yaml", ("coco_2017_train_5pct",), 5500, (4000, 5000)),
        ("coco/mask_rcnn_R_50_FPN_mini10pct.yaml", ("coco_2017_train_10pct",), 10000, (7000, 9000)),
        (
            "voc/faster_rcnn_R_50_C4_24k.yaml",
            ("voc_2007_trainval", "voc_2012_trainval"),
            24000,
            (18000, 22000),
        ),
        (
            "cityscapes/mask_rcnn_R_50_FPN.yaml",
            ("cityscapes_fine_instance_seg_train",),
            24000,
            (18000,),
        ),
    ],
)
def test_schedules(leaf, train, max_iter, steps):
    cfg = _load(os.path.join(CONFIG_DIR, leaf))
    assert tuple(cfg.DATASETS.TRAIN) == train
    assert cfg.SOLVER.MAX_ITER == max_iter
    assert tuple(cfg.SOLVER.STEPS) == steps


def test_c4_head_has_extra_norm_after_res5():
    cfg = _load(os.path.join(CONFIG_DIR, "coco/mask_rcnn_R_50_C4_1x.yaml"))
    model = build_model(cfg)
    res5 = model.roi_heads.res5
    assert isinstance(res5[-1], torch.nn.SyncBatchNorm) and res5[-1].num_features == 2048
    # The plain res5 blocks come before it, unchanged in number.
    assert len(res5) == 4
    model.eval()
    with torch.no_grad():
        out = res5(torch.randn(2, 1024, 14, 14))
    assert out.shape == (2, 2048, 7, 7)
