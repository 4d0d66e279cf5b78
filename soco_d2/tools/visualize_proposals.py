#!/usr/bin/env python
"""Draw the kept proposals of a cache on their images, one PNG per image.

    tools/visualize_proposals.py --cache CACHE --image-root DIR --output OUT_DIR [--num 20]
"""
import argparse
import os
import sys

from soco_d2.data.proposals.visualize import visualize_cache


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cache", required=True, help="proposal cache")
    p.add_argument("--image-root", required=True,
                   help="folder the cache keys are relative to (folder caches)")
    p.add_argument("--output", required=True, help="folder for the PNGs")
    p.add_argument("--num", type=int, default=20, help="how many images (0 = all)")
    p.add_argument("--keys", nargs="*", help="draw these keys instead of the first --num")
    p.add_argument("--max-side", type=int, default=640, help="longer side of the PNGs")
    args = p.parse_args(argv)
    written = visualize_cache(args.cache, args.image_root, args.output, args.keys, args.num,
                              args.max_side)
    print(f"wrote {len(written)} images to {os.path.abspath(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
