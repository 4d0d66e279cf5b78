#!/usr/bin/env python
"""Measure training processes side by side on one machine: all cores each vs a share each.

Usage (run on a quiet machine; it trains for a few dozen tiny iterations):
    dev/bench_processes.py [--processes 2] [--iters 20] [--config-file CONFIG] [--out FILE]

Runs ``tools/train_net.py --num-gpus P`` (CPU, gloo) on the tiny SoCo config over a generated
image folder, twice: with ``--threads-per-process <all cores>`` (every process starts one
thread per core, as torch does by default: P x cores threads fight for the cores) and with the
launcher's policy ``max(1, cores // P)``; then once as one process on all cores at the same
global batch. Reports wall time and detectron2's median seconds per iteration of each, the
policy's speed-up and P processes' throughput against one. The last line printed is one JSON
object.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs/pretrain/soco_R18_FPN_tiny.yaml")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--processes", type=int, default=2, help="training processes (--num-gpus)")
    p.add_argument("--iters", type=int, default=20,
                   help="training iterations of each run (>= 5: detectron2 times the 4th on)")
    p.add_argument("--batch", type=int, default=8, help="global images per iteration")
    p.add_argument("--config-file", default=TINY)
    p.add_argument("--timeout", type=float, default=900, help="seconds per run")
    p.add_argument("--out", default="", help="also write the JSON result here")
    args = p.parse_args(argv)
    if args.iters < 5:
        p.error(f"--iters must be >= 5, got {args.iters}")
    return args


def make_folder(root: str, n: int = 16) -> tuple:
    """``n`` random 96x80 PNGs and a proposal cache; returns ``(image_dir, cache)``."""
    import cv2
    import numpy as np

    from soco_d2.data.proposals.cache import write_cache

    image_dir = os.path.join(root, "imgs")
    os.makedirs(image_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = {}
    for i in range(n):
        cv2.imwrite(os.path.join(image_dir, f"{i}.png"), rng.integers(0, 256, (80, 96, 3), np.uint8))
        xy = rng.uniform(0, 40, (5, 2))
        wh = rng.uniform(20, 40, (5, 2))
        entries[f"{i}.png"] = dict(boxes=np.concatenate([xy, xy + wh], 1).astype(np.float32),
                                   width=96, height=80, rule="bench")
    cache = os.path.join(root, "proposals.bin")
    write_cache(cache, entries)
    return image_dir, cache


def run(
    args, threads: int, image_dir: str, cache: str, out_dir: str, processes: int = 0
) -> dict:
    """One ``train_net.py`` run of ``processes`` (default ``--processes``) with ``threads``
    each; wall time and s/iter."""
    processes = processes or args.processes
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [
        sys.executable, os.path.join(REPO, "tools", "train_net.py"),
        "--num-gpus", str(processes), "--dist-url", "auto",
        "--threads-per-process", str(threads), "--config-file", args.config_file,
        "DATASETS.TRAIN", "('bench_processes',)",
        "DATASETS.SSL.REGISTER", f"('bench_processes=folder:{image_dir}:{cache}',)",
        "SOLVER.MAX_ITER", str(args.iters), "SOLVER.IMS_PER_BATCH", str(args.batch),
        "SOLVER.CHECKPOINT_PERIOD", "100000", "OUTPUT_DIR", out_dir,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=args.timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"train_net.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    with open(os.path.join(out_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    times = [r["time"] for r in rows if "time" in r]
    return {"processes": processes, "threads_per_process": threads,
            "wall_s": round(wall, 2),
            "s_per_iter": times[-1] if times else None}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from soco_d2.engine.launch import threads_per_process

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        image_dir, cache = make_folder(tmp)
        runs = [run(args, t, image_dir, cache, os.path.join(tmp, f"out_{t}"))
                for t in (cores, threads_per_process(args.processes, cores))]
        runs.append(run(args, cores, image_dir, cache, os.path.join(tmp, "out_one"), 1))
    result = {"cores": cores, "processes": args.processes, "iters": args.iters,
              "batch": args.batch, "all_cores_each": runs[0], "share_each": runs[1],
              "one_process": runs[2]}
    if runs[0]["s_per_iter"] and runs[1]["s_per_iter"]:
        result["speedup_s_per_iter"] = runs[0]["s_per_iter"] / runs[1]["s_per_iter"]
    if runs[1]["s_per_iter"] and runs[2]["s_per_iter"]:
        # images/s of P processes (the policy's threads) over one process, same global batch
        result["processes_vs_one_throughput"] = runs[2]["s_per_iter"] / runs[1]["s_per_iter"]
    print(f"{cores} cores, {args.processes} processes: all cores each "
          f"{runs[0]['s_per_iter']} s/iter, share each {runs[1]['s_per_iter']} s/iter; "
          f"1 process {runs[2]['s_per_iter']} s/iter")
    line = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")
    print(line, flush=True)
    return result


if __name__ == "__main__":
    main()
