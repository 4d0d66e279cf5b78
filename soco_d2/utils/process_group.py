"""Stopping a command together with everything it started: its process group.

Commands are started in a session of their own (``start_new_session=True``), so their process
group holds their workers too; stopping means SIGTERM to the group, then SIGKILL if it has not
ended after a grace period.
"""
import os
import signal
import subprocess
from typing import Callable, Optional

__all__ = ["signal_group", "stop_process_group"]


def signal_group(pgid: int, ended: Callable[[Optional[float]], bool], grace: float,
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


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0,
                       kill_wait: Optional[float] = None) -> bool:
    """Stop ``proc``'s process group (``proc`` is its leader): SIGTERM, SIGKILL after ``grace``
    seconds; True once ``proc`` has ended."""

    def ended(timeout: Optional[float]) -> bool:
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    return signal_group(proc.pid, ended, grace, kill_wait)
