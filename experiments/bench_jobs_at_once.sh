#!/usr/bin/env bash
# Environment steps per second of one job with every core against that many one-thread jobs at
# once (what `hydra/launcher=joblib hydra.launcher.n_jobs=<cores>` runs), alternating, each a real
# training run of the bench's end-to-end mode. Usage:
#   experiments/bench_jobs_at_once.sh <repeats> <out dir> [dreamer.bench overrides...]
# e.g. experiments/bench_jobs_at_once.sh 2 outputs/bench_jobs +experiment=dmc_cpu env.task=walker_stand
set -euo pipefail
repeats=$1; out=$2; shift 2
cores=$(nproc)
python=${PYTHON:-python}
common=("$@" "bench.variants=[r2dreamer]" bench.updates=2 bench.warmup=1 bench.run_steps=3000)
rate() { $python -c "import json,sys; print(round(json.load(open(sys.argv[1]))[0]['end_to_end']['env_steps_per_second'], 2))" "$1/bench.json"; }
for r in $(seq 1 "$repeats"); do
  dir=$out/r$r/one_job; OMP_NUM_THREADS=$cores $python -m dreamer.bench "${common[@]}" hydra.run.dir="$dir" > /dev/null 2>&1
  echo "repeat $r: one job, $cores threads: $(rate "$dir") env steps/s"
  pids=()
  for j in $(seq 1 "$cores"); do
    OMP_NUM_THREADS=1 $python -m dreamer.bench "${common[@]}" seed=$j hydra.run.dir="$out/r$r/job$j" > /dev/null 2>&1 & pids+=($!)
  done
  wait "${pids[@]}"
  rates=$(for j in $(seq 1 "$cores"); do rate "$out/r$r/job$j"; done | tr '\n' ' ')
  echo "repeat $r: $cores jobs at once, 1 thread each: $rates(sum $(echo "$rates" | tr ' ' '\n' | awk '{s+=$1} END {print s}')) env steps/s"
done
