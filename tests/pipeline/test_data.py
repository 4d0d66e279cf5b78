"""A user's data as flags: the fine-tune / pretraining overrides derived from the datasets."""
import os

import pytest

from soco_d2.pipeline import finetune_data_opts, pretrain_data_opts, resolve_dataset
from soco_d2.pipeline.run import load_config
from _data import write_grey_images, write_small_voc
from _paths import REPO_ROOT

FT = os.path.join(REPO_ROOT, "configs/demo/mask_rcnn_R18_FPN_demo.yaml")
RETINA = os.path.join(REPO_ROOT, "configs/coco/retinanet_R_50_FPN_1x.yaml")


def _folder(root):
    """Three flat 32x32 images (shades 0, 50, 100): an unlabeled folder."""
    write_grey_images(root, [0, 50, 100], height=32, width=32)
    return str(root)


def test_voc_folder_gives_the_finetune_opts_without_user_overrides(tmp_path):
    voc = write_small_voc(tmp_path / "voc")
    cfg = load_config(FT)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 6 and cfg.MODEL.MASK_ON
    opts = finetune_data_opts(cfg, f"voc:{voc}:train", f"voc:{voc}:val")
    specs = (f"pipeline_train=voc:{voc}:train", f"pipeline_test=voc:{voc}:val")
    assert opts == [
        "DATASETS.SSL.REGISTER", repr(specs),
        "MODEL.ROI_HEADS.NUM_CLASSES", "1",
        "MODEL.MASK_ON", "False",  # VOC has boxes only
        "DATASETS.TRAIN", "('pipeline_train',)",
        "DATASETS.TEST", "('pipeline_test',)",
    ]
    # the overrides build a config that a training subprocess can use as it is
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from soco_d2.engine import load_cfg

    for name in ("pipeline_train", "pipeline_test"):  # the subprocess starts with nothing
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    ft = load_cfg(FT, opts)
    assert ft.MODEL.ROI_HEADS.NUM_CLASSES == 1 and not ft.MODEL.MASK_ON
    assert ft.DATASETS.TRAIN == ("pipeline_train",) and ft.DATASETS.TEST == ("pipeline_test",)
    records = DatasetCatalog.get("pipeline_train")
    assert len(records) == 2 and records[0]["annotations"][0]["bbox"] == [4.0, 5.0, 30.0, 40.0]
    assert MetadataCatalog.get("pipeline_test").evaluator_type == "pascal_voc"


def test_coco_spec_with_masks_and_a_retinanet(tmp_path):
    from soco_d2.data.demo import generate_demo_dataset

    root = tmp_path / "demo"
    generate_demo_dataset(str(root), num_unlabeled=1, num_train=2, num_val=2, image_size=32)
    train = f"mine=coco:{root}/annotations/instances_train.json:{root}/train"
    opts = finetune_data_opts(load_config(FT), train, None)
    assert opts[2:] == ["MODEL.ROI_HEADS.NUM_CLASSES", "6", "DATASETS.TRAIN", "('mine',)"]
    assert opts[:2] == ["DATASETS.SSL.REGISTER",
                        repr((f"mine=coco:{root}/annotations/instances_train.json:{root}/train",))]
    retina = finetune_data_opts(load_config(RETINA), "mine", None)  # now a registered name
    assert retina == ["MODEL.RETINANET.NUM_CLASSES", "6", "DATASETS.TRAIN", "('mine',)"]


def test_bad_data_flags_are_clear_errors(tmp_path):
    cfg = load_config(FT)
    images = _folder(tmp_path / "images")
    with pytest.raises(ValueError, match="--train .*an image folder has no labels"):
        finetune_data_opts(cfg, f"folder:{images}", None)
    with pytest.raises(ValueError, match="--test 'nowhere_set': not a registered dataset"):
        finetune_data_opts(cfg, None, "nowhere_set")
    with pytest.raises(ValueError, match="Bad DATASETS.SSL.REGISTER entry"):
        resolve_dataset("coco:only_one_field", "x", "--train")
    two = write_small_voc(tmp_path / "voc2", classes=("disc", "star"), ids=("a", "b", "c", "d"))
    # train holds disc only, val disc and star when collected per split: not the same classes
    with open(os.path.join(two, "ImageSets/Main/train.txt"), "w") as f:
        f.write("a\nc\n")
    with pytest.raises(ValueError, match="differ from the training set"):
        finetune_data_opts(cfg, f"voc:{two}:train", f"voc:{two}:val")
    opts = finetune_data_opts(cfg, f"voc:{two}:train:disc,star", f"voc:{two}:val:disc,star")
    assert opts[opts.index("MODEL.ROI_HEADS.NUM_CLASSES") + 1] == "2"


def test_unlabeled_folder_opts(tmp_path):
    images = _folder(tmp_path / "images")
    config = os.path.join(REPO_ROOT, "configs/pretrain/soco_R18_FPN_tiny.yaml")
    cfg = load_config(config)
    cache = str(tmp_path / "out/proposals/unlabeled.bin")
    opts = pretrain_data_opts(cfg, images, cache)
    assert opts == [
        "DATASETS.SSL.REGISTER", repr((f"pipeline_unlabeled=folder:{images}:{cache}",)),
        "DATASETS.TRAIN", "('pipeline_unlabeled',)",
        "DATASETS.SSL.PROPOSAL_CACHES", "()",
    ]
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from soco_d2.engine import load_cfg

    pre = load_cfg(config, opts)  # what the training subprocess does with them
    assert pre.DATASETS.TRAIN == ("pipeline_unlabeled",)
    assert [d["image_id"] for d in DatasetCatalog.get("pipeline_unlabeled")] == [
        "0.png", "1.png", "2.png"
    ]
    assert MetadataCatalog.get("pipeline_unlabeled").proposal_cache == cache
    assert pretrain_data_opts(cfg, images, None)[1] == repr(
        (f"pipeline_unlabeled=folder:{images}",)
    )
