"""Cache round trip, O(1) keyed lookup, basename lookup, pickling."""
import pickle

import numpy as np
import pytest

from soco_d2.data.proposals import ProposalCache, merge_caches, write_cache


def _entries(rng, n, float_boxes=False):
    out = {}
    for i in range(n):
        k = int(rng.integers(0, 6))
        xy = rng.integers(0, 300, (k, 2))
        wh = rng.integers(1, 200, (k, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float64)
        if float_boxes:
            boxes = boxes + rng.random(boxes.shape)
        out[f"dir{i % 7}/img_{i:05d}.jpg"] = dict(
            boxes=boxes, width=int(rng.integers(1, 5000)), height=int(rng.integers(1, 5000)),
            rule=["ratio3size0308", "ratio3", "min32", "whole_image"][i % 4])
    return out


@pytest.mark.parametrize("float_boxes", [False, True])
def test_round_trip(tmp_path, float_boxes):
    rng = np.random.default_rng(0)
    entries = _entries(rng, 50, float_boxes)
    path = str(tmp_path / "c.bin")
    write_cache(path, entries, {"mode": "single"})
    cache = ProposalCache(path)
    assert len(cache) == 50 and cache.keys() == sorted(entries) and cache.meta == {"mode": "single"}
    for key, e in entries.items():
        assert key in cache
        got = cache.get(key)
        assert got.dtype == np.float32 and got.shape == (len(e["boxes"]), 4)
        np.testing.assert_array_equal(got, e["boxes"].astype(np.float32))
        assert cache.info(key) == {"rule": e["rule"], "width": e["width"], "height": e["height"]}
    assert "dir0/missing.jpg" not in cache
    with pytest.raises(KeyError):
        cache.get("dir0/missing.jpg")
    # Integral boxes are stored as uint16: 8 bytes per box.
    assert (cache._s["boxes"].dtype == np.uint16) == (not float_boxes)
    # A pickled cache (data loader workers) reopens the file and gives the same boxes.
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone.get("dir3/img_00003.jpg"), cache.get("dir3/img_00003.jpg"))
    # Writing is deterministic: same entries, same bytes.
    write_cache(str(tmp_path / "d.bin"), dict(reversed(list(entries.items()))), {"mode": "single"})
    assert (tmp_path / "c.bin").read_bytes() == (tmp_path / "d.bin").read_bytes()


def test_lookup_is_constant_time(tmp_path, monkeypatch):
    """A lookup compares O(1) keys (hash table), not a scan or a binary search."""
    n = 20000
    entries = {f"k/{i}.jpg": dict(boxes=np.array([[i % 100, 0, 100, 100]]), width=1, height=1,
                                  rule="r") for i in range(n)}
    write_cache(str(tmp_path / "c.bin"), entries)
    cache = ProposalCache(str(tmp_path / "c.bin"))
    calls = {"n": 0}
    real = cache._key

    def counting(i):
        calls["n"] += 1
        return real(i)

    monkeypatch.setattr(cache, "_key", counting)
    probe = [f"k/{i}.jpg" for i in range(0, n, 97)]
    for key in probe:
        assert cache.get(key)[0, 0] == int(key[2:-4]) % 100
    assert calls["n"] / len(probe) < 2.0  # binary search would need ~15 comparisons
    calls["n"] = 0
    assert "k/absent.jpg" not in cache
    assert calls["n"] <= 8


def test_find_by_basename_and_stem(tmp_path):
    entries = {
        "train/n01/n01_1.JPEG": dict(boxes=np.array([[1, 2, 3, 4]]), width=9, height=9, rule="r"),
        "train/n02/n02_7.JPEG": dict(boxes=np.array([[5, 6, 7, 8]]), width=9, height=9, rule="r"),
        "a/dup.jpg": dict(boxes=np.array([[0, 0, 1, 1]]), width=9, height=9, rule="r"),
        "b/dup.png": dict(boxes=np.array([[0, 0, 2, 2]]), width=9, height=9, rule="r"),
    }
    write_cache(str(tmp_path / "c.bin"), entries)
    cache = ProposalCache(str(tmp_path / "c.bin"))
    np.testing.assert_array_equal(cache.find("/data/imagenet/train/n02/n02_7.JPEG"), [[5, 6, 7, 8]])
    np.testing.assert_array_equal(cache.find("n01_1"), [[1, 2, 3, 4]])  # official JSON style
    np.testing.assert_array_equal(cache.find("a/dup.jpg"), [[0, 0, 1, 1]])  # exact key wins
    with pytest.raises(KeyError, match="several"):
        cache.find("/x/dup.jpg")
    with pytest.raises(KeyError):
        cache.find("n03_1.JPEG")
    # resolve names the key that find's boxes belong to (one lookup for the loader and mapper)
    assert cache.resolve("/data/imagenet/train/n02/n02_7.JPEG") == "train/n02/n02_7.JPEG"
    assert cache.resolve("n01_1") == "train/n01/n01_1.JPEG"
    assert cache.resolve("a/dup.jpg") == "a/dup.jpg"
    for absent_or_ambiguous in ("/x/dup.jpg", "n03_1.JPEG"):
        with pytest.raises(KeyError):
            cache.resolve(absent_or_ambiguous)


def test_merge_rejects_conflicts(tmp_path):
    a = {"x.jpg": dict(boxes=np.array([[0, 0, 5, 5]]), width=9, height=9, rule="r")}
    b = {"x.jpg": dict(boxes=np.array([[0, 0, 6, 6]]), width=9, height=9, rule="r")}
    write_cache(str(tmp_path / "a"), a)
    write_cache(str(tmp_path / "b"), b)
    with pytest.raises(ValueError, match="different boxes"):
        merge_caches(str(tmp_path / "m"), [str(tmp_path / "a"), str(tmp_path / "b")])
