"""The real command line, end to end, with the tiny model and a few hundred steps."""

import pytest
import torch
import yaml

from conftest import COMPILED, QUICK, read_metrics, run_cli


# Compiled: what `make train` runs.  Its first run on a machine spends about 85 s of 110 in
# Inductor's compilation (26 s eager; 31 s once the compile cache is warm: `python -m
# dreamer.train` with this test's overrides, 1 thread, AVX2-only cpu2), so the default suite
# runs it eager; test_precision checks the compiled losses and acting steps there.
@pytest.mark.parametrize("compiled", [pytest.param(True, marks=pytest.mark.slow), False])
def test_train_cli_writes_config_metrics_and_checkpoint(tmp_path, compiled):
    result = run_cli(*(COMPILED if compiled else QUICK), "steps=200", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["steps"] == 200 and config["compile"] is compiled and config["rep_variant"]["_target_"].endswith("BarlowTwinsObjective")
    rows = read_metrics(tmp_path)
    assert all("step" in row for row in rows)
    assert any("train/loss/barlow" in row for row in rows)
    assert any("episode/return" in row for row in rows)
    assert any("fps" in row for row in rows)
    evals = [row for row in rows if "eval/return" in row]
    assert evals and evals[-1]["step"] == 200
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 200
    assert any(key.startswith("world_model.objective.projector") for key in checkpoint["agent"])


@pytest.mark.parametrize("overrides", [
    ["env.id=Pendulum-v1", "optimizer=adam"],
    ["env.obs=pixels"],
])
def test_train_cli_continuous_actions_and_pixels(tmp_path, overrides):
    result = run_cli(*QUICK, "steps=100", "eval_every=0", *overrides, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(tmp_path)
    assert any("train/loss/total" in row for row in rows)
    assert rows[-1]["step"] == 100 and "eval/return" in rows[-1]


def test_multirun_sweeps_objectives_from_pixels_and_state(tmp_path):
    # All four objectives run as a sweep in test_experiment.py (from state); here the two
    # whose pixel paths differ most (a decoder; augmented views and an EMA encoder).
    result = run_cli(
        "-m", "rep_variant=dreamer,dreamerpro", "seed=0", *QUICK,
        "env.obs=both", "steps=60", "log_every=20", "eval_every=0", f"hydra.sweep.dir={tmp_path}", timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    variants = set()
    for job in sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit()):
        config = yaml.safe_load((job / "config.yaml").read_text())
        variants.add(config["rep_variant"]["_target_"].rsplit(".", 1)[-1])
        rows = read_metrics(job)
        assert rows[-1]["step"] == 60 and "eval/return" in rows[-1]
        assert any("train/loss/total" in row for row in rows)
    assert variants == {"ReconstructionObjective", "PrototypeObjective"}
    assert list(tmp_path.glob("0/openloop/*.png"))  # the dreamer job renders open-loop predictions


def test_hydra_range_sweep_runs_every_job(tmp_path):
    result = run_cli("-m", "seed=range(0,2)", *QUICK, "steps=40", "train_ratio=8", "eval_every=0",
                     f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    seeds = sorted(yaml.safe_load((job / "config.yaml").read_text())["seed"] for job in tmp_path.iterdir() if job.is_dir())
    assert seeds == [0, 1]
