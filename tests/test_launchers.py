"""Sweeps on cluster launchers: submitit's local twin of SLURM runs the jobs, a job stopped
with SLURM's signal is requeued and finishes in its own directory, a joblib sweep's launcher
stopped with SIGTERM stops its workers' jobs after their checkpoints, and a sweep relaunched
with resume=auto skips finished jobs and completes the others."""

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, cli_environment, read_metrics, refusal, run_cli, running
from dreamer import rundir

# Two objectives' worth of ablation_smoke, one core per job.
SMOKE = ["-m", "+experiment=ablation_smoke", "rep_variant=r2dreamer", "log_every=20", "checkpoint.every=0"]


def launch(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dreamer.train", *arguments], cwd=ROOT, env=cli_environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_rows(run_dir: Path, rows: int, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= rows):
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.time() < deadline, f"no {rows} metric rows in {run_dir}"
        time.sleep(0.2)


def assert_continuous(run_dir: Path, steps: int, every: int = 20) -> None:
    """Rows in step order, train and evaluation metrics logged once per step (two environments
    can end an episode at the same step), train rows at every multiple of ``every``, and the
    final evaluation."""
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows] == sorted(row["step"] for row in rows)
    seen = [(row["step"], key) for row in rows for key in row if key != "step" and not key.startswith("episode/")]
    assert len(seen) == len(set(seen)), "a metric was logged twice at one step"
    assert [row["step"] for row in rows if "fps" in row] == list(range(every, steps + 1, every))
    assert rows[-1]["step"] == steps and "eval/return" in rows[-1]


def test_submitit_local_runs_the_sweeps_jobs_in_their_directories(tmp_path):
    result = run_cli(*SMOKE, "seed=0,100", "steps=100", "hydra/launcher=submitit_local",
                     "hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={tmp_path}", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    listing = yaml.safe_load((tmp_path / "jobs.yaml").read_text())
    assert [job["dir"] for job in listing["jobs"]] == ["CartPole-v1/r2dreamer/seed0", "CartPole-v1/r2dreamer/seed100"]
    for job in listing["jobs"]:
        run_dir = tmp_path / job["dir"]
        assert_continuous(run_dir, 100)
        assert "1 torch thread(s): hydra.launcher.cpus_per_task" in (run_dir / "train.log").read_text()
        assert json.loads((run_dir / "run.json").read_text())["job_id"]  # submitit's job id, kept for requeues


def test_job_stopped_with_slurms_signal_is_requeued_and_finishes_in_its_run_directory(tmp_path):
    run_dir = tmp_path / "CartPole-v1" / "r2dreamer" / "seed0"
    sweep = launch(*SMOKE, "seed=0", "steps=240", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=2",
                   f"hydra.sweep.dir={tmp_path}")
    wait_for_rows(run_dir, 3, sweep)
    job_pid = int((run_dir / ".lock").read_text())  # the process training into the directory
    os.kill(job_pid, signal.SIGUSR2)  # what SLURM sends before a time limit (submitit's preemption signal)
    _, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    stopped = int(log.split("stopped by SIGUSR2 at step ")[1].split(";")[0])
    assert f"resumed from step {stopped}" in log and 0 < stopped < 240
    starts = json.loads((run_dir / "run.json").read_text())["starts"]
    assert [start["step"] for start in starts] == [0, stopped] and starts[0]["pid"] == job_pid != starts[1]["pid"]
    assert_continuous(run_dir, 240)


def test_joblib_sweep_launcher_stopped_with_sigterm_stops_its_jobs_after_their_checkpoints(tmp_path):
    run_dirs = [tmp_path / "CartPole-v1" / "r2dreamer" / f"seed{seed}" for seed in (0, 1)]
    sweep = launch(*SMOKE, "seed=0,1", "steps=100000", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   f"hydra.sweep.dir={tmp_path}")
    workers = []
    try:
        for run_dir in run_dirs:
            wait_for_rows(run_dir, 2, sweep)
        workers = [rundir.holder(run_dir) for run_dir in run_dirs]
        assert sweep.pid not in workers and None not in workers  # the jobs train in joblib's workers
        sweep.send_signal(signal.SIGTERM)  # the launcher only, as `kill <pid>` does
        _, stderr = sweep.communicate(timeout=120)
        assert sweep.returncode == 128 + signal.SIGTERM, stderr[-3000:]
        assert "SIGTERM: waiting for 2 job(s) to write a checkpoint and stop" in stderr
        for run_dir in run_dirs:
            log = (run_dir / "train.log").read_text()
            stopped = int(log.split("stopped by SIGTERM at step ")[1].split(";")[0])
            assert rundir.saved_step(run_dir) == stopped > 0  # checkpoint.every=0: the stop wrote it
            assert rundir.holder(run_dir) is None
        deadline = time.monotonic() + 10
        while any(map(running, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(running, workers))  # none trains on without its launcher
    finally:
        sweep.kill()
        for pid in filter(None, workers):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_launcher_without_jobs_in_workers_stops_as_before_and_keeps_ignored_signals_ignored(tmp_path):
    from dreamer.train import pass_stops_to_jobs

    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as in a job a script started with &
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever the test runner set
        pass_stops_to_jobs([tmp_path / "seed0"])
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        with pytest.raises(KeyboardInterrupt):  # no job holds a run directory: Python's own Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_relaunch_with_resume_auto_skips_finished_jobs_and_completes_the_others(tmp_path):
    arguments = [*SMOKE, "seed=0,1,2", "steps=120", f"hydra.sweep.dir={tmp_path}"]
    run_dirs = [tmp_path / "CartPole-v1" / "r2dreamer" / f"seed{seed}" for seed in range(3)]
    sweep = launch(*arguments)  # the basic launcher: one job after another in this process
    wait_for_rows(run_dirs[1], 2, sweep)
    sweep.send_signal(signal.SIGTERM)  # the sweep dies in its second job
    sweep.communicate(timeout=120)
    assert sweep.returncode == 128 + signal.SIGTERM
    finished = {name: (run_dirs[0] / name).read_bytes() for name in ("checkpoint.pt", "metrics.jsonl", "config.yaml")}
    assert not run_dirs[2].exists()

    refused = run_cli(*arguments)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"error: 2 of 3 jobs' run directories already hold checkpoints (first: {run_dirs[0]}); relaunch with "
        "resume=auto to skip finished jobs and continue unfinished ones, or choose another hydra.sweep.dir")

    result = run_cli(*arguments, "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 jobs (1 new, 1 continue, 1 finished)" in result.stderr
    assert {name: (run_dirs[0] / name).read_bytes() for name in finished} == finished
    assert "finished already" in (run_dirs[0] / "train.log").read_text()
    assert "resumed from step" in (run_dirs[1] / "train.log").read_text()
    for run_dir in run_dirs:
        assert_continuous(run_dir, 120)
    listing = yaml.safe_load((tmp_path / "jobs.yaml").read_text())
    assert [job["start"] for job in listing["jobs"]] == ["finished", "continue", "new"]


def test_a_sweep_takes_resume_auto_not_a_run_directory(tmp_path):
    assert refusal(*SMOKE, f"resume={tmp_path}", f"hydra.sweep.dir={tmp_path}") == (
        f"resume={tmp_path} continues one run; a sweep (-m) takes resume=auto, which continues each job's own directory")


def test_ray_launcher_without_its_extra_names_the_install_command(tmp_path):
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher"):
        pytest.skip("the ray extra is installed: hydra/launcher=ray composes")
    assert refusal(*SMOKE, "hydra/launcher=ray", f"hydra.sweep.dir={tmp_path}") == (
        "hydra/launcher=ray needs its plugin: pip install -e '.[ray]' (README, Ray)")


def test_slurm_launcher_is_submitit_slurm_with_requeueing_on():
    from hydra import compose, initialize_config_dir

    from dreamer.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        launcher = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                               "hydra.launcher.gpus_per_node=1"], return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.max_num_timeout, launcher.partition, launcher.gpus_per_node) == (20, "gpu", 1)


@pytest.mark.parametrize("launcher, threads", [
    ({"cpus_per_task": 3}, 3),  # submitit: the CPUs each job asks for
    ({"ray": {"remote": {"num_cpus": 2}}}, 2),
    ({"n_jobs": 2}, max(1, (os.cpu_count() or 1) // 2)),  # joblib: cores / jobs at once
])
def test_each_job_takes_its_share_of_the_cores(launcher, threads):
    import torch
    from omegaconf import OmegaConf

    from dreamer.train import share_cores

    before = torch.get_num_threads()
    try:
        share_cores(OmegaConf.create(launcher))
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_resume_auto_names_a_checkpoint_that_does_not_load(tmp_path):
    run_dir = tmp_path / "CartPole-v1" / "r2dreamer" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_text("not a checkpoint")
    reason = refusal(*SMOKE, "seed=0", "resume=auto", f"hydra.sweep.dir={tmp_path}")
    assert reason.startswith(f"resume={run_dir}: {run_dir / 'checkpoint.pt'} does not load"), reason
