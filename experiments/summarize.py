"""Aggregate finished runs into a table: final ``eval/return`` per variant and task,
with mean, median and interquartile mean (IQM) and bootstrap confidence intervals.

    python experiments/summarize.py outputs/multirun/2026-11-25/20-00-00
    python experiments/summarize.py outputs/multirun --json summary.json

Every run directory below the given paths (any folder with ``config.yaml`` and
``metrics.jsonl``) counts once; its score is its last ``eval/return``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from dreamer.config import CONF_DIR


def interquartile_mean(scores: np.ndarray) -> float:
    """Mean of the middle 50% of the scores (fractional weights at the cut points)."""
    scores = np.sort(np.asarray(scores, dtype=float))
    count = len(scores)
    low, high = 0.25 * count, 0.75 * count
    weights = np.clip(np.minimum(np.arange(1, count + 1), high) - np.maximum(np.arange(count), low), 0, 1)
    return float((weights * scores).sum() / weights.sum())


AGGREGATES = {"mean": np.mean, "median": np.median, "iqm": interquartile_mean}


def bootstrap_interval(scores, statistic, samples: int = 2000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap confidence interval of ``statistic`` over runs."""
    scores = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.choice(scores, len(scores), replace=True)) for _ in range(samples)]
    tail = (1 - level) / 2
    return float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))


def final_return(run_dir: Path) -> float | None:
    score = None
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "eval/return" in row:
            score = row["eval/return"]
    return score


@functools.cache
def variant_names() -> dict[str, str]:
    """``rep_variant`` choice by objective class: ``{"...BarlowTwinsObjective": "r2dreamer", ...}``."""
    folder = CONF_DIR / "rep_variant"
    return {yaml.safe_load(path.read_text())["_target_"]: path.stem for path in sorted(folder.glob("*.yaml"))}


def describe(run_dir: Path) -> tuple[str, str, int]:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    target = config["rep_variant"]["_target_"]
    variant = variant_names().get(target, target.rsplit(".", 1)[-1])
    env = config["env"]
    task = env.get("task") or env.get("id") or "?"
    if env.get("obs") not in (None, "state"):
        task = f"{task} ({env['obs']})"
    return variant, task, int(config["seed"])


def collect(paths: list[Path]) -> dict:
    results: dict = defaultdict(lambda: defaultdict(dict))
    for root in paths:
        for metrics in sorted(root.rglob("metrics.jsonl")):
            run_dir = metrics.parent
            if not (run_dir / "config.yaml").exists():
                continue
            score = final_return(run_dir)
            if score is not None:
                variant, task, seed = describe(run_dir)
                results[variant][task][seed] = score
    return results


def summarize(results: dict) -> list[dict]:
    rows = []
    for variant, tasks in sorted(results.items()):
        for task, seeds in sorted(tasks.items()):
            scores = np.array([seeds[s] for s in sorted(seeds)])
            row = {"variant": variant, "task": task, "runs": len(scores), "scores": scores.tolist()}
            for name, statistic in AGGREGATES.items():
                row[name] = float(statistic(scores))
                row[f"{name}_ci"] = bootstrap_interval(scores, statistic)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"error: no such directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = summarize(collect(args.paths))
    if not rows:
        print(f"error: no finished runs (metrics.jsonl with eval/return) under {', '.join(map(str, args.paths))}",
              file=sys.stderr)
        return 2
    print(f"{'variant':<24}{'task':<28}{'runs':>5}{'mean':>10}{'median':>10}{'IQM':>10}  IQM 95% CI")
    for row in rows:
        low, high = row["iqm_ci"]
        print(f"{row['variant']:<24}{row['task']:<28}{row['runs']:>5}{row['mean']:>10.1f}{row['median']:>10.1f}"
              f"{row['iqm']:>10.1f}  [{low:.1f}, {high:.1f}]")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
