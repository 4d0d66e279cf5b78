"""One task of a job submitted through submitit (SLURM, or submitit's local executor).

:class:`ToolJob` is the callable submitit pickles and runs in every task of a job: it starts one
of this repository's commands (``tools/train_net.py``, ``tools/pipeline.py``,
``tools/selective_search.py``) as a child process and waits for it.

- **Ranks**: for a training of several tasks (``distributed=True``) the child gets the
  environment torchrun would give it, from submitit's ``JobEnvironment`` through
  ``submitit.helpers.TorchDistributedEnvironment``: ``RANK`` (global rank), ``LOCAL_RANK``,
  ``WORLD_SIZE`` (tasks in the job), ``LOCAL_WORLD_SIZE``, ``GROUP_RANK`` (node),
  ``MASTER_ADDR`` (the job's first host) and ``MASTER_PORT`` (derived from the job id, so a
  requeued job meets on the same port). ``soco_d2.engine.launch`` then spawns nothing and joins
  one process group over ``env://``, exactly as under torchrun (``soco_d2/engine/torchrun.py``).
  Any other command runs in one task, with those variables removed.
- **Requeue**: SLURM sends ``SIGUSR2`` ahead of the time limit or a preemption (submitit submits
  with ``--signal``). submitit's handler in rank 0 calls :meth:`ToolJob.checkpoint`, which
  resubmits the same command with ``--resume`` added (``resume_arg``; the pipeline and selective
  search resume by rerunning the same command), requeues the job and exits; the child is then
  stopped. The child ignores that signal itself, so it is not killed before rank 0 has requeued.
  A requeued training resumes from ``OUTPUT_DIR/last_checkpoint``: the iterations after the last
  periodic checkpoint are trained again.
- **Why a child process**: a training process ends with ``os._exit`` (``launch``: tearing down a
  gloo process group can hang on a lost peer), which would skip submitit's result file and the
  requeue exit status. The child also watches this task (``soco_d2.utils.parent``) and stops
  with it, even after a SIGKILL.
"""
import importlib.util
import os
import signal
import subprocess
import sys
import time
from functools import partial
from typing import Dict, List, Optional, Sequence

import submitit
from submitit.helpers import DelayedSubmission, TorchDistributedEnvironment

from ..utils import parent
from ..utils.process_group import stop_process_group

__all__ = ["DIST_ENV", "ToolJob", "tool_command"]

# torchrun's variables, removed from the environment of a command that is not a distributed job
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
            "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT")


def tool_command(tool: str) -> List[str]:
    """The command line that runs ``tool`` (e.g. "train_net") with this Python:
    ``python -m soco_d2.tools.<tool>``."""
    if importlib.util.find_spec(f"soco_d2.tools.{tool}") is None:
        raise FileNotFoundError(f"soco_d2 has no command {tool!r} (no soco_d2.tools.{tool})")
    return [sys.executable, "-m", f"soco_d2.tools.{tool}"]


class ToolJob(submitit.helpers.Checkpointable):
    """Run ``tool argv...`` in each task of a submitit job (see the module docstring).

    Args:
        tool: a command of this repository ("train_net", "pipeline", "selective_search").
        argv: its arguments.
        distributed: give the child the torchrun environment of this task (trainings).
        resume_arg: added at the front of ``argv`` when the job is requeued (None: rerun as is).
        threads: ``OMP_NUM_THREADS`` of the child (e.g. the CPUs of the task); None keeps it.
    """

    def __init__(self, tool: str, argv: Sequence[str], distributed: bool = False,
                 resume_arg: Optional[str] = None, threads: Optional[int] = None):
        self.tool = tool
        self.argv = [str(a) for a in argv]
        self.distributed = distributed
        self.resume_arg = resume_arg
        self.threads = threads

    def __repr__(self) -> str:
        return f"ToolJob({self.tool} {' '.join(self.argv)})"

    def child_env(self, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """The child's environment (``base`` default ``os.environ``); must run inside a job
        when ``distributed``."""
        env = dict(os.environ if base is None else base)
        for name in DIST_ENV:
            env.pop(name, None)
        if self.distributed:
            d = TorchDistributedEnvironment()
            env.update(RANK=str(d.rank), LOCAL_RANK=str(d.local_rank),
                       WORLD_SIZE=str(d.world_size), LOCAL_WORLD_SIZE=str(d.local_world_size),
                       GROUP_RANK=str(submitit.JobEnvironment().node),
                       MASTER_ADDR=str(d.master_addr), MASTER_PORT=str(d.master_port))
        if self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        env[parent.ENV] = str(os.getpid())  # the child stops when this task dies
        return env

    def __call__(self) -> dict:
        """Run the command in this task; returns ``{"tool", "rank", "seconds"}``.

        Raises:
            RuntimeError: the command failed (its output is in this task's log).
        """
        job_env = submitit.JobEnvironment()
        cmd = tool_command(self.tool) + self.argv
        print(f"[soco_d2.submit] {job_env}: {' '.join(cmd)}", flush=True)
        start = time.time()
        # Set in the child between fork and exec; an ignored signal stays ignored across exec.
        ignore = partial(signal.signal, job_env._usr_sig(), signal.SIG_IGN)
        proc = subprocess.Popen(cmd, env=self.child_env(), start_new_session=True,
                                preexec_fn=ignore)
        try:
            returncode = proc.wait()
        except BaseException:  # requeue (SystemExit from submitit's handler), Ctrl-C, ...
            stop_process_group(proc, kill_wait=5.0)
            raise
        if returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed with exit status {returncode} "
                f"(rank {job_env.global_rank} of {job_env.num_tasks})"
            )
        return {"tool": self.tool, "rank": job_env.global_rank,
                "seconds": round(time.time() - start, 1)}

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """What submitit resubmits on preemption or time-out: the same command, resuming."""
        argv = list(self.argv)
        if self.resume_arg and self.resume_arg not in argv:
            argv.insert(0, self.resume_arg)  # before KEY VALUE overrides, which end the line
        return DelayedSubmission(
            ToolJob(self.tool, argv, self.distributed, self.resume_arg, self.threads)
        )
