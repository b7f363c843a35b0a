"""Any gymnasium environment id, with vector and/or rendered 64x64 pixel observations."""

from __future__ import annotations

import logging
import os

# Rendering needs no display or sound device.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from dreamer.envs.base import ActionSpace, Env, transition  # noqa: E402

log = logging.getLogger(__name__)

OBS_CHOICES = ("state", "pixels", "both")


class GymEnv(Env):
    """Wraps ``gymnasium.make(id)``.

    ``obs``: ``state`` gives the vector observation as ``state``; ``pixels`` renders the
    environment to ``size`` RGB as ``image``; ``both`` gives both.  Continuous actions
    arrive in [-1, 1] and are rescaled to the environment's bounds.
    """

    def __init__(
        self,
        id: str = "CartPole-v1",
        obs: str = "state",
        size: tuple[int, int] = (64, 64),
        action_repeat: int = 1,
        time_limit: int | None = None,
        seed: int | None = None,
        render: bool = False,
    ):
        if obs not in OBS_CHOICES:
            raise ValueError(f"env.obs={obs!r} is not one of {', '.join(OBS_CHOICES)}")
        kwargs = {"render_mode": "rgb_array"} if obs != "state" or render else {}
        if time_limit:
            kwargs["max_episode_steps"] = int(time_limit)
        self._env = gymnasium.make(id, **kwargs)
        self._obs, self._size, self._repeat = obs, tuple(size), int(action_repeat)
        self._seed = seed
        self._done = True
        space = self._env.action_space
        if isinstance(space, gymnasium.spaces.Discrete):
            self.action_space = ActionSpace(int(space.n), True)
        elif isinstance(space, gymnasium.spaces.Box):
            self.action_space = ActionSpace(int(np.prod(space.shape)), False)
            self._low, self._high = space.low.astype(np.float32), space.high.astype(np.float32)
        else:
            raise ValueError(f"env.id={id!r} has action space {space}; only Discrete and Box are supported")
        self.obs_space = {}
        if obs in ("pixels", "both"):
            self.obs_space["image"] = (*self._size, 3)
        if obs in ("state", "both"):
            self.obs_space["state"] = (int(np.prod(self._env.observation_space.shape)),)

    def _observe(self, state: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        if "state" in self.obs_space:
            out["state"] = np.asarray(state, np.float32).reshape(-1)
        if "image" in self.obs_space:
            frame = self._env.render()
            if frame.shape[:2] != self._size:
                frame = np.asarray(Image.fromarray(frame).resize(self._size[::-1], Image.BILINEAR))
            out["image"] = frame.astype(np.uint8)
        return out

    def reset(self) -> dict[str, np.ndarray]:
        state, _ = self._env.reset(seed=self._seed)
        self._seed = None  # seed only the first episode; later ones follow the env's RNG
        self._done = False
        return transition(self._observe(state), 0.0, True, False, False)

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        if self._done:
            return self.reset()
        if self.action_space.discrete:
            env_action = int(np.argmax(action))
        else:
            clipped = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
            env_action = (self._low + (clipped + 1.0) / 2.0 * (self._high - self._low)).reshape(self._low.shape)
        total = 0.0
        terminated = truncated = False
        for _ in range(self._repeat):
            state, reward, terminated, truncated, _ = self._env.step(env_action)
            total += float(reward)
            if terminated or truncated:
                break
        self._done = terminated or truncated
        return transition(self._observe(state), total, False, self._done, terminated)

    def render(self) -> np.ndarray:
        """The current frame (H, W, 3) uint8, for videos."""
        return np.asarray(self._env.render(), np.uint8)

    def close(self) -> None:
        self._env.close()
