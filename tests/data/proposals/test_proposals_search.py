"""Search on real photographs: reproducibility, modes, mapping back to original pixels."""
import cv2
import numpy as np
import pytest
import skimage.data

from soco_d2.data.proposals import load_image, propose_image, search_boxes


@pytest.fixture(scope="module")
def coffee():
    img = np.ascontiguousarray(skimage.data.coffee()[:, :, ::-1])  # 400 x 600 BGR
    return cv2.resize(img, (180, 120), interpolation=cv2.INTER_AREA)


def test_search_is_reproducible_and_dual_extends_single(coffee):
    single = search_boxes(coffee, "single")
    assert len(single) > 5
    np.testing.assert_array_equal(single, search_boxes(coffee, "single"))
    dual = search_boxes(coffee, "dual")
    rows = {tuple(b) for b in dual}
    assert all(tuple(b) in rows for b in single) and len(dual) > len(single)
    assert (single[:, 2] > single[:, 0]).all() and (single[:, 3] > single[:, 1]).all()
    assert single[:, 2].max() <= 180 and single[:, 3].max() <= 120
    with pytest.raises(ValueError):
        search_boxes(coffee, "slow")


def test_boxes_are_mapped_back_to_original_pixels(tmp_path, coffee):
    big = cv2.resize(coffee, (720, 480), interpolation=cv2.INTER_LINEAR)  # 4x the searched copy
    cv2.imwrite(str(tmp_path / "big.png"), big)
    loaded = load_image(str(tmp_path / "big.png"), max_size=180)
    assert loaded.image.shape == (120, 180, 3) and (loaded.width, loaded.height) == (720, 480)
    res = propose_image(str(tmp_path / "big.png"), max_size=180, mode="single")
    small = search_boxes(loaded.image, "single")
    # Every raw box is the searched copy's box scaled by 4 (original pixels, whole numbers).
    np.testing.assert_array_equal(res.raw_boxes, np.unique(small * 4, axis=0))
    assert res.width == 720 and res.raw == len(small)
    assert res.rule == "ratio3size0308"
    side = np.sqrt((res.boxes[:, 2] - res.boxes[:, 0]) * (res.boxes[:, 3] - res.boxes[:, 1]))
    assert (side >= 0.3 * np.sqrt(720 * 480) - 1e-3).all()
