"""SoCo's loss sequence on the tiny config is pinned across refactors of the data path and engine.

``data/soco_tiny_losses.json`` was recorded with the code before the method-neutral refactor
(commit 304d4e2: SoCoDatasetMapper in soco_d2/data/mapper.py, keys under MODEL.SOCO /
INPUT.SOCO), by this same procedure: 8 random 96x80 images with 5 proposals each, the real
loader (no workers), 5 iterations at 1 thread. The same inputs, random draws and arithmetic must
give the same losses: any change in the mapper's draw order, the views, the model or the
optimizer shows up here.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import torch

import soco_d2  # noqa: F401
from soco_d2.data.proposals.cache import write_cache
from soco_d2.engine import Trainer, load_cfg

ROOT = Path(__file__).resolve().parents[2]
PINNED = Path(__file__).parent / "data" / "soco_tiny_losses.json"


def test_soco_tiny_loss_sequence_is_pinned(tmp_path):
    images = tmp_path / "golden"
    images.mkdir()
    rng = np.random.default_rng(0)
    entries = {}
    for i in range(8):
        cv2.imwrite(str(images / f"img_{i}.png"), rng.integers(0, 256, (80, 96, 3), dtype=np.uint8))
        xy, wh = rng.uniform(0, 40, (5, 2)), rng.uniform(20, 40, (5, 2))
        entries[f"img_{i}.png"] = dict(
            boxes=np.concatenate([xy, xy + wh], 1).astype(np.float32), width=96, height=80,
            rule="test",
        )
    cache = f"{images}_proposals.bin"
    write_cache(cache, entries)
    cfg = load_cfg(
        str(ROOT / "configs/pretrain/soco_R18_FPN_tiny.yaml"),
        [
            "DATASETS.TRAIN", "('golden_pin',)",
            "DATASETS.SSL.REGISTER", f"('golden_pin=folder:{images}:{cache}',)",
            "OUTPUT_DIR", str(tmp_path / "out"), "SOLVER.MAX_ITER", "5",
            "SOLVER.CHECKPOINT_PERIOD", "100",
        ],
    )
    torch.set_num_threads(1)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    pinned = json.loads(PINNED.read_text())
    for key, expected in pinned.items():
        got = [v for v, _ in trainer.storage.history(key).values()]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=key)
