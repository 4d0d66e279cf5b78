"""Dataset runs on real photographs: bad inputs, shards + merge, SIGKILL + resume, CLI."""
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from soco_d2.data.proposals import ProposalCache, SearchConfig, merge_runs, run_selective_search

REPO = Path(__file__).resolve().parents[3]


def _run(inp, out, **kw):
    kw.setdefault("max_size", 128)
    return run_selective_search(SearchConfig(input=str(inp), output=str(out), progress=False, **kw))


def _same(a: str, b: str) -> None:
    ca, cb = ProposalCache(a), ProposalCache(b)
    assert ca.keys() == cb.keys()
    for i in range(len(ca)):
        np.testing.assert_array_equal(ca.boxes_at(i), cb.boxes_at(i))
        assert ca.info_at(i) == cb.info_at(i)


@pytest.mark.spawns
def test_bad_inputs_are_reported_and_good_images_processed(tmp_path, photo_writer):
    root = tmp_path / "imgs"
    good = photo_writer(str(root), ("astronaut", "coffee"), side=160)
    photo = cv2.imread(str(root / good[1]))  # coffee, 3-channel BGR
    (root / "bad").mkdir()
    (root / "bad/empty.jpg").write_bytes(b"")
    (root / "bad/text.jpg").write_text("this is not an image\n" * 20)
    jpeg = cv2.imencode(".jpg", photo)[1].tobytes()
    (root / "bad/truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    os.symlink(str(root / "nowhere.jpg"), str(root / "bad/unreadable.jpg"))
    (root / "odd").mkdir()
    cv2.imwrite(str(root / "odd/gray.png"), cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(root / "odd/rgba.png"), cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(root / "odd/deep16.png"), photo.astype(np.uint16) * 257)
    Image.fromarray(photo[:, :, ::-1]).convert("CMYK").save(root / "odd/cmyk.jpg")
    cv2.imwrite(str(root / "odd/tiny.png"), photo[:20, :24])
    Image.new("RGB", (12000, 9000), (90, 140, 60)).save(root / "odd/huge.jpg", quality=40)

    summary = _run(root, tmp_path / "c.bin", workers=2)
    report = json.loads((tmp_path / "c.bin.report.json").read_text())
    reasons = {Path(b["path"]).name: (b["action"], b["reason"]) for b in report["bad_files"]}
    assert summary["images"] == 12 and summary["skipped"] == 4, reasons
    assert summary["bad_files"] == 10, reasons
    assert reasons["empty.jpg"] == ("skipped", "empty file (0 bytes)")
    assert reasons["text.jpg"][0] == "skipped" and "not an image" in reasons["text.jpg"][1]
    assert reasons["truncated.jpg"][0] == "skipped" and "truncated" in reasons["truncated.jpg"][1]
    assert reasons["unreadable.jpg"] == ("skipped", "unreadable: No such file or directory")
    for name, word in (("gray.png", "grayscale"), ("rgba.png", "alpha"), ("deep16.png", "16-bit"),
                       ("cmyk.jpg", "CMYK"), ("tiny.png", "smaller"), ("huge.jpg", "very large")):
        assert reasons[name][0] == "processed" and word in reasons[name][1], name
    cache = ProposalCache(str(tmp_path / "c.bin"))
    assert len(cache) == 8 and summary["processed"] == 8
    assert cache.info("odd/tiny.png") == {"rule": "whole_image", "width": 24, "height": 20}
    np.testing.assert_array_equal(cache.get("odd/tiny.png"), [[0, 0, 24, 20]])
    assert cache.info("odd/huge.jpg")["width"] == 12000
    # Converted copies of one photo find proposals like the photo itself.
    ref = cache.get(good[1])
    for name in ("rgba.png", "deep16.png"):
        np.testing.assert_array_equal(cache.get(f"odd/{name}"), ref)
    for key in good:
        b = cache.get(key)
        info = cache.info(key)
        assert info["rule"] == "ratio3size0308" and len(b) >= 2
        assert (b[:, 2] <= info["width"]).all() and (b[:, 3] <= info["height"]).all()


@pytest.mark.spawns
def test_shards_merged_equal_single_run(tmp_path, photo_dir):
    single = _run(photo_dir, tmp_path / "single.bin")
    shards = [str(tmp_path / f"s{i}.bin") for i in range(3)]
    counts = [_run(photo_dir, s, shard=(i, 3))["images"] for i, s in enumerate(shards)]
    assert sum(counts) == single["images"] == 10 and min(counts) >= 3
    merged = merge_runs(str(tmp_path / "merged.bin"), shards)
    _same(str(tmp_path / "single.bin"), str(tmp_path / "merged.bin"))
    assert merged["boxes"] == single["boxes"] and merged["rules"] == single["rules"]
    # Two workers give the same cache as one.
    _run(photo_dir, tmp_path / "w2.bin", workers=2, chunk_size=1)
    _same(str(tmp_path / "single.bin"), str(tmp_path / "w2.bin"))


def _cli(*args):
    return [sys.executable, str(REPO / "tools/selective_search.py"), "--no-progress", *args]


def _cli_in_process(capsys, *args) -> dict:
    """Run the command-line tool's main() here (no second interpreter start-up); returns the
    JSON object of its last printed line."""
    main = runpy.run_path(str(REPO / "tools/selective_search.py"), run_name="cli")["main"]
    capsys.readouterr()
    assert main(["--no-progress", *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.spawns
def test_sigkill_then_resume_equals_single_run(tmp_path, capsys, photo_writer):
    photo_dir = str(tmp_path / "photos")
    photo_writer(photo_dir, side=320)  # ~40 ms per image: the kill lands mid-run
    args = ["--input", photo_dir, "--max-size", "0", "--chunk-size", "1"]
    ref = tmp_path / "ref.bin"
    _run(photo_dir, ref, max_size=0)
    out = tmp_path / "out.bin"
    parts = Path(str(out) + ".parts")
    proc = subprocess.Popen(_cli(*args, "--output", str(out)), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("chunk-*.pkl"))) >= 3:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(list(parts.glob("chunk-*.pkl")))
    assert not out.exists() and 3 <= committed < 10, "the kill must land mid-run"
    summary = _cli_in_process(capsys, *args, "--output", str(out))  # same arguments again
    assert summary["resumed"] >= committed  # finished images were not searched again
    assert summary["images"] == 10 and {"boxes", "bad_files", "seconds"} <= set(summary)
    assert not parts.exists()
    assert out.read_bytes() == ref.read_bytes()  # exactly the uninterrupted result
    # A third run finds the finished cache and does nothing.
    assert _cli_in_process(capsys, *args, "--output", str(out))["resumed"] == "complete"


def test_detectron2_dataset_input_and_modes(tmp_path, photo_dir):
    from detectron2.data import DatasetCatalog

    files = sorted(Path(photo_dir).rglob("*.jpg"))[:3]
    name = "soco_d2_test_proposals_ds"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"file_name": str(f), "image_id": 100 + i}
                                               for i, f in enumerate(files)])
    summary = _run(name, tmp_path / "d.bin", mode="fast")
    cache = ProposalCache(str(tmp_path / "d.bin"))
    assert cache.keys() == ["100", "101", "102"] and summary["processed"] == 3
    assert cache.meta["mode"] == "fast"
    again = _run(name, tmp_path / "d2.bin", mode="fast")
    assert again["boxes"] == summary["boxes"]
    _same(str(tmp_path / "d.bin"), str(tmp_path / "d2.bin"))  # fast mode is reproducible too
    with pytest.raises(ValueError, match="neither"):
        _run("no_such_dataset_xyz", tmp_path / "x.bin")
