#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone: installs .venv on first use (or when the
# dependencies changed), then writes a PdCR map of the embedded lesions test image to outputs/.
# Extra arguments go to `pdcr-lab explain` (e.g. bash scripts/demo.sh --model segformer).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure_venv.sh
if [ "$#" -eq 0 ]; then set -- --demo; fi
exec .venv/bin/pdcr-lab explain "$@"
