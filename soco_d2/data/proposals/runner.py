"""Dataset-scale selective search: workers, shards, resume after any kill, report.

Work is committed in chunk files under ``OUTPUT.parts/`` (each written to a temporary name and
renamed, so a chunk either exists whole or not at all). A rerun with the same arguments loads
the committed chunks, searches only the images they do not cover, and finally writes the cache
and its report (``OUTPUT.report.json``) atomically and removes the parts directory. Killed at
any moment, even by SIGKILL, a run therefore loses at most the chunks in flight, and the
finished cache is identical to an uninterrupted run's (search output is deterministic).
"""
import glob
import json
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import sys
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Sequence, Tuple

from ...utils.io import atomic_write
from .cache import ProposalCache, merge_caches, write_cache
from .filters import FilterConfig
from .images import list_images
from .search import DEFAULT_MAX_SIZE, DEFAULT_MODE, propose_image

__all__ = ["SearchConfig", "run_selective_search", "merge_runs", "resolve_input", "parse_shard"]


@dataclass
class SearchConfig:
    """Everything that determines a run's output (``workers``/``chunk_size`` only its speed)."""

    input: str
    output: str
    max_size: int = DEFAULT_MAX_SIZE
    mode: str = DEFAULT_MODE
    shard: Tuple[int, int] = (0, 1)
    filter: FilterConfig = field(default_factory=FilterConfig)
    workers: int = 1
    chunk_size: int = 0  # 0: automatic
    progress: bool = True


def parse_shard(text: str) -> Tuple[int, int]:
    """"I/N" -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N, got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return i, n


def resolve_input(source: str) -> Tuple[List[Tuple[str, str]], str]:
    """(key, file path) pairs of an image folder or a registered detectron2 dataset.

    Returns:
        the pairs sorted by key, and a stable description of the source.
    """
    if os.path.isdir(source):
        root = os.path.abspath(source)
        return [(rel, os.path.join(root, rel)) for rel in list_images(root)], root
    import soco_d2.data.datasets  # noqa: F401  (registers the plugin's datasets)
    from detectron2.data import DatasetCatalog

    if source not in DatasetCatalog.list():
        raise ValueError(f"--input {source!r} is neither a directory nor a registered dataset")
    pairs: Dict[str, str] = {}
    for record in DatasetCatalog.get(source):
        key = str(record["image_id"])
        if pairs.setdefault(key, record["file_name"]) != record["file_name"]:
            raise ValueError(f"dataset {source!r}: image_id {key} names two files")
    return sorted(pairs.items()), f"dataset:{source}"


def _fingerprint(cfg: SearchConfig, source: str, items: Sequence[Tuple[str, str]]) -> dict:
    digest = zlib.crc32("\n".join(k for k, _ in items).encode("utf-8"))
    return {"input": source, "mode": cfg.mode, "max_size": cfg.max_size,
            "filter": asdict(cfg.filter), "shard": list(cfg.shard), "images": len(items),
            "keys_crc32": digest}


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one core per worker; OpenCV's own pool would oversubscribe
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C


def _process_chunk(task) -> dict:
    """Search a list of images and commit them as one chunk file; returns a small summary."""
    parts, first, items, max_size, mode, filter_cfg = task
    records = []
    for key, path in items:
        r = propose_image(path, max_size, mode, filter_cfg)
        records.append({"key": key, "path": path, "boxes": r.boxes, "rule": r.rule,
                        "width": r.width, "height": r.height, "raw": r.raw,
                        "notes": r.notes, "error": r.error})
    with atomic_write(os.path.join(parts, f"chunk-{first:09d}.pkl"), "wb") as f:
        pickle.dump(records, f, protocol=pickle.HIGHEST_PROTOCOL)
    return {"images": len(records)}


def _load_chunks(parts: str) -> Dict[str, dict]:
    done: Dict[str, dict] = {}
    for path in sorted(glob.glob(os.path.join(parts, "chunk-*.pkl"))):
        with open(path, "rb") as f:
            for rec in pickle.load(f):
                done.setdefault(rec["key"], rec)
    return done


def _summarize(records: Sequence[dict], seconds: float, output: str) -> Tuple[dict, list]:
    bad = []
    for rec in records:
        if rec["error"]:
            bad.append({"path": rec["path"], "reason": rec["error"], "action": "skipped"})
        elif rec["notes"]:
            bad.append({"path": rec["path"], "reason": "; ".join(rec["notes"]),
                        "action": "processed"})
    good = [r for r in records if not r["error"]]
    summary = {
        "images": len(records),
        "processed": len(good),
        "boxes": int(sum(len(r["boxes"]) for r in good)),
        "raw_boxes": int(sum(r["raw"] for r in good)),
        "rules": dict(sorted(Counter(r["rule"] for r in good).items())),
        "bad_files": len(bad),
        "skipped": sum(1 for b in bad if b["action"] == "skipped"),
        "seconds": round(seconds, 3),
        "output": output,
        "report": output + ".report.json",
    }
    return summary, bad


def _write_report(output: str, summary: dict, bad: list) -> None:
    with atomic_write(output + ".report.json") as f:
        json.dump({"summary": summary, "bad_files": bad}, f, indent=1)


def run_selective_search(cfg: SearchConfig) -> dict:
    """Run (or resume) selective search over a dataset and write its cache.

    Args:
        cfg: run configuration; ``cfg.output`` is the cache file to write.

    Returns:
        the summary dict (images, processed, boxes, raw_boxes, rules, bad_files, skipped,
        seconds, images_per_s, resumed, output, report); also stored in ``report``.
    """
    start = time.time()
    items, source = resolve_input(cfg.input)
    i, n = cfg.shard
    items = items[i::n]
    fingerprint = _fingerprint(cfg, source, items)
    parts = cfg.output + ".parts"
    os.makedirs(os.path.dirname(os.path.abspath(cfg.output)), exist_ok=True)
    if not os.path.isdir(parts) and os.path.exists(cfg.output):
        try:
            if ProposalCache(cfg.output).meta.get("fingerprint") == fingerprint:
                with open(cfg.output + ".report.json") as f:
                    summary = json.load(f)["summary"]
                summary.update(seconds=round(time.time() - start, 3), resumed="complete")
                return summary
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign output: recompute it
    os.makedirs(parts, exist_ok=True)
    fp_path = os.path.join(parts, "run.json")
    if os.path.exists(fp_path):
        with open(fp_path) as f:
            if json.load(f) != fingerprint:
                raise RuntimeError(f"{parts} holds a run with different arguments or images; "
                                   "rerun with the same arguments or delete it")
    else:
        with atomic_write(fp_path) as f:
            json.dump(fingerprint, f)
    for tmp in glob.glob(os.path.join(parts, "*.tmp*")):
        os.remove(tmp)  # leftovers of a killed run, never committed

    done = _load_chunks(parts)
    todo = [(pos, key, path) for pos, (key, path) in enumerate(items) if key not in done]
    workers = max(1, cfg.workers)
    chunk = cfg.chunk_size or max(4, min(256, len(todo) // (workers * 16) or 1))
    tasks = [(parts, todo[s][0], [(k, p) for _, k, p in todo[s : s + chunk]], cfg.max_size,
              cfg.mode, cfg.filter) for s in range(0, len(todo), chunk)]
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="img",
                   file=sys.stderr, smoothing=0.05, mininterval=1.0, dynamic_ncols=True)
    pool = None
    try:
        if workers == 1:
            _init_worker()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            results = map(_process_chunk, tasks)
        else:
            # spawn, not fork: a forked child inherits OpenCV's (and torch's) thread-pool
            # locks in whatever state the parent's threads held them, and can deadlock on its
            # first parallel call (seen in the test suite after earlier cv2 use).
            pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker)
            results = pool.imap_unordered(_process_chunk, tasks)
        for res in results:
            if bar is not None:
                bar.update(res["images"])
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if pool is not None:
            pool.terminate()  # no-op after a clean join; stops workers on an exception
        if bar is not None:
            bar.close()

    done = _load_chunks(parts)
    records = [done[key] for key, _ in items]
    entries = {r["key"]: {"boxes": r["boxes"], "width": r["width"], "height": r["height"],
                          "rule": r["rule"]} for r in records if not r["error"]}
    meta = {"fingerprint": fingerprint, "mode": cfg.mode, "max_size": cfg.max_size,
            "filter": asdict(cfg.filter), "source": source, "shard": list(cfg.shard)}
    seconds = time.time() - start
    summary, bad = _summarize(records, seconds, cfg.output)
    summary["images_per_s"] = round(len(todo) / max(seconds, 1e-9), 2)
    summary["resumed"] = len(items) - len(todo)  # images taken from an earlier, killed run
    _write_report(cfg.output, summary, bad)  # before the cache: the cache marks completion
    write_cache(cfg.output, entries, meta)
    shutil.rmtree(parts, ignore_errors=True)
    return summary


def merge_runs(output: str, inputs: Sequence[str]) -> dict:
    """Merge shard caches (and their reports) into one cache; returns the merged summary."""
    start = time.time()
    merge_caches(output, inputs)
    records_bad, counts = [], Counter()
    for path in inputs:
        try:
            with open(path + ".report.json") as f:
                rep = json.load(f)
        except OSError:
            continue
        records_bad += rep["bad_files"]
        for k in ("images", "processed", "boxes", "raw_boxes", "skipped"):
            counts[k] += rep["summary"].get(k, 0)
        for rule, c in rep["summary"].get("rules", {}).items():
            counts["rule:" + rule] += c
    cache = ProposalCache(output)
    summary = {"images": counts["images"] or len(cache), "processed": len(cache),
               "boxes": cache.num_boxes(), "raw_boxes": counts["raw_boxes"],
               "rules": {k[5:]: v for k, v in sorted(counts.items()) if k.startswith("rule:")},
               "bad_files": len(records_bad), "skipped": counts["skipped"],
               "seconds": round(time.time() - start, 3), "output": output,
               "report": output + ".report.json"}
    _write_report(output, summary, sorted(records_bad, key=lambda b: b["path"]))
    return summary
