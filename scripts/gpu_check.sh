#!/usr/bin/env bash
# The GPU check in one call (see scripts/gpu_check.py for the stages). From the repository root:
#   bash scripts/gpu_check.sh           # GPU machine: at most 8 minutes (--budget, default 470 s)
#   bash scripts/gpu_check.sh --tiny    # CPU, tiny sizes, well under a minute on an idle machine
# Writes under $OUT (results/gpu when OUT is unset); the last lines printed are the summary table.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONUNBUFFERED=1
exec "$PYTHON" scripts/gpu_check.py "$@"
