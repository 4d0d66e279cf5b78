"""Shared pytest setup: CPU only, few threads (CI has 2 cores), seeded; a loader for the
repository's scripts (tools/*.py are scripts, not a package)."""
import importlib.util
import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def load_script():
    """``load_script("tools/benchmark.py")``: that command, imported as a fresh module (its
    ``if __name__ == "__main__"`` block does not run). A ``tools/`` shim is resolved to the
    package module it calls (``soco_d2/tools/benchmark.py``), where the code lives."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def load(relative: str):
        path = os.path.join(root, relative)
        packaged = os.path.join(root, "soco_d2", relative)
        if relative.startswith("tools/") and os.path.isfile(packaged):
            path = packaged
        name = os.path.splitext(os.path.basename(path))[0] + "_script"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
