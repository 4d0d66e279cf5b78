#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install everything pinned.
#
# Usage: bash tools/setup_env.sh [VENV_DIR]
#
# detectron2 is not on the package index. If `import detectron2` already works in the venv
# (for example a user built it from source there), it is kept. Otherwise the `sal-detectron2`
# wheel (upstream detectron2's Python tree at commit a59f056) is installed with --no-deps; its
# only wheel is tagged cp310, and its compiled `_C` does not load on 3.11, which detectron2
# treats as optional (see `python -m soco_d2.collect_env`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup_env] creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# The pinned torch 2.14.1 is a CUDA build: a fresh venv takes about 6 GiB (measured 5.95 GiB).
# Say so before pip does, instead of pip's "No space left on device" half-way through.
if ! "$VPY" -c "import torch" 2>/dev/null; then
  "$VPY" - "$VENV" <<'PY'
import shutil, sys
need, free = 6.5, shutil.disk_usage(sys.argv[1]).free / 2**30
if free < need:
    sys.exit(f"[setup_env] {free:.1f} GiB free where {sys.argv[1]} lies; installing the pinned "
             f"requirements (CUDA build of torch) needs about {need} GiB. Free some space "
             "(old clones' .venv folders, pytest's temporary folders) and rerun.")
print(f"[setup_env] {free:.1f} GiB free for the install (about {need} GiB needed)")
PY
fi

echo "[setup_env] installing pinned requirements"
"$VPY" -m pip install -q -r requirements.txt

if "$VPY" -c "import detectron2" 2>/dev/null; then
  echo "[setup_env] using the installed detectron2 ($("$VPY" -c 'import detectron2; print(detectron2.__file__)'))"
else
  SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "[setup_env] installing sal-detectron2==0.7.2 into $SITE"
  "$VPY" -m pip install -q --no-deps --python-version 3.10 --only-binary=:all: \
    --target "$SITE" sal-detectron2==0.7.2
  # The wheel also ships detectron2's own tools/ as a top-level package, which would shadow
  # nothing of ours (our tools/ are plain scripts) but is not part of detectron2's API.
  RECORD="$(ls -d "$SITE"/sal_detectron2-*.dist-info 2>/dev/null | head -n 1)/RECORD"
  if [ -f "$RECORD" ] && grep -q '^tools/train_net.py,' "$RECORD"; then
    rm -rf "$SITE/tools"
  fi
fi

echo "[setup_env] installing soco_d2 (editable)"
"$VPY" -m pip install -q --no-deps --no-build-isolation -e .
"$VPY" -m soco_d2.collect_env --short
