"""Atomic writes: the old file survives a failure, and no temporary file is left behind."""
import json
import math
import os

import numpy as np
import pytest

from soco_d2.utils import results
from soco_d2.utils.io import atomic_write, strict_json, write_json_atomic


def test_success_replaces_the_file_with_normal_permissions(tmp_path):
    path = tmp_path / "sub" / "f.txt"  # the parent folder is created
    with atomic_write(str(path)) as f:
        f.write("new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert os.listdir(path.parent) == ["f.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_failure_keeps_the_old_file_and_removes_the_temp(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(str(path)) as f:
            f.write("half of the new conten")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]
    # A missing destination stays missing.
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(str(tmp_path / "g.bin"), "wb") as f:
            f.write(b"x")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["f.txt"]


def test_binary_mode_seeks_and_truncates(tmp_path):
    path = tmp_path / "b.bin"
    with atomic_write(str(path), "wb") as f:
        f.write(b"abcdef")
        f.seek(2)
        f.write(b"XY")
        f.truncate(5)
    assert path.read_bytes() == b"abXYe"
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(str(path), "a"):
            pass
    assert path.read_bytes() == b"abXYe"


def test_write_json_atomic_is_strict_json(tmp_path):
    path = tmp_path / "r.json"
    obj = {"AP": float("nan"), "x": [np.float32(1.5), np.int64(3), float("inf")], 2: (1, "a")}
    write_json_atomic(obj, str(path))

    def reject(token):
        raise ValueError(f"non-standard JSON token {token}")

    assert json.loads(path.read_text(), parse_constant=reject) == {
        "AP": None,
        "x": [1.5, 3, None],
        "2": [1, "a"],
    }
    assert strict_json({"a": math.nan}) == {"a": None}
    assert results.write_json_atomic is write_json_atomic  # the old import path still works


def test_atomic_directory_replaces_whole_folder_or_leaves_it(tmp_path):
    import pytest

    from soco_d2.utils.io import atomic_directory

    out = tmp_path / "data"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(str(out)) as tmp:
            (tmp_path / "probe").write_text(tmp)
            open(f"{tmp}/new.txt", "w").write("new")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "probe"]  # no temp left
    with atomic_directory(str(out)) as tmp:
        open(f"{tmp}/new.txt", "w").write("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
