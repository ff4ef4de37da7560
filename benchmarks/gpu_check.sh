#!/usr/bin/env bash
# CUDA paths in one short run (used on a lent GPU machine): AMP training (bf16 and fp16), data-driven
# pruning, eval timing in bf16 + channels-last, a tiny grid, and round-to speed on a full-width
# DeepLabV3-R50. Prints what each step reports; any failure stops the script.
set -euo pipefail
export PYTHONUNBUFFERED=1 VSS_DB=/tmp/vss_gpu.db VSS_QUIET=1
REPO=$(pwd)
cd /tmp && rm -rf vss_gpu && mkdir vss_gpu && cd vss_gpu
vss() { python3 -m vss_cli "$@"; }
last() { vss runs list --kind "$1" --limit 1 --format json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['id'])"; }
vss train --device cuda --amp --epochs 3
B=$(last train)
vss train --device cuda --amp --amp-dtype fp16 --epochs 1 --seed 1
vss prune --ckpt "$B" --method sirfp --global-ratio 0.3 --device cuda
P=$(last prune)
vss eval --baseline "$B" --candidate "$P" --device cuda --dtype bf16 --channels-last --oracle-samples 8 --report e.json
vss eval --baseline "$B" --candidate "$P" --device cuda --dtype fp16 --report e16.json
vss bench --baseline "$B" --methods taylor,dmcp --ratios 0.5 --finetune-epochs 1 --device cuda
python3 "$REPO/benchmarks/round_to_speed.py" --device cuda --dtype bf16
