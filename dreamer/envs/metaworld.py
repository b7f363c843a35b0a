"""Meta-World v3 (spec 5): one manipulation task, rendered from camera corner2."""

from __future__ import annotations

import numpy as np

from dreamer.envs.base import (
    ActionSpace,
    Env,
    EnvSetupError,
    check_obs,
    import_optional,
    repeat_action,
    rescale_action,
    transition,
)
from dreamer.envs.rendering import select_mujoco_gl


def load_task_classes() -> dict:
    """Task name (``reach-v3``) -> environment class with the goal in the state vector."""
    select_mujoco_gl()
    metaworld = import_optional("metaworld", "metaworld", "metaworld", "env=metaworld")
    suffix = "-goal-observable"
    return {name.removesuffix(suffix): cls for name, cls in metaworld.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE.items()}


class MetaWorldEnv(Env):
    """A Meta-World task whose goal is re-drawn every episode.

    Every step carries ``log_success`` (1 once the task's success test held during the
    step).  Episodes end only by ``time_limit`` simulator steps (action repeat included).
    """

    def __init__(
        self,
        task: str = "reach-v3",
        obs: str = "pixels",
        size: tuple[int, int] = (64, 64),
        action_repeat: int = 2,
        time_limit: int = 500,
        camera: str = "corner2",
        seed: int | None = None,
        render: bool = False,
    ):
        check_obs(obs)
        classes = load_task_classes()
        if task not in classes:
            raise EnvSetupError(f"env.task={task} is not a Meta-World task; choose one of: {', '.join(sorted(classes))}")
        import mujoco

        self._env = classes[task](seed=seed)
        self._env._freeze_rand_vec = False  # a new goal each episode, as in DreamerV3
        self._env.max_path_length = int(time_limit)
        self._size, self.action_repeat, self._camera = tuple(size), int(action_repeat), camera
        self._renderer = mujoco.Renderer(self._env.model, *self._size)
        self.action_space = ActionSpace(int(np.prod(self._env.action_space.shape)), False)
        self._low = self._env.action_space.low.astype(np.float32)
        self._high = self._env.action_space.high.astype(np.float32)
        self.obs_space = {}
        if obs != "state":
            self.obs_space["image"] = (*self._size, 3)
        if obs != "pixels":
            self.obs_space["state"] = (int(np.prod(self._env.observation_space.shape)),)
        self._done = True

    def _observe(self, state: np.ndarray, success: float) -> dict[str, np.ndarray]:
        out = {"log_success": np.float32(success)}
        if "state" in self.obs_space:
            out["state"] = np.asarray(state, np.float32).reshape(-1)
        if "image" in self.obs_space:
            out["image"] = self.render()
        return out

    def reset(self) -> dict[str, np.ndarray]:
        state, _ = self._env.reset()
        self._done = False
        return transition(self._observe(state, 0.0), 0.0, True, False, False)

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        if self._done:
            return self.reset()
        scaled = rescale_action(action, self._low, self._high)
        state = terminated = truncated = None  # of the last simulator step
        success = 0.0  # 1 once any simulator step of this policy step succeeded

        def act(repeat: int) -> tuple[float, bool]:
            nonlocal state, terminated, truncated, success
            state, reward, terminated, truncated, info = self._env.step(scaled)
            success = max(success, float(info["success"]))
            return reward, terminated or truncated

        reward = repeat_action(act, self.action_repeat)
        self._done = terminated or truncated
        return transition(self._observe(state, success), reward, False, self._done, terminated)

    def render(self) -> np.ndarray:
        """The ``camera`` view at the observation size, (H, W, 3) uint8."""
        self._renderer.update_scene(self._env.data, camera=self._camera)
        return np.ascontiguousarray(self._renderer.render()[::-1])  # corner cameras render upside down

    def close(self) -> None:
        self._renderer.close()
        self._env.close()
