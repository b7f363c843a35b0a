"""What the world model expects a push to earn: its predicted reward for one imagined step
with each of several actions, from the states a checkpoint's policy visits.

    MUJOCO_GL=egl python experiments/reward_by_action.py <run dir or checkpoint.pt> [policy steps]

Runs the actor's mode in the checkpoint's environment (seed 12345) for ``policy steps``
steps (default 60); from each posterior state after the first 20 it imagines one step with
the first action dimension set to each of -1, -0.8, ..., 1 (the others 0), 32 prior samples
each (the same random numbers for every action), and prints the mean predicted reward per
action and its difference from action 0. For DMC cartpole the true reward falls by about
``0.4 a**2`` per policy step (action repeat 2, the force term of its reward), so a flat row
means the model does not see the force.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from dreamer.envs import EnvBatch
from dreamer.evaluate import load
from dreamer.rssm import Latent
from dreamer.setup import seed_everything

ACTIONS = torch.linspace(-1, 1, 11)


def predicted_rewards(world_model, latent: Latent, actions: torch.Tensor, action_size: int,
                      samples: int = 32, seed: int = 0) -> np.ndarray:
    """Mean predicted reward of one prior step from ``latent`` (batch 1) with the first action
    dimension set to each of ``actions`` and the others 0, (len(actions),).  Every action
    draws its ``samples`` prior samples from the same random numbers, so two actions the
    model cannot tell apart get exactly the same prediction."""
    start = Latent(latent.deter.expand(samples, -1), latent.stoch.expand(samples, -1, -1))
    means = []
    for value in actions.tolist():
        action = torch.zeros(samples, action_size)
        action[:, 0] = value
        torch.manual_seed(seed)
        step = world_model.rssm.img_step(start, action)
        means.append(world_model.reward(step.features()).mean().mean().item())
    return np.array(means)


def main(path: str, steps: int = 60, skip: int = 20) -> None:
    torch.set_grad_enabled(False)
    agent, make_env, step, checkpoint = load(Path(path), torch.device("cpu"))
    seed_everything(12345)
    envs = EnvBatch(lambda _: make_env(seed=12345), 1)
    size = envs.action_space.size
    obs, latent = envs.reset(), agent.initial_state(1)
    action = np.zeros((1, size), np.float32)
    rows, taken = [], []
    try:
        for index in range(steps):
            action, latent = agent.act({**obs, "action": action}, latent, explore=False)
            taken.append(float(action[0, 0]))
            if index >= skip:
                rows.append(predicted_rewards(agent.world_model, latent, ACTIONS, size))
            obs = envs.step(action)
    finally:
        envs.close()
    table = np.array(rows)
    print(f"{checkpoint} at step {step}: {len(rows)} states; the mode's first action: "
          f"mean |a| {np.mean(np.abs(taken)):.3f}, mean a^2 {np.mean(np.square(taken)):.3f}")
    print("action            " + " ".join(f"{a:6.2f}" for a in ACTIONS.tolist()))
    print("predicted reward  " + " ".join(f"{r:6.3f}" for r in table.mean(0)))
    print("minus action 0    " + " ".join(f"{r:6.3f}" for r in (table - table[:, 5:6]).mean(0)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a run directory or checkpoint.pt")
    parser.add_argument("steps", nargs="?", type=int, default=60, help="policy steps to run (the first 20 are skipped)")
    args = parser.parse_args()
    if args.steps <= 20:
        parser.error(f"steps={args.steps}: give more than 20 (the first 20 are skipped)")
    main(args.path, args.steps)
