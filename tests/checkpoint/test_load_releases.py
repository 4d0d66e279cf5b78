"""Every official layout the converter supports, in the container its release ships (training
arguments, optimizer, scheduler, amp and grad-scaler states next to the weights), converts
without --trust-pickle; so do detectron2 .pkl weights read as they are, and what this plugin
writes: its training checkpoints and its converted weights."""
import argparse
import pickle
from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch

from soco_d2.checkpoint import convert_checkpoint, read_checkpoint
from soco_d2.pipeline.run import _check_checkpoints
from soco_d2.pipeline.spec import Init
from _configs import tiny_pretrain_cfg
from _data import write_random_images
from _paths import REPO_ROOT

from _fixtures import (
    build_detector,
    build_plain_resnet,
    load_cli,
    to_densecl_full,
    to_moco,
    to_official_soco,
    to_torchvision,
)
from _hostile_checkpoints import save

VIT = {
    "patch_embed.proj.weight": torch.randn(8, 3, 4, 4),
    "patch_embed.proj.bias": torch.randn(8),
    "pos_embed": torch.randn(1, 5, 8),
    "cls_token": torch.randn(1, 1, 8),
    "blocks.0.norm1.weight": torch.randn(8),
    "blocks.0.attn.qkv.weight": torch.randn(24, 8),
}
SIM_EXTRA = {"mm_blocks.0.norm1.weight": torch.randn(8), "decoder_pos_mlp.weight": torch.randn(8)}
SGD_STATE = {
    "state": {0: {"momentum_buffer": torch.zeros(3)}},
    "param_groups": [{"lr": 0.03, "momentum": 0.9, "weight_decay": 0, "params": [0]}],
}
# torch.cuda.amp.GradScaler.state_dict(), kept by SIM and MAE as "scaler"
SCALER = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
          "_growth_tracker": 17}


def _soco_official(step_schedule: bool):
    """ckpt_epoch_N.pth of official SoCo: its argparse options, a warmup scheduler wrapping a
    cosine or (with --lr_scheduler step) MultiStepLR state, and apex amp's loss scalers."""
    if step_schedule:
        after = {"milestones": Counter({115: 1, 155: 1}), "gamma": 0.1, "last_epoch": 7}
    else:
        after = {"T_max": 95, "eta_min": 1e-06, "last_epoch": 7, "_last_lr": [0.03, 0.03]}
    opt = argparse.Namespace(
        model="SoCo_FPN", arch="resnet50", in_channels=[256, 512, 1024, 2048], resume="",
        bbox_size_range=(32, 112, 224), cutout_ratio=(0.1, 0.2), amp_opt_level="O1",
        lr_scheduler="step" if step_schedule else "cosine", lr_decay_epochs=[120, 160, 200],
        local_rank=0, debug=False, num_instances=1281167,
    )
    scheduler = {"multiplier": 100, "warmup_epoch": 5, "finished": False, "base_lrs": [0.03],
                 "last_epoch": 7, "_step_count": 8, "after_scheduler": after}
    model = to_official_soco(build_detector("fpn", 18).state_dict(), "fpn")
    return {"opt": opt, "model": model, "optimizer": SGD_STATE, "scheduler": scheduler,
            "epoch": 100, "amp": OrderedDict(loss_scaler0={"loss_scale": 512.0, "unskipped": 9})}


def _vit_training(model):
    """checkpoint-N.pth of official SIM and MAE trainings."""
    args = argparse.Namespace(model="sim_vit_base_patch16", blr=6.25e-5, lr=None, init_values=None,
                              output_dir="./output", auto_resume=True, distributed=True, gpu=0)
    return {"model": model, "optimizer": SGD_STATE, "epoch": 1599, "scaler": SCALER, "args": args}


def _release(name: str):
    """(file name, what the release's file holds, the layout the converter must detect)."""
    plain = build_plain_resnet(18)
    c4_named = {("roi_heads." if k.startswith("res5.") else "backbone.") + k: v
                for k, v in plain.items()}
    releases = {
        "soco": ("ckpt_epoch_100.pth", lambda: _soco_official(False), "soco_official"),
        "soco_step": ("ckpt_epoch_400.pth", lambda: _soco_official(True), "soco_official"),
        # PyTorch's pre-1.6 format, as MoCo's releases were written
        "moco_v2": ("moco_v2_800ep_pretrain.pth.tar",
                    lambda: {"epoch": 800, "arch": "resnet50", "state_dict": to_moco(c4_named),
                             "optimizer": SGD_STATE}, "moco_official"),
        "densecl_full": ("epoch_200.pth", lambda: to_densecl_full(plain), "densecl_official"),
        "densecl_extracted": ("densecl_r50_imagenet_200ep.pth",
                              lambda: {"state_dict": to_torchvision(plain), "author": "DenseCL"},
                              "torchvision"),
        "sim": ("checkpoint-1599.pth", lambda: _vit_training({**VIT, **SIM_EXTRA}),
                "sim_official"),
        "mae": ("mae_pretrain_vit_base.pth", lambda: {"model": VIT}, "mae"),
        "mae_training": ("checkpoint-799.pth", lambda: _vit_training(VIT), "mae"),
    }
    file_name, build, layout = releases[name]
    return file_name, build(), layout


RELEASES = ["soco", "soco_step", "moco_v2", "densecl_full", "densecl_extracted", "sim", "mae",
            "mae_training"]


@pytest.mark.parametrize("name", RELEASES)
def test_official_release_converts_without_the_flag(tmp_path, capsys, name):
    file_name, obj, layout = _release(name)
    path = save(obj, tmp_path / file_name)
    assert load_cli().main([path, str(tmp_path / "out.pkl")]) == 0, capsys.readouterr().err
    assert f"layout: {layout}," in capsys.readouterr().out


def test_detectron2_weights_read_without_the_flag(tmp_path):
    """The model zoo's .pkl files (Detectron's Caffe2 blobs too) and official SoCo's converted
    current_detectron2_*.pkl: numpy arrays (and scalars) in plain containers."""
    arrays = {"stem.conv1.weight": np.ones((4, 3, 3, 3), np.float32), "res2.0.conv1.b": np.zeros(4)}
    files = {
        "R-50.pkl": {"blobs": {"conv1_w": np.ones((4, 3, 7, 7), np.float32),
                               "conv1_w_momentum": np.zeros((4, 3, 7, 7), np.float32),
                               "lr": np.float32(0.1)}},
        "model_final_f10217.pkl": {"model": arrays, "__author__": "Detectron2 Model Zoo",
                                   "matching_heuristics": True},
        "current_detectron2_Head.pkl": {"model": arrays, "__author__": "PixPro",
                                        "matching_heuristics": True},
    }
    for file_name, obj in files.items():
        path = tmp_path / file_name
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)  # Python 2's protocol, as tools of that era wrote
        assert read_checkpoint(str(path)).keys() == obj.keys()
        # the pipeline uses the ones with an author as they are
        init = Init("x", "checkpoint", str(path), "detector.yaml")
        assert _check_checkpoints([init], trust_pickle=False) == (
            {"x"} if "__author__" in obj else set()
        )


def test_this_plugins_checkpoint_and_converted_weights_need_no_flag(tmp_path):
    """A real (2-iteration) training's model_final.pth, trainer state included, and the .pkl
    the converter writes from it load without the flag."""
    from soco_d2.engine import Trainer

    images = write_random_images(tmp_path / "images")
    cfg = tiny_pretrain_cfg(f"{REPO_ROOT}/configs/pretrain/mocov2_R18_tiny.yaml", images,
                            tmp_path / "out", "SOLVER.MAX_ITER", "2")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()

    final = str(tmp_path / "out" / "model_final.pth")
    ckpt = read_checkpoint(final)
    assert {"model", "trainer", "iteration"} <= set(ckpt)
    assert ckpt["trainer"]["_trainer"]["optimizer"]["state"]  # momentum buffers, as resumed
    result = convert_checkpoint(final, str(tmp_path / "converted.pkl"))
    converted = read_checkpoint(str(tmp_path / "converted.pkl"))
    assert converted["__author__"] == "soco_d2" and converted["model"].keys() == result.model.keys()
