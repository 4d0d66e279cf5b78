"""``tools/benchmark_loader.py``: deterministic ImageNet-sized JPEGs, and one short run of the
whole tool (a loader worker, the profile, the before/after comparison) on CPU."""
import json
import os

import cv2
import pytest

from soco_d2.tools.benchmark_loader import main, write_images

pytestmark = pytest.mark.spawns  # loader worker processes


def test_images_are_imagenet_sized_jpegs_and_deterministic(tmp_path):
    names = write_images(str(tmp_path / "a"), 3)
    again = write_images(str(tmp_path / "b"), 3)
    assert names == again == ["img_00000.jpg", "img_00001.jpg", "img_00002.jpg"]
    for name in names:
        a, b = (tmp_path / d / name for d in "ab")
        assert a.read_bytes() == b.read_bytes()
        assert cv2.imread(str(a)).shape == (375, 500, 3)
        assert 60_000 < os.path.getsize(a) < 160_000  # ImageNet's photos: ~110 KB on average


def test_one_short_run_of_every_step(tmp_path, capsys):
    out = tmp_path / "result.json"
    assert main(["--methods", "soco", "--workers", "1", "--images", "8", "--batch", "4",
                 "--seconds", "1", "--profile", "--compare", "--rounds", "1",
                 "--image-dir", str(tmp_path), "--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert printed == json.loads(out.read_text())
    (row,) = printed["results"]
    run = row["workers_1"]
    assert run["images"] >= 4 and run["images_per_s"] > 0 and run["cores_per_gpu"] > 0
    assert row["gpu_images_per_s"] == 1280  # 125 GFLOP per image at 160 TFLOPS
    assert set(row["profile_ms"]) == {"mapper", "decode", "resize", "colour", "rest"}
    assert row["profile_ms"]["decode"] > 0 and "handoff_ms" in run
    cmp = row["compare_workers_1"]["per_worker_cpu_s"]
    assert cmp["before"] > 0 and cmp["after"] > 0
