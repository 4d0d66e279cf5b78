"""soco_d2.engine.launch: gloo on CPU, threads per process, timeout, a failed rank is named."""
import json
import os
from datetime import timedelta

import pytest
import torch

from soco_d2.engine.launch import (
    TIMEOUT_ENV,
    DistributedJobError,
    launch,
    resolve_timeout,
    threads_per_process,
)


def test_threads_per_process_shares_the_cores():
    assert threads_per_process(2, cores=16) == 8
    assert threads_per_process(3, cores=16) == 5
    assert threads_per_process(4, cores=2) == 1  # never 0
    assert threads_per_process(1, cores=2) == 2


def test_timeout_from_argument_env_or_default(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert resolve_timeout() == timedelta(minutes=30)
    assert resolve_timeout(5) == timedelta(seconds=5)
    monkeypatch.setenv(TIMEOUT_ENV, "90")
    assert resolve_timeout() == timedelta(seconds=90)
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=TIMEOUT_ENV):
        resolve_timeout()
    with pytest.raises(ValueError, match="--dist-timeout"):
        resolve_timeout(0)


def test_bad_launch_arguments_are_named():
    with pytest.raises(ValueError, match="--machine-rank 2"):
        launch(print, 1, num_machines=2, machine_rank=2, dist_url="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="auto works on one machine"):
        launch(print, 1, num_machines=2, machine_rank=0, dist_url="auto")


def _report(out_dir):
    import torch.distributed as dist
    from detectron2.utils import comm

    with open(os.path.join(out_dir, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump(
            dict(
                world=comm.get_world_size(), local=comm.get_local_rank(),
                backend=dist.get_backend(), threads=torch.get_num_threads(),
                omp=os.environ.get("OMP_NUM_THREADS"),
            ),
            f,
        )


def _fail_on_rank1(out_dir):
    from detectron2.utils import comm

    comm.synchronize()
    if comm.get_rank() == 1:
        raise RuntimeError("boom on purpose")
    comm.synchronize()  # rank 0 waits here until terminated


@pytest.mark.spawns
@pytest.mark.timeout(120)
def test_launch_runs_gloo_processes_with_their_thread_share(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    launch(_report, 2, dist_url="auto", args=(str(tmp_path),), num_threads=1)
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["world"] == 2 and r["local"] == rank and r["backend"] == "gloo"
        assert r["threads"] == 1 and r["omp"] == "1"


@pytest.mark.spawns
@pytest.mark.timeout(120)
def test_failed_rank_ends_the_job_and_is_named(tmp_path):
    with pytest.raises(DistributedJobError, match=r"Rank 1 \(machine 0, local process 1\)") as e:
        launch(_fail_on_rank1, 2, dist_url="auto", args=(str(tmp_path),), num_threads=1,
               timeout=timedelta(seconds=60))
    assert "boom on purpose" in str(e.value)
    assert "rank 0: killed by SIGTERM" in str(e.value) or "rank 0: exit code" in str(e.value)


class _ExitsBetweenReads:
    """A finished process whose first ``exitcode`` read still says "running" (the exit lands
    between two reads, as it can for a real process)."""

    def __init__(self, code):
        self._reads, self._code = 0, code
        r, w = os.pipe()
        os.close(w)  # a dead process's sentinel: always ready
        self.sentinel = r

    @property
    def exitcode(self):
        self._reads += 1
        return None if self._reads == 1 else self._code

    def join(self, timeout=None):
        pass

    def is_alive(self):
        return False


def test_watch_does_not_miss_an_exit_between_two_reads(tmp_path):
    from soco_d2.engine.launch import _watch

    with pytest.raises(DistributedJobError, match=r"Rank 3 \(machine 1, local process 0\) failed: "
                       r"exit code 7"):
        _watch([_ExitsBetweenReads(7)], str(tmp_path), first_rank=3, machine_rank=1, grace_s=0)
    _watch([_ExitsBetweenReads(0)], str(tmp_path), first_rank=0, machine_rank=0)  # success
