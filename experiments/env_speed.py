"""Environment steps per second of each benchmark suite on this machine.

Random actions through the project's wrappers, one env in this process; "steps" are
environment steps with action repeat included (what ``steps=`` counts), and policy steps
are shown too.  Usage: ``python experiments/env_speed.py [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np

from dreamer.envs.atari import AtariEnv
from dreamer.envs.batch import EnvBatch, seeded
from dreamer.envs.crafter import CrafterEnv
from dreamer.envs.dmc import DMCEnv
from dreamer.envs.dmc_subtle import DMCSubtleEnv
from dreamer.envs.metaworld import MetaWorldEnv

# label: (constructor, kwargs); each suite's default action repeat and time limit.
CASES = {
    "dmc_vision walker_walk (pixels)": (DMCEnv, dict(task="walker_walk", obs="pixels")),
    "dmc_proprio walker_walk (state, no rendering)": (DMCEnv, dict(task="walker_walk", obs="state")),
    "dmc_subtle ball_in_cup_catch (pixels)": (DMCSubtleEnv, dict(task="ball_in_cup_catch")),
    "metaworld reach-v3 (pixels)": (MetaWorldEnv, dict(task="reach-v3", obs="pixels")),
    "metaworld reach-v3 (state, no rendering)": (MetaWorldEnv, dict(task="reach-v3", obs="state")),
    "atari100k pong": (AtariEnv, dict(task="pong")),
    "crafter reward": (CrafterEnv, dict()),
}


def measure(env, seconds: float, rng: np.random.Generator) -> tuple[float, int]:
    """Policy steps per second over ``seconds`` of stepping (episode resets included)."""
    env.reset()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if env.action_space.discrete:
            action = np.eye(env.action_space.size, dtype=np.float32)[rng.integers(env.action_space.size)]
        else:
            action = rng.uniform(-1, 1, env.action_space.size).astype(np.float32)
        env.step(action)
        steps += 1
    return steps / (time.perf_counter() - start), steps


def measure_batch(constructor, kwargs: dict, count: int, workers: bool, seconds: float) -> float:
    """Policy steps per second summed over ``count`` envs stepped as one :class:`EnvBatch`."""
    batch = EnvBatch(partial(seeded, partial(constructor, **kwargs), 0), count, workers)
    batch.reset()
    actions = np.zeros((count, batch.action_space.size), np.float32)
    actions[:, 0] = 1.0
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch.step(actions)
        steps += count
    rate = steps / (time.perf_counter() - start)
    batch.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="stepping time per suite")
    parser.add_argument("--batch", type=int, default=4, help="envs per batch for the worker comparison (0: skip)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"| suite | action repeat | policy steps/s | env steps/s |\n|---|---|---|---|")
    for label, (constructor, kwargs) in CASES.items():
        env = constructor(seed=0, **kwargs)
        policy_rate, _ = measure(env, args.seconds, rng)
        repeat = env._repeat
        env.close()
        print(f"| {label} | {repeat} | {policy_rate:.0f} | {policy_rate * repeat:.0f} |", flush=True)
    if args.batch:
        print(f"\n| {args.batch} envs, policy steps/s | in process | worker processes |\n|---|---|---|")
        for label in ("dmc_vision walker_walk (pixels)", "crafter reward"):
            constructor, kwargs = CASES[label]
            rates = [measure_batch(constructor, kwargs, args.batch, workers, args.seconds) for workers in (False, True)]
            print(f"| {label} | {rates[0]:.0f} | {rates[1]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
