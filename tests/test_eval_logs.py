"""Evaluation reports an env's ``log_<name>`` scalars (e.g. success) per episode."""

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from dreamer.config import CONF_DIR
from dreamer.envs import EnvBatch
from dreamer.envs.base import ActionSpace, Env, transition
from dreamer.evaluate import run_episode
from dreamer.runner import build_agent, evaluate


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


def test_evaluate_reports_return_and_episode_maximum_of_log_keys():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["compile=false"])
    settings = [(3, 2), (5, None), (2, 1)]  # (length, step of success)
    envs = EnvBatch(lambda index: Scripted(*settings[index]), len(settings))
    agent = build_agent(cfg, envs.obs_space, envs.action_space, torch.device("cpu"))
    results = evaluate(agent, envs)
    assert results["return"].tolist() == [3.0, 5.0, 2.0]
    assert results["success"].tolist() == [1.0, 0.0, 1.0]


def test_evaluate_command_episode_reports_the_maximum_of_log_keys():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["compile=false"])
    env = Scripted(4, success_at=2)
    agent = build_agent(cfg, env.obs_space, env.action_space, torch.device("cpu"))
    total, length, frames, logs = run_episode(agent, env, record=False)
    assert (total, length, frames) == (4.0, 4, [])
    assert logs == {"success": 1.0}
    _, _, _, logs = run_episode(agent, Scripted(3, success_at=None), record=False)
    assert logs == {"success": 0.0}
