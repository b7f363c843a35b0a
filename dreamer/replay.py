"""Replay buffer of per-environment streams that also stores the agent's latent
states and refreshes them after each update (spec 4)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dreamer.rssm import Latent


class Replay:
    """Ring buffer of ``capacity`` steps split evenly over ``num_envs`` streams.

    ``add`` stores one step of every environment: the observation, the action that led
    to it, and the posterior latent the agent computed from it.  ``sample`` returns
    (B, T) sequences and the stored latent of the step before each sequence, from which
    the world model starts its posterior rollout.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        spaces: dict[str, tuple[tuple[int, ...], torch.dtype]],
        deter: int,
        stoch: int,
        classes: int,
        seed: int = 0,
    ):
        self.length = max(2, capacity // num_envs)  # steps kept per environment
        self.num_envs = num_envs
        self.classes = classes
        # Uninitialised: only rows below ``count`` are ever read, and the operating system
        # commits the memory as rows are written (a 500k-step pixel replay is 6 GiB).
        self.data = {key: torch.empty(self.length, num_envs, *shape, dtype=dtype) for key, (shape, dtype) in spaces.items()}
        self.deter = torch.empty(self.length, num_envs, deter)  # (L, n, D)
        self.stoch = torch.empty(self.length, num_envs, stoch, dtype=torch.uint8 if classes <= 256 else torch.int16)
        self.position = 0  # next row to write
        self.count = 0  # rows filled
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.count * self.num_envs

    def add(self, step: dict[str, np.ndarray], latent: Latent) -> None:
        """Store one step (num_envs, ...) of every key and the latent (num_envs, ...)."""
        for key, buffer in self.data.items():
            buffer[self.position] = torch.as_tensor(step[key])
        self.deter[self.position] = latent.deter.detach().cpu()
        self.stoch[self.position] = latent.stoch.argmax(-1).cpu().to(self.stoch.dtype)
        self.position = (self.position + 1) % self.length
        self.count = min(self.count + 1, self.length)

    def can_sample(self, length: int) -> bool:
        return self.count >= length + 1

    def sample(
        self, batch: int, length: int, device: torch.device | str = "cpu"
    ) -> tuple[dict[str, torch.Tensor], Latent, tuple[torch.Tensor, torch.Tensor]]:
        """(B, T) sequences and their start latents (B, ...) on ``device``, and the
        (rows, envs) indices for :meth:`update_latents`."""
        if not self.can_sample(length):
            raise ValueError(f"replay holds {self.count} steps per env, needs {length + 1} to sample length {length}")
        oldest = self.position - self.count
        offsets = self.rng.integers(1, self.count - length + 1, size=batch)  # first step of each sequence
        envs = torch.as_tensor(self.rng.integers(0, self.num_envs, size=batch))
        rows = (torch.as_tensor(oldest + offsets - 1)[:, None] + torch.arange(length + 1)) % self.length  # (B, T+1)
        env_index = envs[:, None].expand_as(rows)
        sequence = {
            key: buffer[rows[:, 1:], env_index[:, 1:]].to(device, non_blocking=True) for key, buffer in self.data.items()
        }
        start = Latent(
            self.deter[rows[:, 0], envs],
            F.one_hot(self.stoch[rows[:, 0], envs].long(), self.classes).float(),
        ).to(device)
        return sequence, start, (rows[:, 1:], env_index[:, 1:])

    def update_latents(self, indices: tuple[torch.Tensor, torch.Tensor], posterior: Latent) -> None:
        """Overwrite the stored latents of sampled steps with fresh posteriors (B, T, ...)."""
        rows, envs = indices
        self.deter[rows, envs] = posterior.deter.detach().float().cpu()
        self.stoch[rows, envs] = posterior.stoch.detach().argmax(-1).cpu().to(self.stoch.dtype)

    def state_dict(self) -> dict:
        """The filled rows only (rows fill from 0 until the buffer wraps)."""
        filled = slice(0, self.count)
        return {
            "data": {key: buffer[filled].clone() for key, buffer in self.data.items()},
            "deter": self.deter[filled].clone(),
            "stoch": self.stoch[filled].clone(),
            "position": self.position,
            "count": self.count,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        count = state["count"]
        streams = {value.shape[1] for value in state["data"].values()}
        if streams != {self.num_envs}:
            raise ValueError(f"saved replay has {sorted(streams)[0]} environment streams, this one env_num={self.num_envs}")
        if count > self.length or set(state["data"]) != set(self.data):
            raise ValueError(
                f"saved replay ({count} rows, keys {sorted(state['data'])}) does not fit this replay "
                f"({self.length} rows, keys {sorted(self.data)})"
            )
        for key, buffer in self.data.items():
            buffer[:count] = state["data"][key]
        self.deter[:count] = state["deter"]
        self.stoch[:count] = state["stoch"]
        self.position, self.count = state["position"], count
        self.rng.bit_generator.state = state["rng"]
