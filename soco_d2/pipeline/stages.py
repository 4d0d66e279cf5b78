"""Resumable stages: done-markers, the stage log, and the subprocesses that train.

A stage is a named function run at most once per output directory: its done-marker
(``DIR/.done/<stage>.json``, written atomically after the function returned) makes every later
call skip it. Training runs as a subprocess (``python -m soco_d2.tools.train_net --resume``),
so a stage killed half-way continues from its last checkpoint when it is run again. How a
command stops with the pipeline however the pipeline ends, and how two pipelines are kept out
of one output directory: ``processes.py``.
"""
import json
import logging
import os
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

from soco_d2.utils.io import write_json_atomic

from .processes import exit_on_sigterm, run_command, stop_commands, stop_orphans

__all__ = [
    "StageRunner",
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


def run_training(
    config: str,
    output_dir: str,
    opts: Sequence[str],
    log_path: str,
    threads: int = 2,
    launch_args: Sequence[str] = (),
) -> None:
    """Train with ``python -m soco_d2.tools.train_net --resume`` (continues from OUTPUT_DIR's
    last checkpoint).

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
