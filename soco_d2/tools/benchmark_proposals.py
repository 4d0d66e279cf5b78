#!/usr/bin/env python
"""Benchmark selective search: images/s per core, kept boxes per image and ground-truth recall
(IoU 0.5 / 0.7) of the kept boxes, for each mode and --max-size, next to the official SoCo
search (PyPI `selectivesearch`, SoCo's settings) measured on the same images in the same run.

    tools/benchmark_proposals.py                                   # synthetic demo scenes
    tools/benchmark_proposals.py --coco-json ann.json --image-root images/ --num-images 50

Without --coco-json it renders the project's synthetic demo scenes (labelled, COCO format) at
--demo-size px, and adds a speed-only table on scikit-image photographs resized to 500x375.
"""
import argparse
import json
import os
import sys
import tempfile

from soco_d2.data.proposals.benchmark import (
    benchmark,
    default_samples,
    format_table,
    load_coco_boxes,
    photo_samples,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--coco-json", help="COCO-format annotation file of a labelled set")
    p.add_argument("--image-root", help="folder the COCO file names are relative to")
    p.add_argument("--num-images", type=int, default=16)
    p.add_argument("--demo-size", type=int, default=480, help="side of the synthetic scenes")
    p.add_argument("--modes", nargs="+", default=["single", "dual", "fast", "quality"])
    p.add_argument("--max-sizes", nargs="+", type=int, default=[160, 224, 320, 0],
                   help="0 = full resolution")
    p.add_argument("--quality-max-size", type=int, default=320,
                   help="skip quality mode above this size (it is ~10x slower than fast)")
    p.add_argument("--no-official", action="store_true", help="do not run the official search")
    p.add_argument("--no-photos", action="store_true", help="skip the 500x375 photo table")
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "soco_d2_bench"))
    p.add_argument("--json", help="also write all rows to this JSON file")
    args = p.parse_args(argv)

    configs = [(m, s) for m in args.modes for s in args.max_sizes
               if not (m == "quality" and (s == 0 or s > args.quality_max_size))]
    if args.coco_json:
        if not args.image_root:
            p.error("--coco-json needs --image-root")
        samples = load_coco_boxes(args.coco_json, args.image_root, args.num_images)
        label = f"{args.coco_json} ({len(samples)} images)"
    else:
        samples = default_samples(args.work_dir, args.num_images, args.demo_size)
        if samples is None:
            p.error("no labelled set: pass --coco-json and --image-root")
        label = f"synthetic demo scenes {args.demo_size}x{args.demo_size} ({len(samples)} images)"
    results = {}
    print(f"## Recall and speed on {label}, one core\n", flush=True)
    rows = benchmark(samples, configs, with_official=not args.no_official)
    print(format_table(rows) + "\n", flush=True)
    results["labelled"] = rows
    if not args.no_photos:
        photos = photo_samples(os.path.join(args.work_dir, "photos_500x375"))
        print(f"## Speed on {len(photos)} photographs at 500x375, one core\n", flush=True)
        prow = benchmark(photos, configs, with_official=not args.no_official)
        for r in prow:
            for k in [k for k in r if "recall" in k]:
                r.pop(k)
        print(format_table(prow, thresholds=()) + "\n", flush=True)
        results["photos"] = prow
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
