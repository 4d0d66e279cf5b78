"""soco_d2.utils.parent.stop_with_parent watches only when run_command started the process."""
import os
import subprocess
import sys

import pytest

from soco_d2.utils import parent


def test_nothing_to_watch_without_the_variable_or_for_another_parent(monkeypatch):
    monkeypatch.delenv(parent.ENV, raising=False)
    assert parent.stop_with_parent() is None
    monkeypatch.setenv(parent.ENV, str(os.getppid() + 1))
    assert parent.stop_with_parent() is None
    assert parent.ENV not in os.environ  # read once, never passed on
    monkeypatch.setenv(parent.ENV, "not-a-pid")
    assert parent.stop_with_parent() is None


@pytest.mark.spawns
@pytest.mark.parametrize("own_group", [True, False])
def test_watches_only_as_the_leader_of_its_own_group(own_group):
    """run_command starts commands in a session of their own; a process in its parent's
    group must not watch (its SIGTERM to "its group" would reach the parent)."""
    code = ("from soco_d2.utils.parent import stop_with_parent; "
            "print(stop_with_parent() is not None)")
    env = dict(os.environ, **{parent.ENV: str(os.getpid())})
    out = subprocess.run([sys.executable, "-c", code], env=env, start_new_session=own_group,
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    assert out.strip() == str(own_group)
