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
# true when the CPU has every one of these instruction-set flags (Linux /proc/cpuinfo)
cpu_has() {
  local flag
  for flag in "$@"; do
    grep -qw "$flag" /proc/cpuinfo 2>/dev/null || return 1
  done
}
SETTINGS=("" "ATEN_CPU_CAPABILITY=default")
# ATen does not check a forced capability against the CPU: forcing one the CPU lacks dies with
# SIGILL, so each is run only where the CPU has its instructions
if cpu_has avx2 fma; then SETTINGS+=("ATEN_CPU_CAPABILITY=avx2"); fi
if cpu_has avx512f avx512bw avx512vl avx512dq; then SETTINGS+=("ATEN_CPU_CAPABILITY=avx512"); fi
SETTINGS+=(
  "ONEDNN_MAX_CPU_ISA=AVX2"
  "ONEDNN_MAX_CPU_ISA=SSE41"
  "ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41"
)
for setting in "${SETTINGS[@]}"; do
  kernels="$(env $setting "$PYTHON" -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')"
  echo "[test-portable] ${setting:-native}: ATen kernels ${kernels}"
  env $setting "$PYTHON" -m pytest -q -p no:cacheprovider -m portable tests
done
echo "[test-portable] every portable test passed under ${#SETTINGS[@]} kernel settings"
