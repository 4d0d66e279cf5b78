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
from _configs import folder_dataset_opts
from _data import write_proposal_folder
from _paths import REPO_ROOT as REPO

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
TINY_SOCO = os.path.join(REPO, "configs", "pretrain", "soco_R18_FPN_tiny.yaml")


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


def tiny_soco_data(folder, name: str) -> list:
    """DATASETS overrides for 8 random images with proposals written under ``folder``,
    registered as ``name``."""
    root, cache = write_proposal_folder(folder, 8)
    return folder_dataset_opts(name, root, cache)


def tiny_soco_opts(data: list, out_dir, max_iter: int) -> list:
    """Overrides of a short tiny-SoCo training on ``data`` into ``out_dir``: ``max_iter``
    iterations, a checkpoint every 2, batch 4 over all processes."""
    return [*data, "OUTPUT_DIR", str(out_dir), "SOLVER.MAX_ITER", max_iter,
            "SOLVER.CHECKPOINT_PERIOD", 2, "SOLVER.IMS_PER_BATCH", 4]


_DIE_DRIVER = """
import os, sys, time
sys.path.insert(0, {tools!r})
import train_net
from detectron2.engine import HookBase
from detectron2.utils import comm
from soco_d2.engine import Trainer


class DieOnFirstAttempt(HookBase):
    def after_step(self):
        first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first and comm.get_rank() == 1 and self.trainer.iter == {die_at}:
            with open({stamp!r}, "w") as f:
                f.write(str(time.time()))
            os._exit(3)  # no cleanup, no exception: as if killed


_build_hooks = Trainer.build_hooks
Trainer.build_hooks = lambda self: _build_hooks(self) + [DieOnFirstAttempt()]

if __name__ == "__main__":
    train_net.cli(sys.argv[1:])
"""


def die_driver(tmp_path, die_at: int):
    """A ``tools/train_net.py`` wrapper whose rank 1 calls ``os._exit(3)`` after iteration
    ``die_at``, on the first attempt only (a torchrun restart runs on); returns (script, file
    holding the time it died)."""
    stamp, driver = tmp_path / "died_at", tmp_path / "die_driver.py"
    driver.write_text(
        _DIE_DRIVER.format(tools=os.path.dirname(TRAIN_NET), die_at=die_at, stamp=str(stamp))
    )
    return str(driver), stamp
