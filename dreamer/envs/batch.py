"""Several environments stepped together, observations stacked on a leading axis."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dreamer.envs.base import Env
from dreamer.envs.worker import WorkerEnv


def seeded(make_env: Callable[..., Env], first_seed: int, index: int) -> Env:
    """``make_env(seed=first_seed + index)``; a module-level function so worker processes
    can unpickle it (a lambda cannot be)."""
    return make_env(seed=first_seed + index)


class EnvBatch:
    """Steps ``len(envs)`` environments and stacks what they return.

    With ``workers`` each environment runs in its own process (see :class:`WorkerEnv`) and
    all step at the same time; ``make_env`` must then be picklable.
    """

    def __init__(self, make_env: Callable[[int], Env], count: int, workers: bool = False):
        self.workers = bool(workers)
        self.envs = [WorkerEnv(make_env, index) if self.workers else make_env(index) for index in range(count)]
        self.obs_space = self.envs[0].obs_space
        self.action_space = self.envs[0].action_space
        self.action_repeat = self.envs[0].action_repeat

    def __len__(self) -> int:
        return len(self.envs)

    @staticmethod
    def _stack(observations: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}

    def reset(self) -> dict[str, np.ndarray]:
        if self.workers:
            for env in self.envs:
                env.send("reset")
            return self._stack([env.receive() for env in self.envs])
        return self._stack([env.reset() for env in self.envs])

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        """Start a step: worker processes begin at once (so the caller can work meanwhile);
        environments in this process step in :meth:`step_wait`."""
        if self.workers:  # send to every worker first, so they all step at once
            for env, action in zip(self.envs, actions):
                env.send("step", action)
        else:
            self._actions = actions

    def step_wait(self) -> dict[str, np.ndarray]:
        if self.workers:
            return self._stack([env.receive() for env in self.envs])
        actions, self._actions = self._actions, None
        return self._stack([env.step(action) for env, action in zip(self.envs, actions)])

    def close(self) -> None:
        for env in self.envs:
            env.close()
