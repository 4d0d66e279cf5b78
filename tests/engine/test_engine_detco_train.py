"""The Trainer on the tiny DetCo config: real loader end to end (jigsaw mapper), learning on a
fixed batch, exact resume (all 8 queues and their pointers included)."""
from functools import partial

import pytest
import torch

import soco_d2  # noqa: F401  (registers DetCo and the "detco" mapper)
from soco_d2.engine import Trainer
from soco_d2.modeling.detco.losses import detco_level_terms, weight_level_losses
from _train import (
    CONFIGS,
    assert_finite_losses,
    assert_resume_is_exact,
    fixed_batch_trainer,
    load_final_checkpoint,
    probe_before_and_after_training,
    start,
    tiny_cfg,
    write_random_images,
)

TINY = str(CONFIGS / "pretrain/detco_R18_tiny.yaml")
QUEUES = [f"res{i}_{kind}" for i in (2, 3, 4, 5) for kind in ("global", "local")]
QUEUE_KEYS = {f"queues.{n}.{b}" for n in QUEUES for b in ("queue", "queue_ptr")}
FixedBatchTrainer = fixed_batch_trainer()


@pytest.fixture(scope="module")
def make_cfg(tmp_path_factory):
    """``(out_dir, *opts) -> cfg`` on six 96x80 random-texture images, no proposal cache
    (DetCo reads none)."""
    return partial(tiny_cfg, TINY, write_random_images(tmp_path_factory.mktemp("detco_imgs")))


def test_tiny_config_trains_with_real_loader(make_cfg, tmp_path):
    trainer = start(Trainer, make_cfg(tmp_path, "SOLVER.MAX_ITER", "2"))
    rings0 = {name: q.queue.clone() for name, q in trainer.model.queues.items()}
    trainer.train()
    assert_finite_losses(trainer, 2)
    assert trainer.storage.history("detco/res2_global_to_local").values()
    # every queue: two steps of 4 keys at the head of its ring, the rest untouched
    assert sorted(trainer.model.queues) == sorted(QUEUES)
    for name, q in trainer.model.queues.items():
        assert int(q.queue_ptr) == 8, name
        assert not torch.equal(q.queue[:, :8], rings0[name][:, :8]), name
        assert torch.equal(q.queue[:, 8:], rings0[name][:, 8:]), name
    ckpt = load_final_checkpoint(tmp_path)
    keys = ckpt["model"].keys()
    assert QUEUE_KEYS <= keys
    assert any(k.startswith("target.backbone.res5.") for k in keys)
    assert any(k.startswith("target.heads.local_heads.res2.") for k in keys)
    assert ckpt["iteration"] == 1


def _probe_loss(model, batch, negatives):
    """The weighted DetCo loss of the batch against FIXED negatives (the initial rings)."""
    views = [model.global_batch(batch, v) for v in (0, 1)]
    patches = [model.patch_batch(batch, v) for v in (0, 1)]
    q_g, q_l = model._embed(model._online_container(), views[0], patches[0], False)
    k_g, k_l = model._embed(model.target, views[1], patches[1], False)
    terms = {
        lvl: detco_level_terms(
            q_g[lvl], k_g[lvl], negatives[f"{lvl}_global"], model.temperature,
            q_l[lvl], k_l[lvl], negatives[f"{lvl}_local"],
        )
        for lvl in model.levels
    }
    return sum(weight_level_losses(terms, model.level_weights).values()).item()


def test_few_iterations_reduce_loss_on_fixed_batch(make_cfg, tmp_path):
    """Learning, measured against the initial random queues (the logged loss of a fixed batch
    is not a measure: every step enqueues near-copies of the same images' positives)."""
    cfg = make_cfg(tmp_path, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "100")
    before, after = probe_before_and_after_training(
        FixedBatchTrainer,
        cfg,
        lambda model: {name: q.clone_keys() for name, q in model.queues.items()},
        _probe_loss,
    )
    # measured: 12.1 -> 5.4 in 6 steps
    assert after < 0.7 * before, (before, after)


def test_resume_after_kill_matches_uninterrupted(make_cfg, tmp_path):
    def ring_pointers_came_back(resumed):
        # every ring pointer came back with the weights
        assert all(int(q.queue_ptr) == 8 for q in resumed.model.queues.values())

    _, resumed = assert_resume_is_exact(
        FixedBatchTrainer, make_cfg, tmp_path, on_resume=ring_pointers_came_back
    )
    b = resumed.model.state_dict()
    assert QUEUE_KEYS <= b.keys()
    assert all(int(b[f"queues.{n}.queue_ptr"]) == 0 for n in QUEUES)  # 16 keys: ring wrapped
