"""``tools/train_net.py`` with two CPU processes over gloo, as a user runs it.

SoCo pretraining and a detector fine-tune with evaluation on ``--num-gpus 2``; the
two-machine command over loopback; a rank killed mid-run ends the job naming it, and
``--resume`` continues. Every command runs with a hard timeout (its process group is killed).
"""
import json
import os
import time
from pathlib import Path

import pytest

from _distributed import (
    REPO, TINY_SOCO, TRAIN_NET, die_driver, free_port, logged_iterations, run_cli,
    tiny_soco_data, tiny_soco_opts,
)

pytestmark = pytest.mark.spawns

TINY = TINY_SOCO


@pytest.fixture(scope="module")
def soco_data(tmp_path_factory):
    return tiny_soco_data(tmp_path_factory.mktemp("cli") / "imgs", "dist_cli_folder")


def _soco_opts(soco_data, out_dir, max_iter):
    return tiny_soco_opts(soco_data, out_dir, max_iter)


@pytest.mark.timeout(300)
def test_two_processes_pretrain_soco_rank0_writes(soco_data, tmp_path):
    out = tmp_path / "out"
    rc, log, _ = run_cli(
        ["--num-gpus", 2, "--dist-url", "auto", "--config-file", TINY,
         *_soco_opts(soco_data, out, 3)],
        timeout=280,
    )
    assert rc == 0, log[-3000:]
    assert "Launching 2 processes on machine 0/1" in log
    files = set(os.listdir(out))
    assert {"model_0000001.pth", "model_final.pth", "last_checkpoint", "metrics.json",
            "log.txt", "config.yaml"} <= files, files
    # detectron2 gives each other rank its own log file; nothing else is written twice.
    assert not {f for f in files if "rank" in f} - {"log.txt.rank1"}, files
    assert logged_iterations(out)[-1] == 2
    import torch

    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert not any(k.startswith("module.") for k in state["model"])  # no DDP prefix
    assert any(k.startswith("target.") for k in state["model"])


@pytest.mark.timeout(400)
def test_killed_rank_ends_job_naming_it_then_resume_continues(soco_data, tmp_path):
    out = tmp_path / "out"
    driver, stamp = die_driver(tmp_path, die_at=2)
    opts = _soco_opts(soco_data, out, 4)
    common = ["--num-gpus", 2, "--dist-url", "auto", "--dist-timeout", 600, "--config-file", TINY]
    rc, log, _ = run_cli([*common, *opts], timeout=180, script=driver)
    ended = time.time() - float(stamp.read_text())
    print(f"single machine: job ended {ended:.1f} s after rank 1 died")
    assert rc != 0
    assert "Rank 1 (machine 0, local process 1) failed: exit code 3" in log, log[-3000:]
    # Ended by the launcher's watchdog, not by the collective timeout: that is 600 s, so a
    # slow machine's seconds of start-up and teardown cannot be mistaken for it.
    assert ended < 150, ended
    assert (out / "last_checkpoint").read_text().strip() == "model_0000001.pth"

    rc, log, _ = run_cli([*common, "--resume", *opts], timeout=200)
    assert rc == 0, log[-3000:]
    assert "Starting training from iteration 2" in log
    assert (out / "model_final.pth").is_file()


@pytest.mark.timeout(300)
def test_two_machines_over_loopback(soco_data, tmp_path):
    url = f"tcp://127.0.0.1:{free_port()}"
    import threading

    results = {}

    def machine(rank, out_dir):
        results[rank] = run_cli(
            ["--num-gpus", 1, "--num-machines", 2, "--machine-rank", rank, "--dist-url", url,
             "--config-file", TINY, *_soco_opts(soco_data, out_dir, 2)],
            timeout=250,
        )

    # Machine 1 gets its own OUTPUT_DIR to show that it writes nothing but its log there.
    threads = [threading.Thread(target=machine, args=(r, tmp_path / f"m{r}")) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=280)
    for r in (0, 1):
        assert results[r][0] == 0, results[r][1][-3000:]
    assert "model_final.pth" in os.listdir(tmp_path / "m0")
    assert logged_iterations(tmp_path / "m0")[-1] == 1
    assert os.listdir(tmp_path / "m1") == ["log.txt.rank1"]


@pytest.mark.timeout(400)
def test_two_processes_finetune_detector_and_evaluate(tmp_path):
    from soco_d2.data.demo import generate_demo_dataset

    root = str(tmp_path / "demo")
    generate_demo_dataset(root, num_unlabeled=0, num_train=4, num_val=4, image_size=96, seed=1)
    ann = os.path.join(root, "annotations")
    out = tmp_path / "out"
    opts = [
        "DATASETS.SSL.REGISTER",
        f"('dist_ft_train=coco:{ann}/instances_train.json:{root}/train',"
        f"'dist_ft_val=coco:{ann}/instances_val.json:{root}/val')",
        "DATASETS.TRAIN", "('dist_ft_train',)", "DATASETS.TEST", "('dist_ft_val',)",
        "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.ROI_BOX_HEAD.CONV_DIM", 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
        "MODEL.ROI_HEADS.NUM_CLASSES", 6, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
        "MODEL.RPN.POST_NMS_TOPK_TEST", 32, "INPUT.MIN_SIZE_TRAIN", "(96,)",
        "INPUT.MAX_SIZE_TRAIN", 128, "INPUT.MIN_SIZE_TEST", 96, "INPUT.MAX_SIZE_TEST", 128,
        "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 0.001,
        "SOLVER.MAX_ITER", 2, "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", 1,
        "SOLVER.CHECKPOINT_PERIOD", 1000, "TEST.PRECISE_BN.NUM_ITER", 1, "OUTPUT_DIR", out,
    ]
    config = str(Path(REPO) / "configs/coco/Base-RCNN-FPN-SSL.yaml")
    rc, log, _ = run_cli(
        ["--num-gpus", 2, "--dist-url", "auto", "--config-file", config, *opts], timeout=380
    )
    assert rc == 0, log[-3000:]
    with open(out / "metrics.json") as f:
        last = [json.loads(line) for line in f if line.strip()][-1]
    for task in ("bbox", "segm"):
        assert 0.0 <= last[f"{task}/AP"] <= 100.0, last
    # Evaluation gathered both ranks' predictions (2 val images each) on rank 0.
    with open(out / "inference" / "coco_instances_results.json") as f:
        image_ids = {p["image_id"] for p in json.load(f)}
    assert len(image_ids) == 4, image_ids


@pytest.mark.timeout(300)
def test_two_machines_a_dead_machine_ends_the_other(soco_data, tmp_path):
    import threading

    url = f"tcp://127.0.0.1:{free_port()}"
    driver, stamp = die_driver(tmp_path, die_at=1)
    results = {}

    def machine(rank):
        results[rank] = run_cli(
            ["--num-gpus", 1, "--num-machines", 2, "--machine-rank", rank, "--dist-url", url,
             "--dist-timeout", 600, "--config-file", TINY,
             *_soco_opts(soco_data, tmp_path / "out", 4)],
            timeout=250, script=driver if rank == 1 else TRAIN_NET,
        )

    threads = [threading.Thread(target=machine, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=280)
    rc0, log0, _ = results[0]
    rc1, log1, _ = results[1]
    assert rc1 != 0 and "Rank 1 (machine 1, local process 0) failed: exit code 3" in log1, log1
    # Machine 0 only sees its peer vanish: its rank fails on the lost connection, well
    # before the 600 s collective timeout.
    assert rc0 != 0 and "Rank 0 (machine 0, local process 0) failed:" in log0, log0[-3000:]
    assert "Connection" in log0 or "closed" in log0, log0[-3000:]
    ended = os.path.getmtime(tmp_path / "out" / "log.txt") - float(stamp.read_text())
    print(f"two machines: machine 0's log ended {ended:.1f} s after machine 1 died")
    assert ended < 200, ended
