#!/usr/bin/env bash
# Rebuild every checkpoint of the model zoo (data/zoo/) from its recipe and seed, then re-measure
# throughput. Sequential, one torch thread per training run (about 1-6 min each on an idle core).
# Usage: scripts/train_zoo.sh [--force]   (without --force, pairs already in the manifest are kept)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p outputs
# unet on lesions first: the demo depends on it
$PY -m pdcr_lab.zoo.cli zoo train-all --names unet --datasets lesions --out data/zoo --into-shipped-zoo --quiet "$@" | tee -a outputs/zoo_train.log
$PY -m pdcr_lab.zoo.cli zoo train-all --datasets lesions --out data/zoo --into-shipped-zoo --quiet "$@" | tee -a outputs/zoo_train.log
$PY -m pdcr_lab.zoo.cli zoo train-all --datasets vessels --out data/zoo --into-shipped-zoo --quiet "$@" | tee -a outputs/zoo_train.log
# the real MRI slices and the cue-controlled sets (128 x 128, at most 20 epochs)
for dataset in brain cues cues_global cues_sequential; do
  $PY -m pdcr_lab.zoo.cli zoo train-all --datasets "$dataset" --out data/zoo --into-shipped-zoo --quiet "$@" | tee -a outputs/zoo_train.log
done
# forward throughput at batch 32, 96 x 96, 2 CPU threads, written to data/zoo/manifest.json
$PY -m pdcr_lab.zoo.cli zoo benchmark --threads 2
$PY -m pdcr_lab.zoo.cli zoo list --markdown
