"""The Trainer on the tiny configs of the ResNet methods with an EMA target (MoCo v2, DenseCL,
DetCo, BYOL): real loader end to end (DetCo's jigsaw mapper, BYOL's LARS and cosine EMA),
learning on a fixed batch, exact resume (every queue, its ring pointer and the optimizer state
included), and a BYOL checkpoint that converts with tools/convert_pretrained.py into the demo
Mask R-CNN R-18 FPN with its backbone fully loaded.

The queue methods' learning is measured against their INITIAL queues: the logged loss of a fixed
batch is no measure for them, since every step enqueues keys of the same four images, so the
rings fill with near-copies of each query's own positive and the logged loss rises.
"""
import math
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import soco_d2  # noqa: F401  (registers the methods and the "detco" mapper)
from soco_d2.checkpoint import load_detector_cfg
from soco_d2.engine import Trainer
from soco_d2.modeling.contrastive import info_nce_loss
from soco_d2.modeling.densecl.dense import dense_correspondence, dense_info_nce
from soco_d2.modeling.detco.losses import detco_level_terms, weight_level_losses
from soco_d2.modeling.queue import KeyQueue
from soco_d2.solver.lars import LARS
from _configs import tiny_pretrain_cfg
from _data import write_random_images
from _paths import CONFIGS
from _train import (
    assert_finite_losses,
    assert_resume_is_exact,
    fixed_batch_trainer,
    load_final_checkpoint,
    probe_before_and_after_training,
    start,
    train_fixed_batch,
)

DETECTOR = os.path.join(CONFIGS, "demo/mask_rcnn_R18_FPN_demo.yaml")


def _queues(model) -> Dict[str, KeyQueue]:
    """The model's key queues by module name (``queue``, ``queues.res2_global``, ...)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, KeyQueue)}


def _initial_queues(model) -> Dict[str, torch.Tensor]:
    return {name: q.clone_keys() for name, q in _queues(model).items()}


def _moco_probe(model, batch, negatives):
    """InfoNCE of the batch's query views against their keys and a FIXED set of negatives."""
    q = model._encode(model._online_container(), model.preprocess_view(batch, 0))
    k = model._encode(model.target, model.preprocess_view(batch, 1))
    return info_nce_loss(q, k, negatives["queue"], model.temperature).item()


def _moco_learned(before, after):
    # Floor: q.k+ = 1 against 64 orthogonal negatives at T 0.2 is log(1 + 64 e^-5) = 0.36; the
    # random network starts at 0.67 and 6 steps bring it to 0.52.
    assert after < before - 0.1, (before, after)


def _densecl_probe(model, batch, negatives):
    """Global and dense InfoNCE of the batch against FIXED negatives (no queue growth)."""
    qf, q, q_grid, _ = model._encode_dense(model._online_container(),
                                           model.preprocess_view(batch, 0))
    kf, k, k_grid, _ = model._encode_dense(model.target, model.preprocess_view(batch, 1))
    t = model.temperature
    dense = dense_info_nce(q_grid, k_grid, dense_correspondence(qf, kf), negatives["queue2"], t)
    return info_nce_loss(q, k, negatives["queue"], t).item(), dense.item()


def _densecl_learned(before, after):
    (g0, d0), (g1, d1) = before, after
    # the objective (w = 0.5) falls by over 20%, each term by over 10% (measured: 30%, 21%, 35%)
    assert g1 + d1 < 0.8 * (g0 + d0), (g0, g1, d0, d1)
    assert g1 < 0.9 * g0 and d1 < 0.9 * d0, (g0, g1, d0, d1)


def _detco_probe(model, batch, negatives):
    """The weighted DetCo loss of the batch against FIXED negatives (the initial rings)."""
    views = [model.global_batch(batch, v) for v in (0, 1)]
    patches = [model.patch_batch(batch, v) for v in (0, 1)]
    q_g, q_l = model._embed(model._online_container(), views[0], patches[0], False)
    k_g, k_l = model._embed(model.target, views[1], patches[1], False)
    terms = {
        lvl: detco_level_terms(
            q_g[lvl], k_g[lvl], negatives[f"queues.{lvl}_global"], model.temperature,
            q_l[lvl], k_l[lvl], negatives[f"queues.{lvl}_local"],
        )
        for lvl in model.levels
    }
    return sum(weight_level_losses(terms, model.level_weights).values()).item()


def _detco_learned(before, after):
    # measured: 12.1 -> 5.4 in 6 steps
    assert after < 0.7 * before, (before, after)


def _byol_learned(before, after):
    # the logged loss of iteration 1 against the last (iteration 0 has lr 0: warm-up from 0, as
    # the official schedule)
    assert after < before - 0.1, (before, after)


def _byol_run_checks(trainer, keys):
    assert isinstance(trainer.optimizer, LARS)
    # the EMA hook followed BYOL's cosine schedule from tau_base 0.99 over the 3 iterations
    momenta = [v for v, _ in trainer.storage.history("ema_momentum").values()]
    expected = [1 - 0.01 * (math.cos(math.pi * k / 3) + 1) / 2 for k in range(3)]
    assert momenta == pytest.approx(expected)
    # the predictor is online only
    assert not any(k.startswith("target.predictor.") for k in keys)


@dataclass(frozen=True)
class Method:
    """What the tests train of one method and what they expect of it."""

    config: str  # under configs/pretrain/
    logged: str  # a storage entry the method logs at every step
    key_prefixes: Tuple[str, ...]  # the checkpoint holds keys under each (target, heads)
    learned: Callable  # (before, after) of the fixed batch: asserts it learned
    # (model, batch, initial queues by name) -> loss(es) of the batch against those queues;
    # None: the logged loss of the fixed batch is the measure (no queue)
    probe: Optional[Callable] = None
    queues: Tuple[str, ...] = ()  # module names of its KeyQueues
    loader_iters: int = 2  # iterations of the real-loader run
    learn_iters: int = 6  # iterations on the fixed batch
    run_checks: Optional[Callable] = None  # (trainer, checkpoint keys): method-specific asserts


METHODS = {
    "moco": Method(
        "mocov2_R18_tiny.yaml", "moco/acc1", ("target.backbone.res5.", "target.head."),
        _moco_learned, _moco_probe, queues=("queue",),
    ),
    "densecl": Method(
        "densecl_R18_tiny.yaml", "densecl/dense_infonce",
        ("target.dense_head.", "target.backbone.res5."),
        _densecl_learned, _densecl_probe, queues=("queue", "queue2"),
    ),
    "detco": Method(
        "detco_R18_tiny.yaml", "detco/res2_global_to_local",
        ("target.backbone.res5.", "target.heads.local_heads.res2."),
        _detco_learned, _detco_probe,
        queues=tuple(f"queues.res{i}_{kind}" for i in (2, 3, 4, 5) for kind in ("global", "local")),
    ),
    "byol": Method(
        "byol_R18_tiny.yaml", "byol/projection_std",
        ("target.backbone.res5.", "target.projector.", "predictor."),
        _byol_learned, loader_iters=3, learn_iters=8, run_checks=_byol_run_checks,
    ),
}
# one per method: the fixed batch is cached on the class, and the methods' batches differ in
# format (views, jigsaw patches)
FIXED_BATCH = {name: fixed_batch_trainer() for name in METHODS}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six 96x80 random-texture images, no proposal cache (none of these methods reads one)."""
    return write_random_images(tmp_path_factory.mktemp("resnet_method_imgs"))


def _make_cfg(name: str, images: str) -> Callable:
    """``(out_dir, *opts) -> cfg`` of the method's tiny config on ``images``."""
    return partial(tiny_pretrain_cfg, os.path.join(CONFIGS, "pretrain", METHODS[name].config),
                   images)


@pytest.fixture(scope="module", params=list(METHODS))
def trained(request, images, tmp_path_factory):
    """A run of the method's tiny config through the real loader:
    ``(name, trainer, out_dir, queue contents before the first step)``."""
    name = request.param
    torch.manual_seed(0)  # a module fixture starts before the per-test seeding
    np.random.seed(0)
    out = tmp_path_factory.mktemp(f"{name}_run")
    cfg = _make_cfg(name, images)(out, "SOLVER.MAX_ITER", str(METHODS[name].loader_iters))
    trainer = start(Trainer, cfg)
    rings0 = {n: q.queue.clone() for n, q in _queues(trainer.model).items()}
    trainer.train()
    return name, trainer, out, rings0


def test_tiny_config_trains_with_real_loader(trained):
    name, trainer, out, rings0 = trained
    method = METHODS[name]
    iters = method.loader_iters
    assert_finite_losses(trainer, iters)
    assert trainer.storage.history(method.logged).values()
    # every queue: one step of 4 keys per iteration at the head of its ring, unit length, the
    # rest untouched
    queues = _queues(trainer.model)
    assert sorted(queues) == sorted(method.queues)
    head = 4 * iters
    for n, q in queues.items():
        assert int(q.queue_ptr) == head, n
        assert not torch.equal(q.queue[:, :head], rings0[n][:, :head]), n
        assert torch.equal(q.queue[:, head:], rings0[n][:, head:]), n
        torch.testing.assert_close(q.queue.norm(dim=0), torch.ones(q.size), msg=n)
    ckpt = load_final_checkpoint(out)
    keys = ckpt["model"].keys()
    assert {f"{n}.{b}" for n in queues for b in ("queue", "queue_ptr")} <= keys
    for prefix in method.key_prefixes:
        assert any(k.startswith(prefix) for k in keys), prefix
    assert ckpt["iteration"] == iters - 1
    assert ckpt["trainer"]["_trainer"]["optimizer"]["state"]  # momentum buffers, as resumed
    if method.run_checks is not None:
        method.run_checks(trainer, keys)


@pytest.mark.parametrize("trained", ["byol"], indirect=True)
def test_byol_checkpoint_converts_into_the_demo_detector(trained, tmp_path, load_script, capsys):
    _, _, out, _ = trained
    ckpt, weights = str(Path(out) / "model_final.pth"), str(tmp_path / "byol.pkl")
    cli = load_script("tools/convert_pretrained.py")
    assert cli.main([ckpt, weights, "--config-file", DETECTOR]) == 0
    printed = capsys.readouterr().out
    assert "layout: soco_d2, detector: fpn" in printed
    # the projector, the predictor and the whole target are dropped, not transferred
    assert "target.*" in printed and "projector.*" in printed and "predictor.*" in printed

    torch.manual_seed(0)
    detector = build_model(load_detector_cfg(DETECTOR))
    DetectionCheckpointer(detector).load(weights)
    # every tensor of the detector's ResNet now holds the ONLINE backbone's value
    online = load_final_checkpoint(out)["model"]
    resnet = {k[len("backbone.bottom_up."):]: v for k, v in detector.state_dict().items()
              if k.startswith("backbone.bottom_up.") and not k.endswith("num_batches_tracked")}
    assert len(resnet) == 100  # 20 convolutions: weight, norm weight, bias, mean, var
    for k, v in resnet.items():
        torch.testing.assert_close(v, online["backbone." + k], rtol=0, atol=0, msg=k)
    assert not torch.equal(online["backbone.stem.conv1.weight"],
                           online["target.backbone.stem.conv1.weight"])


@pytest.mark.parametrize("name", list(METHODS))
def test_few_iterations_reduce_loss_on_fixed_batch(name, images, tmp_path):
    method = METHODS[name]
    cfg = _make_cfg(name, images)(tmp_path, "SOLVER.MAX_ITER", str(method.learn_iters),
                                  "SOLVER.CHECKPOINT_PERIOD", "100")
    if method.probe is None:
        losses = train_fixed_batch(FIXED_BATCH[name], cfg)
        before, after = losses[1], losses[-1]
    else:
        before, after = probe_before_and_after_training(
            FIXED_BATCH[name], cfg, _initial_queues, method.probe
        )
    method.learned(before, after)


@pytest.mark.parametrize("name", list(METHODS))
def test_resume_after_kill_matches_uninterrupted(name, images, tmp_path):
    def state_came_back(resumed):
        # with the weights: the optimizer's buffers and every ring pointer (2 steps of 4 keys)
        assert resumed.optimizer.state
        assert all(int(q.queue_ptr) == 8 for q in _queues(resumed.model).values())

    _, resumed = assert_resume_is_exact(
        FIXED_BATCH[name], _make_cfg(name, images), tmp_path, on_resume=state_came_back
    )
    queues = _queues(resumed.model)
    assert sorted(queues) == sorted(METHODS[name].queues)
    state = resumed.model.state_dict()
    for n, q in queues.items():
        assert {f"{n}.queue", f"{n}.queue_ptr"} <= state.keys()
        # 16 keys: DetCo's rings of 16 wrapped to 0
        assert int(state[f"{n}.queue_ptr"]) == 16 % q.size, n


def test_resume_restores_the_image_ids_of_excluded_same_image_keys(images, tmp_path):
    make = _make_cfg("moco", images)

    def cfg(out_dir, *opts):
        return make(out_dir, "MODEL.MOCO.EXCLUDE_SAME_IMAGE", "True", *opts)

    def ids_came_back(resumed):
        # 2 steps of the fixed batch's 4 images: 8 slots hold ids, two per image
        ids = resumed.model.queue.ids
        assert int((ids >= 0).sum()) == 8 and len(set(ids[ids >= 0].tolist())) == 4

    full, resumed = assert_resume_is_exact(
        FIXED_BATCH["moco"], cfg, tmp_path, on_resume=ids_came_back
    )
    assert torch.equal(resumed.model.queue.ids, full.model.queue.ids)
