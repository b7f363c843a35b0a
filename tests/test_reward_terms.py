"""experiments/cartpole_reward_terms.py: its four terms multiply to dm_control's cartpole reward."""

import numpy as np
import pytest

from conftest import load_experiment

pytest.importorskip("dm_control")


def test_reward_terms_multiply_to_the_task_reward():
    from dm_control import suite

    script = load_experiment("cartpole_reward_terms")
    env = suite.load("cartpole", "balance", task_kwargs={"random": 0})
    env.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, 50)
    for action in actions:
        timestep = env.step([action])
        terms = script.reward_terms(env.physics)
        assert np.all((terms > 0) & (terms <= 1))
        assert terms.prod() == pytest.approx(timestep.reward, rel=1e-6)


def test_small_control_term_by_hand():
    from dm_control import suite

    script = load_experiment("cartpole_reward_terms")
    env = suite.load("cartpole", "balance", task_kwargs={"random": 0})
    env.reset()
    env.step([0.5])
    # quadratic tolerance, margin 1, value 0 at the margin: 1 - 0.5 ** 2 = 0.75; (4 + 0.75) / 5
    assert script.reward_terms(env.physics)[2] == pytest.approx(0.95)


class Constant:
    """An agent whose mode is always the same push."""

    def __init__(self, push: float):
        self.push = push

    def initial_state(self, batch: int):
        return None

    def act(self, obs, latent, explore: bool):
        return np.full((1, 1), self.push, np.float32), latent


def test_action_scale_reaches_the_environment():
    from dreamer.envs import EnvBatch
    from dreamer.envs.dmc import DMCEnv

    script = load_experiment("cartpole_reward_terms")
    envs = EnvBatch(lambda _: DMCEnv("cartpole_balance", obs="state", time_limit=20, seed=0), 1)
    try:
        _, full = script.episode(Constant(0.8), envs)
        _, half = script.episode(Constant(0.8), envs, action_scale=0.5)
    finally:
        envs.close()
    # (4 + 1 - force ** 2) / 5 at every policy step: force 0.8, then 0.4
    assert len(full) == len(half) == 10
    np.testing.assert_allclose(full[:, 2], 0.872, rtol=1e-6)
    np.testing.assert_allclose(half[:, 2], 0.968, rtol=1e-6)
