"""Scoring the actor's mode: one episode per environment of a batch, used by the training
loop and by ``python -m dreamer.evaluate``."""

from __future__ import annotations

import numpy as np
import torch

from dreamer.envs import EnvBatch
from dreamer.envs.base import pop_log_keys


@torch.no_grad()
def evaluate(agent, envs: EnvBatch, record: bool = False) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """One episode in every environment of ``envs`` with the actor's mode.

    Returns per-episode ``return`` and ``length`` and, for each ``log_<name>`` the envs
    report (Meta-World's success, Crafter's achievements), its maximum over the episode as
    ``<name>``, each (episodes,); and with ``record`` the frames (H, W, 3) of the first
    environment's episode (its ``image`` observation, or its rendering).
    """
    obs = envs.reset()
    logs = pop_log_keys(obs)
    latent = agent.initial_state(len(envs))
    action = np.zeros((len(envs), envs.action_space.size), np.float32)
    results = {"return": np.zeros(len(envs)), "length": np.zeros(len(envs), int),
               **{name: values.astype(np.float64) for name, values in logs.items()}}
    frames = [first_frame(envs, obs)] if record else []
    done = np.zeros(len(envs), bool)
    while not done.all():
        action, latent = agent.act({**obs, "action": action}, latent, explore=False)
        obs = envs.step(action)
        for name, values in pop_log_keys(obs).items():
            results[name] = np.where(done, results[name], np.maximum(results[name], values))
        results["return"] += np.where(done, 0.0, obs["reward"])
        results["length"] += ~done
        if record and not done[0]:
            frames.append(first_frame(envs, obs))
        done |= obs["is_last"]
    return results, frames


def first_frame(envs: EnvBatch, obs: dict[str, np.ndarray]) -> np.ndarray:
    return obs["image"][0] if "image" in obs else envs.envs[0].render()
