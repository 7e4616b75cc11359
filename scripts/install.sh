#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with pdcr_lab, its notebook stack, the sweep
# (dask.distributed) and benchmark extras, and the test tools.
#   bash scripts/install.sh            # CPU build of torch (small, works everywhere)
#   PDCR_TORCH="torch==2.14.1" bash scripts/install.sh   # e.g. a CUDA build for a GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build on Linux.
.venv/bin/python -m pip install --quiet "${PDCR_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev,notebook,sweep,bench]"
.venv/bin/python -c "import pdcr_lab, torch; print('pdcr_lab', pdcr_lab.__version__, 'with torch', torch.__version__)"
# what scripts/ensure_venv.sh compares to tell a current .venv from a stale one
source scripts/ensure_venv.sh --stamp-only
stamp_of > .venv/.pdcr_lab_stamp
