"""``soco-d2-submit`` without running jobs: what it submits, with which SLURM options, and the
environment a task gives its command (submitit's executor is replaced by a recorder)."""
import os
import socket

import pytest

submitit = pytest.importorskip("submitit")

from soco_d2.engine.slurm import DIST_ENV, ToolJob  # noqa: E402
from soco_d2.tools import submit  # noqa: E402


class _Job:
    def __init__(self, job_id):
        self.job_id = job_id
        self.paths = submitit.core.utils.JobPaths("/logs", job_id, 0)


class _Executor:
    """Records parameters and submissions like submitit's AutoExecutor on a SLURM cluster."""

    made = []

    def __init__(self, folder, cluster, **kwargs):
        self.cluster, self.kwargs, self.params, self.jobs = cluster, kwargs, {}, []
        _Executor.made.append(self)

    def update_parameters(self, **params):
        self.params.update(params)

    batching = False

    def submit(self, fn):
        """Array tasks get ids 500_0, 500_1, ...; a single job 70N (N: executors made)."""
        self.jobs.append(fn)
        return _Job(f"500_{len(self.jobs) - 1}" if self.batching else f"70{len(_Executor.made)}")

    def batch(self):
        executor = self

        class _Batch:
            def __enter__(self):
                executor.batching = True

            def __exit__(self, *exc):
                executor.batching = False

        return _Batch()


@pytest.fixture()
def recorder(monkeypatch):
    _Executor.made = []
    monkeypatch.setattr(submitit, "AutoExecutor", _Executor)
    return _Executor.made


def test_train_one_task_per_gpu_and_slurm_options(recorder, capsys):
    assert submit.main(["--cluster", "slurm", "--nodes", "2", "--gpus-per-node", "8",
                        "--cpus-per-task", "10", "--partition", "learn", "--time", "4320",
                        "--job-name", "soco", "--slurm-param", "account=abc",
                        "train", "--config-file", "c.yaml", "SOLVER.MAX_ITER", "5"]) == 0
    (ex,) = recorder
    assert ex.params == dict(timeout_min=4320, nodes=2, tasks_per_node=8, gpus_per_node=8,
                             name="soco", slurm_signal_delay_s=120, slurm_array_parallelism=256,
                             cpus_per_task=10, slurm_partition="learn",
                             slurm_additional_parameters={"account": "abc"})
    assert ex.kwargs["slurm_max_num_timeout"] == 3
    (job,) = ex.jobs
    assert (job.tool, job.argv, job.distributed, job.threads) == (
        "train_net", ["--config-file", "c.yaml", "SOLVER.MAX_ITER", "5"], True, 10)
    assert '"job_id": "701"' in capsys.readouterr().out
    # requeued: the same training, resuming (--resume before the KEY VALUE overrides), once
    again = job.checkpoint().function.checkpoint().function
    assert again.argv == ["--resume", "--config-file", "c.yaml", "SOLVER.MAX_ITER", "5"]


def test_refuses_process_counts_in_two_places_and_multi_node_pipelines(recorder):
    with pytest.raises(SystemExit):
        submit.main(["--cluster", "slurm", "--gpus-per-node", "2", "train", "--num-gpus", "2"])
    with pytest.raises(SystemExit):
        submit.main(["--cluster", "slurm", "--nodes", "2", "pipeline", "--output", "o"])
    # one task may let detectron2's launch spawn the processes
    assert submit.main(["--cluster", "slurm", "--gpus-per-node", "4", "--tasks-per-node", "1",
                        "train", "--num-gpus", "4", "--config-file", "c.yaml"]) == 0
    assert recorder[-1].jobs[0].distributed is False


def test_pipeline_is_one_task_rerun_as_is(recorder):
    submit.main(["--cluster", "slurm", "--gpus-per-node", "8", "pipeline", "--preset", "demo",
                 "--output", "out", "--num-gpus", "8"])
    (job,) = recorder[0].jobs
    assert recorder[0].params["tasks_per_node"] == 1 and recorder[0].params["gpus_per_node"] == 8
    assert (job.tool, job.distributed, job.resume_arg) == ("pipeline", False, None)
    assert job.checkpoint().function.argv == job.argv


def test_selective_search_array_then_dependent_merge(recorder, capsys):
    submit.main(["--cluster", "slurm", "--cpus-per-task", "16", "selective-search", "--shards",
                 "3", "--input", "imgs", "--output", "c.bin", "--mode", "fast"])
    shards, merge = recorder
    assert [j.argv for j in shards.jobs] == [
        ["--input", "imgs", "--mode", "fast", "--workers", "16", "--shard", f"{i}/3", "--output",
         f"c.bin.shard-{i}-of-3"] for i in range(3)]
    assert merge.params["slurm_additional_parameters"] == {"dependency": "afterok:500"}
    assert merge.jobs[0].argv == ["--merge", *[f"c.bin.shard-{i}-of-3" for i in range(3)],
                                  "--output", "c.bin"]
    with pytest.raises(SystemExit):
        submit.main(["--cluster", "slurm", "selective-search", "--shards", "2", "--output", "c",
                     "--shard", "0/2"])


def test_task_environment_is_torchruns(monkeypatch):
    for k, v in dict(SUBMITIT_EXECUTOR="local", SUBMITIT_LOCAL_JOB_ID="4242",
                     SUBMITIT_LOCAL_NTASKS="4", SUBMITIT_LOCAL_GLOBALID="3",
                     SUBMITIT_LOCAL_LOCALID="3", SUBMITIT_LOCAL_NODEID="0",
                     SUBMITIT_LOCAL_JOB_NUM_NODES="1").items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    env = ToolJob("train_net", [], distributed=True, threads=6).child_env()
    assert {k: env[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                                "GROUP_RANK", "MASTER_ADDR")} == dict(
        RANK="3", LOCAL_RANK="3", WORLD_SIZE="4", LOCAL_WORLD_SIZE="4", GROUP_RANK="0",
        MASTER_ADDR=socket.gethostname())
    assert env["MASTER_PORT"] == ToolJob("t", [], True).child_env()["MASTER_PORT"]  # job's
    assert env["OMP_NUM_THREADS"] == "6" and env["SOCO_D2_STOP_WITH_PARENT"] == str(os.getpid())
    # anything else never looks like a torchrun process, whatever the task inherited
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not set(DIST_ENV) & set(ToolJob("pipeline", []).child_env())
