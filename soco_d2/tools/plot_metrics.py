#!/usr/bin/env python
"""Plot loss and learning-rate curves from detectron2 ``metrics.json`` files into one PNG.

    tools/plot_metrics.py output/run_a/metrics.json [output/run_b/metrics.json ...] -o curves.png
"""
import argparse
import os
import sys

from soco_d2.utils.plots import plot_training_curves


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("metrics", nargs="+", help="metrics.json files (label: their folder name)")
    p.add_argument("-o", "--output", required=True, help="PNG to write")
    p.add_argument("--keys", nargs="+", help="scalars to plot (default: total_loss, loss_*)")
    args = p.parse_args(argv)
    runs = {os.path.basename(os.path.dirname(os.path.abspath(m))) or m: m for m in args.metrics}
    if len(runs) < len(args.metrics):  # same folder names: fall back to full paths
        runs = {m: m for m in args.metrics}
    out = plot_training_curves(runs, args.output, loss_keys=args.keys)
    if out is None:
        print("error: no metrics found in " + ", ".join(args.metrics), file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
