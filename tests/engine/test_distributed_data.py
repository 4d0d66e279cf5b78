"""Data across ranks: each process reads its own part of every epoch; seeds differ per rank."""
import os
from pathlib import Path

import pytest

import soco_d2  # noqa: F401  (registers SoCo and its mapper)
from soco_d2.engine import Trainer, load_cfg
from soco_d2.engine.hooks import iteration_seed
from _configs import folder_dataset_opts
from _data import write_proposal_folder
from _distributed import run_distributed

TINY = str(Path(__file__).resolve().parents[2] / "configs/pretrain/soco_R18_FPN_tiny.yaml")
NUM_IMAGES = 8
GLOBAL_BATCH = 4


def _file_names(rank, image_dir, cache, epochs):
    cfg = load_cfg(
        TINY,
        [*folder_dataset_opts("dist_data_test", image_dir, cache),
         "SOLVER.IMS_PER_BATCH", str(GLOBAL_BATCH)],
    )
    loader = iter(Trainer.build_train_loader(cfg))
    per_epoch = NUM_IMAGES // GLOBAL_BATCH  # batches of 2 per rank
    out = []
    for _ in range(epochs):
        names = []
        for _ in range(per_epoch):
            batch = next(loader)
            assert len(batch) == GLOBAL_BATCH // 2
            names += [os.path.basename(d["file_name"]) for d in batch]
        out.append(names)
    return out


@pytest.mark.spawns
@pytest.mark.timeout(120)
def test_each_rank_reads_its_own_part_of_every_epoch(tmp_path):
    image_dir, cache = write_proposal_folder(tmp_path / "imgs", NUM_IMAGES)
    ranks = run_distributed(_file_names, 2, args=(image_dir, cache, 2), timeout=110)
    everything = {f"img_{i}.png" for i in range(NUM_IMAGES)}
    for epoch in range(2):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert len(a) == len(set(a)) == NUM_IMAGES // 2
        assert not set(a) & set(b), (epoch, a, b)  # no image twice within an epoch
        assert set(a) | set(b) == everything
    # A new seeded permutation each epoch (same on both ranks, so still disjoint).
    assert ranks[0][0] + ranks[1][0] != ranks[0][1] + ranks[1][1]


def test_iteration_seeds_differ_per_rank_and_repeat_on_resume():
    seeds = {(r, it): iteration_seed(0, it, r) for r in range(4) for it in range(50)}
    assert len(set(seeds.values())) == len(seeds)
    assert iteration_seed(0, 7, 1) == seeds[(1, 7)]
