"""``python -m dreamer.report``: the paper's tables and figures from runs, rliable's statistics,
the published reference numbers, and what it says about missing and unfinished runs."""

import csv
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import read_metrics, run_cli
import dreamer
from dreamer import report

VARIANTS = ["dreamer", "r2dreamer", "infonce", "dreamerpro"]


def test_report_of_the_smoke_ablation(smoke_ablation, tmp_path):
    from rliable import library, metrics

    # A partial copy beside it: one run whose job list says a second should exist, cut short.
    partial = tmp_path / "partial"
    copied = partial / "CartPole-v1" / "r2dreamer" / "seed0"
    copied.mkdir(parents=True)
    shutil.copy(smoke_ablation / "CartPole-v1" / "r2dreamer" / "seed0" / "config.yaml", copied / "config.yaml")
    facts = json.loads((smoke_ablation / "CartPole-v1" / "r2dreamer" / "seed0" / "run.json").read_text())
    assert facts["version"] == dreamer.__version__  # which model a run's numbers came from
    facts["starts"][0]["host"] = "elsewhere"  # another run (a copy of the same run would count once)
    (copied / "run.json").write_text(json.dumps(facts))
    rows = read_metrics(smoke_ablation / "CartPole-v1" / "r2dreamer" / "seed0")
    (copied / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows if row["step"] <= 100))
    (partial / "jobs.yaml").write_text("jobs:\n- {dir: CartPole-v1/r2dreamer/seed0}\n- {dir: CartPole-v1/r2dreamer/seed100}\n")

    out = tmp_path / "report"
    result = run_cli(str(smoke_ablation), str(partial), "--out", str(out), "--reps", "300", module="dreamer.report")
    assert result.returncode == 0, result.stderr[-3000:]
    text = (out / "report.md").read_text()
    assert text in result.stdout
    assert f"{partial / 'CartPole-v1' / 'r2dreamer' / 'seed100'}: missing" in text
    assert f"{copied}: unfinished (step 100 of 200)" in text

    with open(out / "tables" / "gym.csv") as file:
        [header, row] = list(csv.reader(file))
    assert header == ["task", "budget", *VARIANTS, "DreamerV3 (training episodes)"]
    assert row[:2] == ["CartPole-v1", "200"] and all(cell.endswith("(n=2)") for cell in row[2:6])

    # The aggregates are rliable's on the same scores (final eval/return of each finished run).
    scores = {variant: np.array([[read_metrics(smoke_ablation / "CartPole-v1" / variant / f"seed{seed}")[-1]["eval/return"]]
                                 for seed in (0, 100)]) for variant in VARIANTS}
    points, intervals = library.get_interval_estimates(
        scores, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=300, random_state=np.random.RandomState(0))
    with open(out / "tables" / "gym_aggregates.csv") as file:
        aggregates = {line["objective"]: line for line in csv.DictReader(file)}
    for variant in VARIANTS:
        line = aggregates[variant]
        assert int(line["runs"]) == 2 and int(line["tasks"]) == 1
        assert float(line["IQM point"]) == pytest.approx(points[variant][0])
        assert float(line["IQM low"]) == pytest.approx(intervals[variant][0, 0])
        assert float(line["IQM high"]) == pytest.approx(intervals[variant][1, 0])
    assert "r2dreamer > dreamerpro" in text

    for name in ("gym_curves.png", "gym_iqm.png", "gym_improvement.png"):
        with Image.open(out / "figures" / name) as image:
            assert image.width >= 300 and image.height >= 200, name
            assert len(np.unique(np.asarray(image.convert("L")))) > 10, name  # not a blank canvas

    with open(out / "tables" / "runs.csv") as file:
        listed = list(csv.DictReader(file))
    assert len(listed) == 9 and {line["objective"] for line in listed} == set(VARIANTS)  # 8 finished + the partial one
    last = read_metrics(smoke_ablation / "CartPole-v1" / "dreamer" / "seed0")[-1]["eval/return"]
    assert [line["final eval return"] for line in listed if line["objective"] == "dreamer"][0] == f"{last:.1f}"

    with open(out / "tables" / "wall_clock.csv") as file:
        clock = list(csv.DictReader(file))
    assert [line["objective"] for line in clock] == VARIANTS and all(float(line["hours per 1M steps"]) > 0 for line in clock)


def test_report_of_one_run_and_of_nothing(smoke_ablation, tmp_path):
    run_dir = smoke_ablation / "CartPole-v1" / "infonce" / "seed100"
    result = run_cli(str(run_dir), "--out", str(tmp_path / "one"), "--reps", "100", module="dreamer.report")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| CartPole-v1 | 200 | " in result.stdout and "(n=1)" in result.stdout
    empty = run_cli(str(tmp_path / "one" / "tables"), module="dreamer.report")
    assert empty.returncode == 2 and empty.stderr.strip() == (
        f"error: no runs under {tmp_path / 'one' / 'tables'} (a run directory holds metrics.jsonl)")


def test_statistics_against_values_by_hand():
    # IQM of 0..7: the middle half 2, 3, 4, 5 -> 3.5; identical samples improve on each other half the time.
    from rliable import metrics

    point, low, high = report.interval(np.arange(8.0)[:, None], metrics.aggregate_iqm, reps=200)
    assert point == 3.5 and low <= 3.5 <= high
    same = np.array([[1.0, 2.0], [3.0, 4.0]])
    [row] = report.improvement({"r2dreamer": same, "dreamer": same.copy()}, reps=100)
    assert row["probability"][0] == 0.5 and row["probability"][1] <= 0.5 <= row["probability"][2]
    assert report.normalise("dmc_vision", "walker_walk", 800) == 0.8
    assert report.normalise("atari100k", "pong", 14.6) == pytest.approx(1.0)  # human
    assert report.normalise("atari100k", "pong", -20.7) == pytest.approx(0.0)  # random
    every_time = [{"step": k, **{f"episode/achievement_{n}": 1.0 for n in range(22)}} for k in range(3)]
    assert report.crafter_score(every_time) == pytest.approx(1.0)  # exp(mean(log(101))) - 1 = 100 %
    half = [{"step": k, **{f"episode/achievement_{n}": float(k % 2) for n in range(22)}} for k in range(4)]
    assert report.crafter_score(half) == pytest.approx(0.5)  # every achievement in 50 % of episodes


@pytest.mark.parametrize("suite, task, step, published", [
    ("dmc_vision", "walker_walk", 100_000, 605), ("dmc_vision", "cheetah_run", 1_000_000, 836),
    ("dmc_proprio", "walker_stand", 100_000, 767), ("dmc_proprio", "cartpole_balance", 200_000, 941),
])
def test_dreamerv3_reference_matches_the_published_table(suite, task, step, published):
    # The published table of DreamerV3's scores (README, "Reference numbers") from the same files.
    assert round(report.dreamerv3_at(suite, task, step)) == published
    assert report.dreamerv3_at(suite, task, 5_000_000) is None  # past the curves' end
    assert not math.isnan(report.normalise(suite, task, published))


def test_dreamerv3_seeds_by_hand(monkeypatch, tmp_path):
    # Seed a: episodes at 5k, 15k and 20k steps; seed b: one at 12k; seed c: none in (10k, 20k].
    curves = {"cartpole_balance": [(np.array([5000.0, 15000.0, 20000.0]), np.array([1.0, 10.0, 20.0])),
                                   (np.array([12000.0]), np.array([3.0])), (np.array([25000.0]), np.array([99.0]))]}
    monkeypatch.setattr(report, "dreamerv3_curves", lambda suite: curves)
    assert report.dreamerv3_seeds_at("dmc_proprio", "cartpole_balance", 20000) == [15.0, 3.0]
    assert report.dreamerv3_at("dmc_proprio", "cartpole_balance", 20000) == 9.0
    assert report.dreamerv3_seeds_at("dmc_proprio", "walker_stand", 20000) == []
    run = report.Run(tmp_path, "r2dreamer", "dmc_proprio", "cartpole_balance", 0, 20000,
                     [{"step": 20000, "eval/return": 5.0}], {"result": {"hours": 0.1}})
    header, [row] = report.run_table([run])
    line = dict(zip(header, row))
    assert line["DreamerV3 (training episodes)"] == "9.0"
    assert line["DreamerV3 seeds (lowest-highest)"] == "3.0-15.0 (n=2)"


def test_dreamerv3_seed_spread_of_the_released_vision_walker_stand():
    # The ten released seeds of DMC Vision walker_stand over 90k-100k steps: 868.8 to 944.4, mean 908.5.
    seeds = report.dreamerv3_seeds_at("dmc_vision", "walker_stand", 100_000)
    assert len(seeds) == 10 and round(min(seeds), 1) == 868.8 and round(max(seeds), 1) == 944.4
    assert round(float(np.mean(seeds)), 1) == 908.5


def test_run_table_and_training_episode_curves_by_hand(tmp_path):
    # Episodes end at 4k, 9k, 12k, 19k and 20k steps; the run stops at 20k with evaluations at 10k and 20k.
    rows = [{"step": step, "episode/return": value} for step, value in
            ((4000, 100.0), (9000, 300.0), (12000, 500.0), (19000, 700.0), (20000, 900.0))]
    rows += [{"step": 10000, "eval/return": 250.0}, {"step": 20000, "eval/return": 820.0}]
    facts = {"result": {"hours": 0.5}, "cpu": "AMD EPYC", "torch_threads": 2}
    run = report.Run(tmp_path, "r2dreamer", "dmc_proprio", "cartpole_balance", 0, 20000, rows, facts)
    assert run.training_return() == pytest.approx((500 + 700 + 900) / 3)  # episodes in (10k, 20k]
    assert run.training_return(window=2000) == pytest.approx((700 + 900) / 2)
    ends, means = run.training_curve()
    assert list(ends) == [10000, 20000] and list(means) == pytest.approx([200.0, 700.0])
    other = report.Run(tmp_path, "r2dreamer", "dmc_proprio", "cartpole_balance", 1, 20000,
                       [{"step": 15000, "episode/return": 100.0}, {"step": 20000, "eval/return": 1.0}])
    ends, means = report.training_mean([run, other])
    assert list(ends) == [20000] and list(means) == pytest.approx([(700 + 100) / 2 / 1000])  # normalised, shared windows

    header, [row] = report.run_table([run])
    line = dict(zip(header, row))
    assert line["final eval return"] == "820.0" and line["training episodes (last 10k steps)"] == "700.0"
    assert line["hours"] == "0.50" and line["hardware"] == "AMD EPYC (2 threads)"
    assert line["version"] == "0.2 or earlier"  # its run.json has no version
    facts["version"] = "0.3.0"
    header, [row] = report.run_table([run])
    assert dict(zip(header, row))["version"] == "0.3.0"
    assert report.hardware_of(report.Run(tmp_path, "r2dreamer", "dmc_proprio", "cartpole_balance", 0, 1, [],
                                         {"cpu": "AMD EPYC", "torch_threads": 1})) == "AMD EPYC (1 thread)"
    assert line["DreamerV3 (training episodes)"] == f"{report.dreamerv3_at('dmc_proprio', 'cartpole_balance', 20000):.1f}"


def fake_run(path, seed, start, steps=20000, budget=20000, sweep="dmc_cpu", final=800.0,
             objective="r2dreamer", task="cartpole_balance", version=None):
    """A DMC Proprio run directory as a training job leaves it (records only)."""
    path.mkdir(parents=True)
    facts = {"experiment": "dmc_cpu", "sweep": sweep, "objective": objective, "suite": "dmc_proprio",
             "task": task, "seed": seed, "steps": budget, "cpu": "AMD EPYC", "cpu_capability": "AVX2",
             "torch_threads": 1, "starts": [{"time": start, "host": "vm", "pid": 7, "job_id": None}]}
    if steps >= budget:
        facts["result"] = {"hours": 1.25}
    if version:
        facts["version"] = version
    (path / "run.json").write_text(json.dumps(facts))
    (path / "config.yaml").write_text(f"seed: {seed}\n")
    rows = [{"step": step, "episode/return": 100.0 + step / 100} for step in range(2000, steps + 1, 2000)]
    rows += [{"step": step, "eval/return": final * step / steps} for step in range(10000, steps + 1, 10000)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_kept_runs_make_the_report_again_after_the_run_directories_are_gone(tmp_path):
    outputs = tmp_path / "outputs"
    fake_run(outputs / "dmc_cpu" / "cartpole_balance" / "r2dreamer" / "seed0", 0, "2026-11-30T10:00:00+0000", final=800.0)
    fake_run(outputs / "dmc_cpu" / "cartpole_balance" / "r2dreamer" / "seed100", 100, "2026-11-30T11:00:00+0000", final=900.0)
    # Another run of the same name, from a sweep directory of the same name elsewhere: kept beside, not over it.
    fake_run(tmp_path / "elsewhere" / "dmc_cpu" / "cartpole_balance" / "r2dreamer" / "seed0", 0,
             "2026-11-30T12:00:00+0000", final=500.0)
    out = tmp_path / "report"
    first = report.report([outputs / "dmc_cpu", tmp_path / "elsewhere"], out, reps=50, keep=True)
    kept = out / "runs" / "dmc_cpu" / "cartpole_balance" / "r2dreamer"
    assert sorted(path.name for path in kept.iterdir()) == ["seed0", "seed0-2", "seed100"]
    for name in report.RECORDS:
        assert (kept / "seed0" / name).read_bytes() == (outputs / "dmc_cpu" / "cartpole_balance" / "r2dreamer" /
                                                        "seed0" / name).read_bytes()
    assert json.loads((kept / "seed0-2" / "metrics.jsonl").read_text().splitlines()[-1])["eval/return"] == 500.0
    assert f"python -m dreamer.report {out / 'runs'} --out {out}" in first
    assert "| dmc_proprio | cartpole_balance | r2dreamer | 0 | 20000 | 800.0 |" in first
    assert "AMD EPYC, AVX2 (1 thread)" in first
    runs_table = (out / "tables" / "runs.csv").read_text()

    shutil.rmtree(outputs)
    shutil.rmtree(tmp_path / "elsewhere")
    again = tmp_path / "again"
    report.report([out / "runs"], again, reps=50)
    assert (again / "tables" / "runs.csv").read_text() == runs_table

    # A kept run continued in its own directory (step 20k of 40k): found once, as the copy that went further,
    # and the kept copy refreshed; a run beside the kept ones counts as well.
    longer = fake_run(outputs / "dmc_cpu" / "cartpole_balance" / "r2dreamer" / "seed0", 0, "2026-11-30T10:00:00+0000",
                      steps=30000, budget=40000)
    runs, problems = report.find_runs([out / "runs", outputs])
    assert len(runs) == 3 and [run.path for run in runs if run.seed == 0 and run.step == 30000] == [longer]
    assert problems == [f"{longer}: unfinished (step 30000 of 40000)"]
    report.report([out / "runs", outputs], out, reps=50, keep=True)
    assert (kept / "seed0" / "metrics.jsonl").read_bytes() == (longer / "metrics.jsonl").read_bytes()


def test_runs_of_different_versions_are_flagged(tmp_path):
    sweep = tmp_path / "dmc_cpu" / "cartpole_balance" / "r2dreamer"
    fake_run(sweep / "seed0", 0, "2026-11-30T10:00:00+0000", version="0.3.0")
    fake_run(sweep / "seed100", 100, "2026-11-30T11:00:00+0000", version="0.3.0")
    same = report.report([tmp_path / "dmc_cpu"], tmp_path / "same", reps=20)
    assert "Mixed versions" not in same
    fake_run(sweep / "seed200", 200, "2026-11-30T12:00:00+0000")  # no version recorded: made before 0.3
    mixed = report.report([tmp_path / "dmc_cpu"], tmp_path / "mixed", reps=20)
    assert ("**Mixed versions:** these runs were made by more than one version of this package: "
            "0.2 or earlier (1 run), 0.3.0 (2 runs).") in mixed


def test_two_jobs_of_one_worker_started_in_the_same_second_are_two_runs(tmp_path):
    # A launcher's worker process runs jobs one after another: same host, same pid, and (for a job
    # that ends fast) the same starting second.  What the runs are still tells them apart.
    start = "2026-11-30T10:00:00+0000"
    sweep = tmp_path / "dmc_cpu" / "cartpole_balance" / "r2dreamer"
    first = fake_run(sweep / "seed0", 0, start, final=800.0)
    second = fake_run(sweep / "seed100", 100, start, steps=10000, final=900.0)
    runs, problems = report.find_runs([tmp_path / "dmc_cpu"])
    assert sorted(run.path for run in runs) == [first, second]
    assert problems == [f"{second}: unfinished (step 10000 of 20000)"]
    report.keep_runs(runs, tmp_path / "kept")
    assert sorted(path.name for path in (tmp_path / "kept" / "dmc_cpu" / "cartpole_balance" / "r2dreamer").iterdir()) == [
        "seed0", "seed100"]


def test_the_aggregates_name_the_seeds_they_leave_out(tmp_path):
    # A second seed on one task of two: the aggregates take one seed per task (rliable needs a full
    # matrix), so the report names the run they do not count; the per-task table keeps it.
    sweep = tmp_path / "dmc_cpu"
    start = "2026-11-30T10:00:00+0000"
    for task, final in (("cartpole_balance", 800.0), ("walker_stand", 600.0)):
        fake_run(sweep / task / "r2dreamer" / "seed0", 0, start, final=final, task=task)
    text = report.report([sweep], tmp_path / "report", reps=50)
    assert "leave out" not in text
    fake_run(sweep / "cartpole_balance" / "r2dreamer" / "seed100", 100, start, final=1000.0)
    runs, _ = report.find_runs([sweep])
    assert [(run.task, run.seed) for run in report.left_out(runs)] == [("cartpole_balance", 100)]
    text = report.report([sweep], tmp_path / "report", reps=50)
    assert "| cartpole_balance | 20000 | 0.900 [0.800, 1.000] (n=2) |" in text
    assert ("Aggregates over 1 seed(s) x 2 task(s) (cartpole_balance, walker_stand), rliable; one seed per task, so no "
            "confidence interval (a stratified bootstrap resamples seeds within each task) and no more than the scores "
            "of the runs it takes. They leave out cartpole_balance r2dreamer seed 100 (an objective's aggregates take "
            "as many seeds as it finished on every task, lowest first; the table above has them):") in text
    assert "| r2dreamer | 1 | 2 | 0.700 |" in text  # the mean of 0.8 and 0.6: seed 0 on both tasks


def test_an_objective_run_on_fewer_tasks_than_another(tmp_path):
    # A sweep in progress: the baseline finished two tasks, the other objective one of them.
    sweep = tmp_path / "dmc_cpu"
    start = "2026-11-30T10:00:00+0000"
    for task, final in (("cartpole_balance", 600.0), ("walker_stand", 700.0)):
        fake_run(sweep / task / "dreamer" / "seed0", 0, start, final=final, objective="dreamer", task=task)
    fake_run(sweep / "cartpole_balance" / "r2dreamer" / "seed100", 100, start, final=900.0)
    text = report.report([sweep], tmp_path / "report", reps=50)
    # One seed: the scores, without a bootstrap interval that would only repeat them.
    assert "| cartpole_balance | 20000 | 0.600 (n=1) | 0.900 (n=1) |" in text
    assert "| walker_stand | 20000 | 0.700 (n=1) |  |" in text
    assert "Aggregates over 1 seed(s) x 1 task(s) (cartpole_balance), rliable; one seed per task, so no confidence" in text
    assert "| r2dreamer | 1 | 1 | 0.900 | 0.900 | 0.900 | 0.100 |" in text
    assert "| pair | P(X > Y) |" in text and "| r2dreamer > dreamer | 1.000 |" in text
    # A second seed of r2dreamer only: it keeps both (mean 0.8 over 700 and 900, not its lowest seed's 0.7
    # alone), the one-seed baseline stays a point, and both of r2dreamer's seeds beat the baseline's one.
    fake_run(sweep / "cartpole_balance" / "r2dreamer" / "seed0", 0, start, final=700.0)
    text = report.report([sweep], tmp_path / "report", reps=50)
    assert ("Aggregates over each objective's seeds (dreamer 1, r2dreamer 2) x 1 task(s) (cartpole_balance), rliable, "
            "stratified bootstrap, 50 resamples; no interval for dreamer (one seed per task):") in text
    assert "| dreamer | 1 | 1 | 0.600 | 0.600 | 0.600 | 0.400 |" in text
    assert "| r2dreamer | 2 | 1 | 0.800 [0.700, 0.900] | 0.800 [0.700, 0.900] |" in text
    assert "| pair | P(X > Y) |" in text and "| r2dreamer > dreamer | 1.000 |" in text
    with open(tmp_path / "report" / "tables" / "dmc_proprio_aggregates.csv") as file:
        assert {line["objective"]: int(line["runs"]) for line in csv.DictReader(file)} == {"dreamer": 1, "r2dreamer": 2}
    # A second seed of the baseline on cartpole_balance: mean [95 % CI] for both again.
    fake_run(sweep / "cartpole_balance" / "dreamer" / "seed100", 100, start, final=800.0, objective="dreamer")
    text = report.report([sweep], tmp_path / "report", reps=50)
    assert "| cartpole_balance | 20000 | 0.700 [0.600, 0.800] (n=2) | 0.800 [0.700, 0.900] (n=2) |" in text
    assert "Aggregates over 2 seed(s) x 1 task(s) (cartpole_balance), rliable, stratified bootstrap, 50 resamples" in text
    assert "| pair | P(X > Y) [95 % CI] |" in text
    with Image.open(tmp_path / "report" / "figures" / "dmc_proprio_curves.png") as figure:
        assert figure.size == (800, 300)  # two tasks side by side
    # The legend names an objective that is missing from the first panel.
    runs, _ = report.find_runs([sweep, fake_run(tmp_path / "other" / "walker_stand" / "infonce" / "seed0", 0, start,
                                                objective="infonce", task="walker_stand")])
    labels = report.learning_curves(runs, "dmc_proprio", tmp_path / "curves.png", reps=50)
    assert sorted(labels) == sorted([f"{objective} {line}" for objective in ("dreamer", "r2dreamer", "infonce")
                                     for line in ("eval", "training episodes")]
                                    + ["DreamerV3 (training episodes)", "DreamerV3 seeds (lowest-highest)"])


def test_a_damaged_job_list_is_named_and_the_report_still_made(tmp_path):
    # Two sweeps started in the same second into one sweep directory once ran their job lists into each
    # other (the longer one's tail after the shorter one's text); the runs themselves are fine.
    sweep = tmp_path / "dmc_cpu"
    finished = fake_run(sweep / "reacher_easy" / "dreamer" / "seed100", 100, "2026-12-05T06:49:11+0000",
                        objective="dreamer", task="reacher_easy")
    listing = sweep / "jobs.yaml"
    listing.write_text("jobs:\n- num: 0\n  dir: reacher_easy/dreamer/seed100\n  overrides:\n  - seed=100\n  - resume=auto\n"
                       "resume=auto\n")
    runs, problems = report.find_runs([sweep])
    assert [run.path for run in runs] == [finished]
    assert problems == [f"{listing}: not a job list this report can read, so its missing runs are not checked"]
    assert problems[0] in report.report([sweep], tmp_path / "report", reps=50)
    for text in ("[1, 2]\n", "jobs: [3]\n", "jobs: [{num: 0}]\n"):  # YAML, but not a job list
        listing.write_text(text)
        assert report.find_runs([sweep])[1] == problems
    listing.write_text("jobs:\n- {dir: reacher_easy/dreamer/seed100}\n- {dir: reacher_easy/dreamer/seed200}\n")
    assert report.find_runs([sweep])[1] == [f"{sweep / 'reacher_easy' / 'dreamer' / 'seed200'}: missing (no metrics.jsonl)"]


def test_confidence_intervals_are_the_same_every_time_for_the_same_scores():
    # rliable's bootstrap resamples with NumPy's global generator; the report seeds it for each call.
    from rliable import metrics

    scores = np.array([[0.86, 0.567, 0.844, 0.801], [0.95, 0.985, 0.738, 0.594]])
    np.random.seed(1)
    first = report.interval(scores, metrics.aggregate_mean, 2000)
    np.random.rand(3)  # the global generator moved on in between
    before = np.random.get_state()[1].copy()
    assert report.interval(scores, metrics.aggregate_mean, 2000) == first
    assert np.array_equal(np.random.get_state()[1], before)  # and is left where it was
