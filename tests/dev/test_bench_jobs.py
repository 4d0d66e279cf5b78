"""dev/bench_jobs.py: both sets of real trainings run and are reported (no timing asserts)."""
import json
from pathlib import Path

import pytest

from soco_d2.data.demo import generate_demo_dataset
from _paths import REPO_ROOT

pytestmark = pytest.mark.spawns

ROOT = Path(REPO_ROOT)


def test_bench_jobs_runs_both_sets_and_reports_them(tmp_path, monkeypatch, capsys, load_script):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    generate_demo_dataset(str(tmp_path / "datasets/demo"), num_unlabeled=2, num_train=4,
                          num_val=2, image_size=64)
    tiny = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0",
            "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TRAIN", "(64,)",
            "INPUT.MAX_SIZE_TRAIN", "64"]
    out = load_script("dev/bench_jobs.py").main([
        "--config-file", str(ROOT / "configs/demo/mask_rcnn_R18_FPN_demo.yaml"), "--runs", "2",
        "--jobs", "2", "--threads", "2", "--iters", "2", "--output", str(tmp_path / "runs"),
        *tiny,
    ])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    assert (out["one_at_a_time"]["jobs"], out["one_at_a_time"]["threads"]) == (1, 2)
    assert (out["side_by_side"]["jobs"], out["side_by_side"]["threads"]) == (2, 1)
    assert out["speedup"] == out["one_at_a_time"]["wall_s"] / out["side_by_side"]["wall_s"]
    for jobs in (1, 2):
        for seed in (0, 1):
            run = tmp_path / f"runs/jobs{jobs}/seed{seed}"
            assert (run / "model_final.pth").is_file()  # each training ran to its end
            log = (tmp_path / f"runs/jobs{jobs}/seed{seed}.log").read_text()
            assert f"SEED {seed}" in log or f"'SEED', '{seed}'" in log
