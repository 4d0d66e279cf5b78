"""Official SoCo JSON import/export and detectron2 proposal-file export."""
import json
import runpy
from pathlib import Path

import numpy as np

from soco_d2.data.proposals import ProposalCache, convert_proposals, write_cache

REPO = Path(__file__).resolve().parents[3]


def test_official_json_round_trip_and_x2_convention(tmp_path):
    official = {"n01440764_10026": [[10, 20, 30, 40], [0, 0, 500, 375]],
                "n01440764_10027": [],
                "n02_1": [[5, 6, 1, 1]]}
    src = tmp_path / "props.json"
    src.write_text(json.dumps(official))
    convert_proposals(str(src), str(tmp_path / "c.bin"))
    cache = ProposalCache(str(tmp_path / "c.bin"))
    # x2 = x + w - 1, y2 = y + h - 1
    np.testing.assert_array_equal(cache.get("n01440764_10026"),
                                  [[10, 20, 39, 59], [0, 0, 499, 374]])
    np.testing.assert_array_equal(cache.get("n02_1"), [[5, 6, 5, 6]])
    assert cache.get("n01440764_10027").shape == (0, 4)
    assert cache.info("n02_1")["rule"] == "imported"
    # Official keys are basename stems: a dataset file path finds them.
    np.testing.assert_array_equal(cache.find("/imagenet/train/n02/n02_1.JPEG"), [[5, 6, 5, 6]])
    convert_proposals(str(tmp_path / "c.bin"), str(tmp_path / "back.json"))
    assert json.loads((tmp_path / "back.json").read_text()) == official


def test_cache_export_uses_basename_stems(tmp_path):
    entries = {"train/cls/img1.JPEG": dict(boxes=np.array([[10, 20, 40, 60]]), width=100,
                                           height=80, rule="ratio3size0308")}
    write_cache(str(tmp_path / "c.bin"), entries)
    convert_proposals(str(tmp_path / "c.bin"), str(tmp_path / "o.json"))
    # w = x2 - x1 + 1 so that the official reader's x + w - 1 gives x2 back.
    assert json.loads((tmp_path / "o.json").read_text()) == {"img1": [[10, 20, 31, 41]]}


def test_detectron2_proposal_file_loads(tmp_path):
    from detectron2.data.build import load_proposals_into_dataset
    from detectron2.structures import BoxMode

    boxes = {"1": np.array([[0, 0, 50, 40], [10, 10, 90, 70], [5, 5, 20, 30]]),
             "7": np.array([[1, 2, 3, 4]])}
    write_cache(str(tmp_path / "c.bin"), {k: dict(boxes=v, width=100, height=80, rule="r")
                                          for k, v in boxes.items()})
    # Through the command-line tool's main(), as users run it.
    main = runpy.run_path(str(REPO / "tools/convert_proposals.py"), run_name="cli")["main"]
    assert main([str(tmp_path / "c.bin"), str(tmp_path / "p.pkl")]) == 0
    dicts = [{"image_id": 7, "file_name": "b.jpg"}, {"image_id": 1, "file_name": "a.jpg"}]
    out = load_proposals_into_dataset(dicts, str(tmp_path / "p.pkl"))
    by_id = {d["image_id"]: d for d in out}
    for image_id, expect in ((1, boxes["1"]), (7, boxes["7"])):
        d = by_id[image_id]
        assert d["proposal_bbox_mode"] == BoxMode.XYXY_ABS
        # detectron2 sorts by objectness: the stored order must survive.
        np.testing.assert_array_equal(d["proposal_boxes"], expect.astype(np.float32))
        assert len(d["proposal_objectness_logits"]) == len(expect)
