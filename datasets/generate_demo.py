#!/usr/bin/env python
"""Generate the synthetic demo dataset (deterministic; see soco_d2/data/demo.py).

    python datasets/generate_demo.py                      # -> $DETECTRON2_DATASETS/demo
    python datasets/generate_demo.py --out /tmp/demo --num-train 50

Rerunning with the same arguments is a no-op; other arguments need --overwrite.
"""
import argparse
import os
import time

from soco_d2.data.demo import generate_demo_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    parser.add_argument("--out", default=os.path.join(root, "demo"))
    parser.add_argument("--num-unlabeled", type=int, default=600)
    parser.add_argument("--num-train", type=int, default=120)
    parser.add_argument("--num-val", type=int, default=480)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--max-objects", type=int, default=5)
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    params = generate_demo_dataset(
        args.out,
        num_unlabeled=args.num_unlabeled,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        max_objects=args.max_objects,
        num_classes=args.num_classes,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"demo dataset at {args.out} ({time.perf_counter() - start:.1f} s): {params}")


if __name__ == "__main__":
    main()
