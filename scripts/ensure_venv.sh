#!/usr/bin/env bash
# Sourced by scripts/demo.sh and scripts/test.sh: (re)install .venv when it is missing or stale.
# Stale = pyproject.toml, scripts/install.sh or the chosen torch (PDCR_TORCH) changed since the last
# install; scripts/install.sh writes the stamp compared here.
stamp_of() {
    cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16
    echo "${PDCR_TORCH:-torch==2.13.0}"
}
if [ "${1:-}" = "--stamp-only" ]; then return 0; fi
if [ ! -x .venv/bin/python ] || [ ! -f .venv/.pdcr_lab_stamp ] || [ "$(stamp_of)" != "$(cat .venv/.pdcr_lab_stamp)" ]; then
    echo "setting up .venv (first use, or the dependencies changed): bash scripts/install.sh" >&2
    bash scripts/install.sh
fi
