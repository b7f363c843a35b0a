"""The interface every representation objective implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from dreamer.rssm import Latent
    from dreamer.world_model import WorldModel


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective needs to know to build its own modules."""

    feature_size: int  # F = S*K + D
    embed_size: int  # E
    obs_space: dict[str, tuple[int, ...]]
    cnn_keys: tuple[str, ...]
    mlp_keys: tuple[str, ...]
    model: dict = field(default_factory=dict)  # sizes of the world model (depth, units, blocks, ...)
    encoder: nn.Module | None = None  # the online encoder, for objectives that keep an EMA copy


@dataclass
class ObjectiveInputs:
    """What the world model hands to the objective on every update."""

    batch: dict[str, torch.Tensor]  # observations (B, T, ...)
    embeddings: torch.Tensor  # (B, T, E), with gradient to the encoder
    features: torch.Tensor  # (B, T, F), posterior features with gradient
    posterior: "Latent"  # (B, T, ...)
    start: "Latent"  # (B, ...) state the posterior rollout started from
    world_model: "WorldModel"


class RepresentationObjective(nn.Module):
    """Owns its modules and hyperparameters; returns named, unscaled losses.

    ``scales`` maps each returned loss name to its weight in the world-model loss.
    Losses are per-sample (B, T) tensors or scalars; the world model averages them.
    """

    scales: dict[str, float]

    def prepare(self, batch: dict[str, torch.Tensor], start: "Latent") -> tuple[dict[str, torch.Tensor], "Latent"]:
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

    def after_update(self, applied: torch.Tensor | None = None) -> None:
        """Hook run after each optimiser step (EMA targets, prototype normalisation).

        ``applied``: 0-dim 1.0, or 0.0 when the step was withheld (then change nothing);
        read it on the device, never on the host.  None counts as applied.
        """
