"""``python -m dreamer.evaluate``: scores a checkpoint, writes a summary and a video."""

import json

import imageio.v2 as imageio
import pytest

from conftest import QUICK, run_cli


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    result = run_cli(*QUICK, "steps=100", "eval_every=0", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def test_evaluate_prints_mean_and_spread_and_writes_video(trained_run, tmp_path):
    result = run_cli(f"checkpoint={trained_run / 'checkpoint.pt'}", "episodes=3", f"out={tmp_path}",
                     module="dreamer.evaluate")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "over 3 episodes" in result.stdout and "±" in result.stdout
    summary = json.loads((tmp_path / "evaluation.json").read_text())
    assert len(summary["returns"]) == 3 and summary["step"] == 100
    assert summary["return_mean"] == pytest.approx(sum(summary["returns"]) / 3)
    frames = imageio.mimread(tmp_path / "evaluation_episode0.gif")
    # every observation of the first episode (GIF encoding may merge identical frames)
    assert 1 < len(frames) <= summary["lengths"][0] + 1 and frames[0].shape[-1] in (3, 4)


@pytest.mark.parametrize("arguments, message", [
    (["checkpoint=/no/such/checkpoint.pt"], "does not exist"),
    (["episodes=3"], "checkpoint=<path> is required"),
    (["checkpoint=.", "episods=3"], "Key 'episods' not in 'EvaluateConfig' (valid keys: checkpoint, episodes"),
])
def test_evaluate_bad_arguments_are_one_line_errors(arguments, message):
    result = run_cli(*arguments, module="dreamer.evaluate")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
