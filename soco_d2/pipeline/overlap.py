"""No test image in a pretraining pool: checked on file content before any training stage.

The pools are the datasets every pretraining of the run reads (``DATASETS.TRAIN`` of its config
after the data flags: the ``--unlabeled`` folder, or e.g. the demo's ``soco_demo_unlabeled``);
the test sets are the fine-tune configs' ``DATASETS.TEST`` after ``--test``. A pool may hold
the labelled train images (without their labels) and any other image of the domain, never a
test image: a pool file with the same bytes (sha256) as a test file, under any name, makes
:func:`check_test_pixels` refuse the run.

Identical bytes mean identical sizes, so only the files whose size some file on the other side
shares are read and hashed; every other file costs one ``stat``. The demo's 600 pool and 480 test
images (9.5 MB) hash in 0.02 s in all, so nothing is cached between runs. What this does not
catch: the same picture re-encoded, resized or cropped (other bytes).

A set that cannot be listed now (not registered, or its files missing, as in tests that fake
the trainings) is named in the summary as not checked: its pretraining or evaluation could not
run either.
"""
import hashlib
import os
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["check_test_pixels", "overlap_note", "pretraining_pools", "same_files"]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def same_files(test: Sequence[str], pool: Sequence[str]) -> Tuple[List[Tuple[str, str]], int]:
    """Pairs ``(test file, pool file)`` with the same bytes.

    Args:
        test / pool: image paths.

    Returns:
        ``(pairs, files hashed)``; one pair per test file (its first pool copy).
    """
    sizes = {p: os.stat(p).st_size for p in dict.fromkeys([*test, *pool])}
    common = {sizes[p] for p in test} & {sizes[p] for p in pool}
    hashes = {p: _sha256(p) for p in sizes if sizes[p] in common}
    in_pool: Dict[str, str] = {}
    for p in pool:
        if p in hashes:
            in_pool.setdefault(hashes[p], p)
    pairs = [(t, in_pool[hashes[t]]) for t in dict.fromkeys(test) if hashes.get(t) in in_pool]
    return pairs, len(hashes)


def _files(name: str, unreadable: List[str]) -> Optional[List[str]]:
    from detectron2.data import DatasetCatalog

    try:
        return [r["file_name"] for r in DatasetCatalog.get(name)]
    except (KeyError, OSError, ValueError) as e:
        unreadable.append(f"{name} ({type(e).__name__})")
        return None


def _datasets(config: str, opts: Sequence[str], key: str) -> List[str]:
    from soco_d2.checkpoint import load_detector_cfg
    from soco_d2.data.datasets import register_from_cfg

    cfg = load_detector_cfg(config, opts)
    try:
        register_from_cfg(cfg)
    except (OSError, ValueError):
        pass  # a set that cannot be registered is reported as unreadable below
    return list(cfg.DATASETS.TRAIN if key == "train" else cfg.DATASETS.TEST)


def pretraining_pools(spec, pretrains: Dict[str, str]) -> Dict[str, Tuple[str, List[str]]]:
    """Each pretraining -> (its config, the overrides that choose its data): ``--unlabeled``'s
    (proposal cache left out: it does not change the images) then ``spec.pretrain_opts``.

    Args:
        spec: the run's ``PipelineSpec``.
        pretrains: pretraining name -> config, those this run trains.
    """
    from soco_d2.checkpoint import load_detector_cfg

    from .data import pretrain_data_opts

    out = {}
    for name, config in pretrains.items():
        opts = list(spec.pretrain_opts)
        if spec.unlabeled:
            cfg = load_detector_cfg(config, opts)
            opts = [*pretrain_data_opts(cfg, spec.unlabeled, None), *opts]
        out[name] = (config, opts)
    return out


def check_test_pixels(
    pretrain_opts: Dict[str, Tuple[str, List[str]]], ft_opts: Dict[str, List[str]]
) -> Dict:
    """Refuse a run whose pretraining pools hold a test image (same file bytes).

    Args:
        pretrain_opts: pretraining name -> (its config, the overrides it trains with).
        ft_opts: fine-tune config -> its overrides.

    Returns:
        ``{"test": sets, "pools": sets, "test_images", "pool_images", "hashed",
        "unreadable": sets not listed}``.

    Raises:
        ValueError: naming the count and up to 5 test files found in a pool.
    """
    unreadable: List[str] = []
    tests = list(dict.fromkeys(n for c, o in ft_opts.items() for n in _datasets(c, o, "test")))
    pools = list(dict.fromkeys(
        n for c, o in pretrain_opts.values() for n in _datasets(c, o, "train")
    ))
    test_files = [f for n in tests for f in (_files(n, unreadable) or [])]
    pool_files = [f for n in pools for f in (_files(n, unreadable) or [])]
    pairs, hashed = same_files(test_files, pool_files) if test_files and pool_files else ([], 0)
    if pairs:
        shown = "; ".join(f"{t} = {p}" for t, p in pairs[:5])
        raise ValueError(
            f"{len(pairs)} test image(s) of {', '.join(tests)} are in the pretraining pool "
            f"{', '.join(pools)} (same file bytes): {shown}{' ...' if len(pairs) > 5 else ''}. "
            "A pool may hold the labelled train images and other images of the domain, never a "
            "test image: remove them from the pool and rerun"
        )
    return {"test": tests, "pools": pools, "test_images": len(set(test_files)),
            "pool_images": len(set(pool_files)), "hashed": hashed, "unreadable": unreadable}


def overlap_note(summary: Optional[Dict]) -> str:
    """The results.md line saying what :func:`check_test_pixels` checked."""
    if summary is None or not summary["pools"]:
        return "Test images in a pretraining pool: no pretraining in this run."
    unreadable = ", ".join(summary["unreadable"])
    if not summary["test_images"] or not summary["pool_images"]:
        why = f"{unreadable} could not be listed" if unreadable else "an empty set"
        return f"Test images in a pretraining pool: not checked ({why})."
    sets = lambda names: ", ".join(f"`{n}`" for n in names)  # noqa: E731
    return (
        f"Test images in a pretraining pool: none (same file bytes, sha256; "
        f"{summary['test_images']} test images of {sets(summary['test'])}, "
        f"{summary['pool_images']} pool images of {sets(summary['pools'])})"
        + (f"; not checked: {unreadable}." if unreadable else ".")
    )
