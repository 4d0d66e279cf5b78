#!/usr/bin/env bash
# The tests whose float comparisons depend on rounding (pytest marker `portable`: stored numbers,
# one code path against another), run under every CPU kernel choice PyTorch and oneDNN make:
# natively, with ATen's vectorised kernels forced to each instruction set (ATEN_CPU_CAPABILITY),
# and with oneDNN capped (ONEDNN_MAX_CPU_ISA). A stored number or a tolerance that only holds on
# the CPU it was measured on fails here, on any machine.
#
# Usage: bash dev/test_portable.sh [PYTHON]      (make test-portable)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-.venv/bin/python}"
SETTINGS=(
  ""
  "ATEN_CPU_CAPABILITY=default"
  "ATEN_CPU_CAPABILITY=avx2"
  "ATEN_CPU_CAPABILITY=avx512"
  "ONEDNN_MAX_CPU_ISA=AVX2"
  "ONEDNN_MAX_CPU_ISA=SSE41"
  "ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41"
)
for setting in "${SETTINGS[@]}"; do
  # a capability the CPU lacks falls back to the best it has: print the one in force
  kernels="$(env $setting "$PYTHON" -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')"
  echo "[test-portable] ${setting:-native}: ATen kernels ${kernels}"
  env $setting "$PYTHON" -m pytest -q -p no:cacheprovider -m portable tests
done
echo "[test-portable] every portable test passed under ${#SETTINGS[@]} kernel settings"
