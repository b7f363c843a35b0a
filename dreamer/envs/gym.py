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

from dreamer.envs.base import (  # noqa: E402
    ActionSpace,
    Env,
    EnvSetupError,
    check_obs,
    repeat_action,
    rescale_action,
    transition,
)

log = logging.getLogger(__name__)


def unknown_id_message(id: str) -> str:
    """The one-line error for an id gymnasium has not registered, with up to five registered
    ids that contain its name (the part before the version, any case)."""
    stem = id.lower().split("-")[0]
    close = [name for name in gymnasium.registry if stem in name.lower()][:5]
    hint = f"; similar: {', '.join(close)}" if close else "; see gymnasium.registry for the ids"
    return f"env.id={id} is not a registered gymnasium environment{hint}"


def make_gym_env(id: str, **kwargs) -> gymnasium.Env:
    """``gymnasium.make(id, **kwargs)``, where an unknown id or a missing optional package
    (Box2D, ...) is a one-line :class:`EnvSetupError` instead of a traceback."""
    try:
        return gymnasium.make(id, **kwargs)
    except (gymnasium.error.DependencyNotInstalled, ImportError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise EnvSetupError(f"env.id={id} needs a package that is not installed: {first_line}") from None
    except gymnasium.error.Error:  # NameNotFound, VersionNotFound, DeprecatedEnv, ...
        if id in gymnasium.registry:
            raise
        raise EnvSetupError(unknown_id_message(id)) from None


class GymEnv(Env):
    """Wraps ``gymnasium.make(id)``.

    ``obs``: ``state`` gives the vector observation (a Box) as ``state``; ``pixels`` renders
    the environment to ``size`` RGB as ``image``; ``both`` gives both.  Actions are Discrete
    (one-hot, argmax taken) or a Box, whose actions arrive in [-1, 1] and are rescaled to the
    environment's bounds.
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
        check_obs(obs)
        kwargs = {"render_mode": "rgb_array"} if obs != "state" or render else {}
        if time_limit:
            kwargs["max_episode_steps"] = int(time_limit)
        self._env = make_gym_env(id, **kwargs)
        self._obs, self._size, self.action_repeat = obs, tuple(size), int(action_repeat)
        self._seed = seed
        self._done = True
        space = self._env.action_space
        if isinstance(space, gymnasium.spaces.Discrete):
            self.action_space = ActionSpace(int(space.n), True)
        elif isinstance(space, gymnasium.spaces.Box):
            self.action_space = ActionSpace(int(np.prod(space.shape)), False)
            # Flat (size,) bounds like the agent's actions; step reshapes to the box's shape.
            self._low = space.low.astype(np.float32).reshape(-1)
            self._high = space.high.astype(np.float32).reshape(-1)
            self._shape = space.shape
        else:
            self._env.close()
            raise EnvSetupError(f"env.id={id} has action space {space}; only Discrete and Box are supported")
        self.obs_space = {}
        if obs in ("pixels", "both"):
            self.obs_space["image"] = (*self._size, 3)
        if obs in ("state", "both"):
            state_space = self._env.observation_space
            if not isinstance(state_space, gymnasium.spaces.Box):
                self._env.close()
                raise EnvSetupError(
                    f"env.id={id} has observation space {state_space}; env.obs={obs} needs a Box (or env.obs=pixels)"
                )
            self.obs_space["state"] = (int(np.prod(state_space.shape)),)

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
            env_action = rescale_action(action, self._low, self._high).reshape(self._shape)
        state = terminated = truncated = None  # of the last simulator step

        def act(repeat: int) -> tuple[float, bool]:
            nonlocal state, terminated, truncated
            state, reward, terminated, truncated, _ = self._env.step(env_action)
            return float(reward), terminated or truncated

        total = repeat_action(act, self.action_repeat)
        self._done = terminated or truncated
        return transition(self._observe(state), total, False, self._done, terminated)

    def render(self) -> np.ndarray:
        """The current frame (H, W, 3) uint8, for videos."""
        return np.asarray(self._env.render(), np.uint8)

    def close(self) -> None:
        self._env.close()
