"""Run directories one process at a time: an exclusive lock held while a process trains
into a directory, and the checks that keep a new run from landing on an old one."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from dreamer.checkpoint import Checkpoints
from dreamer.config import ConfigError

LOCK_NAME = ".lock"
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


def holds_checkpoint(run_dir: Path) -> bool:
    return Checkpoints(Path(run_dir), keep=0).exists()


def refuse_overwrite(run_dir: Path) -> None:
    """A new run (no ``resume=``) must not continue or overwrite a directory's checkpoint."""
    if holds_checkpoint(run_dir):
        raise ConfigError(
            f"run directory {Path(run_dir).resolve()} already holds a checkpoint; continue it with "
            f"resume={run_dir} or choose another hydra.run.dir"
        )


def write_text(path: Path, text: str) -> None:
    """Write a small file of the run; a full disk or read-only location is a one-line error."""
    try:
        path.write_text(text)
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror}") from None
