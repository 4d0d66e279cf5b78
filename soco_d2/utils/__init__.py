"""Small helpers below the rest of soco_d2: atomic writes (``io.py``), result tables
(``results.py``), plots (``plots.py``), stopping with the parent process (``parent.py``). Nothing
here imports another part of soco_d2 (``tests/test_layering.py`` checks it)."""
