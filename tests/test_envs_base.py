"""The helpers every suite shares (action rescale, action repeat, env.obs check) and the
gymnasium wrapper's one-line setup errors."""

import gymnasium
import numpy as np
import pytest

from dreamer.envs.base import OBS_CHOICES, EnvSetupError, check_obs, repeat_action, rescale_action
from dreamer.envs.gym import GymEnv


def test_rescale_maps_minus_one_zero_one_to_low_middle_high_in_float32():
    low, high = np.array([-2.0, 0.0, 1.0], np.float32), np.array([2.0, 10.0, 1.5], np.float32)
    assert rescale_action(np.full(3, -1.0), low, high).tolist() == [-2.0, 0.0, 1.0]
    assert rescale_action(np.zeros(3), low, high).tolist() == [0.0, 5.0, 1.25]
    assert rescale_action(np.ones(3), low, high).tolist() == [2.0, 10.0, 1.5]
    assert rescale_action(np.array([0.5, -0.5, 0.5]), low, high).tolist() == [1.0, 2.5, 1.375]
    out = rescale_action(np.array([7.0, -3.0, 1.0]), low, high)  # outside [-1, 1]: clipped first
    assert out.tolist() == [2.0, 0.0, 1.5] and out.dtype == np.float32


def scripted(rewards, ends):
    """A step function returning ``rewards[i], ends[i]`` on call i, recording the repeat indices."""
    calls = []

    def step(repeat):
        calls.append(repeat)
        return rewards[len(calls) - 1], ends[len(calls) - 1]

    return step, calls


def test_repeat_action_sums_every_reward_when_the_episode_goes_on():
    step, calls = scripted([1.0, 2.0, 4.0], [False, False, False])
    assert repeat_action(step, 3) == 7.0 and calls == [0, 1, 2]


def test_repeat_action_stops_after_the_step_that_ends_the_episode():
    step, calls = scripted([1.0, 2.0, 4.0, 8.0], [False, True, False, False])
    assert repeat_action(step, 4) == 3.0 and calls == [0, 1]
    step, calls = scripted([0.5], [True])
    assert repeat_action(step, 1) == 0.5 and calls == [0]


def test_repeat_action_adds_in_order_from_zero():
    # (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3) in float64: the sum is the plain loop's.
    step, _ = scripted([0.1, 0.2, 0.3], [False] * 3)
    assert repeat_action(step, 3) == (0.0 + 0.1 + 0.2) + 0.3 == 0.6000000000000001
    step, _ = scripted([1, 2], [False, False])  # ALE gives int rewards
    total = repeat_action(step, 2)
    assert total == 3.0 and isinstance(total, float)


def test_obs_check_accepts_the_three_choices_and_names_them_in_one_line():
    assert OBS_CHOICES == ("state", "pixels", "both")
    assert [check_obs(obs) for obs in OBS_CHOICES] == list(OBS_CHOICES)
    with pytest.raises(EnvSetupError) as error:
        check_obs("rgb")
    assert str(error.value) == "env.obs=rgb is not one of state, pixels, both"


def test_gym_env_rejects_an_unknown_obs_with_env_setup_error():
    with pytest.raises(EnvSetupError, match="^env.obs=image is not one of state, pixels, both$"):
        GymEnv(obs="image")


@pytest.mark.parametrize(
    "env_id, message",
    [
        (
            "CartPol-v1",
            "env.id=CartPol-v1 is not a registered gymnasium environment; "
            "similar: CartPole-v0, CartPole-v1, phys2d/CartPole-v0, phys2d/CartPole-v1",
        ),
        (  # eight ids contain "pendulum"; the first five are named
            "pendulum-v9",
            "env.id=pendulum-v9 is not a registered gymnasium environment; similar: Pendulum-v1, "
            "phys2d/Pendulum-v0, InvertedPendulum-v2, InvertedPendulum-v4, InvertedPendulum-v5",
        ),
        ("Pendulm-v1", "env.id=Pendulm-v1 is not a registered gymnasium environment; see gymnasium.registry for the ids"),
    ],
)
def test_unknown_gym_id_names_close_ids_in_one_line(env_id, message):
    with pytest.raises(EnvSetupError) as error:
        GymEnv(id=env_id)
    assert str(error.value) == message


def test_gym_id_with_a_missing_package_names_the_id_and_the_first_line(monkeypatch):
    def make(id, **kwargs):
        raise gymnasium.error.DependencyNotInstalled("Box2D is not installed, pip install box2d\nmore detail")

    monkeypatch.setattr(gymnasium, "make", make)
    with pytest.raises(EnvSetupError) as error:
        GymEnv(id="LunarLander-v3")
    assert str(error.value) == (
        "env.id=LunarLander-v3 needs a package that is not installed: Box2D is not installed, pip install box2d"
    )


class SpacesEnv(gymnasium.Env):
    """A do-nothing env with the given spaces; ``step`` records the actions it receives."""

    def __init__(self, action_space, observation_space):
        self.action_space, self.observation_space = action_space, observation_space
        self.actions = []

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        self.actions.append(action)
        return self.observation_space.sample(), 1.0, False, False, {}


@pytest.fixture
def register_spaces_env():
    """Register ``test/Spaces-v0`` with the given spaces for one test."""
    registered = []

    def register(action_space, observation_space):
        kwargs = dict(action_space=action_space, observation_space=observation_space)
        gymnasium.register("test/Spaces-v0", entry_point=SpacesEnv, kwargs=kwargs, disable_env_checker=True)
        registered.append("test/Spaces-v0")
        return "test/Spaces-v0"

    yield register
    for env_id in registered:
        gymnasium.registry.pop(env_id, None)


def test_gym_unsupported_action_space_is_a_one_line_setup_error(register_spaces_env):
    box = gymnasium.spaces.Box(-1, 1, (3,))
    env_id = register_spaces_env(gymnasium.spaces.MultiDiscrete([2, 3]), box)
    with pytest.raises(EnvSetupError) as error:
        GymEnv(id=env_id)
    assert str(error.value) == (
        "env.id=test/Spaces-v0 has action space MultiDiscrete([2 3]); only Discrete and Box are supported"
    )


def test_gym_state_needs_a_box_observation_space(register_spaces_env):
    env_id = register_spaces_env(gymnasium.spaces.Discrete(2), gymnasium.spaces.Discrete(16))
    with pytest.raises(EnvSetupError) as error:
        GymEnv(id=env_id, obs="state")
    assert str(error.value) == (
        "env.id=test/Spaces-v0 has observation space Discrete(16); env.obs=state needs a Box (or env.obs=pixels)"
    )


def test_gym_box_actions_are_rescaled_and_reshaped_to_the_box(register_spaces_env):
    low = np.array([[-1.0, 0.0], [2.0, -4.0]], np.float32)
    space = gymnasium.spaces.Box(low, low + 2.0, dtype=np.float32)  # (2, 2), each side 2 wide
    env = GymEnv(id=register_spaces_env(space, gymnasium.spaces.Box(-1, 1, (3,))), action_repeat=2)
    assert env.action_space.size == 4 and not env.action_space.discrete
    env.reset()
    obs = env.step(np.array([-1.0, 0.0, 1.0, 0.5], np.float32))
    assert obs["reward"] == 2.0  # two repeats of reward 1
    first, second = env._env.unwrapped.actions
    assert first.shape == (2, 2) and first.dtype == np.float32 and first.tolist() == [[-1.0, 1.0], [4.0, -2.5]]
    assert np.array_equal(first, second)  # the same action for each repeat
    env.close()


def test_pendulum_actions_are_rescaled_to_its_torque_bounds():
    env = GymEnv(id="Pendulum-v1", seed=0)
    assert env.action_space.size == 1 and not env.action_space.discrete
    sent = []
    step = env._env.step
    env._env.step = lambda action: sent.append(action) or step(action)
    env.reset()
    for action in (-1.0, 0.0, 0.5, 1.0, 3.0, -0.25):
        env.step(np.array([action], np.float32))
    # low + (a + 1) / 2 * (high - low) with the bounds [-2, 2]: 2 * a, clipped at the bounds
    assert [a.tolist() for a in sent] == [[-2.0], [0.0], [1.0], [2.0], [2.0], [-0.5]]
    assert all(a.dtype == np.float32 and a.shape == (1,) for a in sent)
    env.close()
