#!/usr/bin/env bash
# Four representation objectives x seeds on one environment, then the report (tables and figures).
#   experiments/sweep_variants.sh                       # CartPole-v1 from pixels, seeds 0,1
#   SEEDS=0,1,2,3,4 OBS=state experiments/sweep_variants.sh steps=20000
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-0,1}
OBS=${OBS:-pixels}
DIR=outputs/multirun/variants-$(date +%Y-%m-%d_%H-%M-%S)
.venv/bin/python -m dreamer.train -m rep_variant=dreamer,r2dreamer,infonce,dreamerpro seed="$SEEDS" \
  env.obs="$OBS" progress=false hydra.sweep.dir="$DIR" "$@"
.venv/bin/python -m dreamer.report "$DIR"
