"""Atari 100k (spec 5) through the Arcade Learning Environment, DreamerV3's protocol."""

from __future__ import annotations

import numpy as np

from dreamer.envs.base import ActionSpace, Env, EnvSetupError, import_optional, repeat_action, transition
from dreamer.envs.rendering import resize


class AtariEnv(Env):
    """One Atari game: ``image`` (64x64 RGB), the game's minimal action set as one-hot.

    Each policy step repeats the action for ``action_repeat`` frames and max-pools the last
    two (Atari sprites flicker between frames).  Sticky actions are off, rewards are not
    clipped, a lost life does not end the episode; episodes start with up to ``noops``
    random no-op frames and end by game over (``is_terminal``) or after ``time_limit``
    frames (``is_last`` only).
    """

    def __init__(
        self,
        task: str = "pong",
        size: tuple[int, int] = (64, 64),
        action_repeat: int = 4,
        time_limit: int = 108000,
        noops: int = 30,
        seed: int | None = None,
        render: bool = False,
    ):
        ale_py = import_optional("ale_py", "ale-py", "atari", "env=atari100k")
        games = sorted(ale_py.roms.get_all_rom_ids())
        if task not in games:
            raise EnvSetupError(f"env.task={task} is not an Atari game; choose one of: {', '.join(games)}")
        self.rng = np.random.default_rng(seed)
        self.ale = ale_py.ALEInterface()
        self.ale.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale.setInt("random_seed", int(self.rng.integers(2**31)))
        self.ale.setFloat("repeat_action_probability", 0.0)
        self.ale.setInt("max_num_frames_per_episode", int(time_limit))
        self.ale.loadROM(ale_py.roms.get_rom_path(task))
        self._actions = self.ale.getMinimalActionSet()
        self._size, self.action_repeat, self._noops = tuple(size), int(action_repeat), int(noops)
        height, width = self.ale.getScreenDims()
        self._frames = np.zeros((2, height, width, 3), np.uint8)  # the last two frames, for max-pooling
        self.action_space = ActionSpace(len(self._actions), True)
        self.obs_space = {"image": (*self._size, 3)}
        self._done = True

    def _image(self) -> np.ndarray:
        return resize(self._frames.max(0), self._size)

    def reset(self) -> dict[str, np.ndarray]:
        self.ale.reset_game()
        for _ in range(self.rng.integers(self._noops + 1)):
            self.ale.act(self._actions[0])  # the minimal set starts with NOOP
            if self.ale.game_over():
                self.ale.reset_game()
        self.ale.getScreenRGB(self._frames[0])
        self._frames[1] = self._frames[0]
        self._done = False
        return transition({"image": self._image()}, 0.0, True, False, False)

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        if self._done:
            return self.reset()
        game_action = self._actions[int(np.argmax(action))]

        def act(repeat: int) -> tuple[float, bool]:
            reward = self.ale.act(game_action)
            if repeat >= self.action_repeat - 2:  # the last two frames go to slots 0 and 1
                self.ale.getScreenRGB(self._frames[repeat - self.action_repeat + 2])
            if self.ale.game_over():
                self.ale.getScreenRGB(self._frames[1])  # the final frame, whatever the repeat
                return reward, True
            return reward, False

        reward = repeat_action(act, self.action_repeat)
        if self.action_repeat == 1:  # nothing to pool with: both slots hold this frame
            self._frames[0] = self._frames[1]
        terminal = self.ale.game_over(with_truncation=False)
        self._done = self.ale.game_over()  # with_truncation: the frame limit also ends it
        return transition({"image": self._image()}, reward, False, self._done, terminal)

    def render(self) -> np.ndarray:
        """The full-resolution screen (210, 160, 3) uint8."""
        return self.ale.getScreenRGB()
