"""The paper's benchmark suites (spec 5) behind the common observation format."""

import importlib.util

import numpy as np
import pytest

# find_spec, not importorskip: importing MuJoCo before the suites choose MUJOCO_GL fixes the wrong one.
MISSING = [name for name in ("dm_control", "ale_py", "crafter", "metaworld") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"pip install -e '.[all]' (missing {MISSING})")

from dreamer.envs.atari import AtariEnv  # noqa: E402
from dreamer.envs.base import EnvSetupError  # noqa: E402
from dreamer.envs.crafter import CrafterEnv  # noqa: E402
from dreamer.envs.dmc import DMCEnv  # noqa: E402
from dreamer.envs.dmc_subtle import DMCSubtleEnv  # noqa: E402
from dreamer.envs.metaworld import MetaWorldEnv  # noqa: E402

# name: (constructor, kwargs with a short time limit, time limit in simulator steps, repeat)
SUITES = {
    "dmc_vision": (DMCEnv, dict(task="cartpole_balance", obs="pixels"), 20, 2),
    "dmc_proprio": (DMCEnv, dict(task="walker_walk", obs="state"), 20, 2),
    "dmc_subtle": (DMCSubtleEnv, dict(task="reacher_hard"), 20, 2),
    "metaworld": (MetaWorldEnv, dict(task="reach-v3", obs="both"), 20, 2),
    "atari100k": (AtariEnv, dict(task="pong", noops=0), 40, 4),
    "crafter": (CrafterEnv, dict(), 10, 1),
}


def make(suite, **overrides):
    constructor, kwargs, time_limit, repeat = SUITES[suite]
    return constructor(**{**kwargs, "time_limit": time_limit, "action_repeat": repeat, "seed": 0, **overrides})


def random_action(env, rng):
    if env.action_space.discrete:
        return np.eye(env.action_space.size, dtype=np.float32)[rng.integers(env.action_space.size)]
    return rng.uniform(-1, 1, env.action_space.size).astype(np.float32)


def check_format(env, obs):
    for key, shape in env.obs_space.items():
        assert obs[key].shape == shape
        assert obs[key].dtype == (np.uint8 if key == "image" else np.float32)
    assert obs["reward"].dtype == np.float32 and obs["reward"].shape == ()
    for key in ("is_first", "is_last", "is_terminal"):
        assert obs[key].dtype == np.bool_ and obs[key].shape == ()
    assert all(obs[key].shape == () for key in obs if key.startswith("log_"))


@pytest.mark.parametrize("suite", SUITES)
def test_episode_has_documented_format_and_ends_at_time_limit_not_terminal(suite):
    env, rng = make(suite), np.random.default_rng(0)
    _, _, time_limit, repeat = SUITES[suite]
    obs = env.reset()
    check_format(env, obs)
    assert obs["is_first"] and not obs["is_last"]
    assert "image" not in env.obs_space or env.obs_space["image"] == (64, 64, 3)
    steps = 0
    while not obs["is_last"]:
        obs = env.step(random_action(env, rng))
        check_format(env, obs)
        assert not obs["is_first"]
        steps += 1
    assert steps == time_limit // repeat and not obs["is_terminal"]
    assert env.step(random_action(env, rng))["is_first"]  # stepping past the end starts a new episode
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    env.close()


def test_dmc_action_repeat_advances_the_simulator_by_repeat_control_steps():
    for repeat in (1, 3):
        env = make("dmc_proprio", action_repeat=repeat, time_limit=1000)
        env.reset()
        start = env.physics.data.time
        env.step(np.zeros(env.action_space.size))
        assert env.physics.data.time - start == pytest.approx(repeat * env._env.control_timestep())
        env.close()


def test_dmc_state_concatenates_the_task_observation_arrays():
    env = make("dmc_proprio")
    spec = env._env.observation_spec()
    assert env.obs_space["state"] == (sum(int(np.prod(array.shape)) for array in spec.values()),)
    env.close()


def test_atari_action_repeat_plays_repeat_frames_per_step():
    env = make("atari100k", time_limit=108000)
    env.reset()
    for _ in range(5):
        env.step(random_action(env, np.random.default_rng(0)))
    assert env.ale.getEpisodeFrameNumber() == 5 * 4
    env.close()


def test_metaworld_action_repeat_and_success_log():
    env = make("metaworld", time_limit=500)
    obs = env.reset()
    assert obs["log_success"] == 0.0 and env.obs_space["state"] == (39,)
    env.step(np.zeros(4))
    assert env._env.curr_path_length == 2
    env.close()


def test_crafter_reports_every_achievement_as_a_log_scalar():
    env = make("crafter")
    obs = env.reset()
    names = [key for key in obs if key.startswith("log_achievement_")]
    assert len(names) == 22 and "log_achievement_collect_wood" in names
    env.close()


@pytest.mark.parametrize(
    "constructor, task",
    [(DMCEnv, "walker_wlk"), (DMCSubtleEnv, "walker_walk"), (AtariEnv, "pongg"), (CrafterEnv, "diamond"), (MetaWorldEnv, "reach")],
)
def test_unknown_task_names_it_and_lists_valid_ones_in_one_line(constructor, task):
    with pytest.raises(EnvSetupError) as error:
        constructor(task=task)
    message = str(error.value)
    assert f"env.task={task} is not" in message and "choose one of:" in message and "\n" not in message


# task: {(model array, element): factor}, read back from the model after reset.
SUBTLE_FACTORS = {
    "ball_in_cup_catch": {("geom_size", "ball"): 1 / 12, ("tendon_width", "string"): 1 / 12},
    "point_mass_easy": {("geom_size", "target"): 1 / 6, ("geom_size", "pointmass"): 1 / 6},
    "finger_turn_hard": {("site_size", "target"): 1 / 2},
    "reacher_hard": {("geom_size", "target"): 1 / 3},
    "cartpole_swingup": {("geom_size", "pole_1"): 1 / 20},
}


def radius(env, array, element):
    return float(np.atleast_1d(getattr(env.physics.named.model, array)[element])[0])


@pytest.mark.parametrize("task", SUBTLE_FACTORS)
def test_dmc_subtle_shrinks_the_task_object_by_the_paper_factor(task):
    original, subtle = DMCEnv(task=task, obs="state", seed=0), DMCSubtleEnv(task=task, seed=0)
    original.reset(), subtle.reset()  # finger and reacher write their target size at reset
    for (array, element), factor in SUBTLE_FACTORS[task].items():
        assert radius(subtle, array, element) == pytest.approx(radius(original, array, element) * factor)
    unchanged = np.isclose(original.physics.model.body_mass, subtle.physics.model.body_mass)
    assert unchanged.all()  # the dynamics are those of the original task
    original.close(), subtle.close()


def test_dmc_subtle_reacher_reward_uses_the_shrunk_target():
    env = DMCSubtleEnv(task="reacher_hard", seed=0)
    env.reset()
    physics = env.physics
    inside = physics.named.model.geom_size[["target", "finger"], 0].sum()
    assert inside == pytest.approx(0.015 / 3 + 0.01)
    env.close()


def test_unknown_task_on_the_command_line_exits_with_one_line(tmp_path):
    from test_cli import run_cli

    result = run_cli("env=dmc_vision", "env.task=walker_wlk", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: env.task=walker_wlk is not a DMC task; choose one of:")
