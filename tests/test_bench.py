"""``python -m dreamer.bench``: one timed update per variant, its table, JSON and profile."""

import json
import statistics
import sys
from pathlib import Path

import pytest

from conftest import run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import bench_modes  # noqa: E402


def test_bench_writes_table_json_and_profile(tmp_path):
    result = run_cli(
        "bench.variants=[r2dreamer,dreamer]", "bench.warmup=1", "bench.updates=2", "bench.profile=true",
        "bench.run_steps=120", "compile=false", "batch_size=4", f"hydra.run.dir={tmp_path}", module="dreamer.bench",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert [row["variant"] for row in rows] == ["r2dreamer", "dreamer"]
    for row in rows:
        assert row["update_seconds_min"] <= row["update_seconds_median"] <= row["update_seconds_max"]
        assert row["flops_per_update"] > 0 and 0 < row["fraction_of_peak"]
        assert abs(sum(row["shares"].values()) - 1) < 1e-6
        assert row["batch"] == [4, 16] and row["precision"] == "fp32" and not row["compile"]
    assert rows[1]["flops_per_update"] > rows[0]["flops_per_update"]  # the decoder costs FLOPs
    for variant in ("r2dreamer", "dreamer"):
        assert "aten::" in (tmp_path / f"profile_{variant}.txt").read_text()
    assert "r2dreamer" in result.stdout and "upd/s" in result.stdout
    # The real run: 120 CartPole steps (4 envs, no action repeat), a log row every 20 steps;
    # its rate is the median of the rows after the first, its projection 1M steps at that rate.
    for row in rows:
        run_rows = [json.loads(line) for line in (tmp_path / f"run_{row['variant']}" / "metrics.jsonl").read_text().splitlines()]
        rates = sorted(line["fps"] for line in run_rows if "fps" in line)
        run = row["end_to_end"]
        assert len([line for line in run_rows if "fps" in line]) == 6 and run["run_steps"] == 120 and run["train_ratio"] == 64
        assert run["env_steps_per_second"] == statistics.median([line["fps"] for line in run_rows if "fps" in line][1:])
        assert run["hours_per_million_steps"] == pytest.approx(1e6 / run["env_steps_per_second"] / 3600)
        assert rates[0] > 0 and "eval/return" in run_rows[-1]
    assert "env steps/s" in result.stdout and "h / 1M steps" in result.stdout and "paper Table 1" not in result.stdout


def test_bench_modes_takes_medians_over_repeats_and_divides():
    def run(seconds):
        return [{"variant": "r2dreamer", "update_seconds_median": seconds, "fraction_of_peak": seconds / 100}]

    runs = {"baseline": [run(8.0), run(10.0), run(9.0)], "fast": [run(4.0), run(3.0), run(5.0)]}
    (row,) = bench_modes.summarize(runs, "baseline", "fast")
    assert row["baseline"]["seconds"] == 9.0 and row["fast"]["seconds"] == 4.0
    assert row["speedup"] == 2.25
    assert row["fast"]["each"] == [4.0, 3.0, 5.0] and row["fast"]["fraction_of_peak"] == 0.04

    # Whole runs: 20, 25 and 10 env steps/s against 40, 50, 30: medians 50 and 25 ms per step, 2x.
    def whole(rate):
        return [{"variant": "r2dreamer", "update_seconds_median": 1.0, "fraction_of_peak": 0.1,
                 "end_to_end": {"env_steps_per_second": rate}}]

    runs = {"baseline": [whole(20.0), whole(25.0), whole(10.0)], "fast": [whole(40.0), whole(50.0), whole(30.0)]}
    (row,) = bench_modes.summarize(runs, "baseline", "fast", end_to_end=True)
    assert row["baseline"]["seconds"] == 0.05 and row["fast"]["seconds"] == 0.025 and row["speedup"] == 2.0


def test_table1_preset_is_the_papers_setting_and_prints_the_paper_beside():
    from conftest import compose_config
    from dreamer.bench import paper_hours, run_table
    from dreamer.report import PAPER_TABLE1_HOURS

    cfg = compose_config("+experiment=table1", config="bench")
    assert (cfg.env.task, cfg.env.obs, cfg.model.deter, cfg.train_ratio, cfg.env.action_repeat) == (
        "walker_walk", "pixels", 2048, 512, 2)
    assert list(cfg.bench.variants) == ["r2dreamer", "dreamer", "infonce", "dreamerpro"] and cfg.bench.run_steps > 0
    # 25 env steps/s is 1e6 / 25 / 3600 = 11.1 hours per 1M steps, beside the paper's 4.4.
    rows = [{"variant": "r2dreamer", "end_to_end": {"run_steps": 6000, "train_ratio": 512.0, "overlap": True,
                                                    "env_steps_per_second": 25.0, "hours_per_million_steps": 1e6 / 25 / 3600}}]
    assert paper_hours("dmc_vision", "walker_walk") == PAPER_TABLE1_HOURS
    assert paper_hours("dmc_proprio", "walker_walk") is None and paper_hours("gym", None) is None
    text = run_table(rows, paper_hours("dmc_vision", "walker_walk"))
    assert text.splitlines()[1].split() == ["r2dreamer", "6000", "512", "true", "25.0", "11.1", "4.4"]
    assert "paper: R2-Dreamer (ICLR 2026) Table 1" in text
