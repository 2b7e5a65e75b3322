#!/bin/sh
# The CUDA path checked and timed in one run, on a GPU machine, from the repository root (about 8 minutes on
# one H200): device-marked tests, the training matrix (models x defenses x fp32/bf16/fp16 x channels_last),
# torchrun on nccl with test.py clean / BIM-2 / SEA, and ours against the original's speed.
# usage: sh tool_bench/gpu_check.sh OUT_DIR [--dry-run] [--phases tests,matrix,torchrun,bench]
# Writes OUT_DIR/gpu_check.log and OUT_DIR/gpu_check.json; --dry-run runs it all on the CPU at toy sizes.
# PYTHON picks the interpreter (default: python).
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "error: give the output folder first: sh tool_bench/gpu_check.sh OUT_DIR [--dry-run]" >&2; exit 2
fi
out=$1; shift
mkdir -p "${out}" || exit 2
status_file=$(mktemp)
echo 0 > "${status_file}"
{ PYTHONUNBUFFERED=1 "${PYTHON:-python}" tool_bench/gpu_check.py --out "${out}" "$@" 2>&1 || echo $? > "${status_file}"; } \
  | tee "${out}/gpu_check.log"
status=$(cat "${status_file}")
rm -f "${status_file}"
exit "${status}"
