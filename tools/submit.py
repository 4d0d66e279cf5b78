#!/usr/bin/env python
"""Checkout shim: `python tools/submit.py ...` runs soco_d2/tools/submit.py (installed:
`python -m soco_d2.tools.submit`, or its console entry point, see setup.py)."""
import sys

from soco_d2.tools.submit import main

if __name__ == "__main__":
    sys.exit(main())
