#!/usr/bin/env python
"""Check (and complete) a Cityscapes tree for detectron2's fine instance segmentation splits.

    pip install cityscapesscripts            # loaders and the official evaluator need it
    python datasets/prepare_cityscapes.py    # checks $DETECTRON2_DATASETS/cityscapes
    python datasets/prepare_cityscapes.py --train-id-labels   # also *_labelTrainIds.png

detectron2's `cityscapes_fine_instance_seg_{train,val}` read instances straight from the
gtFine polygon jsons, so instance segmentation needs no derived files; `--train-id-labels`
runs cityscapesscripts' createTrainIdLabelImgs for the semantic-segmentation splits.
"""
import argparse
import glob
import os
import subprocess
import sys


def check_tree(root: str) -> dict:
    """Count images and polygon files per split; raise SystemExit naming what is missing."""
    counts = {}
    for split in ("train", "val"):
        img_dir = os.path.join(root, "leftImg8bit", split)
        gt_dir = os.path.join(root, "gtFine", split)
        for d in (img_dir, gt_dir):
            if not os.path.isdir(d):
                raise SystemExit(f"{d} missing: see datasets/README.md for the Cityscapes tree")
        images = glob.glob(os.path.join(img_dir, "*", "*_leftImg8bit.png"))
        polygons = glob.glob(os.path.join(gt_dir, "*", "*_gtFine_polygons.json"))
        if not images or len(images) != len(polygons):
            raise SystemExit(
                f"{split}: {len(images)} images but {len(polygons)} gtFine polygon files"
            )
        counts[split] = len(images)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "cityscapes")
    parser.add_argument("--root", default=default)
    parser.add_argument("--train-id-labels", action="store_true")
    args = parser.parse_args()
    try:
        import cityscapesscripts  # noqa: F401
    except ImportError:
        raise SystemExit("cityscapesscripts is not installed: pip install cityscapesscripts")
    counts = check_tree(args.root)
    print(f"{args.root}: {counts['train']} train, {counts['val']} val images")
    if args.train_id_labels:
        env = dict(os.environ, CITYSCAPES_DATASET=os.path.abspath(args.root))
        module = "cityscapesscripts.preparation.createTrainIdLabelImgs"
        subprocess.run([sys.executable, "-m", module], env=env, check=True)


if __name__ == "__main__":
    main()
