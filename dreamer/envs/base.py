"""The environment interface every suite implements."""

from __future__ import annotations

import importlib
from collections.abc import Callable
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


OBS_CHOICES = ("state", "pixels", "both")  # env.obs: vector, rendered image, or both


def check_obs(obs: str) -> str:
    """``obs`` if it is one of :data:`OBS_CHOICES`, else a one-line :class:`EnvSetupError`."""
    if obs not in OBS_CHOICES:
        raise EnvSetupError(f"env.obs={obs} is not one of {', '.join(OBS_CHOICES)}")
    return obs


def rescale_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """An agent action in [-1, 1] (clipped first) mapped linearly onto [low, high], float32.

    -1 -> ``low``, 0 -> the midpoint, 1 -> ``high``; ``low`` and ``high`` broadcast with ``action``.
    """
    clipped = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    return low + (clipped + 1.0) / 2.0 * (high - low)


def repeat_action(step: Callable[[int], tuple[float, bool]], times: int) -> float:
    """Call ``step(repeat)`` for repeat = 0, 1, ... up to ``times`` times, stopping after one
    that ends the episode; the summed reward.

    ``step`` applies the action once and returns (reward, episode ended); it keeps whatever
    else the env needs from the last call (observation, info) itself.  The rewards are added
    to 0.0 in order, as the env returns them, so the sum is that of a plain loop.
    """
    total = 0.0
    for repeat in range(times):
        reward, last = step(repeat)
        total += reward
        if last:
            break
    return total


@dataclass(frozen=True)
class ActionSpace:
    """Agent-side action space: one-hot of ``size`` if discrete, else a box in [-1, 1]."""

    size: int
    discrete: bool


class Env:
    """Steps return a dict observation; ``step`` after ``is_last`` starts a new episode.

    ``obs_space`` maps each observation key the agent sees to its shape;
    ``action_space`` is an :class:`ActionSpace`; ``action_repeat`` is how many simulator
    steps one policy step takes (the training loop counts environment steps with it).
    """

    obs_space: dict[str, tuple[int, ...]]
    action_space: ActionSpace
    action_repeat: int = 1

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


def pop_log_keys(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Remove the ``log_<name>`` metrics an env reports, so they never reach the replay or
    the encoder; returns them by ``<name>``."""
    return {key.removeprefix("log_"): obs.pop(key) for key in [key for key in obs if key.startswith("log_")]}
