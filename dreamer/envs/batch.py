"""Several environments stepped together, observations stacked on a leading axis."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dreamer.envs.base import Env


class EnvBatch:
    """Steps ``len(envs)`` environments in turn and stacks what they return."""

    def __init__(self, make_env: Callable[[int], Env], count: int):
        self.envs = [make_env(index) for index in range(count)]
        self.obs_space = self.envs[0].obs_space
        self.action_space = self.envs[0].action_space

    def __len__(self) -> int:
        return len(self.envs)

    @staticmethod
    def _stack(observations: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}

    def reset(self) -> dict[str, np.ndarray]:
        return self._stack([env.reset() for env in self.envs])

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        return self._stack([env.step(action) for env, action in zip(self.envs, actions)])

    def close(self) -> None:
        for env in self.envs:
            env.close()
