"""The interface every representation objective implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dreamer.rssm import Latent


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective needs to know to build its own modules."""

    feature_size: int  # F = S*K + D
    embed_size: int  # E
    deter_size: int  # D
    obs_space: dict[str, tuple[int, ...]]
    cnn_keys: tuple[str, ...]
    mlp_keys: tuple[str, ...]
    depth: int  # CNN channel unit
    units: int  # MLP width
    layers: int  # MLP depth of the encoder
    blocks: int  # GRU blocks
    cnn_mults: Sequence[int]  # CNN stages
    encoder: nn.Module  # the online encoder (owned by the world model)
    cnn_kernel: int = 5  # CNN kernel size


@dataclass
class ObjectiveInputs:
    """What the world model hands to the objective on every update."""

    batch: dict[str, torch.Tensor]  # observations (B, T, ...)
    embeddings: torch.Tensor  # (B, T, E), with gradient to the encoder
    features: torch.Tensor  # (B, T, F), posterior features with gradient
    posterior: Latent  # (B, T, ...)
    start: Latent  # (B, ...) state the posterior rollout started from
    prior_step: Callable[[Latent, torch.Tensor], Latent]  # one imagined step, for reports


class RepresentationObjective(nn.Module):
    """Owns its modules and hyperparameters; returns named, unscaled losses.

    ``scales`` maps each returned loss name to its weight in the world-model loss.
    Losses are per-sample (B, T) tensors or scalars; the world model averages them.
    """

    scales: dict[str, float]

    def prepare(self, batch: dict[str, torch.Tensor], start: Latent) -> tuple[dict[str, torch.Tensor], Latent]:
        """Transform the replay batch before the encoder (augmentation, duplicated views).

        May grow the batch axis; the world model keeps the first B sequences for the
        actor-critic and the replay.  Default: unchanged.
        """
        return batch, start

    def forward(self, inputs: ObjectiveInputs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        raise NotImplementedError

    def report(self, inputs: ObjectiveInputs) -> dict[str, torch.Tensor]:
        """Optional visual report: image grids (rows, T, H, W, C) in [0, 1] per key."""
        return {}

    def after_update(self) -> None:
        """Hook run after each optimiser step (EMA targets, prototype normalisation).

        When the step was withheld the agent restores this module's buffers, frozen
        parameters and the tensors ``updated_in_place`` lists, so the hook never checks.
        """

    def updated_in_place(self) -> list[torch.Tensor]:
        """Trainable tensors that ``after_update`` changes besides the optimiser."""
        return []
