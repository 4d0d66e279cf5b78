"""The Trainer on the tiny SoCo config: real loader end to end, loss decrease, exact resume."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import soco_d2  # noqa: F401  (registers SoCo)
from soco_d2.data.proposals.cache import write_cache
from soco_d2.engine import Trainer, load_cfg
from _hooks import KillAfter

TINY = str(Path(__file__).resolve().parents[2] / "configs/pretrain/soco_R18_FPN_tiny.yaml")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Six 96x80 random-texture images and a proposal cache with 5 boxes each."""
    root = tmp_path_factory.mktemp("soco_imgs")
    rng = np.random.default_rng(0)
    entries = {}
    for i in range(6):
        img = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
        cv2.imwrite(str(root / f"img_{i}.png"), img)
        xy = rng.uniform(0, 40, (5, 2))
        wh = rng.uniform(20, 40, (5, 2))
        entries[f"img_{i}.png"] = dict(
            boxes=np.concatenate([xy, xy + wh], 1).astype(np.float32), width=96, height=80,
            rule="test",
        )
    cache = str(root.parent / f"{root.name}_proposals.bin")
    write_cache(cache, entries)
    return str(root), cache


def _cfg(image_folder, out_dir, *opts):
    root, cache = image_folder
    name = f"engine_test_{abs(hash(root)) % 10**8}"
    return load_cfg(
        TINY,
        [
            "DATASETS.TRAIN", f"('{name}',)",
            "DATASETS.SOCO.REGISTER", f"('{name}=folder:{root}:{cache}',)",
            "OUTPUT_DIR", str(out_dir),
            "SOLVER.CHECKPOINT_PERIOD", "2",
            *opts,
        ],
    )


class FixedBatchTrainer(Trainer):
    """Feeds one batch (drawn once from the real loader) at every iteration."""

    batch = None

    @classmethod
    def build_train_loader(cls, cfg):
        if FixedBatchTrainer.batch is None:
            FixedBatchTrainer.batch = next(iter(super().build_train_loader(cfg)))
        batch = FixedBatchTrainer.batch

        def forever():
            while True:
                yield batch

        return forever()


def test_tiny_config_trains_with_real_loader(image_folder, tmp_path):
    cfg = _cfg(image_folder, tmp_path, "SOLVER.MAX_ITER", "2")
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 2 and all(np.isfinite(losses))
    # SyncBN runs as plain BN in one process; the checkpoint holds online and target weights.
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in trainer.model.modules())
    ckpt = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    keys = ckpt["model"].keys()
    assert any(k.startswith("target.backbone.") for k in keys)
    assert any(k.startswith("roi_heads.box_head.") for k in keys)
    assert ckpt["iteration"] == 1
    trainer_state = ckpt["trainer"]
    assert trainer_state["_trainer"]["optimizer"]["state"]  # LARS momentum buffers
    assert any("LRScheduler" in k for k in trainer_state["hooks"])


def test_few_iterations_reduce_loss_on_fixed_batch(image_folder, tmp_path):
    cfg = _cfg(image_folder, tmp_path, "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "100")
    trainer = FixedBatchTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses



def test_resume_after_kill_matches_uninterrupted(image_folder, tmp_path):
    full = FixedBatchTrainer(_cfg(image_folder, tmp_path / "full", "SOLVER.MAX_ITER", "4"))
    full.resume_or_load(resume=False)
    full.train()

    cfg = _cfg(image_folder, tmp_path / "split", "SOLVER.MAX_ITER", "4")
    killed = FixedBatchTrainer(cfg)
    killed.register_hooks([KillAfter(1)])
    killed.resume_or_load(resume=False)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert os.path.isfile(tmp_path / "split" / "model_0000001.pth")
    resumed = FixedBatchTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    resumed.train()

    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    ha = [v for v, _ in full.storage.history("total_loss").values()]
    hb = [v for v, _ in resumed.storage.history("total_loss").values()]
    assert hb == ha[2:]
