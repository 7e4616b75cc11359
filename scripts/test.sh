#!/usr/bin/env bash
# The tests, from a fresh clone: installs .venv on first use (or when the dependencies changed), then
# runs the test suite and the docstring examples. Extra arguments go to the first pytest run
# (e.g. bash scripts/test.sh -n 2 -x). This is what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure_venv.sh
.venv/bin/python -m pytest -q "$@"
.venv/bin/python -m pytest -q --doctest-modules pdcr_lab
