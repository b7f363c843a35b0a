"""Checkpoints survive kills, resume continues exactly, the non-finite guard stops cleanly."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import QUICK, ROOT, read_metrics, run_cli

RESUMABLE = [*QUICK, "deterministic=true", "eval_every=100", "log_every=50"]


def comparable(rows):
    return [{k: v for k, v in row.items() if k != "fps"} for row in rows]


def test_resume_after_clean_stop_matches_uninterrupted_run(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    every = ["eval_every=50", "log_every=25"]  # the stop at step 50 falls on an evaluation
    assert run_cli(*RESUMABLE, *every, "steps=100", f"hydra.run.dir={whole}").returncode == 0
    first = run_cli(*RESUMABLE, *every, "steps=50", f"hydra.run.dir={split}")
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_cli(f"resume={split}", "steps=100")
    assert second.returncode == 0, second.stderr[-2000:]
    assert comparable(read_metrics(split)) == comparable(read_metrics(whole))
    resumed = torch.load(split / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == 100 and resumed["config"]["batch_size"] == 4  # original overrides kept


def test_same_seed_reproduces_metrics_when_deterministic_and_overlap_changes_nothing(tmp_path):
    # b steps its environments in worker processes while the updates run (overlap=true):
    # the updates see the same replay, so every metric matches the in-process run a.
    for name, where in (("a", "env_workers=false"), ("b", "env_workers=true")):
        result = run_cli(*RESUMABLE, "steps=150", where, "overlap=true", f"hydra.run.dir={tmp_path / name}")
        assert result.returncode == 0, result.stderr[-2000:]
    assert comparable(read_metrics(tmp_path / "a")) == comparable(read_metrics(tmp_path / "b"))


@pytest.fixture
def start_training():
    """Starts training runs in the background; any still running after the test (one
    that failed before stopping it) is killed, not left training."""
    processes = []

    def start(run_dir, *overrides):
        command = [sys.executable, "-m", "dreamer.train", *QUICK, *overrides, f"hydra.run.dir={run_dir}"]
        processes.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        return processes[-1]

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for_checkpoint(run_dir, process, timeout=240):
    deadline = time.time() + timeout
    while not (run_dir / "checkpoint.pt").exists():
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.2)


def test_sigkill_at_random_moment_then_resume(tmp_path, start_training):
    run_dir = tmp_path / "run"
    process = start_training(run_dir, "steps=400", "checkpoint.every=50", "eval_every=0", "log_every=50")
    wait_for_checkpoint(run_dir, process)
    time.sleep(random.uniform(0.0, 2.0))  # its remaining 350 steps take over 10 s here
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed mid-run, not finished already
    killed_at = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]  # not corrupt
    for old in (run_dir / "checkpoints").glob("step_*.pt"):
        torch.load(old, weights_only=False)

    result = run_cli(f"resume={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    final = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert final["step"] == 400 and 50 <= killed_at < 400
    kept = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    assert len(kept) == 2 and kept[-1].name == "step_0000000400.pt"  # checkpoint.keep=2
    assert kept[-1].read_bytes() == (run_dir / "checkpoint.pt").read_bytes()  # the same state, two files
    rows = read_metrics(run_dir)
    train_steps = [row["step"] for row in rows if "fps" in row]
    assert train_steps == list(range(50, 401, 50))  # no gap, no duplicate
    replay = final["replay"]
    assert replay["count"] == 400 // 2  # every step of both environments was stored
    assert replay["data"]["is_first"][0].all()


def test_crash_in_the_loop_saves_progress_then_resume_finishes(tmp_path):
    # An earlier start killed (SIGKILL, power loss) before its first checkpoint left only metric rows:
    # the next start in the directory moves them aside instead of appending to them.
    earlier = [{"step": 50, "fps": 1.0}, {"step": 100, "fps": 1.0}, {"step": 100, "eval/return": 9.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in earlier))
    crashed = run_cli(*QUICK, "steps=300", "checkpoint.every=0", "eval_every=0", "log_every=50",
                      "debug.env_error_at_step=150", f"hydra.run.dir={tmp_path}")
    assert crashed.returncode != 0 and "simulated environment failure" in crashed.stderr
    assert f"checkpoint saved, resume with resume={tmp_path}" in (tmp_path / "train.log").read_text()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["step"] == 150 and saved["replay"]["count"] == 150 // 2  # nothing before the crash lost
    assert saved["envs"] is None and int(saved["agent"]["updates"]) > 0

    result = run_cli(f"resume={tmp_path}", "debug.env_error_at_step=null")
    assert result.returncode == 0, result.stderr[-2000:]
    final = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert final["step"] == 300 and final["replay"]["count"] == 300 // 2
    rows = read_metrics(tmp_path)
    assert [row["step"] for row in rows if "fps" in row] == list(range(50, 301, 50))
    assert len([row for row in rows if "eval/return" in row]) == 1  # the final evaluation, not the earlier 9.0
    aside = list(tmp_path.glob("metrics.*.jsonl"))
    assert len(aside) == 1 and [json.loads(line) for line in aside[0].read_text().splitlines()] == earlier
    assert "metrics of an earlier start that left no checkpoint moved to" in (tmp_path / "train.log").read_text()


def test_sigterm_saves_checkpoint_and_exits(tmp_path, start_training):
    run_dir = tmp_path / "run"
    process = start_training(run_dir, "steps=100000", "checkpoint.every=100", "eval_every=0")
    wait_for_checkpoint(run_dir, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert saved["step"] > 0
    assert f"resume={run_dir}" in (run_dir / "train.log").read_text()


def test_nonfinite_losses_skip_updates_then_stop_with_named_loss(tmp_path):
    result = run_cli(*QUICK, "steps=400", "debug.inject_nan=reward", "nonfinite.max_in_row=3",
                     f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert "non-finite losses (reward)" in result.stderr
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert int(saved["agent"]["updates"]) == 0  # no bad update was applied


def test_resume_without_checkpoint_is_a_one_line_error(tmp_path):
    result = run_cli(f"resume={tmp_path}")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "has no checkpoint.pt" in result.stderr


def test_resume_with_a_different_model_is_a_one_line_error(tmp_path):
    assert run_cli(*QUICK, "steps=40", "train_ratio=8", f"hydra.run.dir={tmp_path}").returncode == 0
    saved = (tmp_path / "checkpoint.pt").read_bytes()
    result = run_cli(f"resume={tmp_path}", "model.units=32")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr[-2000:]
    assert "does not fit the agent" in result.stderr and "size mismatch" in result.stderr
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved  # untouched
