#!/usr/bin/env python
"""Write mini-COCO annotation files: the first N% of train2017 images by image id.

    python datasets/prepare_mini_coco.py                # 5% and 10% under $DETECTRON2_DATASETS
    python datasets/prepare_mini_coco.py --percent 1 2  # other fractions

Output: coco/annotations/instances_train2017_{P}pct.json (images stay in coco/train2017/).
The 5% and 10% files are registered as coco_2017_train_5pct / coco_2017_train_10pct.
"""
import argparse
import os

from soco_d2.finetune.mini_coco import write_coco_subset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"))
    parser.add_argument("--percent", type=float, nargs="+", default=[5, 10])
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing files")
    args = parser.parse_args()
    ann_dir = os.path.join(args.root, "coco", "annotations")
    src = os.path.join(ann_dir, "instances_train2017.json")
    if not os.path.isfile(src):
        raise SystemExit(f"{src} not found: see datasets/README.md for the COCO tree")
    for p in args.percent:
        tag = f"{p:g}pct"
        dst = os.path.join(ann_dir, f"instances_train2017_{tag}.json")
        if os.path.exists(dst) and not args.overwrite:
            print(f"{dst} exists, skipped")
            continue
        counts = write_coco_subset(src, dst, p)
        print(f"{dst}: {counts['images']} images, {counts['annotations']} annotations")


if __name__ == "__main__":
    main()
