"""Checkpoint files: atomic writes, kept step copies, random-number-generator state, and the
metric rows a resume redoes."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import pickle
import random
import secrets
import time
from pathlib import Path

import numpy as np
import torch

from dreamer.networks import ConvEncoder, NormedLinear

log = logging.getLogger(__name__)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, read-only location); the message names the path."""


def write_atomically(path: Path, state: dict) -> None:
    """Temporary file, fsync, rename, fsync of the directory: a kill leaves the old file or
    the new one.  A failed write removes its temporary file and raises
    :class:`CheckpointWriteError`, leaving the previous file as it was."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except (OSError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError
        reason = error.strerror if isinstance(error, OSError) and error.strerror else _disk_reason(path, error)
        temporary.unlink(missing_ok=True)
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {reason}") from None


def _disk_reason(path: Path, error: Exception) -> str:
    """Why a write failed: a full disk or a read-only location, when the file system says so."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return str(error).splitlines()[0]
    if stats.f_bavail * stats.f_frsize < 2**20:
        return "No space left on device"
    if not os.access(path.parent, os.W_OK):
        return "the location is read-only"
    return str(error).splitlines()[0]


# What our checkpoints hold besides tensors and Python's own types: numpy arrays and scalars
# (loop state, random-number-generator states).  Loading allows these and nothing else, so a
# checkpoint cannot run code while it loads.
NUMPY_TYPES = [np._core.multiarray._reconstruct, np._core.multiarray.scalar, np.ndarray, np.dtype,
               *(getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType"))]


def load_file(path: Path, mmap: bool = False) -> dict:
    """A checkpoint file on the CPU, unpickling only tensors, Python's types and numpy arrays."""
    with torch.serialization.safe_globals(NUMPY_TYPES):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def load_checked(path: Path) -> tuple[dict | None, str | None]:
    """``path`` loaded (its tensors memory-mapped) when it is a checkpoint of ours, else
    None and the reason it is not."""
    try:
        state = load_file(path, mmap=True)
    except Exception as error:  # truncated, empty, not a torch file, ...
        return None, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    return (None, f"it lacks {', '.join(missing)}") if missing else (state, None)


def readable(path: Path) -> str | None:
    """None when ``path`` loads as a checkpoint of ours, else the reason it does not."""
    return load_checked(path)[1]


def mismatch_detail(error: Exception) -> str:
    """The first mismatch of a failed ``load_state_dict`` (torch lists every one under a header line)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0]) if lines else type(error).__name__


def added_biases(model: torch.nn.Module) -> list[str]:
    """State keys of the biases version 0.3 added: the linear layer of every ``NormedLinear``
    and the convolutions of every ``ConvEncoder`` (version 0.2 built them without one)."""
    keys = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, NormedLinear):
            keys.append(f"{prefix}0.bias")
        elif isinstance(module, ConvEncoder):
            keys += [f"{prefix}stages.{index}.bias" for index, layer in enumerate(module.stages)
                     if isinstance(layer, torch.nn.Conv2d)]
    return keys


def written_bias_free(state: dict, model: torch.nn.Module) -> bool:
    """Whether version 0.2 wrote the agent ``state``: none of the biases 0.3 added is in it."""
    keys = added_biases(model)
    return bool(keys) and not any(key in state for key in keys)


def from_bias_free(state: dict, model: torch.nn.Module) -> dict | None:
    """A version-0.2 agent state (those layers without bias) with the biases added as zeros,
    which computes exactly what it computed before; None when ``state`` is not one."""
    if not written_bias_free(state, model):
        return None
    own = model.state_dict()
    return {**state, **{key: torch.zeros_like(own[key]) for key in added_biases(model)}}


def bias_free_refusal(state: dict, model: torch.nn.Module, run_dir: Path) -> str | None:
    """Why a run cannot continue the agent ``state`` when version 0.2 wrote it (a run does not
    change its model halfway), or None."""
    if not written_bias_free(state, model):
        return None
    return (f"resume={run_dir}: its checkpoint was written by version 0.2, whose hidden layers have no bias, and "
            f"a run does not change its model halfway; score it with `python -m dreamer.evaluate "
            f"checkpoint={run_dir}` or continue it with version 0.2")


REQUIRED_KEYS = ("step", "agent", "optimizer", "replay", "loop", "config")


class Checkpoints:
    """``checkpoint.pt`` in a run directory, and the last ``keep`` step copies in ``checkpoints/``.

    Each is a separate file, checked after writing, so one damaged file leaves the others
    loadable; :meth:`load` falls back to the newest copy that loads.
    """

    def __init__(self, run_dir: Path, keep: int):
        self.run_dir, self.keep = Path(run_dir), keep
        self.path = self.run_dir / "checkpoint.pt"
        self.history = self.run_dir / "checkpoints"

    def exists(self) -> bool:
        return self.path.exists() or any(self.history.glob("step_*.pt"))

    def remove_orphans(self) -> None:
        """Temporary files left by a process killed while writing (the caller holds the run's lock)."""
        for orphan in [*self.run_dir.glob("*.tmp"), *self.history.glob("*.tmp")]:
            orphan.unlink(missing_ok=True)

    def save(self, state: dict, step: int) -> None:
        paths = [self.path]
        if self.keep > 0:
            self.history.mkdir(exist_ok=True)
            paths.insert(0, self.history / f"step_{step:010d}.pt")
        for path in paths:
            write_atomically(path, state)
            if reason := readable(path):
                raise CheckpointWriteError(f"checkpoint {path} does not load back after writing: {reason}")
        if self.keep > 0:
            for old in sorted(self.history.glob("step_*.pt"))[: -self.keep]:
                old.unlink()

    def candidates(self) -> list[Path]:
        """``checkpoint.pt``, then the kept copies, newest first."""
        return [path for path in (self.path, *sorted(self.history.glob("step_*.pt"), reverse=True)) if path.exists()]

    def load(self) -> tuple[dict, Path]:
        """The newest checkpoint that loads, and its path; a one-line ValueError when none does."""
        reasons = []
        for path in self.candidates():
            state, reason = load_checked(path)
            if reason is None:
                if reasons:
                    log.warning("%s; resuming from %s", "; ".join(reasons), path)
                return state, path
            reasons.append(f"{path} does not load ({reason[:120]})")
        raise ValueError("; ".join(reasons) or f"{self.run_dir} holds no checkpoint")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def signing_key() -> bytes | None:
    """This user's key for signing pickled state, created on first use (readable by the user
    only); None where it cannot be stored."""
    path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "r2dreamer" / "checkpoint.key"
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(secrets.token_bytes(32))
        return path.read_bytes()
    except FileExistsError:  # another process created it just now
        return path.read_bytes()
    except OSError:
        return None


def signature(data: bytes) -> str | None:
    key = signing_key()
    return None if key is None else hmac.new(key, data, hashlib.sha256).hexdigest()


def pickled(objects) -> dict | None:
    """``objects`` pickled (environments, for an exact resume) and signed with this user's
    key, or None where they cannot be pickled."""
    try:
        data = pickle.dumps(objects)
    except Exception:  # rendering back-ends and simulators often hold unpicklable handles
        return None
    return {"data": data, "signature": signature(data)}


def unpickled(saved: dict | None):
    """What :func:`pickled` stored, if this user's key signed it; otherwise None (with a
    warning): unpickling runs code, so only state this user wrote is unpickled."""
    if not saved:
        return None
    expected = signature(saved["data"])
    if expected is None or saved["signature"] is None or not hmac.compare_digest(expected, saved["signature"]):
        log.warning("the checkpoint's environment state was not signed by this user's key; new episodes start instead")
        return None
    return pickle.loads(saved["data"])


def set_aside_metrics(path: Path) -> Path | None:
    """A run starting at step 0 beside the metric rows of an earlier start that left no
    checkpoint (killed before its first one) would append its rows to them: move them to
    ``metrics.<time>.jsonl`` beside it instead, and return that path (None when there were none)."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    stamp, number = time.strftime("%Y%m%d-%H%M%S"), 0
    aside = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    while aside.exists():  # two starts set aside within one second: keep both
        number += 1
        aside = path.with_name(f"{path.stem}.{stamp}-{number}{path.suffix}")
    os.replace(path, aside)
    return aside


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric rows written after the checkpoint a run resumes from (they will be redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (ValueError, KeyError):
            continue  # a line cut short by a kill
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)
