"""DeepMind Control Suite tasks (spec 5: DMC Vision and DMC Proprio)."""

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

CAMERAS = {"quadruped": 2}  # DreamerV3's views; every other domain renders camera 0


def load_suite(needs_gl: bool):
    """``dm_control.suite``, with the GL backend chosen first: MuJoCo fixes it on import,
    so even a state-only env in this process must choose it for a later pixel env."""
    try:
        select_mujoco_gl()
    except EnvSetupError:
        if needs_gl:
            raise
    return import_optional("dm_control.suite", "dm_control", "dmc", "the DMC suites")


def split_task(task: str, valid: list[str], suite_name: str) -> tuple[str, str]:
    """``ball_in_cup_catch`` -> (``ball_in_cup``, ``catch``); a one-line error for unknown names."""
    names = {f"{domain}_{name}": (domain, name) for domain, name in valid}
    if task not in names:
        raise EnvSetupError(f"env.task={task} is not a {suite_name} task; choose one of: {', '.join(sorted(names))}")
    return names[task]


class DMCEnv(Env):
    """A dm_control task with ``image`` (camera frames, uint8) and/or ``state`` observations.

    ``state`` concatenates the task's observation arrays, flattened, as float32.  Actions in
    [-1, 1] are rescaled to the action spec.  ``time_limit`` counts simulator steps (action
    repeat included); DMC episodes end by time, so ``is_terminal`` is only set where the
    task itself ends with discount 0.
    """

    suite_name = "DMC"

    def __init__(
        self,
        task: str = "cartpole_balance",
        obs: str = "pixels",
        size: tuple[int, int] = (64, 64),
        action_repeat: int = 2,
        time_limit: int = 1000,
        camera: int | None = None,
        seed: int | None = None,
        render: bool = False,
    ):
        check_obs(obs)
        suite = load_suite(needs_gl=obs != "state" or render)
        domain, name = split_task(task, self.valid_tasks(suite), self.suite_name)
        self._env = self._load(suite, domain, name, seed)
        self._size, self.action_repeat, self._time_limit = tuple(size), int(action_repeat), int(time_limit)
        self._camera = CAMERAS.get(domain, 0) if camera is None else int(camera)
        spec = self._env.action_spec()
        self._low, self._high = spec.minimum.astype(np.float32), spec.maximum.astype(np.float32)
        self.action_space = ActionSpace(int(np.prod(spec.shape)), False)
        self.obs_space = {}
        if obs != "state":
            self.obs_space["image"] = (*self._size, 3)
        if obs != "pixels":
            state_size = sum(int(np.prod(array.shape)) for array in self._env.observation_spec().values())
            self.obs_space["state"] = (state_size,)
        self._steps, self._done = 0, True

    def valid_tasks(self, suite) -> list[tuple[str, str]]:
        return list(suite.ALL_TASKS)

    def _load(self, suite, domain: str, name: str, seed: int | None):
        return suite.load(domain, name, task_kwargs={"random": seed})

    @property
    def physics(self):
        return self._env.physics

    def _observe(self, timestep) -> dict[str, np.ndarray]:
        out = {}
        if "state" in self.obs_space:
            arrays = [np.asarray(value, np.float32).reshape(-1) for value in timestep.observation.values()]
            out["state"] = np.concatenate(arrays)
        if "image" in self.obs_space:
            out["image"] = self.render()
        return out

    def reset(self) -> dict[str, np.ndarray]:
        self._steps, self._done = 0, False
        return transition(self._observe(self._env.reset()), 0.0, True, False, False)

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        if self._done:
            return self.reset()
        scaled = rescale_action(action, self._low, self._high)
        timestep = None  # of the last control step

        def act(repeat: int) -> tuple[float, bool]:
            nonlocal timestep
            timestep = self._env.step(scaled)
            self._steps += 1
            return timestep.reward or 0.0, timestep.last() or self._steps >= self._time_limit

        reward = repeat_action(act, self.action_repeat)
        terminal = bool(timestep.last() and timestep.discount == 0)
        self._done = bool(timestep.last() or self._steps >= self._time_limit)
        return transition(self._observe(timestep), reward, False, self._done, terminal)

    def render(self) -> np.ndarray:
        """The configured camera at the observation size, (H, W, 3) uint8."""
        height, width = self._size
        return self._env.physics.render(height, width, camera_id=self._camera)

    def close(self) -> None:
        self._env.close()
