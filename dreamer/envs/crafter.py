"""Crafter (spec 5): the reward task at 64x64, achievements reported for logging."""

from __future__ import annotations

import numpy as np

from dreamer.envs.base import ActionSpace, Env, EnvSetupError, import_optional, repeat_action, transition


class CrafterEnv(Env):
    """Crafter with ``image`` observations and its 17 discrete actions.

    Every step carries ``log_achievement_<name>``: how often the achievement was unlocked
    so far this episode (the runner logs its value at the episode's end).  Death ends the
    episode as terminal; reaching ``time_limit`` steps ends it without.
    """

    def __init__(
        self,
        task: str = "reward",
        size: tuple[int, int] = (64, 64),
        action_repeat: int = 1,
        time_limit: int = 10000,
        seed: int | None = None,
        render: bool = False,
    ):
        if task != "reward":
            raise EnvSetupError(f"env.task={task} is not a Crafter task; choose one of: reward")
        crafter = import_optional("crafter", "crafter", "crafter", "env=crafter")
        self._env = crafter.Env(size=tuple(size), length=int(time_limit), reward=True, seed=seed)
        self.action_repeat = int(action_repeat)
        self._achievements = sorted(crafter.constants.achievements)
        self.action_space = ActionSpace(self._env.action_space.n, True)
        self.obs_space = {"image": (*tuple(size), 3)}
        self._done = True

    def _logs(self, counts: dict[str, int]) -> dict[str, np.ndarray]:
        return {f"log_achievement_{name}": np.float32(counts.get(name, 0)) for name in self._achievements}

    def reset(self) -> dict[str, np.ndarray]:
        self._done = False
        return transition({"image": self._env.reset(), **self._logs({})}, 0.0, True, False, False)

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        if self._done:
            return self.reset()
        index = int(np.argmax(action))
        image = done = info = None  # of the last game step

        def act(repeat: int) -> tuple[float, bool]:
            nonlocal image, done, info
            image, reward, done, info = self._env.step(index)
            return reward, done

        reward = repeat_action(act, self.action_repeat)
        self._done = done
        terminal = info["discount"] == 0
        return transition({"image": image, **self._logs(info["achievements"])}, reward, False, done, terminal)

    def render(self) -> np.ndarray:
        """The local view at observation size (H, W, 3) uint8."""
        return self._env.render()
