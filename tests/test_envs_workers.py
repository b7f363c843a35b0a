"""Environments in worker processes: same observations, and a crashed worker is replaced."""

import os
import signal
from functools import partial

import numpy as np
import pytest

from dreamer.envs.base import ActionSpace, Env, transition
from dreamer.envs.batch import EnvBatch, seeded
from dreamer.envs.worker import CONTEXT, RESTART_SEED_STRIDE, serve
from dreamer.envs.base import pop_log_keys


class CountingEnv(Env):
    """Observation ``state`` = [seed, step in episode]; episodes last ``length`` steps.

    With ``crash_marker`` the env of seed 0 kills its process at step ``crash_at``, once
    (the marker file records that it happened).
    """

    obs_space = {"state": (2,)}
    action_space = ActionSpace(2, False)

    def __init__(self, seed=0, length=5, crash_at=None, crash_marker=None, render=False):
        self.seed, self.length, self.crash_at, self.crash_marker = seed, length, crash_at, crash_marker
        self.count = 0

    def _obs(self, first, last):
        state = np.array([self.seed, self.count], np.float32)
        return transition({"state": state, "log_count": np.float32(self.count)}, 1.0, first, last, False)

    def reset(self):
        self.count = 0
        return self._obs(True, False)

    def step(self, action):
        if self.count == self.length:
            return self.reset()
        self.count += 1
        if self.crash_marker and self.seed == 0 and self.count == self.crash_at and not os.path.exists(self.crash_marker):
            open(self.crash_marker, "w").close()
            os._exit(1)
        return self._obs(False, self.count == self.length)


def run(batch, steps):
    observations = [batch.reset()]
    for _ in range(steps):
        observations.append(batch.step(np.zeros((len(batch), 2), np.float32)))
    batch.close()
    return observations


def test_workers_return_the_same_observations_as_in_process_envs():
    make_env = partial(seeded, partial(CountingEnv, length=3), 10)
    in_process, workers = run(EnvBatch(make_env, 2), 7), run(EnvBatch(make_env, 2, workers=True), 7)
    for a, b in zip(in_process, workers):
        assert a.keys() == b.keys() and all(np.array_equal(a[key], b[key]) for key in a)


def test_crashed_worker_is_restarted_and_its_episode_discarded(tmp_path, caplog):
    marker = tmp_path / "crashed"
    crashing = partial(CountingEnv, length=10, crash_at=3, crash_marker=str(marker))
    batch = EnvBatch(partial(seeded, crashing, 0), 2, workers=True)
    observations = run(batch, 5)
    assert marker.exists() and [env.restarts for env in batch.envs] == [1, 0]
    assert observations[3]["is_first"].tolist() == [True, False]  # a new episode, no is_last
    assert not observations[3]["is_last"].any()
    assert observations[5]["state"][:, 1].tolist() == [2, 5]  # env 0 went on from its new start
    assert observations[3]["state"][:, 0].tolist() == [RESTART_SEED_STRIDE, 1]  # with a new seed
    assert "crashed" in caplog.text and "restarting" in caplog.text


def test_worker_that_cannot_start_raises_with_the_cause():
    with pytest.raises(RuntimeError, match="failed to start"):
        EnvBatch(partial(seeded, partial(CountingEnv, no_such_argument=1), 0), 1, workers=True)


def test_log_keys_are_taken_out_of_the_observation():
    obs = {"image": np.zeros((2, 64, 64, 3), np.uint8), "log_success": np.ones(2, np.float32)}
    logs = pop_log_keys(obs)
    assert list(obs) == ["image"] and list(logs) == ["success"]


def first_seeds_in_workers() -> list[float]:
    batch = EnvBatch(partial(seeded, CountingEnv, 7), 2, workers=True)
    try:
        return batch.reset()["state"][:, 0].tolist()
    finally:
        batch.close()


def test_workers_start_inside_a_joblib_loky_job():
    """hydra/launcher=joblib runs each job in a loky worker, whose start method 'loky' a
    spawned child cannot set up; the env workers still start there."""
    import joblib

    results = joblib.Parallel(n_jobs=2, backend="loky")(joblib.delayed(first_seeds_in_workers)() for _ in range(2))
    assert results == [[7.0, 8.0], [7.0, 8.0]]


class ClosedCountingEnv(CountingEnv):
    closed = False

    def close(self):
        self.closed = True


def test_worker_whose_parent_is_gone_ends_quietly_and_closes_its_env(capfd):
    """The parent killed while it waited for its env's first answer: the child's send finds
    the pipe broken and ends without a traceback."""
    parent, child = CONTEXT.Pipe()
    parent.close()
    built = []

    def make_env(index):
        built.append(ClosedCountingEnv(index))
        return built[-1]

    previous = signal.getsignal(signal.SIGINT)  # serve() ignores Ctrl-C, as a child should
    try:
        serve(make_env, 0, child)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(built) == 1 and built[0].closed
    assert "Traceback" not in capfd.readouterr().err
