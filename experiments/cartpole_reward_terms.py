"""Where a DMC cartpole agent's return goes: the four factors of the task's dense reward.

    MUJOCO_GL=egl python experiments/cartpole_reward_terms.py <run dir or checkpoint.pt> [episodes] [--action-scale K]

dm_control's cartpole reward at each control step is the product of four terms in [0, 1]
(``cartpole.Balance._get_reward``): upright ((cos angle + 1) / 2), centered ((1 + tolerance of
the cart position, margin 2) / 2), small_control ((4 + quadratic tolerance of the force, margin
1) / 5) and small_velocity ((1 + tolerance of the pole's angular velocity, margin 5) / 2).  The
script runs the actor's mode (as the run's evaluations do) for ``episodes`` episodes, seeds
12345 on, reads the terms after each policy step (the last control step of its action repeat)
and prints each term's mean and the return it costs: the sum over the episode of
``(1 - term) * product of the other three``, times the action repeat.

``--action-scale K`` multiplies every action of the mode by K before the environment (and the
agent's own next step) sees it: whether a gentler version of the same policy still balances the
pole, and what it then scores.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from dm_control.utils import rewards

from dreamer.envs import EnvBatch
from dreamer.evaluate import load
from dreamer.setup import seed_everything

TERMS = ("upright", "centered", "small_control", "small_velocity")


def reward_terms(physics) -> np.ndarray:
    """The four factors of cartpole's dense reward in the physics' current state, (4,)."""
    upright = (physics.pole_angle_cosine().mean() + 1) / 2
    centered = (1 + rewards.tolerance(physics.cart_position(), margin=2)) / 2
    force = rewards.tolerance(physics.control(), margin=1, value_at_margin=0, sigmoid="quadratic")[0]
    small_velocity = (1 + rewards.tolerance(physics.angular_vel(), margin=5).min()) / 2
    return np.array([upright, centered, (4 + force) / 5, small_velocity])


def episode(agent, envs: EnvBatch, action_scale: float = 1.0) -> tuple[float, np.ndarray]:
    """The return of one episode of the actor's mode, its actions times ``action_scale``, and its
    terms after each policy step, (T, 4)."""
    obs = envs.reset()
    latent = agent.initial_state(1)
    action = np.zeros((1, envs.action_space.size), np.float32)
    total, terms = 0.0, []
    while not obs["is_last"][0]:
        action, latent = agent.act({**obs, "action": action}, latent, explore=False)
        action = action * np.float32(action_scale)
        obs = envs.step(action)
        total += float(obs["reward"][0])
        terms.append(reward_terms(envs.envs[0].physics))
    return total, np.array(terms)


def main(path: str, episodes: int = 5, action_scale: float = 1.0) -> None:
    torch.set_grad_enabled(False)
    agent, make_env, step, checkpoint = load(Path(path), torch.device("cpu"))
    scaled = "" if action_scale == 1.0 else f", actions times {action_scale:g}"
    print(f"{checkpoint} at step {step}, {episodes} episodes of the actor's mode{scaled}")
    seed_everything(12345)
    returns, costs, means = [], [], []
    for index in range(episodes):
        envs = EnvBatch(lambda _, seed=12345 + index: make_env(seed=seed), 1)
        try:
            total, terms = episode(agent, envs, action_scale)
            repeat = envs.action_repeat
        finally:
            envs.close()
        product = terms.prod(axis=1, keepdims=True)  # (T, 1)
        others = np.divide(product, terms, out=np.zeros_like(terms), where=terms > 0)  # (T, 4)
        returns.append(total)
        costs.append(repeat * ((1 - terms) * others).sum(axis=0))
        means.append(terms.mean(axis=0))
        print(f"episode {index}: return {total:.1f}, sampled estimate {repeat * product.sum():.1f}")
    print(f"return {np.mean(returns):.1f} (of 1000)")
    for name, mean, cost in zip(TERMS, np.mean(means, axis=0), np.mean(costs, axis=0)):
        print(f"{name:15s} mean {mean:.4f}  costs {cost:6.1f} return")


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a run directory or checkpoint.pt")
    parser.add_argument("episodes", nargs="?", type=int, default=5)
    parser.add_argument("--action-scale", type=positive, default=1.0, help="multiply the mode's actions by this")
    args = parser.parse_args()
    main(args.path, args.episodes, args.action_scale)
