"""MODEL.SSL.CHANNELS_LAST on a fine-tune detector: the project's Trainer builds it channels_last
(the 800-iteration demo config turns it on), and leaves it NCHW when the key is off."""
import os

import torch

from soco_d2.engine.trainer import Trainer
from soco_d2.pipeline.run import load_config
from _paths import REPO_ROOT

_800 = os.path.join(REPO_ROOT, "configs/demo/mask_rcnn_R18_FPN_demo_800it.yaml")


def _convs(model):
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_800it_demo_detector_is_channels_last():
    cfg = load_config(_800)
    assert cfg.MODEL.SSL.CHANNELS_LAST
    convs = _convs(Trainer.build_model(cfg))
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


def test_detector_stays_nchw_with_the_key_off():
    convs = _convs(Trainer.build_model(load_config(_800, ["MODEL.SSL.CHANNELS_LAST", "False"])))
    # a 1x1 conv with one input channel is both layouts; every 3x3 one must be NCHW only
    spatial = [w for w in convs if w.shape[1] > 1 and w.shape[-1] > 1]
    assert spatial and not any(w.is_contiguous(memory_format=torch.channels_last) for w in spatial)
