"""The environment interface every suite implements."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np


class EnvSetupError(ValueError):
    """An environment cannot be built as configured (unknown task, missing package or
    system library); the one-line message names the problem and the fix."""


def import_optional(module: str, package: str, extra: str, user: str):
    """Import a suite's optional dependency, or stop with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise EnvSetupError(f"{user} needs {package} ({error}); install with pip install -e '.[{extra}]'") from None


@dataclass(frozen=True)
class ActionSpace:
    """Agent-side action space: one-hot of ``size`` if discrete, else a box in [-1, 1]."""

    size: int
    discrete: bool


class Env:
    """Steps return a dict observation; ``step`` after ``is_last`` starts a new episode.

    ``obs_space`` maps each observation key the agent sees to its shape;
    ``action_space`` is an :class:`ActionSpace`.
    """

    obs_space: dict[str, tuple[int, ...]]
    action_space: ActionSpace

    def reset(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def render(self) -> np.ndarray:
        """An RGB frame (H, W, 3) uint8 of the current state, for videos."""
        raise NotImplementedError(f"{type(self).__name__} cannot render frames")

    def close(self) -> None:
        pass


def transition(obs: dict[str, np.ndarray], reward: float, first: bool, last: bool, terminal: bool) -> dict:
    """Attach the bookkeeping keys of the common observation format."""
    return {
        **obs,
        "reward": np.float32(reward),
        "is_first": np.bool_(first),
        "is_last": np.bool_(last),
        "is_terminal": np.bool_(terminal),
    }
