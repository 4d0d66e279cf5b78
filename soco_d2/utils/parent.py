"""End a command when the process that started it dies, whatever killed that process.

``soco_d2.pipeline.stages.run_command`` starts each command in a process group of its own and
names itself in the environment variable :data:`ENV`. A command that calls
:func:`stop_with_parent` first thing then watches its parent: once the parent is gone (SIGKILL,
an out-of-memory kill, a lost terminal), it sends SIGTERM to its own process group, so it and
the workers it started stop within seconds instead of training on, orphaned, into folders the
next run will use. Checkpoints already written stay on disk.
"""
import os
import signal
import threading
import time
from typing import Optional

__all__ = ["ENV", "stop_with_parent"]

ENV = "SOCO_D2_STOP_WITH_PARENT"


def stop_with_parent(poll_s: float = 1.0) -> Optional[threading.Thread]:
    """If :data:`ENV` names this process's parent, watch it from a daemon thread; return it.

    The variable is removed from this process's environment, so the processes it starts (data
    loader or launcher workers, whose parent is this process) do not watch anything; they are
    in this process's group and get the same SIGTERM. Returns None when there is nothing to
    watch (the variable unset, or naming another process: this one was not started by
    ``run_command``).
    """
    value = os.environ.pop(ENV, "")
    if not value.isdigit() or int(value) != os.getppid() or os.getpgrp() != os.getpid():
        return None  # not a command run_command started (in a process group of its own)
    parent = int(value)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.killpg(os.getpgrp(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="stop-with-parent", daemon=True)
    thread.start()
    return thread
