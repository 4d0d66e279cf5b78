"""Run a function in N local CPU processes joined by a gloo process group, with a hard timeout.

Workers must live in an importable module (this one or a test module): ``spawn`` pickles them
by name. Each worker returns a picklable value, which comes back through ``torch.save`` files.
"""
import os
import socket
import sys
import tempfile
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from soco_d2.engine.launch import _hard_exit
from _data import write_proposal_folder as make_image_folder  # noqa: F401  (its old name)
from _paths import REPO_ROOT as REPO

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, fn, world_size, port, out_dir, args):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=world_size, rank=rank,
        timeout=timedelta(seconds=60),
    )
    result = fn(rank, *args)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    # End as the launcher's workers do: no destroy_process_group() (with gloo it can wait for a
    # peer that has already exited) and no interpreter teardown, during which gloo's threads
    # can abort the process ("terminate called without an active exception", SIGABRT).
    _hard_exit(0)


def run_distributed(fn, world_size: int = 2, args=(), timeout: float = 120.0):
    """``[fn(rank, *args) for rank in range(world_size)]``, each in its own process.

    Raises if a process fails or the group is not done within ``timeout`` seconds (the
    processes are then killed).
    """
    with tempfile.TemporaryDirectory() as out_dir:
        ctx = mp.start_processes(
            _entry,
            nprocs=world_size,
            args=(fn, world_size, free_port(), out_dir, tuple(args)),
            join=False,
            start_method="spawn",
        )
        try:
            import time

            deadline = time.monotonic() + timeout
            while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"distributed workers still running after {timeout} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join()
        return [
            torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False)
            for r in range(world_size)
        ]


def subprocess_env(**extra) -> dict:
    """Environment for a ``tools/train_net.py`` subprocess: 1 thread, the repo importable."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({k: str(v) for k, v in extra.items()})
    return env


PYTHON = sys.executable


def logged_iterations(out_dir) -> list:
    """The iterations a training recorded in ``out_dir/metrics.json`` (rank 0 writes it)."""
    import json

    with open(os.path.join(out_dir, "metrics.json")) as f:
        return [json.loads(line)["iteration"] for line in f if line.strip()]


def run_cli(argv, timeout: float, env=None, script: str = TRAIN_NET):
    """Run ``python script argv...`` in its own process group; kill the whole group (spawned
    training processes included) if it is not done within ``timeout`` seconds.

    Returns:
        ``(returncode, stdout + stderr, seconds)``.
    """
    import signal
    import subprocess
    import time

    start = time.monotonic()
    proc = subprocess.Popen(
        [PYTHON, script, *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env or subprocess_env(),
        cwd=REPO,
        start_new_session=True,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{script} {argv} still running after {timeout} s:\n{out[-4000:]}")
    finally:
        try:  # leftovers of a failed job (there should be none)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, out, time.monotonic() - start


def run_torchrun(torchrun_args, argv, timeout: float, env=None, script: str = TRAIN_NET):
    """``python -m torch.distributed.run TORCHRUN_ARGS script ARGV``, as :func:`run_cli` runs a
    script (own process group, killed whole after ``timeout`` seconds).

    Returns:
        ``(returncode, stdout + stderr, seconds)``.
    """
    argv = ["torch.distributed.run", *map(str, torchrun_args), script, *map(str, argv)]
    return run_cli(argv, timeout, env=env, script="-m")
