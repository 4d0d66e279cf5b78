"""A method without a target network (SimCLR-style, defined here) fits the engine without stubs:
it subclasses ``SSLMetaArch`` only, trains through the Trainer on the ``multi_view`` mapper's
views, gets no EMA hook, checkpoints no ``target.*``, and the benchmark times it."""
import os
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from soco_d2.engine import TargetEMAHook, Trainer, WeightDriftHook
from soco_d2.engine.benchmark import benchmark_training
from soco_d2.modeling import SSLMetaArch
from _configs import tiny_pretrain_cfg
from _data import write_random_images
from _paths import CONFIGS
from _train import assert_finite_losses, load_final_checkpoint


class TinyNoTargetMethod(SSLMetaArch):
    """Two views through one small encoder, NT-Xent between them (SimCLR's loss); no target."""

    @configurable
    def __init__(self, *, encoder: nn.Module, temperature: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.temperature = temperature
        self.finish_init()

    @classmethod
    def from_config(cls, cfg):
        width = cfg.MODEL.SSL.MLP_OUT_DIM
        encoder = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, width),
        )
        return {**SSLMetaArch.base_config(cfg), "encoder": encoder}

    def _features(self, batched_inputs, v: int) -> torch.Tensor:
        return self.encoder(self.normalize([x["views"][v] for x in batched_inputs]).tensor)

    def forward(self, batched_inputs):
        n = len(batched_inputs)
        z = F.normalize(torch.cat([self._features(batched_inputs, v) for v in (0, 1)]), dim=1)
        logits = (z @ z.T / self.temperature).fill_diagonal_(float("-inf"))
        labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
        return {"loss_nt_xent": F.cross_entropy(logits, labels)}

    def floor(self, batched_inputs) -> torch.Tensor:
        return sum(self._features(batched_inputs, v).mean() for v in (0, 1))


if "TinyNoTargetMethod" not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY.register(TinyNoTargetMethod)

# BYOL's tiny config only for its views (multi_view mapper, two 64 px views) and solver
TINY = os.path.join(CONFIGS, "pretrain/byol_R18_tiny.yaml")
OPTS = ("MODEL.META_ARCHITECTURE", "TinyNoTargetMethod", "SOLVER.MAX_ITER", "3")


@pytest.fixture(scope="module")
def make_cfg(tmp_path_factory):
    images = write_random_images(tmp_path_factory.mktemp("no_target_imgs"))
    return partial(tiny_pretrain_cfg, TINY, images)


def test_a_method_without_target_trains_through_the_trainer(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, *OPTS)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    assert not hasattr(trainer.model, "update_target") and not hasattr(trainer.model, "target")
    hooks = [type(h) for h in trainer._hooks]
    assert TargetEMAHook not in hooks and WeightDriftHook in hooks
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert_finite_losses(trainer, 3)
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))
    saved = load_final_checkpoint(tmp_path)["model"]
    assert saved and not any(k.startswith("target.") for k in saved)


def test_the_benchmark_times_a_method_without_target(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path, *OPTS)
    res = benchmark_training(cfg, iters=1, warmup=0, log=lambda line: None)
    assert res["s_per_iter"] > 0 and res["floor_s_per_iter"] > 0
