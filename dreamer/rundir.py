"""Run directories one process at a time: an exclusive lock held while a process trains
into a directory, and the checks that keep a new run from landing on an old one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from pathlib import Path

from dreamer.checkpoint import Checkpoints
from dreamer.config import ConfigError

LOCK_NAME = ".lock"
RUN_FILE = "run.json"  # what the run is and where it ran: written at every (re)start
_held: dict[Path, int] = {}  # run directory -> open lock file, for the life of the process


def lock(run_dir: Path) -> None:
    """Create ``run_dir`` if needed and hold its lock until this process ends; a second
    process gets a :class:`ConfigError` naming the holder's PID.  Locking again from the
    holding process is a no-op.  An unwritable location is a one-line error too."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ConfigError(f"cannot use run directory {run_dir}: {error.strerror}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise ConfigError(
            f"run directory {run_dir} is in use by process {holder}; wait for it to end or choose another directory"
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, str(os.getpid()).encode())
    _held[run_dir] = descriptor


def release(run_dir: Path) -> None:
    """Give up this process's lock on ``run_dir`` (a sweep's jobs run one after another in one process)."""
    descriptor = _held.pop(Path(run_dir).resolve(), None)
    if descriptor is not None:
        os.close(descriptor)  # closing the descriptor releases the flock


def holder(run_dir: Path) -> int | None:
    """The PID of the process that holds ``run_dir``'s lock (this one included), or None
    when no process does.  The probe holds a shared lock for an instant, so call it where
    no job is starting in ``run_dir`` (a sweep being stopped), not in a loop beside one."""
    try:
        descriptor = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        written = os.read(descriptor, 32).decode(errors="replace").strip()
        return int(written) if written.isdigit() else None
    else:
        return None
    finally:
        os.close(descriptor)  # and with it the probe's own shared lock


def holds_checkpoint(run_dir: Path) -> bool:
    return Checkpoints(Path(run_dir), keep=0).exists()


def refuse_overwrite(run_dir: Path) -> None:
    """A new run (no ``resume=``) must not continue or overwrite a directory's checkpoint."""
    if holds_checkpoint(run_dir):
        raise ConfigError(
            f"run directory {Path(run_dir).resolve()} already holds a checkpoint; continue it with "
            f"resume={run_dir} (or resume=auto) or choose another hydra.run.dir"
        )


def saved_step(run_dir: Path) -> int:
    """The step of the run directory's newest loadable checkpoint (its tensors memory-mapped, not read)."""
    try:
        saved, _ = Checkpoints(Path(run_dir), keep=0).load()
    except ValueError as error:
        raise ConfigError(f"resume={run_dir}: {error}") from None
    return int(saved["step"])


def cluster_job_id() -> str | None:
    """The scheduler's id of this job when submitit runs it (SLURM, or its local twin).  A
    job the scheduler requeues keeps its id, which is how it knows the run directory's
    checkpoint is its own to continue."""
    if "SUBMITIT_FOLDER" not in os.environ:
        return None
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().job.id)


def recorded(run_dir: Path) -> dict:
    """The run directory's ``run.json`` ({} when there is none or it does not parse)."""
    try:
        return json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def how_to_start(run_dir: Path, resume: str | None, steps: int, job_id: str | None = None) -> str:
    """How a job starts in ``run_dir``: ``"new"``, ``"continue"`` its checkpoint, or
    ``"finished"`` (nothing to do).  A checkpoint is continued with ``resume=<dir>``, with
    ``resume=auto``, or by the cluster job that wrote it (requeued after preemption); with
    ``resume=auto`` or on a requeue, a checkpoint that reached ``steps`` is finished.  A new
    run never lands on a checkpoint."""
    if not holds_checkpoint(run_dir):
        return "new"
    requeued = job_id is not None and recorded(run_dir).get("job_id") == job_id
    if resume is None and not requeued:
        refuse_overwrite(run_dir)
    if (resume == "auto" or requeued) and saved_step(run_dir) >= steps:
        return "finished"
    return "continue"


def record(run_dir: Path, facts: dict, job_id: str | None, step: int) -> None:
    """Write ``run.json``: ``facts`` (what the run is), this start's host, process, time and
    cluster job id, and every earlier start's."""
    starts = recorded(run_dir).get("starts", [])
    start = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step, "host": platform.node(),
             "pid": os.getpid(), "job_id": job_id}
    write_text(Path(run_dir) / RUN_FILE, json.dumps({**facts, "job_id": job_id, "starts": [*starts, start]}, indent=1))


def write_text(path: Path, text: str) -> None:
    """Write a small file of the run whole or not at all: into a file of this process's own
    and then renamed over ``path``, so a reader never sees half of it and two processes
    writing the same file at once (two sweeps started together into one sweep directory)
    leave one of their texts, not the two run into each other.  A full disk or read-only
    location is a one-line error."""
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise ConfigError(f"cannot write {path}: {error.strerror}") from None


def record_result(run_dir: Path, result: dict) -> None:
    """Add the finished run's final scores and wall-clock hours to ``run.json``."""
    write_text(Path(run_dir) / RUN_FILE, json.dumps({**recorded(run_dir), "result": result}, indent=1))
