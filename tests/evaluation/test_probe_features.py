"""The frozen-feature probe: ridge accuracy, effective rank, and a real detector's box features."""
import json
import os

import pytest
import torch
from detectron2.modeling import build_model

from soco_d2.data.demo import generate_demo_dataset
from soco_d2.data.datasets import register_dataset_spec
from soco_d2.engine import load_cfg
from soco_d2.evaluation.probe import effective_rank, probe_weights, ridge_probe
from _paths import REPO_ROOT


def test_ridge_probe_separates_separable_classes_and_not_shuffled_labels():
    g = torch.Generator().manual_seed(0)
    centers = 5 * torch.randn(4, 16, generator=g)
    y = torch.arange(400) % 4
    x = centers[y] + torch.randn(400, 16, generator=g)
    assert ridge_probe(x[:200], y[:200], x[200:], y[200:]) == 1.0
    shuffled = y[200:][torch.randperm(200, generator=g)]
    assert ridge_probe(x[:200], y[:200], x[200:], shuffled) < 0.5


def test_effective_rank_counts_independent_directions():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(2000, 8, generator=g)
    assert 7.0 < effective_rank(full) <= 8.0
    two = torch.randn(2000, 2, generator=g)
    mixed = torch.cat([two, two @ torch.randn(2, 6, generator=g)], dim=1)  # rank 2 in 8 dims
    assert effective_rank(mixed) < 2.5


def test_probe_weights_on_a_detector_counts_boxes_and_sees_the_weights(tmp_path):
    root = str(tmp_path / "demo")
    generate_demo_dataset(root, num_unlabeled=0, num_train=6, num_val=4, image_size=96, seed=3)
    ann = os.path.join(root, "annotations")
    train = register_dataset_spec(f"probe_train=coco:{ann}/instances_train.json:{root}/train")
    val = register_dataset_spec(f"probe_val=coco:{ann}/instances_val.json:{root}/val")
    cfg = load_cfg(
        os.path.join(REPO_ROOT, "configs/demo/mask_rcnn_R18_FPN_demo.yaml"),
        ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96"],
    )
    # The random init saved as is and with fc1 scaled by 10: relu(10 z) = 10 relu(z), so the
    # scaled weights' features are exactly 10x.
    torch.manual_seed(0)
    model = build_model(cfg)
    state = model.state_dict()
    torch.save({"model": {k: v.clone() for k, v in state.items()}}, str(tmp_path / "same.pth"))
    for k in ("roi_heads.box_head.fc1.weight", "roi_heads.box_head.fc1.bias"):
        state[k] = state[k] * 10
    torch.save({"model": state}, str(tmp_path / "scaled.pth"))
    random_init, same, scaled = probe_weights(
        cfg, ["", str(tmp_path / "same.pth"), str(tmp_path / "scaled.pth")], train, val
    )
    with open(f"{ann}/instances_train.json") as f:
        assert random_init["train_boxes"] == len(json.load(f)["annotations"])
    with open(f"{ann}/instances_val.json") as f:
        assert random_init["test_boxes"] == len(json.load(f)["annotations"])
    assert 0.0 <= random_init["probe_accuracy"] <= 1.0
    assert 1.0 <= random_init["effective_rank"] <= cfg.MODEL.ROI_BOX_HEAD.FC_DIM
    # "" builds the same seeded init that was saved: loading it changes nothing.
    assert same == pytest.approx(random_init, rel=1e-6)
    assert scaled["feature_l2"] == pytest.approx(10 * same["feature_l2"], rel=1e-4)
    assert scaled["effective_rank"] == pytest.approx(same["effective_rank"], rel=1e-3)
