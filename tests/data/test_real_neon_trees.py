"""The NEON tree-crown converter (soco_d2/data/datasets/neon_trees.py) on a tiny stand-in of the
deepforest data folder: tiles, boxes cut by tile borders, the block split, unlabeled windows,
registration. Only the last test reads the real package, when it is installed."""
import importlib.metadata
import importlib.util
import json
import os
import re

import cv2
import numpy as np
import pytest

from soco_d2.data.datasets.neon_trees import (
    NEON_TREES_SOURCES,
    crop_annotations,
    find_deepforest_data,
    half_stride_windows,
    prepare_neon_trees,
    split_blocks,
    tile_edges,
)

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
NAME = re.compile(r"^(?P<stem>.+)_x(?P<x>\d{5})_y(?P<y>\d{5})_(?P<w>\d+)x(?P<h>\d+)\.jpg$")
# 128x64 "A" (4 x 2 tiles of 32 px = blocks A0 | A1), 64x64 "B" (block B0), 64x32 "C" unlabeled.
SOURCES = (("A.png", "A.xml"), ("B.png", "B.xml"), ("C.png", None))
BOXES_A = [
    ("Tree", (4, 4, 20, 20)),  # inside tile (0, 0)
    ("Tree", (24, 40, 44, 56)),  # 8 px left of x=32 (40% -> ignored), 12 px right (kept)
    ("Tree", (60, 8, 72, 16)),  # across the A0 | A1 block border at x=64: 4 px | 8 px
]
BOXES_B = [("Alive", (8, 8, 24, 24)), ("Dead", (40, 40, 56, 56))]


def _gradient(width: int, height: int, base: int) -> np.ndarray:
    """Smooth BGR image whose pixels tell where they are (survives JPEG to a few levels)."""
    x = np.arange(width)[None, :].repeat(height, 0)
    y = np.arange(height)[:, None].repeat(width, 1)
    return np.stack([x * 255 // width, y * 255 // height, np.full_like(x, base)], -1).astype(
        np.uint8
    )


def _write_xml(path, objects) -> None:
    body = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    path.write_text(f"<annotation>{body}</annotation>")


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "deepforest_data"
    d.mkdir()
    images = {"A": _gradient(128, 64, 40), "B": _gradient(64, 64, 120), "C": _gradient(64, 32, 200)}
    for stem, img in images.items():
        cv2.imwrite(str(d / f"{stem}.png"), img)
    _write_xml(d / "A.xml", BOXES_A)
    _write_xml(d / "B.xml", BOXES_B)
    return d, images


def _prepare(data_dir, out, **kw):
    kw = {"tile_size": 32, "block_tiles": 2, "train_fraction": 1 / 3, "seed": 0, **kw}
    return prepare_neon_trees(str(data_dir), str(out), sources=SOURCES, **kw)


def _load_split(out, split):
    with open(os.path.join(out, "annotations", f"instances_{split}.json")) as f:
        coco = json.load(f)
    anns = {}
    for im in coco["images"]:
        anns[im["file_name"]] = sorted(
            (a["bbox"], a["iscrowd"]) for a in coco["annotations"] if a["image_id"] == im["id"]
        )
    return coco, anns


def test_tile_edges_and_windows():
    assert tile_edges(400, 192) == [0, 200, 400]
    assert tile_edges(100, 192) == [0, 100]
    assert tile_edges(1035, 192) == [0, 207, 414, 621, 828, 1035]
    edges = tile_edges(2299, 192)
    widths = np.diff(edges)
    assert len(widths) == 12 and edges[-1] == 2299 and widths.max() - widths.min() <= 1
    assert half_stride_windows(0, 400, 2) == [(0, 200), (100, 200), (200, 200)]
    assert half_stride_windows(10, 110, 1) == [(10, 100)]


def test_crop_annotations_hand_case():
    boxes = np.array([[10, 10, 30, 30], [40, 0, 60, 20], [45, 30, 65, 50], [60, 60, 70, 70]])
    anns = crop_annotations(boxes, (0, 0, 50, 50), min_visible=0.5)
    assert anns == [
        {"bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0},
        {"bbox": [40.0, 0.0, 10.0, 20.0], "area": 200.0, "iscrowd": 0},  # exactly half: kept
        {"bbox": [45.0, 30.0, 5.0, 20.0], "area": 100.0, "iscrowd": 1},  # a quarter: ignored
    ]
    # a shifted window moves the boxes into its own pixels
    anns = crop_annotations(boxes, (40, 0, 90, 50), min_visible=0.5)
    assert [a["bbox"] for a in anns] == [[0.0, 0.0, 20.0, 20.0], [5.0, 30.0, 20.0, 20.0]]
    assert [a["iscrowd"] for a in anns] == [0, 0]


def test_split_blocks_deterministic():
    a = split_blocks(20, 0.4, seed=0)
    assert a.sum() == 8 and np.array_equal(a, split_blocks(20, 0.4, seed=0))
    assert not np.array_equal(a, split_blocks(20, 0.4, seed=1))


def test_prepare_tiles_boxes_and_split(data_dir, tmp_path):
    d, images = data_dir
    out = tmp_path / "neon_trees"
    done = _prepare(d, out)
    train, train_anns = _load_split(out, "train")
    val, val_anns = _load_split(out, "val")
    assert train["categories"] == val["categories"] == [
        {"id": 1, "name": "tree", "supercategory": "plant"}
    ]
    # 3 blocks, round(3 / 3) = 1 to train, whole: its 4 tiles go together
    assert len(train_anns) == 4 and len(val_anns) == 8
    assert not set(train_anns) & set(val_anns)
    stems = {NAME.match(f)["stem"] for f in train_anns}
    assert len(stems) == 1
    # every tile holds the source pixels its name says (JPEG: within a few levels)
    covered = {s: np.zeros(img.shape[:2], bool) for s, img in images.items()}
    for split in ("train", "val"):
        for f in os.listdir(out / split):
            m = NAME.match(f)
            x, y, w, h = (int(m[k]) for k in "xywh")
            tile = cv2.imread(str(out / split / f))
            src = images[m["stem"]][y : y + h, x : x + w]
            assert tile.shape == src.shape == (32, 32, 3)
            assert np.abs(tile.astype(int) - src).max() <= 8, f
            assert not covered[m["stem"]][y : y + h, x : x + w].any()
            covered[m["stem"]][y : y + h, x : x + w] = True
    assert covered["A"].all() and covered["B"].all() and not covered["C"].any()
    # hand-computed boxes of every tile, in tile pixels; a cut remnant under 50% is ignored
    expected = {
        "A_x00000_y00000_32x32.jpg": [([4.0, 4.0, 16.0, 16.0], 0)],
        "A_x00000_y00032_32x32.jpg": [([24.0, 8.0, 8.0, 16.0], 1)],
        "A_x00032_y00032_32x32.jpg": [([0.0, 8.0, 12.0, 16.0], 0)],
        "A_x00032_y00000_32x32.jpg": [([28.0, 8.0, 4.0, 8.0], 1)],
        "A_x00064_y00000_32x32.jpg": [([0.0, 8.0, 8.0, 8.0], 0)],
        "B_x00000_y00000_32x32.jpg": [([8.0, 8.0, 16.0, 16.0], 0)],
        "B_x00032_y00032_32x32.jpg": [([8.0, 8.0, 16.0, 16.0], 0)],
    }
    all_anns = {**train_anns, **val_anns}
    for f, anns in all_anns.items():
        assert anns == expected.get(f, []), f
    counts = done["counts"]
    assert counts["train"]["images"] == 4 and counts["val"]["images"] == 8
    assert counts["train"]["boxes"] + counts["val"]["boxes"] == 5
    assert counts["train"]["ignored"] + counts["val"]["ignored"] == 2
    # unlabeled: 3 x 3 half-stride windows of the train block, 3 over C, never a val pixel
    unlabeled = sorted(os.listdir(out / "unlabeled"))
    assert counts["unlabeled"]["images"] == len(unlabeled) == 12
    train_mask = {s: np.zeros(img.shape[:2], bool) for s, img in images.items()}
    for f in train_anns:
        m = NAME.match(f)
        x, y = int(m["x"]), int(m["y"])
        train_mask[m["stem"]][y : y + 32, x : x + 32] = True
    train_mask["C"][:] = True
    for f in unlabeled:
        m = NAME.match(f)
        x, y, w, h = (int(m[k]) for k in "xywh")
        assert (w, h) == (32, 32) and train_mask[m["stem"]][y : y + h, x : x + w].all(), f
    assert sum(f.startswith("C_") for f in unlabeled) == 3


def test_prepare_is_deterministic_and_resumable(data_dir, tmp_path):
    d, _ = data_dir
    first, second = tmp_path / "a", tmp_path / "b"
    _prepare(d, first)
    _prepare(d, second)
    for rel in ("annotations/instances_train.json", "annotations/instances_val.json"):
        assert (first / rel).read_bytes() == (second / rel).read_bytes()
    assert sorted(os.listdir(first / "unlabeled")) == sorted(os.listdir(second / "unlabeled"))
    # another seed moves the train block
    other = tmp_path / "c"
    _prepare(d, other, seed=3)
    assert sorted(os.listdir(other / "train")) != sorted(os.listdir(first / "train"))
    # same arguments: nothing rewritten; other arguments: refused unless overwrite
    stamp = os.path.getmtime(first / "params.json")
    _prepare(d, first)
    assert os.path.getmtime(first / "params.json") == stamp
    with pytest.raises(FileExistsError, match="--overwrite"):
        _prepare(d, first, min_visible=0.3)
    done = _prepare(d, first, min_visible=0.3, overwrite=True)
    assert done["params"]["min_visible"] == 0.3 and done["counts"]["val"]["ignored"] >= 0


def test_prepare_bad_input(data_dir, tmp_path):
    d, _ = data_dir
    with pytest.raises(ValueError, match="train_fraction"):
        _prepare(d, tmp_path / "x", train_fraction=1.0)
    with pytest.raises(ValueError, match="leaves train or val empty"):
        _prepare(d, tmp_path / "x", train_fraction=0.1)
    with pytest.raises(ValueError, match="tile_size"):
        _prepare(d, tmp_path / "x", tile_size=8)
    os.remove(d / "B.xml")
    with pytest.raises(FileNotFoundError, match="B.xml"):
        _prepare(d, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_builtin_names_load_the_prepared_set(data_dir, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from soco_d2.data.datasets import dataset_info, register_builtin

    d, _ = data_dir
    _prepare(d, tmp_path / "neon_trees")
    register_builtin(str(tmp_path))
    try:
        train = DatasetCatalog.get("neon_trees_train")
        assert len(train) == 4
        assert MetadataCatalog.get("neon_trees_train").thing_classes == ["tree"]
        assert dataset_info("neon_trees_val")["has_masks"] is False
        assert dataset_info("neon_trees_val")["num_classes"] == 1
        assert len(DatasetCatalog.get("neon_trees_unlabeled")) == 12
        assert MetadataCatalog.get("neon_trees_unlabeled").proposal_cache == str(
            tmp_path / "neon_trees" / "proposals_unlabeled"
        )
    finally:
        register_builtin()  # back to $DETECTRON2_DATASETS for the other tests


def test_cli_reports_bad_arguments(data_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "prepare_neon_trees", os.path.join(REPO, "datasets", "prepare_neon_trees.py")
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    d, _ = data_dir
    with pytest.raises(SystemExit, match="train_fraction"):
        cli.main(["--data-dir", str(d), "--out", str(tmp_path / "o"), "--train-fraction", "2"])
    with pytest.raises(SystemExit, match="not in the data folder"):
        # the default sources (NEON_TREES_SOURCES) are not in the stand-in folder
        cli.main(["--data-dir", str(d), "--out", str(tmp_path / "o")])


def _has_deepforest() -> bool:
    try:
        importlib.metadata.distribution("deepforest")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


# The package's import pulls in heavy runtime dependencies it does not need for its data (it is
# installed with --no-deps), so presence is checked through its distribution, not an import.
@pytest.mark.skipif(not _has_deepforest(), reason="optional: `make bench-data-real` installs it")
def test_real_deepforest_files():
    data_dir = find_deepforest_data()
    counts = {}
    for image, xml in NEON_TREES_SOURCES:
        assert os.path.isfile(os.path.join(data_dir, image)), image
        if xml:
            with open(os.path.join(data_dir, xml)) as f:
                counts[image] = f.read().count("<object>")
    assert sorted(counts.values()) == [37, 61, 279, 574]
