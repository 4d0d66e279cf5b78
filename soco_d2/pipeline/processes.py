"""The commands a pipeline runs, and the locks that keep two runs out of one output directory.

Two ``fcntl.flock`` locks, which the kernel releases when their last holder exits however it
ends (SIGKILL included), replace any bookkeeping of pids:

- the **output lock** ``DIR/logs/.pipeline.lock``: held by the pipeline process for its
  lifetime (not inherited by what it starts). A second pipeline in the same output directory
  finds it held and stops with an error naming the first;
- a **command lock** ``<log>.running`` per running command: taken by the pipeline, inherited
  by the command (and everything it forks), and holding the command's process group id. When
  the command ends normally the pipeline removes it. Found still *held* by a later pipeline
  (which holds the output lock, so no pipeline of the directory is alive), it means a killed
  pipeline left that command training: its process group is stopped. Found free, it is a
  leftover and is removed, nothing signalled; a held lock also proves that the recorded group
  still exists, so a reused pid is never signalled.

Commands run in a session of their own. On Ctrl-C, or SIGTERM after :func:`exit_on_sigterm`,
the pipeline stops each command's group before it exits; after a SIGKILL, commands that call
``soco_d2.utils.parent.stop_with_parent`` (training and selective search) stop themselves, and
:func:`stop_orphans` in the next run stops anything else.
"""
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Set

from soco_d2.utils import parent
from soco_d2.utils.process_group import signal_group, stop_process_group

__all__ = ["claim_output", "exit_on_sigterm", "run_command", "stop_commands", "stop_orphans"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".pipeline.lock"

# output lock files this process holds, by logs directory (kept open for the process lifetime)
_HELD: Dict[str, int] = {}
_HELD_LOCK = threading.Lock()
# commands running now (from any thread), for stop_commands
_LIVE: Set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def claim_output(logs_dir: str) -> None:
    """Hold ``logs_dir``'s output lock for the rest of this process (once; later calls return).

    Raises:
        RuntimeError: another live process holds it (another pipeline runs in this directory).
    """
    key = os.path.abspath(logs_dir)
    with _HELD_LOCK:
        if key in _HELD:
            return
        os.makedirs(key, exist_ok=True)
        fd = os.open(os.path.join(key, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RuntimeError(
                f"another pipeline (pid {holder}) is running in this output directory "
                f"({key}); wait for it or stop it before running this one"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD[key] = fd


def exit_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit`` in the main thread (as Ctrl-C raises
    ``KeyboardInterrupt``), so :func:`run_command` stops the command it is waiting for instead
    of leaving it training on, orphaned, into the output directory a rerun will use."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _lock_freed(fd: int, timeout: Optional[float]) -> bool:
    """Wait up to ``timeout`` seconds for every holder of the lock on ``fd`` to exit."""
    deadline = time.monotonic() + (timeout or 0.0)
    while not _try_lock(fd):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _read_record(fd: int) -> Optional[Dict]:
    """The JSON a command lock holds; None while it is being written (a command starting)."""
    for _ in range(20):
        try:
            return json.loads(os.pread(fd, 1 << 16, 0).decode())
        except ValueError:
            time.sleep(0.05)
    return None


def stop_orphans(logs_dir: str, grace: float = 10.0) -> List[str]:
    """Claim ``logs_dir`` (:func:`claim_output`), then stop the commands a killed pipeline left
    running there: every command lock still held (SIGTERM to its process group, SIGKILL after
    ``grace`` seconds). Free command locks are removed without a signal sent.

    Returns:
        the stopped commands, as text, one per group (for the caller to report).

    Raises:
        RuntimeError: another pipeline is running in this output directory, or a group could
            not be stopped.
    """
    claim_output(logs_dir)
    stopped = []
    for name in sorted(os.listdir(logs_dir)):
        if not name.endswith(".running"):
            continue
        path = os.path.join(logs_dir, name)
        fd = os.open(path, os.O_RDWR)
        try:
            if not _try_lock(fd):
                rec = _read_record(fd)
                if rec is None:
                    raise RuntimeError(f"{path} is held by a command whose group is unknown")
                what = f"{' '.join(rec.get('cmd', []))} (process group {rec['pid']})"
                freed = signal_group(
                    int(rec["pid"]), lambda t: _lock_freed(fd, t), grace, kill_wait=5.0
                )
                if not freed:
                    raise RuntimeError(f"could not stop {what}, left running by a killed pipeline")
                stopped.append(what)
            os.remove(path)
        finally:
            os.close(fd)
    return stopped


def stop_commands() -> None:
    """Stop every command :func:`run_command` is running, in any thread (their process groups:
    SIGTERM, then SIGKILL). For the thread that receives an interruption while other threads
    wait on commands; their :func:`run_command` calls then fail."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        stop_process_group(proc)


def _subprocess_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    env[parent.ENV] = str(os.getpid())  # commands that call parent.stop_with_parent watch it
    return env


def run_command(cmd: Sequence[str], log_path: str, threads: int = 2) -> str:
    """Run ``cmd`` with stdout and stderr streamed into ``log_path``; return what it printed.

    Claims the log folder (:func:`claim_output`) and runs the command in a session of its own,
    holding its command lock ``<log>.running``. If this process is interrupted while waiting
    (Ctrl-C, or SIGTERM after :func:`exit_on_sigterm`), the command's whole process group is
    stopped before the exception goes on (:func:`stop_commands` does the same from another
    thread). Its finished checkpoints stay on disk.

    Raises:
        RuntimeError: with the log's last lines when the command fails.
    """
    claim_output(os.path.dirname(log_path))
    record = log_path + ".running"
    lock = os.open(record, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with open(log_path, "a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            start = log.tell()
            proc = subprocess.Popen(
                list(cmd), stdout=log, stderr=subprocess.STDOUT, env=_subprocess_env(threads),
                start_new_session=True, pass_fds=(lock,),
            )
            with _LIVE_LOCK:
                _LIVE.add(proc)
            try:
                os.pwrite(lock, json.dumps({"pid": proc.pid, "cmd": list(cmd)}).encode(), 0)
                returncode = proc.wait()
            except BaseException:
                stop_process_group(proc)
                raise
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(proc)
                if proc.returncode is not None:  # ended, or stopped with its group
                    os.remove(record)
    finally:
        os.close(lock)
    with open(log_path) as f:
        f.seek(start)
        output = f.read()
    if returncode != 0:
        tail = "".join(output.splitlines(keepends=True)[-30:])
        raise RuntimeError(f"command failed ({returncode}): {' '.join(cmd)}\n{tail}")
    return output
