"""Jobs through submitit on CPU, without SLURM: submitit's local executor runs the tasks.

A 2-task tiny SoCo pretraining forms one process group of 2 (rank 0 alone writes checkpoints);
sent SIGUSR2 (what SLURM sends ahead of the time limit) mid-run, the job requeues itself and
the new attempt resumes from last_checkpoint and ends at the final iteration; selective search
as a 2-job array plus a merge gives the cache of one unsharded run. Each job has a hard deadline
(then it is cancelled).
"""
import json
import os
import signal
import time

import numpy as np
import pytest

from _distributed import TINY_SOCO, logged_iterations, tiny_soco_data, tiny_soco_opts

pytestmark = pytest.mark.spawns  # submitit's local executor starts the tasks as processes

submitit = pytest.importorskip("submitit")

from soco_d2.engine.slurm import ToolJob  # noqa: E402

TINY = TINY_SOCO


@pytest.fixture(scope="module")
def soco_data(tmp_path_factory):
    return tiny_soco_data(tmp_path_factory.mktemp("submitit") / "imgs", "submitit_folder")


def _train_args(soco_data, out_dir, max_iter):
    return ["--config-file", TINY, *tiny_soco_opts(soco_data, out_dir, max_iter)]


def _wait(job, timeout: float, until=None):
    """Wait for ``until()`` (default: the job is done); cancel the job and fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (until() if until else job.done()):
        if time.monotonic() > deadline:
            job.cancel()
            raise AssertionError(f"job {job.job_id} not there after {timeout} s:\n"
                                 f"{job.stdout()}\n{job.stderr()}")
        time.sleep(0.2)


def _children(pid: int):
    """Process ids whose parent is ``pid`` (from /proc)."""
    out = []
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/stat") as f:
                if p.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p))
        except OSError:
            pass
    return out


@pytest.mark.timeout(150)
def test_two_tasks_pretrain_one_group_rank0_writes(soco_data, tmp_path, capsys):
    from soco_d2.tools.submit import main

    out = tmp_path / "out"
    start = time.monotonic()
    # what a user runs; --time 2: the local executor stops the tasks after 2 minutes
    assert main(["--cluster", "local", "--folder", str(tmp_path / "jobs" / "%j"), "--time", "2",
                 "--tasks-per-node", "2", "--wait", "train",
                 *map(str, _train_args(soco_data, out, 3))]) == 0, capsys.readouterr().out
    results = json.loads(capsys.readouterr().out.splitlines()[-1])["result"]
    print(f"submit --cluster local, 2 tasks, 3 iterations: {time.monotonic() - start:.1f} s")
    assert sorted(r["rank"] for r in results) == [0, 1], results
    assert "Rank of current process: 0. World size: 2" in (out / "log.txt").read_text()
    assert "Rank of current process: 1. World size: 2" in (out / "log.txt.rank1").read_text()
    files = set(os.listdir(out))
    assert {"model_0000001.pth", "model_final.pth", "last_checkpoint", "metrics.json"} <= files
    assert not {f for f in files if "rank" in f} - {"log.txt.rank1"}, files
    assert len([f for f in files if f.startswith("events.out.tfevents")]) == 1, files
    assert logged_iterations(out)[-1] == 2


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the tasks through /proc")
@pytest.mark.timeout(200)
def test_sigusr2_requeues_and_resumes_from_last_checkpoint(soco_data, tmp_path):
    out = tmp_path / "out"
    executor = submitit.LocalExecutor(tmp_path / "jobs", max_num_timeout=1)
    executor.update_parameters(timeout_min=4, tasks_per_node=2)
    start = time.monotonic()
    job = executor.submit(ToolJob("train_net", _train_args(soco_data, out, 8), distributed=True,
                                  resume_arg="--resume"))
    _wait(job, 120, until=lambda: (out / "last_checkpoint").is_file() or job.done())
    assert not job.done(), f"{job.stdout()}\n{job.stderr()}"
    tasks = _children(job._process.pid)  # the local controller's children: the 2 tasks
    assert len(tasks) == 2, tasks
    for pid in tasks:  # SLURM signals every task of the job
        os.kill(pid, signal.SIGUSR2)
    _wait(job, 150)
    print(f"2 tasks, 8 iterations, one requeue: {time.monotonic() - start:.1f} s")
    assert sorted(r["rank"] for r in job.results()) == [0, 1]
    logs = job.stdout() + job.stderr()
    assert "Requeued job" in logs, logs[-3000:]
    log = (out / "log.txt").read_text()
    resumed = [int(line.rsplit(" ", 1)[1]) for line in log.splitlines()
               if "Starting training from iteration" in line]
    print(f"attempts started at iterations {resumed}")
    assert len(resumed) == 2 and resumed[0] == 0 and resumed[1] >= 2, resumed
    assert logged_iterations(out)[-1] == 7 and (out / "model_final.pth").is_file()
    # the requeued command is the same training with --resume in front
    assert job.submission().function.argv[0] == "--resume"


@pytest.mark.timeout(180)
def test_selective_search_array_then_merge_equals_one_run(tmp_path, capsys):
    import cv2
    import skimage.data

    from soco_d2.data.proposals import ProposalCache, SearchConfig, run_selective_search
    from soco_d2.tools.submit import main, shard_path

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
        img = np.asarray(getattr(skimage.data, name)())[:, :, ::-1]
        img = cv2.resize(img, (96, round(96 * img.shape[0] / img.shape[1])),
                         interpolation=cv2.INTER_AREA)
        assert cv2.imwrite(str(photos / f"{name}.jpg"), img)
    photos = str(photos)
    output = str(tmp_path / "cache.bin")
    assert main(["--cluster", "local", "--folder", str(tmp_path / "jobs" / "%j"), "--time", "3",
                 "selective-search", "--shards", "2", "--input", photos, "--output", output,
                 "--no-progress"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["command"] for x in lines] == ["selective-search shard"] * 2 + [
        "selective-search merge"]
    assert all(os.path.isfile(shard_path(output, i, 2)) for i in range(2))
    run_selective_search(SearchConfig(photos, str(tmp_path / "single.bin"), progress=False))
    merged, single = ProposalCache(output), ProposalCache(str(tmp_path / "single.bin"))
    assert sorted(merged.keys()) == sorted(single.keys()) and len(single) == 5
    for key in single.keys():
        np.testing.assert_array_equal(merged.get(key), single.get(key))
