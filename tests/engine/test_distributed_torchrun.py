"""``tools/train_net.py`` started by torchrun (``python -m torch.distributed.run``) on CPU, gloo.

Two processes on one node form one group of two (not two trainings of one); two "nodes" over
loopback meet through the c10d rendezvous; with ``--max-restarts 1`` a worker that dies mid-run
is restarted with its group, which resumes from the last checkpoint by itself and ends at the
same final iteration. Every command runs with a hard timeout (its process group is killed).
"""
import os
import threading
import time

import pytest

from _distributed import (
    TINY_SOCO, die_driver, free_port, logged_iterations, run_torchrun, tiny_soco_data,
    tiny_soco_opts,
)

from soco_d2.engine.launch import launch
from soco_d2.engine.torchrun import restart_count, torchrun_env

TINY = TINY_SOCO


@pytest.fixture(scope="module")
def soco_data(tmp_path_factory):
    return tiny_soco_data(tmp_path_factory.mktemp("torchrun") / "imgs", "torchrun_folder")


def _train_args(soco_data, out_dir, max_iter):
    return ["--config-file", TINY, *tiny_soco_opts(soco_data, out_dir, max_iter)]


def test_torchrun_environment_is_read():
    env = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
           "GROUP_RANK": "1", "TORCHELASTIC_RESTART_COUNT": "2", "MASTER_ADDR": "h",
           "MASTER_PORT": "29500"}
    run = torchrun_env(env)
    assert (run.rank, run.local_rank, run.world_size, run.local_world_size, run.node_rank,
            run.restart_count, run.master) == (3, 1, 4, 2, 1, 2, "h:29500")
    assert restart_count(env) == 2
    assert torchrun_env({"RANK": "0"}) is None and restart_count({}) == 0
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        torchrun_env({"LOCAL_RANK": "0", "WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="inconsistent"):
        torchrun_env({"LOCAL_RANK": "0", "RANK": "2", "WORLD_SIZE": "2"})


def test_torchrun_with_num_gpus_is_refused(monkeypatch):
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="give the process counts to torchrun.*--num-gpus 2"):
        launch(print, 2, dist_url="auto")


@pytest.mark.spawns
@pytest.mark.timeout(300)
def test_torchrun_two_processes_form_one_group(soco_data, tmp_path):
    out = tmp_path / "out"
    rc, log, secs = run_torchrun(
        ["--nproc_per_node", 2, "--master_addr", "127.0.0.1", "--master_port", free_port()],
        _train_args(soco_data, out, 3), timeout=280,
    )
    print(f"torchrun, 2 processes, 3 iterations: {secs:.1f} s")
    assert rc == 0, log[-3000:]
    assert "Rank of current process: 0. World size: 2" in log, log[-3000:]
    assert "World size: 1" not in log
    assert "Rank of current process: 1. World size: 2" in (out / "log.txt.rank1").read_text()
    files = set(os.listdir(out))
    assert {"model_0000001.pth", "model_final.pth", "last_checkpoint", "metrics.json",
            "log.txt", "config.yaml"} <= files, files
    # rank 0 writes everything once; rank 1 only its log
    assert len([f for f in files if f.startswith("events.out.tfevents")]) == 1, files
    assert not {f for f in files if "rank" in f} - {"log.txt.rank1"}, files
    assert logged_iterations(out)[-1] == 2


@pytest.mark.spawns
@pytest.mark.timeout(300)
def test_torchrun_two_nodes_c10d_rendezvous_over_loopback(soco_data, tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    out = tmp_path / "out"  # one folder "both nodes see"
    results = {}

    def node(i):
        results[i] = run_torchrun(
            ["--nnodes", 2, "--nproc_per_node", 1, "--rdzv-backend", "c10d",
             "--rdzv-endpoint", endpoint, "--rdzv-id", "soco_d2_test"],
            _train_args(soco_data, out, 2), timeout=250,
        )

    threads = [threading.Thread(target=node, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=280)
    for i in (0, 1):
        assert results[i][0] == 0, results[i][1][-3000:]
    logs = results[0][1] + results[1][1]
    assert "Rank of current process: 0. World size: 2" in logs, logs[-3000:]
    assert "World size: 1" not in logs
    assert "Rank of current process: 1. World size: 2" in (out / "log.txt.rank1").read_text()
    assert "model_final.pth" in os.listdir(out)
    assert logged_iterations(out)[-1] == 1


@pytest.mark.spawns
@pytest.mark.timeout(400)
def test_torchrun_restart_resumes_from_last_checkpoint(soco_data, tmp_path):
    driver, stamp = die_driver(tmp_path, die_at=2)
    out = tmp_path / "out"
    start = time.time()
    rc, log, secs = run_torchrun(
        ["--standalone", "--nproc_per_node", 2, "--max-restarts", 1],
        # no --resume: the restarted group must find the checkpoint by itself
        ["--dist-timeout", 60, *_train_args(soco_data, out, 4)], timeout=380, script=str(driver),
    )
    print(f"torchrun with one restart, 4 iterations: {secs:.1f} s")
    assert rc == 0, log[-4000:]
    assert float(stamp.read_text()) > start  # rank 1 did die in the first attempt
    assert "torchrun restart 1: resuming from" in log, log[-4000:]
    # the checkpoint of iteration 1 (period 2) was the last one before the death after 2
    assert "Starting training from iteration 2" in log, log[-4000:]
    assert (out / "model_final.pth").is_file()
    assert logged_iterations(out)[-1] == 3  # the same final iteration as an uninterrupted run
    import torch

    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 3
