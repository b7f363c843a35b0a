"""The real command line, end to end, with the tiny model and a few hundred steps."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
# compile=false: torch.compile's first calls cost seconds per shape; one test below keeps
# the preset's compile=true so the compiled path runs end to end too.
COMPILED = [
    "model=tiny", "batch_size=4", "batch_length=16", "env_num=2", "eval_episodes=2",
    "eval_every=200", "log_every=100", "train_ratio=32", "progress=false",
]
QUICK = [*COMPILED, "compile=false"]


def run_cli(*overrides: str, module: str = "dreamer.train", timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", module, *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_cli_writes_config_metrics_and_checkpoint(tmp_path):
    result = run_cli(*COMPILED, "steps=200", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["steps"] == 200 and config["compile"] is True and config["rep_variant"]["_target_"].endswith("BarlowTwinsObjective")
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
    result = run_cli(*QUICK, "steps=200", "eval_every=0", *overrides, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(tmp_path)
    assert any("train/loss/total" in row for row in rows)
    assert rows[-1]["step"] == 200 and "eval/return" in rows[-1]


def test_multirun_sweeps_all_four_variants(tmp_path):
    result = run_cli(
        "-m", "rep_variant=dreamer,r2dreamer,infonce,dreamerpro", "seed=0", *QUICK,
        "env.obs=both", "steps=150", "eval_every=0", f"hydra.sweep.dir={tmp_path}", timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    variants = set()
    for job in sorted(p for p in tmp_path.iterdir() if p.is_dir() and p.name.isdigit()):
        config = yaml.safe_load((job / "config.yaml").read_text())
        variants.add(config["rep_variant"]["_target_"].rsplit(".", 1)[-1])
        rows = read_metrics(job)
        assert rows[-1]["step"] == 150 and "eval/return" in rows[-1]
        assert any("train/loss/total" in row for row in rows)
    assert variants == {"ReconstructionObjective", "BarlowTwinsObjective", "InfoNCEObjective", "PrototypeObjective"}
    assert list(tmp_path.glob("0/openloop/*.png"))  # the dreamer job renders open-loop predictions
