#!/usr/bin/env python
"""Offline selective-search proposals for a dataset, resumable and shardable.

    tools/selective_search.py --input DIR_OR_DATASET --output CACHE [--workers N]
        [--max-size S] [--mode single|fast|quality] [--shard I/N]
    tools/selective_search.py --merge SHARD0 SHARD1 ... --output CACHE

Rerunning the same command after any interruption continues where it stopped. The last line
printed is a JSON summary (images, boxes, bad_files, seconds, ...); bad files are listed in
CACHE.report.json. Exit status 0 means the run finished, bad files or not.
"""
import argparse
import json
import sys

from soco_d2.data.proposals import (
    DEFAULT_MAX_SIZE,
    DEFAULT_MODE,
    MODES,
    FilterConfig,
    SearchConfig,
    merge_runs,
    run_selective_search,
)
from soco_d2.data.proposals.runner import parse_shard
from soco_d2.utils.parent import stop_with_parent


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--input", help="image folder (recursive) or registered detectron2 dataset")
    p.add_argument("--output", required=True, help="proposal cache file to write")
    p.add_argument("--merge", nargs="+", metavar="CACHE", help="merge these shard caches")
    p.add_argument("--workers", type=int, default=1, help="worker processes (one core each)")
    p.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE,
                   help="longer side of the searched copy, 0 = full resolution")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE, help="selective search mode")
    p.add_argument("--shard", default="0/1", help="I/N: process the I-th of N interleaved parts")
    p.add_argument("--chunk-size", type=int, default=0,
                   help="images per committed chunk (0 = automatic)")
    p.add_argument("--min-side", type=float, default=32.0, help="filter: minimum box side (px)")
    p.add_argument("--max-ratio", type=float, default=3.0, help="filter: max aspect ratio")
    p.add_argument("--size-range", type=float, nargs=2, default=(0.3, 0.8),
                   metavar=("MIN", "MAX"), help="filter: sqrt(box area)/sqrt(image area)")
    p.add_argument("--no-fallback", action="store_true",
                   help="skip the ratio-only and size-only fallbacks (whole image directly)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    stop_with_parent()  # started by the pipeline: end with it, even if it is SIGKILLed
    if args.merge:
        summary = merge_runs(args.output, args.merge)
    else:
        if not args.input:
            get_parser().error("--input is required (or --merge)")
        cfg = SearchConfig(
            input=args.input,
            output=args.output,
            max_size=args.max_size,
            mode=args.mode,
            shard=parse_shard(args.shard),
            filter=FilterConfig(args.min_side, args.max_ratio, args.size_range[0],
                                args.size_range[1], not args.no_fallback),
            workers=args.workers,
            chunk_size=args.chunk_size,
            progress=not args.no_progress,
        )
        summary = run_selective_search(cfg)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
