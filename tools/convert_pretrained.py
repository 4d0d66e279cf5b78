#!/usr/bin/env python
"""Checkout shim: `python tools/convert_pretrained.py ...` runs
soco_d2/tools/convert_pretrained.py (installed: `soco-d2-convert` or
`python -m soco_d2.tools.convert_pretrained`)."""
import sys

from soco_d2.tools.convert_pretrained import main

if __name__ == "__main__":
    sys.exit(main())
