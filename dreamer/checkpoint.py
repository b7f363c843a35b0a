"""Checkpoint files: atomic writes, kept step copies, random-number-generator state, and the
metric rows a resume redoes."""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch


def write_atomically(path: Path, state: dict) -> None:
    """Temporary file, fsync, rename, fsync of the directory: a kill leaves the old file or the new one."""
    temporary = path.with_name(path.name + ".tmp")
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


class Checkpoints:
    """``checkpoint.pt`` in a run directory, and the last ``keep`` step copies in ``checkpoints/``.

    The state is serialised once: ``checkpoint.pt`` is a hard link to the newest step
    copy, swapped in atomically.
    """

    def __init__(self, run_dir: Path, keep: int):
        self.run_dir, self.keep = Path(run_dir), keep
        self.path = self.run_dir / "checkpoint.pt"

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, state: dict, step: int) -> None:
        if self.keep <= 0:
            write_atomically(self.path, state)
            return
        history = self.run_dir / "checkpoints"
        history.mkdir(exist_ok=True)
        newest = history / f"step_{step:010d}.pt"
        write_atomically(newest, state)
        link = self.path.with_name(self.path.name + ".link")
        link.unlink(missing_ok=True)
        os.link(newest, link)
        os.replace(link, self.path)
        for old in sorted(history.glob("step_*.pt"))[: -self.keep]:
            old.unlink()

    def load(self) -> dict:
        return torch.load(self.path, map_location="cpu", weights_only=False)


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


def pickled(objects) -> bytes | None:
    """``objects`` pickled (environments, for an exact resume), or None where they cannot be."""
    try:
        return pickle.dumps(objects)
    except Exception:  # rendering back-ends and simulators often hold unpicklable handles
        return None


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
