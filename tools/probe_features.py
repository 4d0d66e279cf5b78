#!/usr/bin/env python
"""Checkout shim: `python tools/probe_features.py ...` runs soco_d2/tools/probe_features.py
(installed: its console entry point in setup.py, or `python -m soco_d2.tools.probe_features`)."""
import sys

from soco_d2.tools.probe_features import main

if __name__ == "__main__":
    sys.exit(main())
