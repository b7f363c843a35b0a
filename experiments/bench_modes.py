"""Eager fp32 against a fast mode, interleaved and repeated: medians and speed-ups.

Each repeat runs ``python -m dreamer.bench`` once per mode, one after the other, so slow
drifts of the machine hit both modes alike; the table shows the median over repeats of
each run's own median update time::

    python experiments/bench_modes.py                       # size12M pixels, 2 repeats
    python experiments/bench_modes.py --repeats 3 -- bench.variants=[r2dreamer,dreamer]
    python experiments/bench_modes.py --base "bench.updates=10" --repeats 1   # the tiny preset
    python experiments/bench_modes.py --fast "precision=bf16 compile=true channels_last=true"
    # whole runs instead of updates: environment steps per second, e.g. overlapped collection
    python experiments/bench_modes.py --end-to-end --base "env=dmc_vision model=tiny bench.run_steps=3000" \
        --baseline overlap=false --fast overlap=true

Every run's ``bench.json`` and log stay under ``--out``; ``summary.json`` holds the table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(overrides: list[str], out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "dreamer.bench", *overrides, f"hydra.run.dir={out}"]
    with open(out / "bench.log", "w") as log:
        subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    return json.loads((out / "bench.json").read_text())


def summarize(runs: dict[str, list[list[dict]]], baseline: str, fast: str, end_to_end: bool = False) -> list[dict]:
    """Per variant and mode the median over repeats of seconds per update (or, ``end_to_end``,
    of seconds per environment step of the real run), and baseline / fast."""
    def seconds_of(row: dict) -> float:
        return 1 / row["end_to_end"]["env_steps_per_second"] if end_to_end else row["update_seconds_median"]

    rows = []
    for variant in [row["variant"] for row in runs[baseline][0]]:
        row = {"variant": variant}
        for mode in (baseline, fast):
            seconds = [seconds_of(r) for run in runs[mode] for r in run if r["variant"] == variant]
            fraction = [r["fraction_of_peak"] for run in runs[mode] for r in run if r["variant"] == variant]
            row[mode] = {"seconds": statistics.median(seconds), "each": seconds,
                         "fraction_of_peak": statistics.median(fraction)}
        row["speedup"] = row[baseline]["seconds"] / row[fast]["seconds"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--base", default="model=size12M env.obs=pixels bench.updates=3", help="overrides of every run")
    parser.add_argument("--baseline", default="precision=fp32 compile=false bench.warmup=1")
    parser.add_argument("--fast", default="precision=bf16 compile=true bench.warmup=2")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--end-to-end", action="store_true",
                        help="compare the real runs of bench.run_steps (seconds per environment step), not the update")
    parser.add_argument("overrides", nargs="*", help="more dreamer.bench overrides, after --")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} is invalid; it must be >= 1")
    out = args.out or ROOT / "outputs" / "bench" / f"modes-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    modes = {"baseline": shlex.split(args.baseline), "fast": shlex.split(args.fast)}
    base = shlex.split(args.base) + args.overrides
    runs: dict[str, list[list[dict]]] = {name: [] for name in modes}
    for repeat in range(args.repeats):
        for name, overrides in modes.items():
            runs[name].append(run_bench([*base, *overrides], out / f"{name}-{repeat}"))
            print(f"repeat {repeat} {name}: " + ", ".join(
                f"{r['variant']} {r['update_seconds_median']:.2f} s"
                + (f", {r['end_to_end']['env_steps_per_second']:.1f} env steps/s" if args.end_to_end else "")
                for r in runs[name][-1]), flush=True)
    rows = summarize(runs, "baseline", "fast", args.end_to_end)
    unit = "ms/step" if args.end_to_end else "s"
    scale = 1000 if args.end_to_end else 1
    print(f"\n{'variant':<12}{'baseline ' + unit:>16}{'%peak':>7}{'fast ' + unit:>14}{'%peak':>7}{'speed-up':>10}")
    for row in rows:
        base, fast = row["baseline"], row["fast"]
        print(f"{row['variant']:<12}{scale * base['seconds']:>16.2f}{100 * base['fraction_of_peak']:>7.1f}"
              f"{scale * fast['seconds']:>14.2f}{100 * fast['fraction_of_peak']:>7.1f}{row['speedup']:>9.2f}x")
    summary = {"baseline": args.baseline, "fast": args.fast, "base_overrides": base, "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    main()
