"""Start one training process per device (or per CPU share) on each machine.

detectron2's ``launch`` with three additions, each needed on CPU and useful at scale:

- **Backend**: NCCL when CUDA is available, else gloo, as detectron2; a CPU model then trains
  through ``soco_d2.engine.distributed.create_ddp_model``.
- **Timeout**: every collective of the process group fails after ``timeout`` (default 30 min,
  ``--dist-timeout`` or ``$SOCO_D2_DIST_TIMEOUT`` in seconds) instead of waiting forever for a
  rank that hangs; a rank that dies closes its sockets, and gloo fails the peers' next
  collective at once.
- **Faults**: when a local process exits with a non-zero status (an exception, ``os._exit``, a
  signal), the others get a few seconds to fail on their own, are then terminated, and
  :class:`DistributedJobError` names the global rank that caused it (not one that merely lost
  its connection to it) and how every local process ended; the command exits non-zero. Every
  process ends with ``os._exit`` after flushing its logs: tearing down a gloo process group
  (explicitly or at interpreter exit) can wait until the timeout for a peer that is gone.
- **torchrun**: a process that torchrun started (``LOCAL_RANK`` and ``WORLD_SIZE`` in its
  environment, ``soco_d2.engine.torchrun``) spawns nothing: it joins one process group over
  ``env://`` (``MASTER_ADDR`` / ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``) and runs the same
  per-process code as a spawned worker. torchrun watches and restarts the processes itself.
- **Threads**: each process gets ``max(1, cores // local processes)`` intra-op threads
  (``torch.set_num_threads`` and ``OMP_NUM_THREADS``), so processes sharing a machine do not
  each start one thread per core and slow each other down. ``--threads-per-process`` or an
  ``OMP_NUM_THREADS`` set by the user wins.
"""
import argparse
import logging
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from typing import Callable, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

from .torchrun import run_torchrun_process, torchrun_env

__all__ = [
    "DEFAULT_TIMEOUT",
    "TIMEOUT_ENV",
    "DistributedJobError",
    "add_launch_arguments",
    "resolve_timeout",
    "threads_per_process",
    "launch",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)
# Seconds; read when no timeout is passed explicitly.
TIMEOUT_ENV = "SOCO_D2_DIST_TIMEOUT"


class DistributedJobError(RuntimeError):
    """A process of a multi-process job failed; the others were terminated."""


def resolve_timeout(seconds: Optional[float] = None) -> timedelta:
    """The process-group timeout: ``seconds``, else ``$SOCO_D2_DIST_TIMEOUT``, else 30 min.

    Raises:
        ValueError: a non-positive or unparsable value (naming where it came from).
    """
    source = "--dist-timeout"
    if seconds is None:
        raw = os.environ.get(TIMEOUT_ENV, "").strip()
        if not raw:
            return DEFAULT_TIMEOUT
        source = f"${TIMEOUT_ENV}"
        try:
            seconds = float(raw)
        except ValueError:
            raise ValueError(f"{source} must be a number of seconds, got {raw!r}") from None
    if not seconds > 0:
        raise ValueError(f"{source} must be > 0 seconds, got {seconds}")
    return timedelta(seconds=float(seconds))


def threads_per_process(num_local_processes: int, cores: Optional[int] = None) -> int:
    """Intra-op threads for each of ``num_local_processes`` processes on one machine.

    Args:
        num_local_processes: processes started on this machine.
        cores: usable cores; default the CPUs this process may run on.

    Returns:
        ``max(1, cores // num_local_processes)``.
    """
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, int(cores or 1) // max(1, int(num_local_processes)))


def add_launch_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--dist-timeout`` and ``--threads-per-process`` to detectron2's argument parser."""
    parser.add_argument(
        "--dist-timeout",
        type=float,
        default=None,
        help=f"seconds a collective may wait for the other ranks before the job fails "
        f"(default ${TIMEOUT_ENV} or 1800)",
    )
    parser.add_argument(
        "--threads-per-process",
        type=int,
        default=None,
        help="intra-op CPU threads of each training process "
        "(default $OMP_NUM_THREADS, else cores // processes on this machine)",
    )
    return parser


def _set_threads(threads: int) -> None:
    # Children read OMP_NUM_THREADS (data loader workers, subprocesses); torch reads it only at
    # start, hence also set_num_threads.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _hard_exit(code: int) -> None:
    # Flush what this process wrote, then skip the interpreter's teardown: destroying a gloo
    # process group (explicitly or at exit) can wait until the timeout for a peer that is gone.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream must not keep the process alive
            pass
    os._exit(code)


def _worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_local: int,
    machine_rank: int,
    dist_url: str,
    args: Sequence,
    timeout: timedelta,
    threads: int,
    error_dir: str,
) -> None:
    try:
        _set_threads(threads)
        global_rank = machine_rank * num_local + local_rank
        _join_and_run(local_rank, global_rank, main_func, world_size, num_local, dist_url, args,
                      timeout)
    except BaseException:  # KeyboardInterrupt and SystemExit included: the launcher must know
        with open(os.path.join(error_dir, f"{local_rank}.txt"), "w") as f:
            f.write(traceback.format_exc())
        _hard_exit(1)
    _hard_exit(0)


def _join_and_run(local_rank, global_rank, main_func, world_size, num_local, dist_url, args,
                  timeout, store=None) -> None:
    # Shared by spawned workers and torchrun's processes (which pass the store they met in).
    has_gpu = torch.cuda.is_available()
    if has_gpu and num_local > torch.cuda.device_count():
        raise RuntimeError(
            f"{num_local} processes on this machine (--num-gpus, or torchrun's --nproc_per_node) "
            f"but only {torch.cuda.device_count()} CUDA devices are visible"
        )
    try:
        dist.init_process_group(
            backend="nccl" if has_gpu else "gloo",
            init_method=None if store is not None else dist_url,
            store=store,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception:
        logger.error("Could not join the process group at %s as rank %d", dist_url, global_rank)
        raise
    comm.create_local_process_group(num_local)
    if has_gpu:
        torch.cuda.set_device(local_rank)
    # Everyone has joined before any work: a slow starter cannot trip the first collective.
    comm.synchronize()
    main_func(*args)


def _describe(exitcode: Optional[int]) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Sequence = (),
    timeout: Optional[timedelta] = None,
    num_threads: Optional[int] = None,
) -> None:
    """Run ``main_func(*args)`` in ``num_gpus_per_machine`` processes on this machine.

    Call it on every machine with the same ``dist_url`` and ``num_machines``; global rank is
    ``machine_rank * num_gpus_per_machine + local_rank``. One process in all runs
    ``main_func`` here, without a process group.

    In a process started by torchrun (``soco_d2.engine.torchrun.torchrun_env``) nothing is
    spawned: this process joins torchrun's process group over ``env://`` and runs
    ``main_func``, then ends with its exit status (0, or 1 after printing the error). The
    process counts are torchrun's (``--nproc_per_node``, ``--nnodes``): ``num_gpus_per_machine``
    and ``num_machines`` must be left at 1 and ``dist_url`` is not used.

    Args:
        main_func: the per-process entry point (must be importable: it is pickled by name).
        num_gpus_per_machine: processes on this machine (one per GPU; any number on CPU).
        num_machines: machines in the job.
        machine_rank: this machine's index, 0 for the one serving ``dist_url``.
        dist_url: ``tcp://HOST:PORT`` of machine 0, or "auto" (a free local port, one
            machine only).
        args: arguments of ``main_func``.
        timeout: process-group timeout; None -> :func:`resolve_timeout`.
        num_threads: intra-op threads per process; None -> ``$OMP_NUM_THREADS`` if set, else
            :func:`threads_per_process`.

    Raises:
        DistributedJobError: a local process failed (the message names its global rank).
        ValueError: bad process counts, or any under torchrun.
    """
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"--num-gpus ({num_gpus_per_machine}) and --num-machines ({num_machines}) must be >= 1"
        )
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"--machine-rank {machine_rank} must be in [0, {num_machines})")
    run = torchrun_env()
    if run is not None and (num_gpus_per_machine, num_machines, machine_rank) != (1, 1, 0):
        raise ValueError(
            f"started by torchrun (rank {run.rank} of {run.world_size}): give the process counts "
            "to torchrun (--nproc_per_node, --nnodes, --node_rank), not --num-gpus "
            f"{num_gpus_per_machine} / --num-machines {num_machines} / --machine-rank "
            f"{machine_rank}, which would start processes within each of torchrun's"
        )
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1 and run is None:
        if num_threads:
            _set_threads(num_threads)
        main_func(*args)
        return
    if num_threads is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        num_threads = int(os.environ["OMP_NUM_THREADS"])
    timeout = timeout if timeout is not None else resolve_timeout()
    if run is not None:
        threads = num_threads or threads_per_process(run.local_world_size)
        run_torchrun_process(run, main_func, args, timeout, threads)
        return
    threads = num_threads or threads_per_process(num_gpus_per_machine)
    if not dist_url:
        raise ValueError("--dist-url is required for a multi-process job (or 'auto')")
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto works on one machine only; give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    logger.info(
        "Launching %d processes on machine %d/%d (%d threads each, timeout %s) at %s",
        num_gpus_per_machine, machine_rank, num_machines, threads, timeout, dist_url,
    )
    error_dir = tempfile.mkdtemp(prefix="soco_d2_launch_")
    try:
        ctx = mp.start_processes(
            _worker,
            nprocs=num_gpus_per_machine,
            args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args,
                  timeout, threads, error_dir),
            daemon=False,
            join=False,
            start_method="spawn",
        )
        _watch(ctx.processes, error_dir, machine_rank * num_gpus_per_machine, machine_rank)
    finally:
        shutil.rmtree(error_dir, ignore_errors=True)


# A rank that only lost its peers fails with one of these; the rank that caused it does not.
_PEER_FAILURE_MARKERS = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Timed out waiting",
    "DistBackendError",
    "NCCL communicator was aborted",
)


def _error_text(error_dir: str, index: int) -> str:
    path = os.path.join(error_dir, f"{index}.txt")
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        return f.read()


def _watch(procs, error_dir: str, first_rank: int, machine_rank: int, grace_s: float = 5.0):
    """Wait for the local processes; on the first non-zero exit, give the others ``grace_s``
    to fail on their own, terminate the rest, and raise naming the rank that caused it."""
    failed: List[int] = []  # local indices, in the order their exits were seen
    while True:
        # One snapshot per round: deciding on two reads of ``exitcode`` races with an exit.
        codes = [p.exitcode for p in procs]
        failed += [i for i, c in enumerate(codes) if c not in (None, 0) and i not in failed]
        if failed or all(c is not None for c in codes):
            break
        # An exit after the snapshot makes its sentinel ready: no exit is missed.
        multiprocessing.connection.wait(
            [p.sentinel for p, c in zip(procs, codes) if c is None], timeout=5.0
        )
    if not failed:
        return
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()
    failed += [i for i, p in enumerate(procs) if p.exitcode != 0 and i not in failed]
    errors = {i: _error_text(error_dir, i) for i in failed}
    # The cause: the first failure that is not a lost connection to a peer (a process killed
    # by a signal or os._exit has no error text), else the first failure seen.
    cause = next(
        (i for i in failed if not any(m in errors[i] for m in _PEER_FAILURE_MARKERS)), failed[0]
    )
    p = procs[cause]
    detail = errors[cause].strip() or _describe(p.exitcode)
    states = ", ".join(
        f"rank {first_rank + i}: {_describe(q.exitcode)}"
        + (f" ({errors[i].strip().splitlines()[-1][:200]})" if errors.get(i) and i != cause else "")
        for i, q in enumerate(procs)
    )
    raise DistributedJobError(
        f"Rank {first_rank + cause} (machine {machine_rank}, local process {cause}) failed: "
        f"{detail}\nLocal processes: {states}. A rank on another machine that died or hung "
        "fails this machine's next collective (connection reset, or after --dist-timeout). "
        "Rerun with --resume to continue from the last checkpoint."
    )
