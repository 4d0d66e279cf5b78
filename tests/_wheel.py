"""Build the project's wheel from a copy of the checkout (so the checkout gets no build/ or
egg-info folder), for the tests of what an installed soco_d2 ships and runs."""
import glob
import os
import shutil
import subprocess
import sys

from _paths import REPO_ROOT


def build_wheel(tmp_dir) -> str:
    """``pip wheel --no-deps`` of the checkout's package into ``tmp_dir``; returns the wheel."""
    src = os.path.join(tmp_dir, "src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("soco_d2", "configs"):
        shutil.copytree(os.path.join(REPO_ROOT, folder), os.path.join(src, folder), ignore=ignore)
    for f in ("setup.py", "MANIFEST.in", "requirements.txt", "requirements.in"):
        shutil.copy(os.path.join(REPO_ROOT, f), os.path.join(src, f))
    out = os.path.join(tmp_dir, "whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", out, src],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = glob.glob(os.path.join(out, "soco_d2-*.whl"))
    return wheel
