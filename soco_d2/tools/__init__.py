"""The commands a user runs, one module each, reachable from the installed package.

Each module has ``main(argv=None)`` and runs as ``python -m soco_d2.tools.<name>``; ``setup.py``
declares a console entry point for each (``soco-d2-train``, ``soco-d2-pipeline``, ...), and the
checkout's ``tools/<name>.py`` are thin shims that call the same ``main``.
"""
