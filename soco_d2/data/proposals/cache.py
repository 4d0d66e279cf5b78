"""The proposal cache: one binary file per dataset, memory-mapped, O(1) lookup by key.

Layout (little endian)::

    b"SOCOPRP1" | uint64 header length | header JSON | sections, each 64-byte aligned

The header names each section's offset, dtype and shape:

    boxes      (B, 4)   uint16 (uint32 / float32 when coordinates need it), XYXY_ABS
    box_start  (N + 1,) int64   image i owns boxes[box_start[i]:box_start[i + 1]]
    size       (N, 2)   uint32  original (width, height)
    rule       (N,)     uint8   index into header["rules"]
    key_start  (N + 1,) int64   image i's key is key_blob[key_start[i]:key_start[i + 1]] (UTF-8)
    key_blob   (K,)     uint8
    key_slots  (T,)     int32   open-addressing hash table (crc32, linear probing) key -> i
    stem_slots (T,)     int32   same for basename stems; -3 - i marks a stem shared by rows

Opening reads only the header; a lookup touches a few slots, one key and one image's boxes.
Images are stored sorted by key, so equal inputs give byte-identical files.
"""
import json
import os
import struct
import zlib
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from ...utils.io import atomic_write

__all__ = ["ProposalCache", "write_cache", "merge_caches", "key_stem"]

MAGIC = b"SOCOPRP1"
_ALIGN = 64
_EMPTY, _AMBIGUOUS = -1, -2  # _AMBIGUOUS is only ever returned, never stored
_STRIP_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
               ".pgm", ".pbm", ".jfif")


def key_stem(key: str) -> str:
    """Basename without an image extension: how the official SoCo JSON names images."""
    base = key.replace("\\", "/").rsplit("/", 1)[-1]
    root, ext = os.path.splitext(base)
    return root if ext.lower() in _STRIP_EXTS else base


def _slot(data: bytes, mask: int) -> int:
    return zlib.crc32(data) & mask


def _build_table(names: Sequence[bytes], size: int, allow_dupes: bool) -> np.ndarray:
    """Hash table name -> row. With ``allow_dupes``, a name held by several rows is stored as
    ``-3 - row`` (row of its first holder), so lookups can still compare names."""
    first: Dict[bytes, int] = {}
    dupes = set()
    for i, name in enumerate(names):
        if name in first:
            if not allow_dupes:
                raise ValueError(f"duplicate key {name.decode()!r}")
            dupes.add(name)
        else:
            first[name] = i
    table = np.full(size, _EMPTY, dtype=np.int32)
    mask = size - 1
    for name, i in first.items():
        s = _slot(name, mask)
        while table[s] != _EMPTY:
            s = (s + 1) & mask
        table[s] = -3 - i if name in dupes else i
    return table


def _box_array(boxes: np.ndarray) -> np.ndarray:
    if boxes.size == 0:
        return boxes.astype(np.uint16).reshape(0, 4)
    if np.array_equal(boxes, np.round(boxes)) and boxes.min() >= 0:
        if boxes.max() <= np.iinfo(np.uint16).max:
            return boxes.astype(np.uint16)
        if boxes.max() <= np.iinfo(np.uint32).max:
            return boxes.astype(np.uint32)
    return boxes.astype(np.float32)


def write_cache(
    path: str,
    entries: Dict[str, dict],
    meta: Optional[dict] = None,
) -> None:
    """Write a cache atomically (temporary file, then rename).

    Args:
        path: output file.
        entries: key -> dict(boxes=(N, 4) XYXY_ABS array, width=int, height=int, rule=str).
            Integral non-negative boxes are stored exactly as uint16/uint32, others as float32.
        meta: JSON-serialisable description of how the proposals were made.
    """
    keys = sorted(entries)
    n = len(keys)
    rules = sorted({entries[k]["rule"] for k in keys})
    counts = np.array([len(entries[k]["boxes"]) for k in keys], dtype=np.int64)
    box_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=box_start[1:])
    all_boxes = (np.concatenate([np.asarray(entries[k]["boxes"], np.float64).reshape(-1, 4)
                                 for k in keys]) if n else np.zeros((0, 4)))
    key_bytes = [k.encode("utf-8") for k in keys]
    key_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(b) for b in key_bytes], out=key_start[1:])
    table_size = 8
    while table_size < 2 * n:
        table_size *= 2
    sections = {
        "boxes": _box_array(all_boxes),
        "box_start": box_start,
        "size": np.array([[entries[k]["width"], entries[k]["height"]] for k in keys],
                         dtype=np.uint32).reshape(n, 2),
        "rule": np.array([rules.index(entries[k]["rule"]) for k in keys], dtype=np.uint8),
        "key_start": key_start,
        "key_blob": np.frombuffer(b"".join(key_bytes), dtype=np.uint8),
        "key_slots": _build_table(key_bytes, table_size, allow_dupes=False),
        "stem_slots": _build_table([key_stem(k).encode("utf-8") for k in keys], table_size,
                                   allow_dupes=True),
    }
    layout, offset = {}, 0
    for name, arr in sections.items():
        layout[name] = [offset, arr.dtype.str, list(arr.shape)]
        offset += -(-arr.nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"version": 1, "num_images": n, "num_boxes": int(len(all_boxes)),
                         "rules": rules, "sections": layout, "meta": meta or {}}).encode()
    start = -(-(len(MAGIC) + 8 + len(header)) // _ALIGN) * _ALIGN
    with atomic_write(path, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", len(header)) + header)
        for name, arr in sections.items():
            f.seek(start + layout[name][0])
            f.write(np.ascontiguousarray(arr).tobytes())
        f.truncate(start + offset)


class ProposalCache:
    """Read-only, memory-mapped proposal cache (see the module docstring for the layout).

    Cheap to open and picklable (a pickled cache reopens its file), so every data loader
    worker can hold one.
    """

    def __init__(self, path: str):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            head = f.read(len(MAGIC) + 8)
            if len(head) < len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
                raise ValueError(f"{self.path} is not a soco_d2 proposal cache")
            (hlen,) = struct.unpack("<Q", head[len(MAGIC):])
            self.header = json.loads(f.read(hlen))
        start = -(-(len(MAGIC) + 8 + hlen) // _ALIGN) * _ALIGN
        mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        self._s = {}
        for name, (off, dtype, shape) in self.header["sections"].items():
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            self._s[name] = mm[start + off : start + off + nbytes].view(dtype).reshape(shape)
        self.rules: List[str] = self.header["rules"]
        self.meta: dict = self.header["meta"]
        self._mask = len(self._s["key_slots"]) - 1

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __len__(self) -> int:
        return int(self.header["num_images"])

    def _key(self, i: int) -> bytes:
        ks = self._s["key_start"]
        return self._s["key_blob"][ks[i] : ks[i + 1]].tobytes()

    def _lookup(self, table: str, name: str) -> int:
        data = name.encode("utf-8")
        slots = self._s[table]
        s = _slot(data, self._mask)
        while True:
            v = int(slots[s])
            if v == _EMPTY:
                return _EMPTY
            i = v if v >= 0 else -3 - v
            held = self._key(i)
            if table == "stem_slots":
                held = key_stem(held.decode("utf-8")).encode("utf-8")
            if held == data:
                return i if v >= 0 else _AMBIGUOUS
            s = (s + 1) & self._mask

    def index(self, key: str) -> int:
        """Row of ``key``; raises KeyError if absent."""
        i = self._lookup("key_slots", key)
        if i < 0:
            raise KeyError(key)
        return i

    def __contains__(self, key: str) -> bool:
        return self._lookup("key_slots", key) >= 0

    def keys(self) -> List[str]:
        """All keys, sorted."""
        blob = self._s["key_blob"].tobytes()
        ks = self._s["key_start"]
        return [blob[ks[i] : ks[i + 1]].decode("utf-8") for i in range(len(self))]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def boxes_at(self, i: int) -> np.ndarray:
        """(N, 4) float32 XYXY_ABS boxes of row ``i`` in original-image pixels."""
        bs = self._s["box_start"]
        return np.array(self._s["boxes"][bs[i] : bs[i + 1]], dtype=np.float32)

    def get(self, key: str) -> np.ndarray:
        """(N, 4) float32 XYXY_ABS boxes of ``key`` in original-image pixels."""
        return self.boxes_at(self.index(key))

    def find_index(self, key_or_path: str) -> int:
        """Row of an exact key, else of the unique key with the same basename stem."""
        i = self._lookup("key_slots", key_or_path)
        if i >= 0:
            return i
        stem = key_stem(key_or_path)
        i = self._lookup("stem_slots", stem)
        if i == _AMBIGUOUS:
            raise KeyError(f"{key_or_path!r}: several images in the cache share the name {stem!r}")
        if i < 0:
            raise KeyError(key_or_path)
        return i

    def resolve(self, key_or_path: str) -> str:
        """The cache's key for an image: the exact key, else the unique key with the same
        basename stem; KeyError if absent or ambiguous."""
        return self._key(self.find_index(key_or_path)).decode("utf-8")

    def find(self, key_or_path: str) -> np.ndarray:
        """Boxes by exact key, else by basename (with or without extension); KeyError if
        absent or ambiguous."""
        return self.boxes_at(self.find_index(key_or_path))

    def info_at(self, i: int) -> dict:
        w, h = self._s["size"][i]
        return {"rule": self.rules[int(self._s["rule"][i])], "width": int(w), "height": int(h)}

    def info(self, key: str) -> dict:
        """``dict(rule=str, width=int, height=int)`` of ``key`` (0 x 0 if never known)."""
        return self.info_at(self.index(key))

    def num_boxes(self) -> int:
        return int(self.header["num_boxes"])

    def entries(self) -> Dict[str, dict]:
        """Everything, as ``write_cache`` takes it (loads the whole cache)."""
        return {k: dict(boxes=self.boxes_at(i), **self.info_at(i))
                for i, k in enumerate(self.keys())}


def merge_caches(output: str, inputs: Sequence[str], meta: Optional[dict] = None) -> int:
    """Union of several caches (e.g. shards) into one; a key present in two inputs must have
    identical boxes. Returns the number of images written."""
    merged: Dict[str, dict] = {}
    metas = []
    for path in inputs:
        cache = ProposalCache(path)
        metas.append(cache.meta)
        for key, entry in cache.entries().items():
            old = merged.get(key)
            if old is not None and not np.array_equal(old["boxes"], entry["boxes"]):
                raise ValueError(f"{key!r} has different boxes in two inputs of the merge")
            merged[key] = entry
    if meta is None:
        meta = dict(metas[0]) if metas else {}
        meta.pop("shard", None)
        meta.pop("fingerprint", None)
    write_cache(output, merged, meta)
    return len(merged)
