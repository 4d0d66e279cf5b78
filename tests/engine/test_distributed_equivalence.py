"""2 processes x batch b train SoCo exactly like 1 process x batch 2b (gloo, CPU).

Both runs see the same images: one global batch of ``random_soco_batch``, sliced by rank.
Synchronised BN makes the statistics those of the global batch, DDP averages the gradients,
and SoCo's loss is a mean over images, so the 1-process loss is the mean of the ranks' losses
and every weight, BN buffer, target weight and LARS momentum agrees up to reduction order.
Both runs are in float64: in float32 the reordering differences depend on the CPU's kernels
(docs/testing.md), and a tolerance wide enough for every CPU would hide real differences.
"""
from pathlib import Path

import pytest
import torch
from detectron2.utils import comm

import soco_d2  # noqa: F401  (registers SoCo)
from soco_d2.engine import Trainer, load_cfg
from soco_d2.engine.hooks import unwrap_model
from _data import random_soco_batch
from _distributed import run_distributed

pytestmark = pytest.mark.spawns

TINY = str(Path(__file__).resolve().parents[2] / "configs/pretrain/soco_R18_FPN_tiny.yaml")
GLOBAL_BATCH = 4
STEPS = 3
# Tolerances: float64 sums taken in another order (per-rank partial sums, then the
# all-reduce). Measured with every ATen kernel set (ATEN_CPU_CAPABILITY default and avx512):
# losses agree exactly, weights, BN buffers, target and LARS momenta to 1.2e-14 absolute.
# Per-rank (unsynchronised) BN instead moves the losses by 1e-2 relative, and a float32
# statistic inside synchronised BN moved the weights by 2e-3.
LOSS_TOL = dict(rtol=1e-12, atol=0.0)
TOL = dict(rtol=1e-9, atol=1e-10)


class RankSliceTrainer(Trainer):
    """Feeds this rank's slice of one fixed global batch at every iteration."""

    @classmethod
    def build_train_loader(cls, cfg):
        batch = random_soco_batch(cfg, batch_size=GLOBAL_BATCH, seed=0)
        per_rank = GLOBAL_BATCH // comm.get_world_size()
        part = batch[comm.get_rank() * per_rank : (comm.get_rank() + 1) * per_rank]

        def forever():
            while True:
                yield part

        return forever()


def _train(rank, out_dir):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _train_float64(rank, out_dir)
    finally:
        torch.set_default_dtype(previous)


def _train_float64(rank, out_dir):
    cfg = load_cfg(
        TINY,
        [
            "OUTPUT_DIR", str(out_dir),
            "SOLVER.MAX_ITER", str(STEPS),
            "SOLVER.IMS_PER_BATCH", str(GLOBAL_BATCH),
            "SOLVER.CHECKPOINT_PERIOD", "1000",
        ],
        register=False,
    )
    trainer = RankSliceTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = unwrap_model(trainer.model)
    assert next(model.parameters()).dtype == torch.float64
    losses = [v for v, _ in trainer.storage.history("total_loss").values()] if rank == 0 else []
    return dict(
        state={k: v.detach().clone() for k, v in model.state_dict().items()},
        optimizer=trainer.optimizer.state_dict()["state"],
        losses=losses,
        ddp=type(trainer.model).__name__,
    )


@pytest.mark.portable
@pytest.mark.timeout(240)
def test_two_processes_match_one_process_with_double_batch(tmp_path):
    two = run_distributed(_train, 2, args=(tmp_path / "two",), timeout=220)
    one = _train(0, tmp_path / "one")

    assert two[0]["ddp"] == "DistributedDataParallel" and one["ddp"] != two[0]["ddp"]
    assert len(one["losses"]) == STEPS
    # Rank 0 logs the mean of the ranks' losses = the loss of the whole batch.
    torch.testing.assert_close(
        torch.tensor(two[0]["losses"]), torch.tensor(one["losses"]), **LOSS_TOL
    )
    assert one["losses"][-1] != one["losses"][0]  # it trained

    ref = one["state"]
    assert any(k.startswith("target.") for k in ref)
    assert any(k.endswith("running_var") for k in ref)
    for r in two:
        assert r["state"].keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(r["state"][k], ref[k], **TOL, msg=k)
        assert r["optimizer"].keys() == one["optimizer"].keys()
        for i, s in one["optimizer"].items():
            for name, v in s.items():
                torch.testing.assert_close(r["optimizer"][i][name], v, **TOL, msg=f"{i}.{name}")
    # The ranks are bit-identical to each other (same all-reduced values everywhere).
    for k in ref:
        torch.testing.assert_close(two[0]["state"][k], two[1]["state"][k], rtol=0, atol=0, msg=k)
