"""The paper-table aggregation: IQM, bootstrap intervals, and reading run directories."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import summarize  # noqa: E402


def test_iqm_of_eight_scores_is_mean_of_middle_four():
    assert summarize.interquartile_mean(np.array([100, 1, 2, 3, 4, 5, 6, -50])) == pytest.approx(3.5)


def test_iqm_with_fractional_cut_points():
    # n = 5: the middle 2.5 scores are half of 2, all of 3, half of 4 ... weights .75/1/.75
    assert summarize.interquartile_mean(np.array([1, 2, 3, 4, 5])) == pytest.approx(3.0)
    assert summarize.interquartile_mean(np.array([0, 0, 0, 0, 10])) == pytest.approx(0.0)


def test_bootstrap_interval_contains_statistic_and_collapses_for_constant_scores():
    low, high = summarize.bootstrap_interval([5.0, 5.0, 5.0], np.mean)
    assert low == high == 5.0
    low, high = summarize.bootstrap_interval([0.0, 10.0, 20.0, 30.0], np.mean)
    assert low < 15.0 < high


def write_run(path, variant, seed, returns):
    path.mkdir(parents=True)
    config = {"rep_variant": {"_target_": f"dreamer.representation.x.{variant}"},
              "env": {"id": "CartPole-v1", "obs": "state"}, "seed": seed}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [{"step": 10 * i, "eval/return": r} for i, r in enumerate(returns)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_summary_uses_last_eval_of_each_run(tmp_path, capsys):
    write_run(tmp_path / "0", "BarlowTwinsObjective", 0, [10, 200])
    write_run(tmp_path / "1", "BarlowTwinsObjective", 1, [10, 400])
    assert summarize.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "BarlowTwinsObjective" in out and "300.0" in out


def test_summary_names_variants_by_their_rep_variant_choice(tmp_path, capsys):
    targets = {"r2dreamer": "dreamer.representation.r2dreamer.BarlowTwinsObjective",
               "dreamer": "dreamer.representation.dreamer.ReconstructionObjective"}
    for seed, target in enumerate(targets.values()):
        write_run(tmp_path / str(seed), "unused", seed, [100.0 * (seed + 1)])
        config = yaml.safe_load((tmp_path / str(seed) / "config.yaml").read_text())
        config["rep_variant"]["_target_"] = target
        (tmp_path / str(seed) / "config.yaml").write_text(yaml.safe_dump(config))
    assert summarize.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("r2dreamer ") and "100.0" in line for line in lines)
    assert any(line.startswith("dreamer ") and "200.0" in line for line in lines)


def test_summary_of_empty_directory_is_an_error(tmp_path, capsys):
    assert summarize.main([str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err
