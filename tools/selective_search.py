#!/usr/bin/env python
"""Checkout shim: `python tools/selective_search.py ...` runs soco_d2/tools/selective_search.py
(installed: its console entry point in setup.py, or `python -m soco_d2.tools.selective_search`)."""
import sys

from soco_d2.tools.selective_search import main

if __name__ == "__main__":
    sys.exit(main())
