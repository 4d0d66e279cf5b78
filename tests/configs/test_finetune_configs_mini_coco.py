"""Mini-COCO: the first N% of images by id, with exactly their annotations."""
import json

import pytest

from soco_d2.finetune.mini_coco import coco_subset_first_percent, write_coco_subset


def _coco(ids):
    return {
        "info": {"v": 1},
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in ids],
        "annotations": [{"id": 10 * i + k, "image_id": i} for i in ids for k in range(i % 3)],
        "categories": [{"id": 1, "name": "a"}],
    }


def test_first_percent_by_image_id_not_file_order():
    coco = _coco([50, 3, 17, 8, 99, 1, 42, 23, 64, 5, 77, 31, 12, 88, 2, 60, 71, 9, 36, 45])
    sub = coco_subset_first_percent(coco, 10)
    assert [im["id"] for im in sub["images"]] == [1, 2]
    assert sorted(a["image_id"] for a in sub["annotations"]) == [1, 2, 2]
    assert sub["categories"] == coco["categories"] and sub["info"] == coco["info"]
    # 5% of 20 images is exactly one; fractions round up so a split is never empty.
    assert [im["id"] for im in coco_subset_first_percent(coco, 5)["images"]] == [1]
    assert len(coco_subset_first_percent(coco, 7)["images"]) == 2
    with pytest.raises(ValueError):
        coco_subset_first_percent(coco, 0)


def test_write_subset(tmp_path):
    src, dst = tmp_path / "in.json", tmp_path / "out.json"
    src.write_text(json.dumps(_coco(list(range(1, 41)))))
    counts = write_coco_subset(str(src), str(dst), 10)
    out = json.loads(dst.read_text())
    assert counts == {"images": 4, "annotations": len(out["annotations"])}
    assert [im["id"] for im in out["images"]] == [1, 2, 3, 4]
    assert {a["image_id"] for a in out["annotations"]} <= {1, 2, 3, 4}
    assert len(list(tmp_path.iterdir())) == 2  # no temporary file left behind
