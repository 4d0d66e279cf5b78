"""SoCo's loss sequence on the tiny config is pinned across refactors of the data path and engine.

Procedure: 8 random 96x80 images with 5 proposals each, the real loader (no workers), the tiny
SoCo config, 5 iterations at 1 thread, the model built and trained in float64. The same inputs,
random draws and arithmetic must give the same losses: a change in the mapper's draw order, the
views, the model or the optimizer moves them by far more than the tolerance (docs/testing.md
lists the changes tried and how far each moved them).

Why float64: in float32 the sequence depended on the CPU. PyTorch picks vectorised kernels by
instruction set (``ATEN_CPU_CAPABILITY``: ``default``, ``avx2``, ``avx512``; oneDNN by
``ONEDNN_MAX_CPU_ISA``), and they round differently in the last bit: ``normal_`` draws float32
initial weights through a vectorised path on AVX2 and up, and reductions sum in another order.
Five training steps amplify such differences about 1e5-fold (float32: 3e-8 relative at the first
step, 4e-3 at the fifth). float64 initial weights come from the same scalar code on every CPU,
and float64 rounding (1.1e-16) amplified alike stays near 1e-11. Measured across
``ATEN_CPU_CAPABILITY`` default/avx2/avx512, ``ONEDNN_MAX_CPU_ISA=AVX2`` and 1 or 2 threads, the
sequences agree to 1e-15 relative; ``rtol=1e-9`` covers reordering with a wide margin.

``make test-portable`` runs this test under each of those kernel settings.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import soco_d2  # noqa: F401
from soco_d2.engine import Trainer, load_cfg
from _configs import folder_dataset_opts
from _data import write_proposal_folder
from _paths import REPO_ROOT

ROOT = Path(REPO_ROOT)
PINNED = Path(__file__).parent / "data" / "soco_tiny_losses_float64.json"


@pytest.fixture
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.portable
def test_soco_tiny_loss_sequence_is_pinned(tmp_path, float64_default):
    # 8 random images and 5 proposals each (numpy's generator: the same on every CPU)
    images, cache = write_proposal_folder(tmp_path / "golden", 8)
    cfg = load_cfg(
        str(ROOT / "configs/pretrain/soco_R18_FPN_tiny.yaml"),
        [
            *folder_dataset_opts("golden_pin", images, cache),
            "OUTPUT_DIR", str(tmp_path / "out"), "SOLVER.MAX_ITER", "5",
            "SOLVER.CHECKPOINT_PERIOD", "100",
        ],
    )
    torch.set_num_threads(1)
    trainer = Trainer(cfg)
    assert next(trainer.model.parameters()).dtype == torch.float64
    trainer.resume_or_load(resume=False)
    trainer.train()
    pinned = json.loads(PINNED.read_text())
    assert set(pinned) == {"total_loss", "loss_v1_v2", "loss_v1_v3"}
    for key, expected in pinned.items():
        got = [v for v, _ in trainer.storage.history(key).values()]
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0, err_msg=key)
