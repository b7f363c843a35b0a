"""Evaluation reports an env's ``log_<name>`` scalars (e.g. success) per episode."""

import numpy as np
import torch

from conftest import compose_config
from dreamer.envs import EnvBatch
from dreamer.envs.base import ActionSpace, Env, transition
from dreamer.evaluation import evaluate
from dreamer.setup import build_agent


class Scripted(Env):
    """Episodes of ``length`` steps, reward 1 each; ``log_success`` is 1 only at step
    ``success_at`` (so the episode maximum, not the last value, must be reported)."""

    obs_space = {"state": (3,)}
    action_space = ActionSpace(2, True)

    def __init__(self, length: int, success_at: int | None):
        self.length, self.success_at, self.t = length, success_at, 0

    def _obs(self, reward, first, last):
        obs = transition({"state": np.zeros(3, np.float32)}, reward, first, last, False)
        obs["log_success"] = np.float32(self.t == self.success_at)
        return obs

    def reset(self):
        self.t = 0
        return self._obs(0.0, True, False)

    def step(self, action):
        if self.t >= self.length:
            return self.reset()
        self.t += 1
        return self._obs(1.0, False, self.t == self.length)


def test_evaluate_reports_return_length_and_episode_maximum_of_log_keys():
    cfg = compose_config("compile=false")
    settings = [(3, 2), (5, None), (2, 1)]  # (length, step of success)
    envs = EnvBatch(lambda index: Scripted(*settings[index]), len(settings))
    agent = build_agent(cfg, envs.obs_space, envs.action_space, torch.device("cpu"))
    results, frames = evaluate(agent, envs)
    assert results["return"].tolist() == [3.0, 5.0, 2.0]
    assert results["length"].tolist() == [3, 5, 2]
    assert results["success"].tolist() == [1.0, 0.0, 1.0]
    assert frames == []


class Framed(Scripted):
    """A scripted env whose rendering shows its step count."""

    def render(self):
        return np.full((4, 4, 3), self.t, np.uint8)


def test_evaluate_records_every_frame_of_the_first_episode_only():
    cfg = compose_config("compile=false")
    envs = EnvBatch(lambda index: Framed(3 if index == 0 else 6, None), 2)
    agent = build_agent(cfg, envs.obs_space, envs.action_space, torch.device("cpu"))
    results, frames = evaluate(agent, envs, record=True)
    assert [int(frame[0, 0, 0]) for frame in frames] == [0, 1, 2, 3]  # first observation to the last
    assert results["length"].tolist() == [3, 6]
