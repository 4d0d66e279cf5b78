"""detectron2's ViT / ViTDet backbones from yacs keys, LSJ, and every ViT/SIM YAML parsing."""
import glob
import os
from pathlib import Path

import pytest
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid, ViT
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from soco_d2.config import get_ssl_cfg
from soco_d2.data.lsj import build_detection_train_mapper, build_lsj_augmentations
from soco_d2.engine import load_cfg

ROOT = Path(__file__).resolve().parents[2]
YAMLS = sorted(
    {p for pat in ("*vit*", "*ViT*", "*sim*", "*SIM*")
     for p in glob.glob(str(ROOT / "configs" / "**" / f"{pat}.yaml"), recursive=True)}
)


def _cfg():
    cfg = get_ssl_cfg()
    cfg.MODEL.VIT.update(IMG_SIZE=64, PATCH_SIZE=8, EMBED_DIM=48, DEPTH=2, NUM_HEADS=3,
                         WINDOW_SIZE=4, WINDOW_BLOCK_INDEXES=[0], PRETRAIN_IMG_SIZE=32)
    cfg.MODEL.VIT_SFP.update(SCALE_FACTORS=[2.0, 1.0, 0.5], OUT_CHANNELS=16, SQUARE_PAD=64)
    return cfg


def test_plain_vit_builder():
    cfg = _cfg()
    cfg.MODEL.BACKBONE.NAME = "build_vit_backbone"
    net = build_backbone(cfg)
    assert type(net) is ViT
    assert net.output_shape()["last_feat"].stride == 8
    assert net(torch.randn(1, 3, 64, 64))["last_feat"].shape == (1, 48, 8, 8)
    # global block 1 has 64/8 * 2 - 1 rel-pos rows; windowed block 0 has 2 * 4 - 1
    assert net.blocks[1].attn.rel_pos_h.shape == (15, 16)
    assert net.blocks[0].attn.rel_pos_h.shape == (7, 16)
    assert net.pos_embed.shape == (1, 1 + 16, 48)
    assert net.blocks[0].norm1.eps == 1e-6


def test_vitdet_backbone_levels_and_padding():
    cfg = _cfg()
    cfg.MODEL.BACKBONE.NAME = "build_vit_sfp_backbone"
    bb = build_backbone(cfg)
    assert type(bb) is SimpleFeaturePyramid
    shapes = {k: v.stride for k, v in bb.output_shape().items()}
    assert shapes == {"p2": 4, "p3": 8, "p4": 16, "p5": 32}  # p5 = max-pool of p4
    assert bb.padding_constraints == {"size_divisiblity": 16, "square_size": 64}
    out = bb(torch.randn(2, 3, 64, 64))
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        "p2": (16, 16), "p3": (8, 8), "p4": (4, 4), "p5": (2, 2)}
    assert any(k.startswith("net.blocks.1.attn.rel_pos_w") for k in bb.state_dict())


@pytest.mark.parametrize("key, value, match", [
    ("MODEL.VIT.NUM_HEADS", 5, "MODEL.VIT.NUM_HEADS"),
    ("MODEL.VIT.WINDOW_BLOCK_INDEXES", [7], "WINDOW_BLOCK_INDEXES"),
    ("MODEL.VIT_SFP.SCALE_FACTORS", [3.0], "MODEL.VIT_SFP.SCALE_FACTORS"),
])
def test_bad_keys_name_themselves(key, value, match):
    cfg = _cfg()
    cfg.MODEL.BACKBONE.NAME = "build_vit_sfp_backbone"
    node, leaf = key.rsplit(".", 1)
    setattr(eval("cfg." + node), leaf, value)
    with pytest.raises(ValueError, match=match):
        build_backbone(cfg)


def test_lsj_mapper_only_when_enabled():
    cfg = _cfg()
    assert build_detection_train_mapper(cfg) is None
    cfg.INPUT.LSJ.ENABLED = True
    augs = build_lsj_augmentations(cfg)
    assert [type(a) for a in augs] == [T.RandomFlip, T.ResizeScale, T.FixedSizeCrop]
    assert augs[1].min_scale == 0.1 and augs[1].max_scale == 2.0
    assert augs[2].crop_size == (1024, 1024)
    mapper = build_detection_train_mapper(cfg)
    assert [type(a) for a in mapper.augmentations.augs] == [type(a) for a in augs]
    cfg.INPUT.LSJ.MIN_SCALE = 3.0
    with pytest.raises(ValueError, match="INPUT.LSJ.MIN_SCALE"):
        build_lsj_augmentations(cfg)


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: os.path.relpath(p, ROOT))
def test_yaml_parses(path):
    cfg = load_cfg(path, num_train_images=1000, register=False)
    assert cfg.MODEL.VIT.PATCH_SIZE in (8, 16)


def test_yaml_list_is_complete():
    names = {os.path.basename(p) for p in YAMLS}
    assert {"Base-ViTDet-B.yaml", "vitdet_mask_rcnn_B_100ep.yaml",
            "vitdet_mask_rcnn_B_mini10pct.yaml", "vitdet_mask_rcnn_tiny_demo.yaml",
            "Base-SIM-ViT-B16.yaml", "sim_vit_B16_1600ep.yaml", "sim_vit_tiny.yaml",
            "sim_vit_tiny_demo.yaml"} <= names


def test_vitdet_b_recipe_keys():
    cfg = load_cfg(str(ROOT / "configs/coco/vitdet_mask_rcnn_B_100ep.yaml"), register=False)
    assert cfg.SOLVER.MAX_ITER == 184375 and cfg.SOLVER.IMS_PER_BATCH == 64
    assert cfg.SOLVER.BASE_LR == pytest.approx(1e-4) and cfg.SOLVER.LAYER_DECAY == 0.7
    assert cfg.SOLVER.WEIGHT_DECAY == 0.1 and cfg.MODEL.VIT.DROP_PATH_RATE == 0.1
    assert list(cfg.MODEL.VIT.WINDOW_BLOCK_INDEXES) == [0, 1, 3, 4, 6, 7, 9, 10]
    assert cfg.INPUT.LSJ.ENABLED and cfg.MODEL.ROI_BOX_HEAD.NORM == "LN"
    mini = load_cfg(str(ROOT / "configs/coco/vitdet_mask_rcnn_B_mini10pct.yaml"), register=False)
    assert mini.SOLVER.BASE_LR == pytest.approx(2.5e-5)  # 1e-4 at 64 -> batch 16


def test_demo_vitdet_trains_one_step():
    cfg = load_cfg(str(ROOT / "configs/demo/vitdet_mask_rcnn_tiny_demo.yaml"), register=False)
    torch.manual_seed(0)
    model = build_model(cfg)
    inst = Instances((160, 160))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 70.0, 90.0]]))
    inst.gt_classes = torch.tensor([2])
    m = torch.zeros(1, 160, 160, dtype=torch.bool)
    m[:, 20:90, 10:70] = True
    inst.gt_masks = BitMasks(m)
    batch = [{"image": torch.randint(0, 255, (3, 150, 160), dtype=torch.uint8),
              "instances": inst, "height": 150, "width": 160}]
    with EventStorage():
        losses = model(batch)
    assert {"loss_mask", "loss_rpn_cls", "loss_box_reg"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.net.blocks[0].attn.qkv.weight.grad is not None


def test_trainer_detector_loader_applies_lsj(tmp_path):
    import cv2
    import numpy as np
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    from soco_d2.engine import Trainer

    path = str(tmp_path / "a.png")
    cv2.imwrite(path, np.full((40, 50, 3), 128, np.uint8))
    name = "vit_lsj_test_set"
    if name not in DatasetCatalog.list():
        ann = {"bbox": [5, 5, 20, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
               "segmentation": [[5, 5, 25, 5, 25, 25, 5, 25]], "iscrowd": 0}
        DatasetCatalog.register(name, lambda: [
            {"file_name": path, "image_id": 0, "height": 40, "width": 50, "annotations": [ann]}])
        MetadataCatalog.get(name).set(thing_classes=["x"])
    cfg = _cfg()
    cfg.merge_from_list(["DATASETS.TRAIN", f"('{name}',)", "MODEL.ROI_HEADS.NUM_CLASSES", "1",
                         "MODEL.MASK_ON", "True", "INPUT.LSJ.ENABLED", "True",
                         "INPUT.LSJ.IMAGE_SIZE", "64", "INPUT.LSJ.MIN_SCALE", "2.0",
                         "INPUT.LSJ.MAX_SCALE", "2.0", "SOLVER.IMS_PER_BATCH", "1",
                         "DATALOADER.NUM_WORKERS", "0"])
    batch = next(iter(Trainer.build_train_loader(cfg)))
    # scale 2 of a 64 px square: 50x40 -> 128x102 (aspect kept), then cropped to 64x64
    assert tuple(batch[0]["image"].shape[-2:]) == (64, 64)
    inst = batch[0]["instances"]
    # the 20 px box at scale 2.56 (128 / 50) is 51 px; the crop keeps at most 64 px of it
    w = inst.gt_boxes.tensor[:, 2] - inst.gt_boxes.tensor[:, 0]
    assert len(inst) <= 1 and (w <= 64).all() and (w > 0).all()
