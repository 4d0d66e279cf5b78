#!/usr/bin/env python
"""Checkout shim: `python tools/pipeline.py ...` runs soco_d2/tools/pipeline.py (installed:
`soco-d2-pipeline` or `python -m soco_d2.tools.pipeline`)."""
import sys

from soco_d2.tools.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
