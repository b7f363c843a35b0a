"""``python -m dreamer.report <run or sweep directories...> [--out DIR]``: the paper's tables
and figures from a set of runs, with rliable's statistics and the published numbers beside ours.

    python -m dreamer.report outputs/ablation                  # a sweep (partial is fine)
    python -m dreamer.report outputs/dmc_vision outputs/2026-11-29/10-00-00-123 --out report/
    python -m dreamer.report outputs/dmc_cpu --out docs/report/dmc_cpu --keep-runs   # with the runs' records

Writes ``report.md`` (every table), ``tables/*.csv`` and ``figures/*.png`` to ``--out``
(default: ``<first directory>/report``) and prints ``report.md``.  A run is a directory
with ``metrics.jsonl``; its facts (objective, suite, task, seed, budget, hardware) come from
its ``run.json`` (or, for runs that have none, its ``config.yaml``).  A sweep's
``jobs.yaml`` says which runs are missing.  ``--keep-runs`` copies the runs' small records into
``<out>/runs/``, so that the report can be made again, and extended by later runs, after the run
directories are gone; a run found both there and in its own directory counts once.
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import json
import math
import shutil
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

# arch (rliable's bootstrap) warns that RandomState is deprecated; rliable passes one.
warnings.filterwarnings("ignore", category=FutureWarning, module="arch")

from dreamer.config import CONF_DIR

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "experiments" / "reference"
# One colour per objective in every figure.
COLOURS = {"dreamer": "#1f77b4", "r2dreamer": "#d62728", "infonce": "#2ca02c", "dreamerpro": "#9467bd"}
OTHER_COLOURS = ["#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
CRAFTER_ACHIEVEMENTS = 22
RECORDS = ("run.json", "config.yaml", "metrics.jsonl")  # what --keep-runs copies of a run
NORMALISED = ("dmc_vision", "dmc_proprio", "dmc_subtle", "atari100k", "metaworld", "crafter")  # scores in [0, ~1]
# R2-Dreamer paper, Table 1: hours for 1M DMC walker_walk steps on one RTX 3080 Ti.
PAPER_TABLE1_HOURS = {"r2dreamer": 4.4, "dreamer": 7.0, "dreamerpro": 10.4}
PAPER_TABLE1_SOURCE = "R2-Dreamer (ICLR 2026) Table 1: 1M DMC walker_walk steps, one RTX 3080 Ti, the authors' PyTorch code"


@dataclass
class Run:
    path: Path
    objective: str
    suite: str
    task: str
    seed: int
    budget: int
    rows: list[dict]
    facts: dict = field(default_factory=dict)

    @property
    def evaluations(self) -> list[tuple[int, float]]:
        key = score_key(self.suite)
        return [(row["step"], float(row[key])) for row in self.rows if key in row]

    @property
    def step(self) -> int:
        return max((row["step"] for row in self.rows), default=0)

    @property
    def finished(self) -> bool:
        return self.step >= self.budget and bool(self.evaluations)

    @property
    def hours(self) -> float | None:
        return (self.facts.get("result") or {}).get("hours")

    def training_return(self, window: int = 10_000) -> float | None:
        """Mean return of the training episodes that ended in the last ``window`` environment
        steps of the run (the stochastic policy's, as DreamerV3's released curves are)."""
        returns = [float(row["episode/return"]) for row in self.rows
                   if "episode/return" in row and row["step"] > self.step - window]
        return float(np.mean(returns)) if returns else None

    def training_curve(self, window: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
        """Mean training-episode return per ``window`` of environment steps, at each window's end."""
        episodes = [(row["step"], float(row["episode/return"])) for row in self.rows if "episode/return" in row]
        ends = np.arange(window, self.step + window, window)
        means = [np.mean([value for step, value in episodes if end - window < step <= end] or [np.nan]) for end in ends]
        keep = ~np.isnan(means)
        return ends[keep], np.asarray(means)[keep]

    def score(self) -> float | None:
        """The normalised final score: the last evaluation (Crafter: the score of all training episodes)."""
        if self.suite == "crafter":
            return crafter_score(self.rows)
        return normalise(self.suite, self.task, self.evaluations[-1][1]) if self.evaluations else None


def score_key(suite: str) -> str:
    return "eval/success" if suite == "metaworld" else "eval/return"


@functools.cache
def atari_baselines() -> dict[str, tuple[float, float]]:
    data = yaml.safe_load((REFERENCE_DIR / "atari_human_random.yaml").read_text())
    return {game: (float(scores["random"]), float(scores["human"])) for game, scores in data["games"].items()}


def normalise(suite: str, task: str, value: float) -> float:
    """DMC /1000; Atari human-normalised; Meta-World's success rate as it is; others raw."""
    if suite.startswith("dmc"):
        return value / 1000
    if suite == "atari100k":
        random, human = atari_baselines()[task]
        return (value - random) / (human - random)
    return value


def crafter_score(rows: list[dict]) -> float | None:
    """Crafter's score over the run's training episodes, as a fraction: the geometric mean of
    the achievements' success rates (percent) with a 1 % offset, ``exp(mean(log(1 + p))) - 1``."""
    episodes = [row for row in rows if any(key.startswith("episode/achievement_") for key in row)]
    if not episodes:
        return None
    names = sorted({key for row in episodes for key in row if key.startswith("episode/achievement_")})
    rates = [100 * np.mean([row.get(name, 0) > 0 for row in episodes]) for name in names]
    rates += [0.0] * (CRAFTER_ACHIEVEMENTS - len(rates))
    return float(np.exp(np.mean(np.log1p(rates))) - 1) / 100


# -- finding runs ---------------------------------------------------------------------


def objective_names() -> dict[str, str]:
    """``rep_variant`` choice by objective class, for runs without ``run.json``."""
    return {yaml.safe_load(path.read_text())["_target_"]: path.stem for path in sorted((CONF_DIR / "rep_variant").glob("*.yaml"))}


def load_run(path: Path, metrics: bool = True) -> Run | None:
    """The run in ``path``; ``metrics=False`` leaves its rows out (what the run is, not how it went)."""
    rows = []
    for line in (path / "metrics.jsonl").read_text().splitlines() if metrics else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a kill
    facts = read_facts(path)
    if facts.get("objective"):
        objective, suite, task = facts["objective"], facts["suite"], str(facts["task"])
        seed, budget = int(facts["seed"]), int(facts["steps"])
    elif (path / "config.yaml").exists():
        config = yaml.safe_load((path / "config.yaml").read_text())
        target = config["rep_variant"]["_target_"]
        objective = objective_names().get(target, target.rsplit(".", 1)[-1])
        env = config["env"]
        suite = env["_target_"].rsplit(".", 1)[-1].lower().removesuffix("env")  # the class name: Gym..., DMC...
        if suite == "dmc":
            suite = "dmc_vision" if env.get("obs") == "pixels" else "dmc_proprio"
        task, seed, budget = str(env.get("task", env.get("id"))), int(config["seed"]), int(config["steps"])
    else:
        return None
    return Run(path, objective, suite, task, seed, budget, rows, facts)


def read_facts(path: Path) -> dict:
    """A run directory's ``run.json`` ({} when it has none)."""
    return json.loads((path / "run.json").read_text()) if (path / "run.json").exists() else {}


def job_list(listing: Path) -> list[dict] | None:
    """The jobs a sweep's ``jobs.yaml`` lists, or None where the file is not one (damaged,
    or not written by ``dreamer.train``)."""
    try:
        jobs = (yaml.safe_load(listing.read_text()) or {}).get("jobs", [])
    except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
        return None
    if not isinstance(jobs, list) or not all(isinstance(job, dict) and isinstance(job.get("dir"), str) for job in jobs):
        return None
    return jobs


def find_runs(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Every run under ``paths``, and the runs a sweep's ``jobs.yaml`` lists that are
    missing or unfinished (as "<directory>: <why>")."""
    runs, problems, seen = [], [], set()
    for root in paths:
        for metrics in sorted([root / "metrics.jsonl"] if (root / "metrics.jsonl").exists() else root.rglob("metrics.jsonl")):
            if metrics.parent.resolve() in seen:
                continue
            seen.add(metrics.parent.resolve())
            run = load_run(metrics.parent)
            if run is not None:
                runs.append(run)
        for listing in sorted(root.rglob("jobs.yaml")) if root.is_dir() else []:
            jobs = job_list(listing)
            if jobs is None:
                problems.append(f"{listing}: not a job list this report can read, so its missing runs are not checked")
                continue
            for job in jobs:
                run_dir = listing.parent / job["dir"]
                if not (run_dir / "metrics.jsonl").exists():
                    problems.append(f"{run_dir}: missing (no metrics.jsonl)")
    kept = {}  # a run found twice (a kept copy beside its original): the copy that went further
    for run in runs:
        key = identity(run)
        if key not in kept or run.step > kept[key].step:
            kept[key] = run
    runs = list(kept.values())
    for run in runs:
        if not run.finished:
            problems.append(f"{run.path}: unfinished (step {run.step} of {run.budget})")
    return runs, sorted(set(problems))


def identity(run: Run) -> tuple:
    """What tells a run from its copies: what it runs (objective, suite, task, seed) and its first
    start's time, host and process (run.json); for a run without a start, its directory.  The
    start alone is not enough: a launcher's worker process runs one job after another, so two
    jobs can share a process and a starting second."""
    starts = run.facts.get("starts") or []
    start = tuple(starts[0].get(key) for key in ("time", "host", "pid")) if starts else (run.path.resolve(),)
    return (run.objective, run.suite, run.task, run.seed, *start)


def keep_runs(runs: list[Run], into: Path) -> None:
    """Copy each run's records (``RECORDS``: its facts, configuration and metrics; never its
    checkpoints or replay) to ``into/<sweep>/<task>/<objective>/seed<k>/``, a few hundred kB per
    run, from which the report can be made again when the run directories are gone.  A copy of
    the same run is refreshed; another run of the same name gets ``seed<k>-2``, ``-3``, ..."""
    for run in runs:
        base = into / str(run.facts.get("sweep") or run.facts.get("experiment") or run.suite) / run.task / run.objective
        for number in range(1, len(runs) + 2):
            dest = base / (f"seed{run.seed}" if number == 1 else f"seed{run.seed}-{number}")
            there = load_run(dest, metrics=False) if (dest / "metrics.jsonl").exists() else None
            if there is None or identity(there) == identity(run):
                break
        if dest.resolve() != run.path.resolve():
            dest.mkdir(parents=True, exist_ok=True)
            for name in RECORDS:
                if (run.path / name).exists():
                    shutil.copyfile(run.path / name, dest / name)


# -- statistics (rliable) -----------------------------------------------------------------


def interval_estimates(scores: dict, statistic, reps: int, seed: int = 0) -> tuple[dict, dict]:
    """rliable's stratified-bootstrap point estimates and 95 % CIs, the same every time for the
    same scores: rliable's bootstrap draws its resamples from NumPy's global generator (not from
    the RandomState it passes on), so that generator is seeded for the call and then restored."""
    from rliable import library

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return library.get_interval_estimates(scores, statistic, reps=reps, random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(state)


def interval(scores: np.ndarray, statistic, reps: int, seed: int = 0) -> tuple[float, float, float]:
    """``statistic`` of a (runs x tasks) score matrix and its stratified-bootstrap 95 % CI (rliable)."""
    points, intervals = interval_estimates({"x": scores}, lambda s: np.array([statistic(s)]), reps, seed)
    return float(points["x"][0]), float(intervals["x"][0, 0]), float(intervals["x"][1, 0])


def aggregates(matrices: dict[str, np.ndarray], reps: int, normalised: bool = True) -> list[dict]:
    """Mean, median, IQM and optimality gap (of normalised scores only) with 95 % CIs per objective."""
    from rliable import metrics

    statistics = {"mean": metrics.aggregate_mean, "median": metrics.aggregate_median, "IQM": metrics.aggregate_iqm,
                  "optimality gap": metrics.aggregate_optimality_gap}
    rows = []
    for objective, scores in matrices.items():
        row = {"objective": objective, "runs": scores.shape[0], "tasks": scores.shape[1]}
        for name, statistic in statistics.items():
            row[name] = interval(scores, statistic, reps) if name != "optimality gap" or normalised else (math.nan,) * 3
        rows.append(row)
    return rows


def improvement(matrices: dict[str, np.ndarray], reps: int, of: str = "r2dreamer") -> list[dict]:
    """P(``of`` > each other objective) per task, averaged over tasks, with its 95 % CI (rliable)."""
    from rliable import metrics

    if of not in matrices:
        return []
    pairs = {f"{of},{other}": [matrices[of], matrices[other]] for other in matrices if other != of}
    if not pairs:
        return []
    points, intervals = interval_estimates(pairs, metrics.probability_of_improvement, reps)
    return [{"pair": pair, "probability": (float(np.ravel(points[pair])[0]), *map(float, np.ravel(intervals[pair])))}
            for pair in pairs]


def chosen_runs(runs: list[Run]) -> tuple[dict[str, dict[str, list[Run]]], list[str]]:
    """The finished runs that enter the aggregates, per objective and task, and those tasks: the
    tasks every objective finished, and per objective as many seeds (lowest first) as it finished
    on every one of them.  Objectives keep their own counts: rliable's aggregates need a full
    matrix per objective, not the same rows in every one, and its probability of improvement
    compares runs across objectives as sets, so a baseline with one seed does not cut another
    objective to one."""
    finished = [run for run in runs if run.finished and run.score() is not None]
    by = defaultdict(lambda: defaultdict(list))
    for run in sorted(finished, key=lambda run: run.seed):
        by[run.objective][run.task].append(run)
    tasks = sorted(set.intersection(*(set(tasks) for tasks in by.values()))) if by else []
    if not tasks:
        return {}, []
    counts = {objective: min(len(by[objective][task]) for task in tasks) for objective in by}
    return {objective: {task: by[objective][task][:counts[objective]] for task in tasks}
            for objective in sorted(by, key=order)}, tasks


def left_out(runs: list[Run]) -> list[Run]:
    """The finished runs on the aggregates' tasks that chosen_runs does not take: the seeds of an
    objective beyond as many as it finished on every one of those tasks."""
    chosen, tasks = chosen_runs(runs)
    taken = {id(run) for per_task in chosen.values() for group in per_task.values() for run in group}
    return [run for run in sorted(runs, key=lambda run: (run.task, order(run.objective), run.seed))
            if run.finished and run.score() is not None and run.objective in chosen and run.task in tasks
            and id(run) not in taken]


def score_matrices(runs: list[Run]) -> tuple[dict[str, np.ndarray], list[str], dict[str, int]]:
    """(seeds x tasks) normalised final scores per objective of the runs chosen_runs picks, the
    tasks, and each objective's seed count."""
    chosen, tasks = chosen_runs(runs)
    matrices = {objective: np.array([[run.score() for run in per_task[task]] for task in tasks]).T
                for objective, per_task in chosen.items()}
    return matrices, tasks, {objective: len(matrix) for objective, matrix in matrices.items()}


def seed_counts(seeds: dict[str, int]) -> str:
    """"2 seed(s)" when every objective has as many, else "each objective's seeds (dreamer 1, r2dreamer 2)"."""
    if len(set(seeds.values())) == 1:
        return f"{next(iter(seeds.values()))} seed(s)"
    return f"each objective's seeds ({', '.join(f'{objective} {count}' for objective, count in seeds.items())})"


def order(objective: str) -> tuple:
    known = list(COLOURS)
    return (known.index(objective) if objective in known else len(known), objective)


# -- published references -------------------------------------------------------------------


@functools.cache
def dreamerv3_curves(suite: str) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """DreamerV3's released training-episode curves for a suite: task -> [(xs, ys) per seed]."""
    path = REFERENCE_DIR / "dreamerv3-scores" / f"{suite}-dreamerv3.json.gz"
    if not path.exists():
        return {}
    curves = defaultdict(list)
    for run in json.load(gzip.open(path)):
        task = run["task"].split("_", 1)[1]  # dmc_walker_walk -> walker_walk, atari_pong -> pong
        curves[task].append((np.asarray(run["xs"], float), np.asarray(run["ys"], float)))
    return dict(curves)


def dreamerv3_seeds_at(suite: str, task: str, step: int) -> list[float]:
    """Each DreamerV3 seed's mean training-episode return in the window ending at ``step``
    (10k steps; 50k at 1M; Atari's 10k frames), the convention of docs/reference-scores.md;
    seeds whose curve has no episode there are left out."""
    window = 50_000 if step >= 1_000_000 else 10_000
    means = []
    for xs, ys in dreamerv3_curves(suite).get(task, []):
        inside = (xs > step - window) & (xs <= step)
        if inside.any():
            means.append(float(ys[inside].mean()))
    return means


def dreamerv3_at(suite: str, task: str, step: int) -> float | None:
    """DreamerV3's value at ``step``: the mean over its seeds of ``dreamerv3_seeds_at``.  None
    when the files do not reach ``step``."""
    means = dreamerv3_seeds_at(suite, task, step)
    return float(np.mean(means)) if means else None


def seed_range(values: list[float]) -> str:
    """"868.8-944.4 (n=10)": the lowest and highest of a reference's seeds."""
    return f"{min(values):.1f}-{max(values):.1f} (n={len(values)})" if values else ""


# -- tables ---------------------------------------------------------------------------------------


def cell(values: list[float], reps: int, digits: int = 3) -> str:
    from rliable import metrics

    if not values:
        return ""
    if len(values) == 1:  # one seed: the bootstrap has nothing to resample, so no interval
        return f"{values[0]:.{digits}f} (n=1)"
    mean, low, high = interval(np.array(values)[:, None], metrics.aggregate_mean, reps)
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] (n={len(values)})"


def task_tables(runs: list[Run], reps: int) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Per suite: rows tasks, columns objectives (normalised final score, mean [95 % CI] (seeds)), and DreamerV3."""
    tables = {}
    for suite in sorted({run.suite for run in runs}):
        here = [run for run in runs if run.suite == suite and run.finished and run.score() is not None]
        objectives = sorted({run.objective for run in here}, key=order)
        header = ["task", "budget", *objectives, "DreamerV3 (training episodes)"]
        rows = []
        for task in sorted({run.task for run in here}):
            budget = max(run.budget for run in here if run.task == task)
            reference = dreamerv3_at(suite, task, budget)
            rows.append([task, str(budget),
                         *(cell([run.score() for run in here if run.task == task and run.objective == objective], reps,
                                3 if suite in NORMALISED else 1)
                           for objective in objectives),
                         "" if reference is None else f"{normalise(suite, task, reference):.3f}"])
        tables[suite] = (header, rows)
    return tables


def run_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """One row per run, raw returns: the final evaluation, the training episodes of the last
    10k steps, DreamerV3's value at the run's step (training episodes) with its lowest and
    highest seed there, the wall clock, the hardware and the version of this package that made it
    (runs before 0.3 did not record one)."""
    header = ["suite", "task", "objective", "seed", "steps", "final eval return", "training episodes (last 10k steps)",
              "DreamerV3 (training episodes)", "DreamerV3 seeds (lowest-highest)", "hours", "hardware", "version"]
    rows = []
    for run in sorted(runs, key=lambda run: (run.suite, run.task, order(run.objective), run.seed)):
        if not run.evaluations:
            continue
        train = run.training_return()
        reference = dreamerv3_at(run.suite, run.task, run.step)
        hardware = hardware_of(run)
        rows.append([run.suite, run.task, run.objective, str(run.seed), str(run.step), f"{run.evaluations[-1][1]:.1f}",
                     "" if train is None else f"{train:.1f}", "" if reference is None else f"{reference:.1f}",
                     seed_range(dreamerv3_seeds_at(run.suite, run.task, run.step)),
                     "" if not run.hours else f"{run.hours:.2f}", hardware if run.facts else "",
                     version_of(run) if run.facts else ""])
    return header, rows


def version_of(run: Run) -> str:
    """The version of this package that made a run (run.json records it from 0.3 on)."""
    return run.facts.get("version", "0.2 or earlier")


def versions_note(runs: list[Run]) -> list[str]:
    """A warning where the runs were made by more than one version of this package, which the
    tables and figures pool: a version that changed the model changes what its scores mean."""
    counts = Counter(version_of(run) for run in runs if run.facts)
    if len(counts) < 2:
        return []
    parts = ", ".join(f"{version} ({count} run{'' if count == 1 else 's'})" for version, count in sorted(counts.items()))
    return [f"**Mixed versions:** these runs were made by more than one version of this package: {parts}. The tables "
            "and figures pool them; the run table's version column says which is which.", ""]


def hardware_of(run: Run) -> str:
    """"AMD EPYC, AVX2 (2 threads)": the GPU, or the CPU and its vector instructions (AVX2, AVX512:
    the same model name covers CPUs of different matmul speed), a run trained on, and its torch threads."""
    facts, threads = run.facts, run.facts.get("torch_threads")
    device = facts.get("gpu") or ", ".join(filter(None, (facts.get("cpu"), facts.get("cpu_capability"))))
    return f"{device} ({threads} thread{'' if threads == 1 else 's'})"


def wall_clock(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Hours per 1M environment steps per suite, task and objective, from the runs' own
    timing, and the paper's Table 1 beside DMC Vision walker_walk (the task it timed)."""
    header = ["suite", "task", "objective", "runs", "hours per 1M steps", "hardware", "paper Table 1 (RTX 3080 Ti)"]
    groups = defaultdict(list)
    for run in runs:
        if run.finished and run.hours:
            groups[run.suite, run.task, run.objective].append(run)
    rows = []
    for (suite, task, objective), group in sorted(groups.items(), key=lambda item: (*item[0][:2], order(item[0][2]))):
        per_million = [run.hours / run.step * 1e6 for run in group]
        hardware = sorted({hardware_of(run) for run in group})
        paper = PAPER_TABLE1_HOURS.get(objective) if (suite, task) == ("dmc_vision", "walker_walk") else None
        rows.append([suite, task, objective, str(len(group)), f"{np.mean(per_million):.2f}", "; ".join(hardware),
                     "" if paper is None else f"{paper}"])
    return header, rows


def estimate(point: float, low: float, high: float, digits: int = 3, with_interval: bool = True) -> str:
    """``point [low, high]``; the point alone without ``with_interval`` (one seed per task: a stratified
    bootstrap resamples seeds within each task, so its interval would be the point itself)."""
    if math.isnan(point):
        return ""
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]" if with_interval else f"{point:.{digits}f}"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


# -- figures ----------------------------------------------------------------------------------------


def colour(objective: str, objectives: list[str]) -> str:
    if objective in COLOURS:
        return COLOURS[objective]
    others = sorted(o for o in objectives if o not in COLOURS)
    return OTHER_COLOURS[others.index(objective) % len(OTHER_COLOURS)]


def curve_matrix(runs: list[Run]) -> tuple[np.ndarray, np.ndarray] | None:
    """(seeds x steps) normalised evaluation scores on the steps every run evaluated at; None
    without runs (an objective not run on this task) or without a step they share."""
    if not runs:
        return None
    steps = sorted(set.intersection(*(set(step for step, _ in run.evaluations) for run in runs)))
    if not steps:
        return None
    values = [[normalise(run.suite, run.task, dict(run.evaluations)[step]) for step in steps] for run in runs]
    return np.asarray(steps), np.asarray(values)


def band(values: np.ndarray, reps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds at each step and its stratified-bootstrap 95 % CI (rliable), for (seeds x steps)."""
    from rliable import metrics

    scores = values[:, None, :]  # runs x tasks x steps
    def per_step(s):
        return np.array([metrics.aggregate_mean(s[..., k]) for k in range(s.shape[-1])])

    points, intervals = interval_estimates({"x": scores}, per_step, reps)
    return points["x"], intervals["x"][0], intervals["x"][1]


def training_mean(runs: list[Run]) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean over runs of each run's normalised training-episode return per 10k steps, on the windows all runs have."""
    curves = [dict(zip(*run.training_curve())) for run in runs]
    ends = sorted(set.intersection(*(set(curve) for curve in curves))) if curves else []
    if not ends:
        return None
    run = runs[0]
    means = [np.mean([curve[end] for curve in curves]) for end in ends]
    return np.asarray(ends), np.array([normalise(run.suite, run.task, mean) for mean in means])


def learning_curves(runs: list[Run], suite: str, path: Path, reps: int) -> list[str]:
    """Evaluation (mean over seeds, 95 % CI band) and training-episode curves per task and
    objective beside DreamerV3's, one panel per task; returns the legend's labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    here = [run for run in runs if run.suite == suite and run.evaluations]
    tasks = sorted({run.task for run in here})
    objectives = sorted({run.objective for run in here}, key=order)
    columns = min(4, len(tasks))
    rows = math.ceil(len(tasks) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        seeds = []
        for objective in objectives:
            group = [run for run in here if run.task == task and run.objective == objective]
            matrix = curve_matrix(group)
            if matrix is None:
                continue
            steps, values = matrix
            seeds.append(f"{objective} {len(values)}")
            mean, low, high = band(values, reps)
            ax.plot(steps, mean, color=colour(objective, objectives), label=f"{objective} eval")
            ax.fill_between(steps, low, high, color=colour(objective, objectives), alpha=0.2)
            training = training_mean(group)
            if training is not None:
                ax.plot(*training, color=colour(objective, objectives), linestyle=":", label=f"{objective} training episodes")
        if dreamerv3_curves(suite).get(task):
            limit = max(run.budget for run in here if run.task == task)
            grid = np.arange(10_000, limit + 1, 10_000)
            seeds_at = [[normalise(suite, task, v) for v in dreamerv3_seeds_at(suite, task, int(x))] for x in grid]
            ax.plot(grid, [np.mean(v) if v else np.nan for v in seeds_at], color="0.4",
                    linestyle="--", label="DreamerV3 (training episodes)")
            ax.fill_between(grid, [min(v) if v else np.nan for v in seeds_at], [max(v) if v else np.nan for v in seeds_at],
                            color="0.4", alpha=0.12, label="DreamerV3 seeds (lowest-highest)")
        ax.set_title(f"{task}\nseeds: {', '.join(seeds)}", fontsize=10)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("normalised score" if suite != "gym" else "return")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    # One legend for every line of every panel: an objective may have runs on some tasks only.
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    axes.flat[0].legend(legend.values(), legend.keys(), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return list(legend)


def iqm_curve(runs: list[Run], suite: str, path: Path, reps: int) -> bool:
    """The suite's IQM over runs x tasks at each evaluation step all its finished runs share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import metrics

    here = [run for run in runs if run.suite == suite and run.finished and run.evaluations]
    chosen, tasks = chosen_runs(here)
    if not chosen:
        return False
    steps = sorted(set.intersection(*(set(step for step, _ in run.evaluations)
                                      for per_task in chosen.values() for group in per_task.values() for run in group)))
    if not steps:
        return False
    figure, ax = plt.subplots(figsize=(5, 3.5))
    for objective, per_task in chosen.items():
        scores = np.array([[[normalise(suite, task, dict(run.evaluations)[step]) for step in steps]
                            for run in per_task[task]] for task in tasks])  # tasks x seeds x steps
        scores = scores.transpose(1, 0, 2)  # runs x tasks x steps
        points, intervals = interval_estimates(
            {"x": scores}, lambda s: np.array([metrics.aggregate_iqm(s[..., k]) for k in range(s.shape[-1])]), reps)
        ax.plot(steps, points["x"], color=colour(objective, list(chosen)), label=f"{objective} ({len(scores)} seed(s))")
        ax.fill_between(steps, intervals["x"][0], intervals["x"][1], color=colour(objective, list(chosen)), alpha=0.2)
    ax.set_title(f"{suite}: IQM over seeds x {len(tasks)} task(s)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("IQM of normalised score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def improvement_figure(rows: list[dict], suite: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5, 0.6 * len(rows) + 1.2))
    for index, row in enumerate(rows):
        point, low, high = row["probability"]
        other = row["pair"].split(",")[1]
        ax.barh(index, high - low, left=low, height=0.5, color=colour(other, [other]), alpha=0.6)
        ax.plot([point, point], [index - 0.25, index + 0.25], color="black")
    ax.set_yticks(range(len(rows)), [f"r2dreamer > {row['pair'].split(',')[1]}" for row in rows])
    ax.axvline(0.5, color="0.5", linestyle=":")
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability of improvement (95 % CI)")
    ax.set_title(suite)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# -- the command ---------------------------------------------------------------------------------


def report(paths: list[Path], out: Path, reps: int = 2000, keep: bool = False) -> str:
    runs, problems = find_runs(paths)
    if not runs:
        raise ValueError(f"no runs under {', '.join(map(str, paths))} (a run directory holds metrics.jsonl)")
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    lines = [f"# Report: {len(runs)} run(s) from {', '.join(map(str, paths))}", "", *versions_note(runs)]
    if keep:
        keep_runs(runs, out / "runs")
        lines += [f"The runs' records are kept in `runs/` ({', '.join(f'`{name}`' for name in RECORDS)}); the report "
                  f"again from them alone: `python -m dreamer.report {out / 'runs'} --out {out}`.", ""]
    lines += ["Scores: final evaluation return of the policy's mode, normalised (DMC /1000; Atari "
              "(score - random) / (human - random); Meta-World success rate; Crafter score / 100; other suites raw). "
              "Cells: mean over seeds [stratified-bootstrap 95 % CI] (n = seeds). DreamerV3: the authors' released "
              "training-episode returns of the stochastic policy at the same step (experiments/reference/), "
              "not evaluation returns.", ""]
    for suite, (header, rows) in task_tables(runs, reps).items():
        write_csv(out / "tables" / f"{suite}.csv", header, rows)
        lines += [f"## {suite}", "", markdown(header, rows) if rows else "No finished run yet.", ""]
        here = [run for run in runs if run.suite == suite]
        matrices, tasks, seeds = score_matrices(here)
        if matrices:
            aggregate = aggregates(matrices, reps, normalised=suite in NORMALISED)
            aggregate_header = ["objective", "runs", "tasks", "mean", "median", "IQM", "optimality gap"]
            aggregate_rows = [[row["objective"], str(row["runs"]), str(row["tasks"]),
                               *(estimate(*row[key], digits=3 if suite in NORMALISED else 1, with_interval=row["runs"] > 1)
                                 for key in aggregate_header[3:])]
                              for row in aggregate]
            write_csv(out / "tables" / f"{suite}_aggregates.csv",
                      ["objective", "runs", "tasks", *(f"{key} {part}" for key in aggregate_header[3:]
                                                       for part in ("point", "low", "high"))],
                      [[row["objective"], row["runs"], row["tasks"], *(value for key in aggregate_header[3:] for value in row[key])]
                       for row in aggregate])
            single = [objective for objective, count in seeds.items() if count == 1]
            how = ("rliable; one seed per task, so no confidence interval (a stratified bootstrap resamples "
                   "seeds within each task) and no more than the scores of the runs it takes"
                   if len(single) == len(seeds) else
                   f"rliable, stratified bootstrap, {reps} resamples"
                   + (f"; no interval for {', '.join(single)} (one seed per task)" if single else ""))
            skipped = ", ".join(f"{run.task} {run.objective} seed {run.seed}" for run in left_out(here))
            if skipped:  # more seeds on some tasks: say which runs the aggregates do not count
                how += (f". They leave out {skipped} (an objective's aggregates take as many seeds as it finished "
                        "on every task, lowest first; the table above has them)")
            lines += [f"Aggregates over {seed_counts(seeds)} x {len(tasks)} task(s) ({', '.join(tasks)}), {how}:", "",
                      markdown(aggregate_header, aggregate_rows), ""]
            pairs = improvement(matrices, reps)
            if pairs:
                spread = {row["pair"]: all(seeds[name] > 1 for name in row["pair"].split(",")) for row in pairs}
                lines += ["Probability of improvement of r2dreamer (each objective's runs compared as sets, "
                          "Mann-Whitney per task; an interval where both have more than one seed):", "",
                          markdown(["pair", "P(X > Y) [95 % CI]" if any(spread.values()) else "P(X > Y)"],
                                   [[row["pair"].replace(",", " > "),
                                     estimate(*row["probability"], with_interval=spread[row["pair"]])]
                                    for row in pairs]), ""]
                improvement_figure(pairs, suite, out / "figures" / f"{suite}_improvement.png")
            iqm_curve(runs, suite, out / "figures" / f"{suite}_iqm.png", reps)
        learning_curves(runs, suite, out / "figures" / f"{suite}_curves.png", reps)
    header, rows = run_table(runs)
    write_csv(out / "tables" / "runs.csv", header, rows)
    lines += ["## Runs", "", "Raw returns. Final eval: the policy's mode at the last evaluation; training episodes: the "
              "stochastic policy's episodes that ended in the run's last 10k environment steps, the quantity DreamerV3's "
              "released curves hold (its column: the same window, mean over its seeds; the next column: the lowest and "
              "highest of its seeds there, the spread one seed of ours is read against).", "", markdown(header, rows), ""]
    header, rows = wall_clock(runs)
    write_csv(out / "tables" / "wall_clock.csv", header, rows)
    paper = ", ".join(f"{objective} {hours} h" for objective, hours in PAPER_TABLE1_HOURS.items())
    lines += ["## Wall clock", "", f"From each run's training time (run.json). {PAPER_TABLE1_SOURCE}: {paper} "
              "(the authors' DreamerV3 is our `dreamer`).", "",
              markdown(header, rows), ""]
    lines += ["## Missing or unfinished runs", ""] + ([f"- {problem}" for problem in problems] or ["None."]) + [""]
    lines += ["## Figures", ""] + [f"- figures/{path.name}" for path in sorted((out / "figures").glob("*.png"))] + [""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamer.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--out", type=Path, help="where report.md, tables/ and figures/ go (default: <first path>/report)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the 95 %% CIs (default 2000)")
    parser.add_argument("--keep-runs", action="store_true",
                        help=f"copy each run's {', '.join(RECORDS)} (no checkpoints) into <out>/runs/, "
                             "so the report can be made again once the run directories are gone")
    args = parser.parse_args(argv)
    for path in args.paths:
        if not path.is_dir():
            print(f"error: {path} is not a directory; give run or sweep directories", file=sys.stderr)
            return 2
    try:
        print(report(args.paths, args.out or args.paths[0] / "report", args.reps, keep=args.keep_runs))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
