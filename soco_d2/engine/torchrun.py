"""Training processes started by torchrun (``python -m torch.distributed.run``).

torchrun starts every process itself and describes it in the environment: ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK`` (the node), ``MASTER_ADDR``
and ``MASTER_PORT`` (where the process group meets) and ``TORCHELASTIC_RESTART_COUNT`` (how
often the group was restarted under ``--max-restarts``). :func:`torchrun_env` reads them;
``soco_d2.engine.launch.launch`` then spawns nothing: the process joins one process group over
``env://`` and runs the same per-process code as the launcher's own workers (local process
group, device, barrier, then the training function).

A restarted group (``TORCHELASTIC_RESTART_COUNT > 0``) runs the entry point again with the same
arguments; ``tools/train_net.py`` then resumes from ``OUTPUT_DIR/last_checkpoint`` as if
``--resume`` had been given (:func:`restart_count`).
"""
import os
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Mapping, Optional, Sequence

__all__ = ["TorchrunEnv", "restart_count", "run_torchrun_process", "torchrun_env"]


@dataclass(frozen=True)
class TorchrunEnv:
    """What torchrun tells one of its processes.

    Attributes:
        rank: global rank (``RANK``).
        local_rank: rank on this node (``LOCAL_RANK``).
        world_size: processes in the job (``WORLD_SIZE``).
        local_world_size: processes on this node (``LOCAL_WORLD_SIZE``).
        node_rank: this node's index (``GROUP_RANK``).
        restart_count: restarts of the group so far (``TORCHELASTIC_RESTART_COUNT``).
        master: ``MASTER_ADDR:MASTER_PORT``, where the process group meets.
    """

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int
    restart_count: int
    master: str


def _int(env: Mapping[str, str], name: str, default: Optional[int] = None) -> int:
    raw = env.get(name, "")
    if raw.strip() == "" and default is not None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"${name} must be an integer (set by torchrun), got {raw!r}") from None


def torchrun_env(environ: Optional[Mapping[str, str]] = None) -> Optional[TorchrunEnv]:
    """This process as torchrun describes it, or None when torchrun did not start it.

    A process counts as started by torchrun when ``LOCAL_RANK`` and ``WORLD_SIZE`` are both set.

    Args:
        environ: the environment to read; default ``os.environ``.

    Raises:
        ValueError: a variable that is not an integer, or ranks out of range.
    """
    env = os.environ if environ is None else environ
    if "LOCAL_RANK" not in env or "WORLD_SIZE" not in env:
        return None
    world = _int(env, "WORLD_SIZE")
    local_rank = _int(env, "LOCAL_RANK")
    run = TorchrunEnv(
        rank=_int(env, "RANK", local_rank),
        local_rank=local_rank,
        world_size=world,
        local_world_size=_int(env, "LOCAL_WORLD_SIZE", world),
        node_rank=_int(env, "GROUP_RANK", 0),
        restart_count=_int(env, "TORCHELASTIC_RESTART_COUNT", 0),
        master=f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}",
    )
    if not (0 <= run.rank < world and 0 <= run.local_rank < run.local_world_size <= world):
        raise ValueError(f"inconsistent torchrun environment: {run}")
    return run


def restart_count(environ: Optional[Mapping[str, str]] = None) -> int:
    """How often torchrun restarted this job's processes (0 outside torchrun)."""
    run = torchrun_env(environ)
    return run.restart_count if run is not None else 0


def _attempt_store(run: TorchrunEnv, timeout: timedelta):
    """torchrun's store (``env://``: ``MASTER_ADDR:MASTER_PORT``) under a prefix of its own for
    this attempt. A restarted group meets in the same store as the attempt before it, whose
    keys are still there: without the prefix a new rank can read a dead rank's address and
    fail to connect ("Gloo connectFullMesh failed ... Connection refused")."""
    import torch.distributed as dist

    store, _, _ = next(dist.rendezvous("env://", run.rank, run.world_size, timeout=timeout))
    store.set_timeout(timeout)
    return dist.PrefixStore(f"soco_d2/attempt_{run.restart_count}", store)


def run_torchrun_process(
    run: TorchrunEnv, main_func: Callable, args: Sequence, timeout: timedelta, threads: int
) -> None:
    """``main_func(*args)`` in this process, which torchrun started.

    With one process in all it just runs ``main_func``. Otherwise it joins the process group
    over ``env://`` and runs ``main_func`` as ``soco_d2.engine.launch``'s spawned workers do,
    then ends the process: exit status 0, or 1 after printing the error and writing it to
    torchrun's error file (shown in torchrun's failure summary).

    Args:
        run: from :func:`torchrun_env`.
        main_func, args: the per-process entry point and its arguments.
        timeout: process-group timeout.
        threads: intra-op threads of this process.
    """
    # Imported here: launch imports this module.
    from .launch import _hard_exit, _join_and_run, _set_threads, logger

    _set_threads(threads)
    if run.world_size == 1:
        main_func(*args)
        return
    logger.info(
        "Started by torchrun: rank %d of %d (local %d of %d, node %d, restart %d); joining the "
        "process group at %s over env:// (%d threads, timeout %s)",
        run.rank, run.world_size, run.local_rank, run.local_world_size, run.node_rank,
        run.restart_count, run.master, threads, timeout,
    )
    try:
        _join_and_run(run.local_rank, run.rank, main_func, run.world_size, run.local_world_size,
                      "env://", args, timeout, store=_attempt_store(run, timeout))
    except BaseException as e:  # torchrun sees the exit code; its summary shows the error file
        traceback.print_exc()
        from torch.distributed.elastic.multiprocessing.errors import get_error_handler

        get_error_handler().record_exception(e)
        _hard_exit(1)
    _hard_exit(0)
