#!/usr/bin/env python
"""Fine-tunes one after another vs side by side: what ``tools/pipeline.py --jobs N`` buys.

Usage:
    dev/bench_jobs.py --config-file configs/demo/mask_rcnn_R18_FPN_demo_800it.yaml \\
        [--runs 2 --jobs 2 --threads 2 --iters 100] [--output DIR] [KEY VALUE ...]

Runs ``--runs`` trainings of the config (seeds 0..runs-1, ``--iters`` iterations each, no
evaluation) through the pipeline's own ``run_training``, twice: one after another with
``--threads`` threads each (the pipeline's default), then ``--jobs`` at a time with
``threads // jobs`` threads each (``--jobs``). Prints the wall time of both sets, the speed-up
of the second, and each run's median seconds per iteration (detectron2's ``metrics.json``);
the last line is one JSON object. Measure on a quiet machine: anything else running shares the
cores.
"""
import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Optional


from soco_d2.pipeline.run import run_units
from soco_d2.pipeline.stages import run_training
from soco_d2.utils.plots import load_metrics


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--runs", type=int, default=2, help="trainings in each set")
    p.add_argument("--jobs", type=int, default=2, help="side by side in the second set")
    p.add_argument("--threads", type=int, default=2, help="threads of the sequential runs")
    p.add_argument("--iters", type=int, default=100, help="iterations of each training")
    p.add_argument("--output", help="keep the runs here (default: a temporary folder)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def _median_iter_seconds(run_dir: str) -> Optional[float]:
    """Median ``time`` over the run's logged iterations (detectron2's timer leaves out the
    first ones); None if none was logged."""
    times = [r["time"] for r in load_metrics(os.path.join(run_dir, "metrics.json")) if "time" in r]
    return statistics.median(times) if times else None


def _run_set(args, root: str, jobs: int) -> dict:
    threads = max(1, args.threads // jobs)
    dirs = [os.path.join(root, f"jobs{jobs}", f"seed{i}") for i in range(args.runs)]
    opts = [*args.opts, "SOLVER.MAX_ITER", str(args.iters), "SOLVER.CHECKPOINT_PERIOD",
            str(10 ** 9), "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0"]

    def unit(i: int):
        return lambda: run_training(
            args.config_file, dirs[i], [*opts, "SEED", str(i)], f"{dirs[i]}.log", threads
        )

    start = time.perf_counter()
    run_units([unit(i) for i in range(args.runs)], jobs)
    wall = time.perf_counter() - start
    per_iter = [_median_iter_seconds(d) for d in dirs]
    print(f"jobs {jobs} x {threads} threads: {args.runs} runs in {wall:.1f} s; median s/iter "
          + ", ".join("-" if t is None else f"{t:.3f}" for t in per_iter), flush=True)
    return {"jobs": jobs, "threads": threads, "wall_s": wall, "s_per_iter": per_iter}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.jobs < 2 or args.runs < args.jobs:
        raise SystemExit("error: --jobs must be at least 2 and at most --runs")
    with tempfile.TemporaryDirectory(prefix="bench_jobs_") as tmp:
        root = args.output or tmp
        one = _run_set(args, root, 1)
        side = _run_set(args, root, args.jobs)
    out = {
        "config": args.config_file, "runs": args.runs, "iters": args.iters,
        "one_at_a_time": one, "side_by_side": side,
        "speedup": one["wall_s"] / side["wall_s"],
    }
    print(f"side by side ({args.jobs} jobs) vs one at a time: {out['speedup']:.2f}x faster",
          flush=True)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
