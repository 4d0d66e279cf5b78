"""Resumable stages: done-markers, the stage log, and the subprocesses that train.

A stage is a named function run at most once per output directory: its done-marker
(``DIR/.done/<stage>.json``, written atomically after the function returned) makes every later
call skip it. Training runs as a subprocess (``python -m soco_d2.tools.train_net --resume``),
so a stage killed half-way continues from its last checkpoint when it is run again. A command stops with
the pipeline however the pipeline ends: on Ctrl-C or SIGTERM the pipeline stops its process
group; after a SIGKILL the command notices on its own (``soco_d2.utils.parent``), and the next
run stops anything still recorded as running (:func:`stop_orphans`).
"""
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Set

from soco_d2.utils import parent
from soco_d2.utils.io import write_json_atomic

__all__ = [
    "StageRunner",
    "evaluate",
    "exit_on_sigterm",
    "run_command",
    "run_training",
    "stop_commands",
    "stop_orphans",
]

logger = logging.getLogger(__name__)

class StageRunner:
    """Runs named stages once: a stage with a done-marker is skipped, every event is logged.

    Args:
        output: the pipeline's output directory; markers go to ``output/.done``, the event log
            to ``output/pipeline.jsonl`` (one JSON object per line).
    """

    def __init__(self, output: str):
        self.output = output
        self.marker_dir = os.path.join(output, ".done")
        self.log_path = os.path.join(output, "pipeline.jsonl")
        os.makedirs(self.marker_dir, exist_ok=True)

    def marker(self, name: str) -> str:
        """The marker file of stage ``name`` (``/`` in names becomes ``__``)."""
        return os.path.join(self.marker_dir, name.replace("/", "__") + ".json")

    def done(self, name: str) -> bool:
        return os.path.isfile(self.marker(name))

    def info(self, name: str) -> Dict:
        """What the finished stage's function returned, plus ``seconds``."""
        with open(self.marker(name)) as f:
            return json.load(f)

    _log_lock = threading.Lock()  # stages may run in several threads (PipelineSpec.jobs)

    def _log(self, name: str, event: str, **extra) -> None:
        with self._log_lock, open(self.log_path, "a") as f:
            row = {"stage": name, "event": event, "time": time.time(), **extra}
            f.write(json.dumps(row) + "\n")

    def run(self, name: str, fn: Callable[[], Optional[Dict]]) -> Dict:
        """Run ``fn`` unless ``name`` is done; return what the marker holds.

        ``fn`` returns a small JSON-able dict stored in the marker. An exception leaves no
        marker (the stage reruns, resuming from whatever it left), is logged, and propagates.
        """
        if self.done(name):
            logger.info("[pipeline] %s: done before, skipped", name)
            self._log(name, "skipped")
            return self.info(name)
        print(f"[pipeline] {name} ...", flush=True)
        start = time.time()
        self._log(name, "started")
        try:
            info = dict(fn() or {})
        except BaseException as e:  # KeyboardInterrupt too: record it, then re-raise
            self._log(name, "failed", error=repr(e)[:500], seconds=round(time.time() - start, 1))
            raise
        info["seconds"] = round(time.time() - start, 1)
        write_json_atomic(info, self.marker(name))
        self._log(name, "finished", seconds=info["seconds"])
        print(f"[pipeline] {name} done in {info['seconds']:.0f} s", flush=True)
        return info

    def history(self) -> List[Dict]:
        """Every logged event, oldest first."""
        if not os.path.isfile(self.log_path):
            return []
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def seconds(self, name: str) -> Optional[float]:
        """Wall time of a finished stage over all its attempts, None if it is not done.

        An interrupted training resumes from its checkpoint, so the attempts that failed did
        part of the work: their logged durations count too (a process killed without a chance
        to log leaves nothing to count).
        """
        if not self.done(name):
            return None
        failed = sum(
            e.get("seconds", 0.0)
            for e in self.history()
            if e["stage"] == name and e["event"] == "failed"
        )
        return float(self.info(name).get("seconds", 0.0)) + failed


def _subprocess_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    env[parent.ENV] = str(os.getpid())  # commands that call parent.stop_with_parent watch it
    return env


def exit_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit`` in the main thread (as Ctrl-C raises
    ``KeyboardInterrupt``), so :func:`run_command` stops the command it is waiting for instead
    of leaving it training on, orphaned, into the output directory a rerun will use."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _signal_group(pgid: int, ended: Callable[[Optional[float]], bool], grace: float,
                  kill_wait: Optional[float] = None) -> bool:
    """SIGTERM process group ``pgid``, SIGKILL it if ``ended(grace)`` says it has not ended
    after ``grace`` seconds, then wait ``ended(kill_wait)``; True once it has ended."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        if ended(wait):
            return True
    return False


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the command's process group (its launcher's workers too), SIGKILL after
    ``grace`` seconds."""

    def ended(timeout: Optional[float]) -> bool:
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    _signal_group(proc.pid, ended, grace)


def _proc_stat(pid: int) -> Optional[List[str]]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None if the
    process is gone or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_ticks(pid: int) -> Optional[int]:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None if it is gone,
    a zombie (finished; only its parent's wait is missing) or there is no /proc. Together with
    the pid it names one process, whatever reuses the pid."""
    fields = _proc_stat(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])


def _same_process_alive(pid: int, ticks: Optional[int]) -> bool:
    """Whether ``pid`` still names the process that had start time ``ticks``. Without /proc it
    cannot tell a reused pid apart, and says True for any live ``pid`` (the cautious answer)."""
    if os.path.isdir("/proc"):
        now = _start_ticks(pid)
        return now is not None and now == ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a member that has not finished (zombies do not count
    where /proc tells them apart)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    for p in os.listdir("/proc"):
        fields = _proc_stat(int(p)) if p.isdigit() else None
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_group(pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for process group ``pgid`` to end; True if it has."""
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _record_path(log_path: str) -> str:
    return log_path + ".running"


def stop_orphans(logs_dir: str, grace: float = 10.0) -> List[str]:
    """Stop the commands a killed pipeline left running into this output directory.

    :func:`run_command` records each command it starts beside its log (``<log>.running``: the
    command's pid, which is also its process group, and the pid of the pipeline that started
    it) and removes the record when the command has ended. A record still there means that
    pipeline was killed with no chance to stop it (SIGKILL, a lost machine): if the pipeline is
    gone and the command's process group is still alive, the group is stopped (SIGTERM, then
    SIGKILL after ``grace`` seconds), so a rerun does not train beside it into the same folders.

    Returns:
        the stopped commands, as text, one per group (for the caller to report).

    Raises:
        RuntimeError: a record belongs to a pipeline that is still running (two pipelines in one
            output directory would write the same checkpoints).
    """
    stopped = []
    if not os.path.isdir(logs_dir):
        return stopped
    for name in sorted(os.listdir(logs_dir)):
        if not name.endswith(".running"):
            continue
        path = os.path.join(logs_dir, name)
        try:
            with open(path) as f:
                rec = json.load(f)
            pid, owner = int(rec["pid"]), int(rec["owner"])
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("[pipeline] unreadable record %s: removed", path)
            os.remove(path)
            continue
        if owner != os.getpid() and _same_process_alive(owner, rec.get("owner_ticks")):
            raise RuntimeError(
                f"another pipeline (pid {owner}) is running in this output directory: its "
                f"command {' '.join(rec.get('cmd', []))!r} is recorded in {path}; wait for it "
                "or stop it before running this one"
            )
        leader_ticks = _start_ticks(pid)
        ours = leader_ticks is None or leader_ticks == rec.get("ticks")
        if ours and _group_alive(pid):
            what = f"{' '.join(rec.get('cmd', []))} (process group {pid})"
            if not _signal_group(pid, partial(_wait_group, pid), grace, kill_wait=5.0):
                raise RuntimeError(f"could not stop {what}, left running by a killed pipeline")
            stopped.append(what)
        os.remove(path)
    return stopped


# commands running now (from any thread), for stop_commands
_LIVE: Set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def stop_commands() -> None:
    """Stop every command :func:`run_command` is running, in any thread (their process groups:
    SIGTERM, then SIGKILL). For the thread that receives an interruption while other threads
    wait on commands; their :func:`run_command` calls then fail."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        _stop_group(proc)


def run_command(cmd: Sequence[str], log_path: str, threads: int = 2) -> str:
    """Run ``cmd`` with stdout and stderr streamed into ``log_path``; return what it printed.

    The command runs in a session of its own; if this process is interrupted while waiting
    (Ctrl-C, or SIGTERM after :func:`exit_on_sigterm`), the command's whole process group is
    stopped before the exception goes on (:func:`stop_commands` does the same from another
    thread). Its finished checkpoints stay on disk.

    Raises:
        RuntimeError: with the log's last lines when the command fails.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        start = log.tell()
        proc = subprocess.Popen(
            list(cmd), stdout=log, stderr=subprocess.STDOUT, env=_subprocess_env(threads),
            start_new_session=True,
        )
        record = _record_path(log_path)
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            # for stop_orphans, should this process die without stopping the command
            write_json_atomic({
                "pid": proc.pid, "ticks": _start_ticks(proc.pid), "owner": os.getpid(),
                "owner_ticks": _start_ticks(os.getpid()), "cmd": list(cmd)}, record)
            returncode = proc.wait()
        except BaseException:
            _stop_group(proc)
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
            if proc.returncode is not None and os.path.exists(record):
                os.remove(record)
    with open(log_path) as f:
        f.seek(start)
        output = f.read()
    if returncode != 0:
        tail = "".join(output.splitlines(keepends=True)[-30:])
        raise RuntimeError(f"command failed ({returncode}): {' '.join(cmd)}\n{tail}")
    return output


def run_training(
    config: str,
    output_dir: str,
    opts: Sequence[str],
    log_path: str,
    threads: int = 2,
    launch_args: Sequence[str] = (),
) -> None:
    """Train with ``python -m soco_d2.tools.train_net --resume`` (continues from OUTPUT_DIR's last checkpoint).

    Args:
        config: YAML config.
        output_dir: the run's OUTPUT_DIR.
        opts: ``KEY VALUE`` overrides, after OUTPUT_DIR.
        log_path: file that receives the command's stdout and stderr.
        threads: OMP/MKL threads of the subprocess.
        launch_args: detectron2's launch flags (``--num-gpus 8 --num-machines 2 ...``).
    """
    cmd = [sys.executable, "-m", "soco_d2.tools.train_net", "--resume"]
    cmd += [*launch_args, "--config-file", config, "OUTPUT_DIR", output_dir, *opts]
    run_command(cmd, log_path, threads)


def evaluate(config: str, opts: Sequence[str], weights: str, output_dir: str) -> Dict:
    """Evaluate ``weights`` on the config's DATASETS.TEST in this process.

    Returns:
        the evaluator's dict, e.g. ``{"bbox": {"AP": ...}, "segm": {...}}``; the COCO evaluator
        also writes ``output_dir/inference/coco_instances_results.json``.
    """
    from soco_d2.checkpoint import RestrictedCheckpointer
    from soco_d2.engine import Trainer, load_cfg

    cfg = load_cfg(config, [*opts, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", output_dir])
    model = Trainer.build_model(cfg)
    RestrictedCheckpointer(model).load(weights)
    results = Trainer.test(cfg, model)
    return {k: dict(v) if isinstance(v, dict) else v for k, v in results.items()}
