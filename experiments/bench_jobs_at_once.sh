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
# Each job's output goes to bench.log in its own directory; a failing job stops the script and says where.
run_job() {  # run_job <threads> <dir> [extra overrides...]
  local threads=$1 dir=$2; shift 2; mkdir -p "$dir"
  OMP_NUM_THREADS=$threads $python -m dreamer.bench "${common[@]}" "$@" hydra.run.dir="$dir" > "$dir/bench.log" 2>&1 \
    || { echo "bench job failed (exit $?): see $dir/bench.log" >&2; return 1; }
}
rate() { $python -c "import json,sys; print(round(json.load(open(sys.argv[1]))[0]['end_to_end']['env_steps_per_second'], 2))" "$1/bench.json"; }
for r in $(seq 1 "$repeats"); do
  dir=$out/r$r/one_job; run_job "$cores" "$dir"
  echo "repeat $r: one job, $cores threads: $(rate "$dir") env steps/s"
  pids=()
  for j in $(seq 1 "$cores"); do
    run_job 1 "$out/r$r/job$j" seed=$j & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  rates=$(for j in $(seq 1 "$cores"); do rate "$out/r$r/job$j"; done | tr '\n' ' ')
  echo "repeat $r: $cores jobs at once, 1 thread each: $rates(sum $(echo "$rates" | tr ' ' '\n' | awk '{s+=$1} END {print s}')) env steps/s"
done
