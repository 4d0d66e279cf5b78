"""The Trainer on a toy EMA model: momentum schedule, exact resume, non-finite loss stop."""
import copy
import math
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage
from torch import nn

from soco_d2.config import add_ssl_config
from soco_d2.engine import NonFiniteLossError, TargetEMAHook, Trainer
from _hooks import KillAfter


def _cosine(base: float, it: int, max_iter: int) -> float:
    return 1 - (1 - base) * (math.cos(math.pi * it / max_iter) + 1) / 2


class ToyEMANet(nn.Module):
    """Online MLP with BN + an EMA target; noise drawn inside forward (must be reseeded)."""

    def __init__(self, cfg):
        super().__init__()
        self.online = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
        self.target = copy.deepcopy(self.online)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.nan_at = int(os.environ.get("TOY_NAN_AT", "-1"))
        self.momenta = []
        self.base_momentum = cfg.MODEL.SSL.MOMENTUM

    def forward(self, batched_inputs):
        x = torch.stack([d["x"] for d in batched_inputs])
        y = torch.stack([d["y"] for d in batched_inputs])
        x = x + 0.1 * torch.randn_like(x)
        out = self.online(x)
        with torch.no_grad():
            tgt = self.target(x)
        loss = (out - y).pow(2).mean() + 0.1 * (out - tgt).pow(2).mean()
        if get_event_storage().iter == self.nan_at:
            loss = loss * float("nan")
        return {"loss_fit": loss}

    def target_momentum(self, iteration: int, max_iter: int) -> float:
        """The schedule the engine's EMA hook asks the model for (cosine, as SSLMetaArch's)."""
        return _cosine(self.base_momentum, iteration, max_iter)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        self.momenta.append(momentum)
        for t, o in zip(self.target.parameters(), self.online.parameters()):
            t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)


if "ToyEMANet" not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY.register(ToyEMANet)


class ToyTrainer(Trainer):
    @classmethod
    def build_train_loader(cls, cfg):
        g = torch.Generator().manual_seed(0)
        batch = [{"x": torch.randn(4, generator=g), "y": torch.randn(2, generator=g)}
                 for _ in range(8)]

        def forever():
            while True:
                yield batch

        return forever()


def _cfg(out_dir, max_iter=4, **solver):
    cfg = get_cfg()
    add_ssl_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "ToyEMANet"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SSL.MOMENTUM = 0.9
    cfg.SOLVER.OPTIMIZER = "LARS"
    cfg.SOLVER.BASE_LR = 2.0
    cfg.SOLVER.WEIGHT_DECAY = 1e-5
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosineLR"
    cfg.SOLVER.BASE_LR_END = 1e-6
    cfg.SOLVER.WARMUP_FACTOR = 0.01
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.SOLVER.RESCALE_INTERVAL = True
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    cfg.SEED = 7
    cfg.OUTPUT_DIR = str(out_dir)
    return cfg


def _run(cfg, resume=False):
    trainer = ToyTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def _state(trainer):
    model = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    opt = trainer.optimizer.state_dict()["state"]
    bufs = [opt[i]["momentum_buffer"].clone() for i in sorted(opt)]
    return model, bufs, trainer.optimizer.param_groups[0]["lr"]


def test_ema_hook_uses_cosine_momentum_and_runs_before_checkpointer(tmp_path):
    trainer = _run(_cfg(tmp_path))
    model = trainer.model
    assert model.momenta == pytest.approx([_cosine(0.9, i, 4) for i in range(4)])
    names = [type(h).__name__ for h in trainer._hooks]
    assert names.index("TargetEMAHook") < names.index("PeriodicCheckpointer")
    assert names[0] == "IterationSeedHook"
    # The target moved towards the online net but is not equal to it.
    assert not torch.equal(model.target[0].weight, model.online[0].weight)


def test_ema_hook_default_momentum_is_the_models_schedule():
    momentum = pytest.importorskip("soco_d2.modeling.momentum")
    assert momentum.cosine_momentum(0.99, 5, 10) == pytest.approx(_cosine(0.99, 5, 10))
    assert momentum.constant_momentum(0.999, 5, 10) == 0.999
    hook = TargetEMAHook()
    assert hook._momentum_fn is None  # resolved lazily in before_train, from the model


def _drift_weights(model):
    return [p.detach().clone() for p in model.parameters() if p.requires_grad and p.dim() >= 2]


@pytest.mark.parametrize("trust,warns", [(1e-6, True), (1.0, False)])
def test_weight_drift_is_logged_and_a_run_that_barely_moved_warns(tmp_path, caplog, trust, warns):
    trainer = ToyTrainer(_cfg(tmp_path, LARS_TRUST=trust))
    trainer.resume_or_load(resume=False)
    before = _drift_weights(trainer.model)
    assert len(before) == 2  # the online Linear weights; the frozen target is not tracked
    with caplog.at_level("WARNING", logger="soco_d2.engine.hooks"):
        trainer.train()
    after = _drift_weights(trainer.model)
    moved = sum(float((a - b).pow(2).sum()) for a, b in zip(after, before))
    expected = math.sqrt(moved / sum(float(b.pow(2).sum()) for b in before))
    logged = trainer.storage.history("weight_drift").values()
    assert logged[-1] == (pytest.approx(expected, rel=1e-5), 3)
    assert (expected < 0.05) == warns
    assert any("barely changed" in r.getMessage() for r in caplog.records) == warns


def test_resume_2_plus_2_equals_4(tmp_path):
    full = _run(_cfg(tmp_path / "full"))
    cfg_split = _cfg(tmp_path / "split")
    killed = ToyTrainer(cfg_split)
    killed.register_hooks([KillAfter(1)])
    killed.resume_or_load(resume=False)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert os.path.isfile(tmp_path / "split" / "model_0000001.pth")
    resumed = _run(cfg_split, resume=True)
    assert resumed.start_iter == 2
    m_full, b_full, lr_full = _state(full)
    m_res, b_res, lr_res = _state(resumed)
    assert m_full.keys() == m_res.keys() and any(k.startswith("target.") for k in m_full)
    for k in m_full:
        torch.testing.assert_close(m_res[k], m_full[k], rtol=0, atol=0, msg=k)
    for a, b in zip(b_full, b_res):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert lr_res == lr_full
    assert resumed.model.momenta == full.model.momenta[2:]


@pytest.mark.parametrize("keep,left", [(0, [1, 3, 5, 7]), (1, [7]), (2, [5, 7])])
def test_checkpoint_max_to_keep_bounds_periodic_files(tmp_path, keep, left):
    _run(_cfg(tmp_path, max_iter=8, CHECKPOINT_MAX_TO_KEEP=keep))
    files = sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth"))
    assert files == [f"model_{i:07d}.pth" for i in left] + ["model_final.pth"]
    with open(tmp_path / "last_checkpoint") as f:
        assert f.read().strip() == "model_final.pth"


def test_checkpoint_max_to_keep_negative_is_refused(tmp_path):
    with pytest.raises(ValueError, match="CHECKPOINT_MAX_TO_KEEP must be >= 0"):
        ToyTrainer(_cfg(tmp_path, CHECKPOINT_MAX_TO_KEEP=-1))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_NAN_AT", "3")
    trainer = ToyTrainer(_cfg(tmp_path, max_iter=6))
    trainer.resume_or_load(resume=False)
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="iteration 3") as err:
        trainer.train()
    assert "model_0000001.pth" in str(err.value)  # the last good checkpoint is named
    assert sorted(os.listdir(tmp_path)) == sorted(
        set(os.listdir(tmp_path)) - {"model_0000003.pth", "model_final.pth"}
    )
    with open(tmp_path / "last_checkpoint") as f:
        assert f.read().strip() == "model_0000001.pth"
    # The weights are those after iteration 2: finite, and no optimizer step at iteration 3.
    state = trainer.model.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not torch.equal(state["online.0.weight"], good["online.0.weight"])
    assert len(trainer.model.momenta) == 3  # EMA ran for iterations 0-2 only


def test_evaluator_follows_evaluator_type_and_pretraining_test_is_noop(tmp_path):
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import PascalVOCDetectionEvaluator

    MetadataCatalog.get("engine_toy_voc").set(
        evaluator_type="pascal_voc", dirname=str(tmp_path), split="test", year=2007,
        thing_classes=["a"],
    )
    MetadataCatalog.get("engine_toy_none").set(evaluator_type="sem_seg_unknown")
    cfg = _cfg(tmp_path)
    assert isinstance(Trainer.build_evaluator(cfg, "engine_toy_voc"), PascalVOCDetectionEvaluator)
    with pytest.raises(NotImplementedError, match="sem_seg_unknown"):
        Trainer.build_evaluator(cfg, "engine_toy_none")
    cfg.MODEL.META_ARCHITECTURE = "SoCo"
    cfg.DATASETS.TEST = ("engine_toy_voc",)
    assert Trainer.test(cfg, model=None) == {}


def test_amp_on_cpu_falls_back_to_fp32(tmp_path):
    from soco_d2.engine.train_loop import GuardedAMPTrainer, GuardedSimpleTrainer

    cfg = _cfg(tmp_path)
    cfg.SOLVER.AMP.ENABLED = True
    trainer = ToyTrainer(cfg)
    assert isinstance(trainer._trainer, GuardedSimpleTrainer)
    assert not isinstance(trainer._trainer, GuardedAMPTrainer)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMP needs CUDA")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_amp_on_cuda_trains(tmp_path, dtype):
    from soco_d2.engine.train_loop import GuardedAMPTrainer

    cfg = _cfg(tmp_path)
    cfg.MODEL.DEVICE = "cuda"
    cfg.SOLVER.AMP.ENABLED = True
    cfg.SOLVER.AMP.DTYPE = dtype
    trainer = ToyTrainer(cfg)
    assert isinstance(trainer._trainer, GuardedAMPTrainer)
    assert trainer._trainer.grad_scaler.is_enabled() == (dtype == "float16")
    trainer.train()
    assert len(trainer.model.momenta) == 4
