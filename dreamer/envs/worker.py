"""One environment in its own process, restarted when that process dies."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import traceback
from collections.abc import Callable

import numpy as np

from dreamer.envs.base import Env

log = logging.getLogger(__name__)

# 'spawn': a forked child would inherit torch's threads and locks in an undefined state.
CONTEXT = multiprocessing.get_context("spawn")
# make_env(index + RESTART_SEED_STRIDE * restarts) rebuilds a crashed env: with
# envs.batch.seeded that is seed + 10,000 per restart, clear of a run's other env seeds.
RESTART_SEED_STRIDE = 10_000


def serve(make_env: Callable[[int], Env], index: int, connection) -> None:
    """Child process: build the env, then answer ``(method, args)`` requests until closed,
    or until the parent is gone (killed while it waited for this env, say): then it ends
    without a traceback, as there is no one left to answer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    env = None
    try:
        try:
            env = make_env(index)
        except Exception:
            connection.send(("error", traceback.format_exc()))
            return
        connection.send(("ok", (env.obs_space, env.action_space, env.action_repeat)))
        while True:
            method, args = connection.recv()
            if method == "close":
                break
            try:
                result = getattr(env, method)(*args)
            except Exception:
                connection.send(("error", traceback.format_exc()))
                break
            connection.send(("ok", result))
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass
    finally:
        if env is not None:
            env.close()


class WorkerEnv:
    """An :class:`Env` stepped in a child process; ``send`` then ``receive`` lets several
    step at once.

    If the child dies or its env raises while stepping, the episode in flight is dropped
    with a warning and a fresh child, built with a new seed, answers with the first
    observation of a new episode (``is_first``).  A child that fails again before
    completing a single step after a restart, or fails while being built, raises instead:
    that is a bug, not bad luck.
    """

    def __init__(self, make_env: Callable[[int], Env], index: int):
        self._make_env, self.index = make_env, index
        self.restarts = 0
        self._steps_since_start = 0
        self._start()

    def _start(self) -> None:
        if multiprocessing.get_start_method(allow_none=True) not in (None, *multiprocessing.get_all_start_methods()):
            # A job run by joblib's loky workers (hydra/launcher=joblib) has start method
            # 'loky', which a spawned child tries to set and cannot; ours are plain spawns.
            multiprocessing.set_start_method("spawn", force=True)
        self._connection, child = CONTEXT.Pipe()
        # A restarted env gets a new seed, so it does not replay the episodes it began with.
        index = self.index + RESTART_SEED_STRIDE * self.restarts
        self._process = CONTEXT.Process(target=serve, args=(self._make_env, index, child), daemon=True)
        self._process.start()
        child.close()
        status, payload = self._connection.recv()
        if status == "error":
            self._process.join()
            raise RuntimeError(f"environment {self.index} failed to start in its worker:\n{payload}")
        self.obs_space, self.action_space, self.action_repeat = payload
        self._steps_since_start = 0

    def __getstate__(self):
        raise TypeError("an environment in a worker process cannot be pickled")

    def send(self, method: str, *args) -> None:
        try:
            self._connection.send((method, args))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child is gone; receive() notices and restarts it

    def receive(self) -> dict[str, np.ndarray]:
        try:
            status, payload = self._connection.recv()
        except (EOFError, ConnectionResetError):
            status, payload = "error", f"worker process exited with code {self._process.exitcode}"
        if status == "ok":
            self._steps_since_start += 1
            return payload
        return self._restart(payload)

    def _restart(self, reason: str) -> dict[str, np.ndarray]:
        if self.restarts and self._steps_since_start <= 1:
            raise RuntimeError(f"environment {self.index} failed again right after a restart: {reason}")
        last_line = reason.strip().splitlines()[-1]
        log.warning("environment %d crashed (%s); restarting it and discarding its episode", self.index, last_line)
        self._stop()
        self.restarts += 1
        self._start()
        return self.call("reset")

    def call(self, method: str, *args):
        self.send(method, *args)
        return self.receive()

    def reset(self) -> dict[str, np.ndarray]:
        return self.call("reset")

    def step(self, action: np.ndarray) -> dict[str, np.ndarray]:
        return self.call("step", action)

    def render(self) -> np.ndarray:
        return self.call("render")

    def _stop(self) -> None:
        self._connection.close()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def close(self) -> None:
        if self._process.is_alive():
            self.send("close")
        self._stop()
