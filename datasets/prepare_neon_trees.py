#!/usr/bin/env python
"""Tile the NEON tree-crown photographs of the `deepforest` package into a detection set.

    make bench-data-real                        # pip-installs deepforest, then runs this
    python datasets/prepare_neon_trees.py       # -> $DETECTRON2_DATASETS/neon_trees
    python datasets/prepare_neon_trees.py --data-dir DIR --out /tmp/neon_trees --tile-size 256

Registered as neon_trees_unlabeled (folder), neon_trees_train / neon_trees_val (COCO boxes,
one class). Tiling, split and ignore regions: soco_d2/data/datasets/neon_trees.py.
Rerunning with the same arguments is a no-op; other arguments need --overwrite.
"""
import argparse
import os
import sys
import time
from typing import List, Optional

from soco_d2.data.datasets.neon_trees import prepare_neon_trees


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with the source images and XML (default: the installed deepforest "
        "package's data folder)",
    )
    parser.add_argument("--out", default=os.path.join(root, "neon_trees"))
    parser.add_argument("--tile-size", type=int, default=192, help="tile side in px")
    parser.add_argument(
        "--block-tiles", type=int, default=2, help="blocks of N x N tiles go to train or val whole"
    )
    parser.add_argument(
        "--train-fraction", type=float, default=0.5, help="fraction of the blocks that go to train"
    )
    parser.add_argument(
        "--min-visible",
        type=float,
        default=0.5,
        help="a box cut by a tile border below this visible fraction is ignored",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the block split")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        done = prepare_neon_trees(
            args.data_dir,
            args.out,
            tile_size=args.tile_size,
            block_tiles=args.block_tiles,
            train_fraction=args.train_fraction,
            min_visible=args.min_visible,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"prepare_neon_trees: {e}")
    print(f"neon_trees at {args.out} ({time.perf_counter() - start:.1f} s)")
    for split, c in done["counts"].items():
        print(f"  {split}: {c['images']} images, {c['boxes']} boxes, {c['ignored']} ignored")


if __name__ == "__main__":
    main()
