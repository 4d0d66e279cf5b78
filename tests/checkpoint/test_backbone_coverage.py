"""A fine-tune stops before training when MODEL.WEIGHTS leave backbone tensors at their
initialisation (soco_d2/checkpoint/coverage.py, called by the Trainer's resume_or_load)."""
import logging
import os
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model

from soco_d2.checkpoint import convert_state_dict, save_detectron2_weights
from soco_d2.checkpoint.coverage import (
    BackboneNotLoadedError,
    LoadRecordingCheckpointer,
    backbone_keys,
    check_backbone_loaded,
    check_loaded_weights,
)
from soco_d2.engine import Trainer, load_cfg

ROOT = Path(__file__).resolve().parents[2]
FPN_DEMO = str(ROOT / "configs/demo/mask_rcnn_R18_FPN_demo.yaml")


def test_scope_is_the_pretrained_backbone_only():
    keys = [
        "backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.res2.0.conv1.norm.weight",
        "backbone.bottom_up.res2.0.conv1.norm.num_batches_tracked",  # bookkeeping
        "backbone.fpn_lateral2.weight", "backbone.top_block.p6.weight",  # FPN levels
        "backbone.stem.conv1.weight", "roi_heads.res5.0.conv1.weight",  # C4
        "roi_heads.res5.norm.weight",  # the norm a C4 fine-tune appends
        "backbone.net.blocks.0.attn.qkv.weight", "backbone.net.pos_embed",  # ViTDet
        "backbone.net.blocks.0.attn.rel_pos_h", "backbone.net.blocks.0.attn.rel_pos_w",
        "backbone.simfp_2.0.weight", "roi_heads.box_head.fc1.weight",
        "proposal_generator.rpn_head.conv.weight",
    ]
    assert backbone_keys(keys) == [
        "backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.res2.0.conv1.norm.weight",
        "backbone.stem.conv1.weight", "roi_heads.res5.0.conv1.weight",
        "backbone.net.blocks.0.attn.qkv.weight", "backbone.net.pos_embed",
    ]


def test_error_names_counts_and_keys_and_the_opt_out(caplog):
    keys = [f"backbone.bottom_up.res2.{i}.conv1.weight" for i in range(10)]
    assert check_backbone_loaded(keys, ["roi_heads.box_predictor.cls_score.weight"], "w.pkl") == (
        10, 10)
    with pytest.raises(BackboneNotLoadedError) as e:
        check_backbone_loaded(keys, keys[7:], "w.pkl")
    message = str(e.value)
    assert "MODEL.WEIGHTS w.pkl initialised 7 of the detector's 10 backbone tensors" in message
    assert "3 stay at their initialisation: backbone.bottom_up.res2.7.conv1.weight" in message
    assert "MODEL.SSL.ALLOW_PARTIAL_BACKBONE True" in message
    with caplog.at_level(logging.WARNING, logger="soco_d2.checkpoint.coverage"):
        assert check_backbone_loaded(keys, keys[7:], "w.pkl", allow_partial=True) == (7, 10)
    assert "initialised 7 of" in caplog.text


def test_converted_sim_passes_in_the_demo_vitdet(tmp_path):
    """The relative-position tables are the only ViT tensors SIM weights leave out."""
    torch.manual_seed(0)
    sim = build_model(load_cfg(str(ROOT / "configs/demo/sim_vit_tiny_demo.yaml"), register=False))
    path = str(tmp_path / "sim.pkl")
    save_detectron2_weights(convert_state_dict(sim.state_dict()), path)
    detector = build_model(
        load_cfg(str(ROOT / "configs/demo/vitdet_mask_rcnn_tiny_demo.yaml"), register=False)
    )
    checkpointer = LoadRecordingCheckpointer(detector)
    checkpointer.load(path)
    assert any(k.endswith("rel_pos_h") for k in checkpointer.last_incompatible.missing_keys)
    loaded, total = check_loaded_weights(checkpointer, path)
    assert loaded == total == len(backbone_keys(detector.state_dict()))


@pytest.fixture(scope="module")
def demo_opts(tmp_path_factory):
    """The demo FPN fine-tune on 4 generated images, 96 px, 1 iteration."""
    from soco_d2.data.demo import generate_demo_dataset

    root = str(tmp_path_factory.mktemp("coverage") / "demo")
    generate_demo_dataset(root, num_unlabeled=0, num_train=4, num_val=0, image_size=96, seed=1)
    ann = os.path.join(root, "annotations")
    return ["DATASETS.SSL.REGISTER", f"('cov_train=coco:{ann}/instances_train.json:{root}/train',)",
            "DATASETS.TRAIN", "('cov_train',)", "DATASETS.TEST", "()",
            "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2"]


def _c4_named_weights(tmp_path):
    """A MoCo demo backbone converted with --arch c4: names an FPN detector does not have."""
    torch.manual_seed(0)
    moco = build_model(load_cfg(str(ROOT / "configs/demo/mocov2_R18_demo.yaml"), register=False))
    path = str(tmp_path / "c4.pkl")
    save_detectron2_weights(convert_state_dict(moco.state_dict(), arch="c4"), path)
    return path


def test_trainer_stops_before_training_on_weights_named_for_another_detector(
    tmp_path, demo_opts
):
    weights = _c4_named_weights(tmp_path)
    opts = [*demo_opts, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path / "out")]
    trainer = Trainer(load_cfg(FPN_DEMO, opts))
    with pytest.raises(BackboneNotLoadedError, match="initialised 0 of the detector's 100 "):
        trainer.resume_or_load(resume=False)

    # the opt-out trains from the partial backbone, and writes a checkpoint of this run ...
    partial = Trainer(load_cfg(FPN_DEMO, [*opts, "MODEL.SSL.ALLOW_PARTIAL_BACKBONE", "True"]))
    partial.resume_or_load(resume=False)
    partial.train()
    assert (tmp_path / "out" / "last_checkpoint").is_file()
    # ... which a resumed run loads without the check (it is the whole detector)
    resumed = Trainer(load_cfg(FPN_DEMO, [*opts, "SOLVER.MAX_ITER", "2"]))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 1


def test_trainer_from_scratch_is_not_checked(tmp_path, demo_opts):
    trainer = Trainer(load_cfg(FPN_DEMO, [*demo_opts, "OUTPUT_DIR", str(tmp_path / "out")]))
    trainer.resume_or_load(resume=False)
    assert trainer.checkpointer.last_incompatible is None
