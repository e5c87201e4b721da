#!/usr/bin/env bash
# CI step for the example third-party plugin (plugins/examples/bench-example): install it the way a user
# would, run its own tests (conformance + training through its entry point), then uninstall it so the
# rest of CI sees no stray plugin. The main suite never loads it anyway (tests/conftest.py sets
# BENCH_LOAD_PLUGINS=""). Called from .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --no-deps -e plugins/examples/bench-example
trap 'python -m pip uninstall --quiet -y bench-example' EXIT
BENCH_LOAD_PLUGINS=example python -m pytest -q -p no:cacheprovider plugins/examples/bench-example/tests
