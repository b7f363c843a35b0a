"""``python -m dreamer.bench``: one timed update per variant, its table, JSON and profile."""

import json
import sys
from pathlib import Path

from conftest import run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import bench_modes  # noqa: E402


def test_bench_writes_table_json_and_profile(tmp_path):
    result = run_cli(
        "bench.variants=[r2dreamer,dreamer]", "bench.warmup=1", "bench.updates=2", "bench.profile=true",
        "compile=false", "batch_size=4", f"hydra.run.dir={tmp_path}", module="dreamer.bench",
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


def test_bench_modes_takes_medians_over_repeats_and_divides():
    def run(seconds):
        return [{"variant": "r2dreamer", "update_seconds_median": seconds, "fraction_of_peak": seconds / 100}]

    runs = {"baseline": [run(8.0), run(10.0), run(9.0)], "fast": [run(4.0), run(3.0), run(5.0)]}
    (row,) = bench_modes.summarize(runs, "baseline", "fast")
    assert row["baseline"]["seconds"] == 9.0 and row["fast"]["seconds"] == 4.0
    assert row["speedup"] == 2.25
    assert row["fast"]["each"] == [4.0, 3.0, 5.0] and row["fast"]["fraction_of_peak"] == 0.04
