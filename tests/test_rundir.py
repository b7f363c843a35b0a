"""Run directories nothing corrupts: concurrent starts, locks, rejected resumes, damaged
checkpoints and failed writes."""

import errno
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from conftest import QUICK, read_metrics, run_cli, start_cli
from dreamer import rundir
from dreamer.checkpoint import CheckpointWriteError, Checkpoints, set_aside_metrics, write_atomically
from dreamer.config import ConfigError

SHORT = [*QUICK, "eval_every=0", "log_every=50"]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli(*SHORT, "steps=100", "checkpoint.every=50", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


@pytest.fixture
def trained(trained_once, tmp_path):
    """A finished 100-step run with checkpoints at 50 and 100 (a copy of one trained per module)."""
    return Path(shutil.copytree(trained_once, tmp_path / "run"))


def test_two_runs_started_together_get_two_directories_with_unmixed_metrics(tmp_path):
    processes = [start_cli(*SHORT, "steps=100", cwd=tmp_path, threads=1) for _ in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]
    run_dirs = sorted(path.parent for path in (tmp_path / "outputs").rglob("metrics.jsonl"))
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        train_steps = [row["step"] for row in read_metrics(run_dir) if "fps" in row]
        assert train_steps == [50, 100]  # each run's rows once, none of the other's
        assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 100


def test_second_process_on_a_directory_in_use_exits_2_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    first = start_cli(*SHORT, "steps=100000", f"hydra.run.dir={run_dir}")
    try:
        deadline = time.time() + 240
        while not (run_dir / "metrics.jsonl").exists():
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.time() < deadline
            time.sleep(0.2)
        rows = (run_dir / "metrics.jsonl").read_text()
        second = run_cli(*SHORT, "steps=100", f"hydra.run.dir={run_dir}")
        assert second.returncode == 2, second.stderr[-2000:]
        assert second.stderr.strip() == (
            f"error: run directory {run_dir.resolve()} is in use by process {first.pid}; "
            "wait for it to end or choose another directory"
        )
        assert first.poll() is None  # undisturbed
        assert (run_dir / "metrics.jsonl").read_text().startswith(rows)
    finally:
        first.kill()
        first.wait()


def test_holder_names_the_process_holding_a_run_directory_and_leaves_no_lock_behind(tmp_path):
    run_dir = tmp_path / "run"
    assert rundir.holder(run_dir) is None  # no lock file yet
    rundir.lock(run_dir)
    try:
        assert rundir.holder(run_dir) == os.getpid()
    finally:
        rundir.release(run_dir)
    assert (run_dir / rundir.LOCK_NAME).exists() and rundir.holder(run_dir) is None
    rundir.lock(run_dir)  # the probes took no lock that would keep a job out
    rundir.release(run_dir)


def test_new_run_into_a_directory_with_a_checkpoint_is_refused_and_changes_nothing(trained):
    before = snapshot(trained)
    result = run_cli(*SHORT, "steps=200", f"hydra.run.dir={trained}")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "already holds a checkpoint; continue it with resume=" in result.stderr
    assert snapshot(trained) == before


@pytest.mark.parametrize("overrides, message", [
    (["model.units=32"], "size mismatch"),
    (["env_num=3"], "environment streams, this one env_num=3"),
])
def test_rejected_resume_leaves_the_directory_byte_for_byte_and_a_plain_resume_works(trained, overrides, message):
    before = snapshot(trained)
    rejected = run_cli(f"resume={trained}", *overrides)
    assert rejected.returncode == 2 and rejected.stderr.strip().count("\n") == 0, rejected.stderr[-2000:]
    assert "does not fit the agent" in rejected.stderr and message in rejected.stderr
    assert snapshot(trained) == before
    resumed = run_cli(f"resume={trained}", "steps=150")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(trained / "checkpoint.pt", weights_only=False)["step"] == 150


def test_truncated_checkpoint_resumes_from_the_newest_copy_that_loads(trained):
    checkpoint = trained / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    newest = trained / "checkpoints" / "step_0000000100.pt"
    newest.write_bytes(b"")
    (trained / "checkpoint.pt.tmp").write_bytes(b"left by a killed writer")
    result = run_cli(f"resume={trained}", "steps=150")
    assert result.returncode == 0, result.stderr[-2000:]
    log = (trained / "train.log").read_text()
    assert "resuming from" in log and "step_0000000050.pt" in log
    assert torch.load(checkpoint, weights_only=False)["step"] == 150
    assert [row["step"] for row in read_metrics(trained) if "fps" in row] == [50, 100, 150]  # 100 redone
    assert not (trained / "checkpoint.pt.tmp").exists()


def test_checkpoint_and_kept_copies_are_separate_files(trained):
    copy = trained / "checkpoints" / "step_0000000100.pt"
    assert copy.stat().st_ino != (trained / "checkpoint.pt").stat().st_ino
    assert copy.read_bytes() == (trained / "checkpoint.pt").read_bytes()


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", "does not load"),
    (b"", "does not load"),
])
def test_evaluate_an_unreadable_checkpoint_is_one_line(tmp_path, content, message):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    result = run_cli(f"checkpoint={path}", module="dreamer.evaluate")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and message in result.stderr


def test_a_checkpoint_without_our_keys_is_named_as_such(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    result = run_cli(f"checkpoint={path}", module="dreamer.evaluate")
    assert result.returncode == 2 and "it lacks step, agent" in result.stderr


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    write_atomically(path, {"step": 1})
    before = path.read_bytes()

    def full_disk(state, file):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError, match=f"cannot write checkpoint {path}: No space left on device"):
        write_atomically(path, {"step": 2})
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_loading_with_every_checkpoint_damaged_is_a_one_line_error(tmp_path):
    checkpoints = Checkpoints(tmp_path, keep=1)
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="checkpoint.pt does not load"):
        checkpoints.load()


def test_lock_on_an_unusable_location_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    with pytest.raises(ConfigError, match=f"cannot use run directory {blocker / 'run'}"):
        rundir.lock(blocker / "run")


class Touch:
    """Unpickling this would create a file: code a checkpoint must not get to run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (Path(self.path),)


def test_loading_a_checkpoint_runs_no_pickled_code(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "checkpoint.pt"
    torch.save({"step": 1, "agent": Touch(marker)}, path)
    result = run_cli(f"checkpoint={path}", module="dreamer.evaluate")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "does not load" in result.stderr
    assert not marker.exists()


@pytest.fixture
def small_filesystem(tmp_path):
    """Mounts a tmpfs of the requested size (MiB) under tmp_path; skips where mounting is not permitted."""
    import subprocess

    mounts = []

    def mount(mebibytes: int, read_only: bool = False) -> Path:
        point = tmp_path / f"mount{len(mounts)}"
        point.mkdir()
        options = f"size={mebibytes}m" + (",ro" if read_only else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True).returncode:
            pytest.skip("mounting a tmpfs is not permitted here")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(trained, small_filesystem):
    size = (trained / "checkpoint.pt").stat().st_size
    disk = small_filesystem(int(1.6 * size / 2**20) + 1)  # room for one checkpoint, not two
    run_dir = disk / "run"
    result = run_cli(*SHORT, "steps=100", "checkpoint.every=50", "checkpoint.keep=0", f"hydra.run.dir={run_dir}")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: cannot write checkpoint {run_dir / 'checkpoint.pt'}: No space left on device"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 50  # the previous one, intact
    assert not list(run_dir.rglob("*.tmp"))


def test_read_only_location_is_one_line(small_filesystem):
    disk = small_filesystem(1, read_only=True)
    result = run_cli(*SHORT, "steps=100", f"hydra.run.dir={disk / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: cannot use run directory {disk / 'run'}: Read-only file system"


def test_resume_unpickles_only_environment_state_this_user_signed(trained):
    import pickle

    from dreamer.checkpoint import load_file

    marker = trained / "ran"
    saved = load_file(trained / "checkpoint.pt")
    assert saved["envs"]["signature"]  # written and signed by this user's run
    saved["envs"] = {"data": pickle.dumps(Touch(marker)), "signature": "0" * 64}
    torch.save(saved, trained / "checkpoint.pt")
    result = run_cli(f"resume={trained}", "steps=150")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not marker.exists()
    assert "not signed by this user's key; new episodes start instead" in (trained / "train.log").read_text()


def test_a_run_file_is_replaced_whole_never_rewritten_in_place(tmp_path):
    # A reader holding the old file keeps reading the old text; a writer that truncated and rewrote in
    # place would change it under the reader (and two such writers at once ran their texts together).
    path = tmp_path / "jobs.yaml"
    rundir.write_text(path, "jobs:\n- dir: cartpole_balance/dreamer/seed100\n")
    with open(path) as reader:
        rundir.write_text(path, "jobs:\n- dir: reacher_easy/dreamer/seed100\n")
        assert reader.read() == "jobs:\n- dir: cartpole_balance/dreamer/seed100\n"
    assert path.read_text() == "jobs:\n- dir: reacher_easy/dreamer/seed100\n"
    assert sorted(tmp_path.iterdir()) == [path]


def test_a_run_file_that_cannot_be_written_is_one_line_and_leaves_nothing(small_filesystem):
    disk = small_filesystem(1, read_only=True)
    with pytest.raises(ConfigError, match=f"^cannot write {disk / 'run.json'}: Read-only file system$"):
        rundir.write_text(disk / "run.json", "{}")
    assert not list(disk.iterdir())


def test_a_released_lock_can_be_taken_by_another_process(tmp_path):
    import subprocess
    import sys

    take = ("import sys; from dreamer import rundir; from dreamer.config import ConfigError\n"
            "try: rundir.lock(sys.argv[1])\nexcept ConfigError: sys.exit(3)")
    rundir.lock(tmp_path)
    assert subprocess.run([sys.executable, "-c", take, str(tmp_path)]).returncode == 3
    rundir.release(tmp_path)
    assert subprocess.run([sys.executable, "-c", take, str(tmp_path)]).returncode == 0


def test_metrics_set_aside_twice_in_one_second_keep_both(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    assert set_aside_metrics(metrics) is None  # nothing there: nothing moved
    moved = []
    for step in (1, 2):
        metrics.write_text(f'{{"step": {step}}}\n')
        moved.append(set_aside_metrics(metrics))
    assert not metrics.exists() and moved[0] != moved[1]
    assert [path.read_text() for path in moved] == ['{"step": 1}\n', '{"step": 2}\n']
