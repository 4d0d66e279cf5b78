#!/usr/bin/env python
"""Benchmark each pretraining method's full data-loader path on ImageNet-sized JPEGs.

Usage:
    tools/benchmark_loader.py [--methods soco,mocov2,densecl,detco,byol,sim] [--workers 1,2]
        [--images 256] [--size 500x375] [--image-dir DIR] [--seconds 15] [--batch 32]
        [--profile] [--compare [--rounds 3]] [--gpu-images-per-s METHOD=N ...] [--json OUT]
        [KEY VALUE ...]

Writes ``--images`` deterministic JPEGs (quality 90, multi-scale noise with shapes, about
105 KB each at 500x375, as ImageNet's photos on average) and a proposal cache of random boxes,
or reuses them in ``--image-dir``. For every method and worker count it builds the
training loader exactly as the Trainer does (``soco_d2.data.build.build_pretrain_loader``:
the config's mapper, ``DATALOADER.NUM_WORKERS`` worker processes, ``--batch`` images per
batch) and pulls batches for ``--seconds`` after a warm-up, so every image is read from disk,
decoded, augmented and sent to this process. Prints images/s, images/s per worker, images per
second of worker CPU time (all worker threads; robust on a shared machine), this process's CPU
per image, and the CPU cores one GPU needs at its images/s: ``--gpu-images-per-s`` (e.g. from
``tools/gpu_check.py``), else an estimate from the method's floor FLOPs (:data:`FLOOR_GFLOP`) at
:data:`EFFECTIVE_TFLOPS`. ``--profile`` also runs the mapper in this process under cProfile and
splits its time into decode, resize, colour and the rest. ``--compare`` alternates the data
path before and after the loader speed-ups (:func:`baseline_data_path`), ``--rounds`` times
each, and reports the median of each and their ratio. The last line is one JSON object.
"""
import argparse
import contextlib
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from typing import Dict, List, Sequence

import cv2
import numpy as np

METHODS = {
    "soco": "pretrain/soco_R50_FPN_100ep.yaml",
    "mocov2": "pretrain/mocov2_R50_200ep.yaml",
    "densecl": "pretrain/densecl_R50_imagenet_200ep.yaml",
    "detco": "pretrain/detco_R50_200ep.yaml",
    "byol": "pretrain/byol_R50_300ep.yaml",
    "sim": "pretrain/sim_vit_B16_1600ep.yaml",
}
# GFLOP per image of each method's floor (its model's floor(): online backbone forward and
# backward, target forward; 2 FLOP per multiply-add, fvcore's counts of the backbones: R50 4.11
# GMAC at 224 px, R50-FPN 6.96, ViT-B/16 17.6 over 196 tokens). SoCo: views 224, 224, 112;
# DetCo: plus nine 64 px patches per view; BYOL: both views through both branches; SIM: online
# encoder on the 78 visible tokens, target on all 196.
FLOOR_GFLOP = {"soco": 125.0, "mocov2": 33.0, "densecl": 35.0, "detco": 57.0, "byol": 66.0,
               "sim": 77.0}
# An H100's ~400 TFLOPS bf16 at ~40 % utilisation: an estimate until a GPU run measures it.
EFFECTIVE_TFLOPS = 160.0
_PROFILE_GROUPS = {
    "decode": ("'decode' of 'ImagingDecoder'", "imdecode", "imread"),
    "resize": ("resize", "warpAffine"),
    "colour": ("cvtColor", "LUT", "addWeighted", "convertScaleAbs", "GaussianBlur"),
}


def write_images(root: str, count: int, width: int = 500, height: int = 375,
                 seed: int = 0) -> List[str]:
    """Write ``count`` JPEGs (quality 90) into ``root`` unless present; returns their names.

    Each image is noise summed over four scales (blobs down to fine texture; mostly brightness)
    plus filled circles and rectangles and sensor noise, from its own seeded generator. Images
    wider than 500 px show the same kind of scene at a higher resolution (scales grow with the
    width; the sensor noise stays per pixel).
    """
    os.makedirs(root, exist_ok=True)
    names = []
    for i in range(count):
        name = f"img_{i:05d}.jpg"
        names.append(name)
        path = os.path.join(root, name)
        if os.path.exists(path):
            continue
        rng = np.random.default_rng([seed, i])
        img = np.zeros((height, width, 3), np.float32)
        zoom = max(1.0, width / 500)
        for cell, amp in ((round(96 * zoom), 80.0), (round(24 * zoom), 50.0),
                          (round(6 * zoom), 45.0), (round(2 * zoom), 40.0)):
            shape = (height // cell + 2, width // cell + 2)
            # mostly brightness, some colour, as in photographs
            small = rng.normal(0, amp, (*shape, 1)) + rng.normal(0, 0.4 * amp, (*shape, 3))
            img += cv2.resize(small.astype(np.float32), (width + 2 * cell, height + 2 * cell),
                              interpolation=cv2.INTER_CUBIC)[:height, :width]
        img = np.clip(img + rng.uniform(60, 190, 3), 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(3, 9))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            r = int(rng.integers(8, height // 4))
            if rng.random() < 0.5:
                cv2.circle(img, (x, y), r, colour, -1, cv2.LINE_AA)
            else:
                cv2.rectangle(img, (x - r, y - r // 2), (x + r, y + r // 2), colour, -1)
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return names


def write_proposals(path: str, names: Sequence[str], width: int, height: int, seed: int = 0):
    """A proposal cache with 40 random boxes (sides 15-80 % of the image) per image."""
    from soco_d2.data.proposals.cache import write_cache

    rng = np.random.default_rng(seed)
    entries = {}
    for name in names:
        wh = rng.uniform(0.15, 0.8, (40, 2)) * [width, height]
        xy = rng.uniform(0, 1, (40, 2)) * ([width, height] - wh)
        boxes = np.round(np.concatenate([xy, xy + wh], 1)).astype(np.float32)
        entries[name] = dict(boxes=boxes, width=width, height=height, rule="benchmark")
    write_cache(path, entries)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, all its threads (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def method_cfg(method: str, root: str, cache: str, workers: int, batch: int, opts=()):
    """The method's shipped config, training on the benchmark folder."""
    from soco_d2.engine.setup import load_cfg
    from soco_d2.model_zoo import get_config_file

    return load_cfg(get_config_file(METHODS[method]), [
        "DATASETS.SSL.REGISTER", f"('loader_benchmark=folder:{root}:{cache}',)",
        "DATASETS.TRAIN", "('loader_benchmark',)", "DATASETS.SSL.PROPOSAL_CACHES", "()",
        "SOLVER.EPOCHS", 0, "SOLVER.IMS_PER_BATCH", batch, "DATALOADER.NUM_WORKERS", workers,
        "MODEL.DEVICE", "cpu", *opts])


def measure_loader(cfg, seconds: float) -> Dict[str, float]:
    """Pull batches of ``cfg``'s training loader for ``seconds`` after a warm-up."""
    from soco_d2.data.build import build_pretrain_loader

    workers = cfg.DATALOADER.NUM_WORKERS
    it = iter(build_pretrain_loader(cfg))
    for _ in range(2 * max(1, workers)):  # every worker started and delivered twice
        next(it)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    cpu0, main0 = sum(map(_cpu_seconds, pids)), time.process_time()
    start, images = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        images += len(next(it))
    wall = time.perf_counter() - start
    worker_cpu = sum(map(_cpu_seconds, pids)) - cpu0 if pids else time.process_time() - main0
    main_cpu = time.process_time() - main0
    del it  # stops the workers
    return {"images_per_s": images / wall, "per_worker": images / wall / max(1, workers),
            "per_worker_cpu_s": images / worker_cpu,
            "main_ms_per_image": 1000 * main_cpu / images if pids else 0.0, "images": images}


@contextlib.contextmanager
def baseline_data_path():
    """The loader as it was before its speed-ups, for side-by-side runs: detectron2's
    ``read_image`` (PIL) instead of ``soco_d2.data.decode``, OpenCV's default thread pool in
    each worker, and detectron2's collation (one shared-memory buffer per tensor). Reduced
    decode does not apply to ImageNet-sized images, so it is not toggled here."""
    from detectron2.data import detection_utils
    from detectron2.data.build import trivial_batch_collator

    from soco_d2.data import build
    from soco_d2.data.dataset_mappers import multi_view

    def pil_read(file_name, image_format, reduction=None):
        image = detection_utils.read_image(file_name, format=image_format)
        return image, image.shape[:2], 1

    saved = (multi_view.read_image, multi_view.single_threaded_opencv, build.pack_batch,
             cv2.getNumThreads())
    multi_view.read_image, build.pack_batch = pil_read, trivial_batch_collator
    multi_view.single_threaded_opencv = lambda: None
    cv2.setNumThreads(-1)  # OpenCV's default, inherited by the forked workers
    try:
        yield
    finally:
        multi_view.read_image, multi_view.single_threaded_opencv, build.pack_batch = saved[:3]
        cv2.setNumThreads(saved[3])


def profile_mapper(cfg, count: int) -> Dict[str, float]:
    """ms per image of the mapper in this process on one core: ``mapper`` (without the
    profiler), and from cProfile the C calls of ``decode``, ``resize`` and ``colour``;
    ``rest`` is ``mapper`` minus those three (Python, geometry, boxes, tensors)."""
    from soco_d2.data.build import get_pretrain_dataset_dicts
    from soco_d2.data.dataset_mappers import build_dataset_mapper

    mapper = build_dataset_mapper(cfg, True)
    dicts = get_pretrain_dataset_dicts(cfg, mapper.uses_proposals)[:count]
    cv2.setNumThreads(1)  # as in a worker: one core
    for d in dicts[:4]:
        mapper(d)
    cpu = time.process_time()
    for d in dicts:
        mapper(d)
    out = {"mapper": 1000 * (time.process_time() - cpu) / len(dicts)}
    prof = cProfile.Profile()
    prof.enable()
    for d in dicts:
        mapper(d)
    prof.disable()
    for group, names in _PROFILE_GROUPS.items():
        total = sum(tottime for (file, _, func), (_, _, tottime, _, _) in pstats.Stats(
            prof).stats.items() if file == "~" and any(n in func for n in names))  # C calls
        out[group] = 1000 * total / len(dicts)
    out["rest"] = out["mapper"] - sum(out[g] for g in _PROFILE_GROUPS)
    return out


def _compare(cfg, seconds: float, rounds: int, method: str, workers: int) -> dict:
    """Median images/s (wall, and per worker CPU-s) before / after, alternated ``rounds``
    times, and after / before."""
    runs = {"before": [], "after": []}
    for _ in range(rounds):
        with baseline_data_path():
            runs["before"].append(measure_loader(cfg, seconds))
        runs["after"].append(measure_loader(cfg, seconds))
    out = {}
    for key in ("images_per_s", "per_worker_cpu_s", "main_ms_per_image"):
        before = float(np.median([r[key] for r in runs["before"]]))
        after = float(np.median([r[key] for r in runs["after"]]))
        out[key] = {"before": round(before, 3), "after": round(after, 3),
                    "ratio": round(after / before, 3) if before else None}
    print(f"{method:8s} workers {workers}, before -> after (median of {rounds}, alternated): "
          f"{out['images_per_s']['before']:.1f} -> {out['images_per_s']['after']:.1f} img/s "
          f"({out['images_per_s']['ratio']:.2f}x), per worker CPU-s "
          f"{out['per_worker_cpu_s']['before']:.1f} -> {out['per_worker_cpu_s']['after']:.1f} "
          f"({out['per_worker_cpu_s']['ratio']:.2f}x), main "
          f"{out['main_ms_per_image']['before']:.3f} -> {out['main_ms_per_image']['after']:.3f} "
          "ms/img", flush=True)
    return out


def _size(text: str):
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    p.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=_size, default=(500, 375), help="WxH of the generated images")
    p.add_argument("--image-dir", help="keep the images (and proposal cache) here")
    p.add_argument("--seconds", type=float, default=15.0, help="measured time per run")
    p.add_argument("--batch", type=int, default=32, help="images per batch")
    p.add_argument("--profile", action="store_true", help="also profile each mapper")
    p.add_argument("--compare", action="store_true",
                   help="alternate the data path before / after the speed-ups")
    p.add_argument("--rounds", type=int, default=3, help="--compare: runs of each")
    p.add_argument("--gpu-images-per-s", action="append", default=[], metavar="METHOD=N")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; known: {sorted(METHODS)}")
    gpu_rate = {m: EFFECTIVE_TFLOPS * 1e3 / g for m, g in FLOOR_GFLOP.items()}
    gpu_rate.update({k: float(v) for k, v in (x.split("=") for x in args.gpu_images_per_s)})
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = None if args.image_dir else tempfile.TemporaryDirectory(prefix="loader_bench_")
    root = args.image_dir or tmp.name
    w, h = args.size
    names = write_images(os.path.join(root, "images"), args.images, w, h)
    cache = os.path.join(root, "proposals.bin")
    write_proposals(cache, names, w, h)
    results = []
    for method in methods:
        row = {"method": method, "gpu_images_per_s": round(gpu_rate[method])}
        if args.profile:
            cfg = method_cfg(method, os.path.join(root, "images"), cache, 0, args.batch,
                             args.opts)
            row["profile_ms"] = {k: round(v, 3) for k, v in profile_mapper(cfg, 64).items()}
        for workers in (int(x) for x in args.workers.split(",")):
            cfg = method_cfg(method, os.path.join(root, "images"), cache, workers, args.batch,
                             args.opts)
            if args.compare:
                row[f"compare_workers_{workers}"] = _compare(cfg, args.seconds, args.rounds,
                                                             method, workers)
            r = measure_loader(cfg, args.seconds)
            cores = gpu_rate[method] / r["per_worker_cpu_s"]
            cores += gpu_rate[method] * r["main_ms_per_image"] / 1000
            row[f"workers_{workers}"] = {**{k: round(v, 3) for k, v in r.items()},
                                         "cores_per_gpu": round(cores, 1)}
            if args.profile:  # what the worker spends beyond mapping: batching, hand-off
                row[f"workers_{workers}"]["handoff_ms"] = round(
                    1000 / r["per_worker_cpu_s"] - row["profile_ms"]["mapper"], 3)
            print(f"{method:8s} workers {workers}: {r['images_per_s']:7.1f} img/s, "
                  f"{r['per_worker']:6.1f} per worker, {r['per_worker_cpu_s']:6.1f} per worker "
                  f"CPU-s, main {r['main_ms_per_image']:.3f} ms/img; at "
                  f"{gpu_rate[method]:.0f} img/s a GPU needs {cores:.1f} cores", flush=True)
        results.append(row)
    if tmp is not None:
        tmp.cleanup()
    out = {"size": f"{w}x{h}", "images": args.images, "batch": args.batch, "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
