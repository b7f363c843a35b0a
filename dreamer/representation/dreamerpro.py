"""DreamerPro: prototypes with Sinkhorn-Knopp targets from an EMA encoder on two
augmented views of the batch (spec 2)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from dreamer.functional import ema_update_, random_shift, sinkhorn
from dreamer.representation.base import ObjectiveContext, ObjectiveInputs, RepresentationObjective
from dreamer.rssm import Latent


class PrototypeObjective(RepresentationObjective):
    """SwAV-style swapped prediction between views plus a temporal prototype loss."""

    def __init__(
        self,
        context: ObjectiveContext,
        prototypes: int = 2500,
        projection: int = 32,
        shift: int = 3,
        ema_fraction: float = 0.05,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        temperature: float = 0.1,
        warm_up: int = 1,
        freeze_prototypes: int = 10000,
        scales: dict[str, float] | None = None,
    ):
        super().__init__()
        self.cnn_keys = list(context.cnn_keys)
        # The online encoder is the world model's: held in a tuple, not registered as a
        # submodule here, so checkpoints and parameter lists hold it once.
        self.online_encoder = (context.encoder,)
        self.target_encoder = copy.deepcopy(context.encoder).requires_grad_(False)
        self.obs_projector = nn.Linear(context.embed_size, projection)
        self.target_projector = copy.deepcopy(self.obs_projector).requires_grad_(False)
        self.feature_projector = nn.Linear(context.feature_size, projection)
        self.prototypes = nn.Parameter(F.normalize(torch.randn(prototypes, projection), dim=-1))
        self.shift, self.ema_fraction = shift, ema_fraction
        self.sinkhorn_epsilon, self.sinkhorn_iterations = sinkhorn_epsilon, sinkhorn_iterations
        self.temperature, self.warm_up, self.freeze_prototypes = temperature, warm_up, freeze_prototypes
        self.scales = {"swav": 1.0, "temp": 1.0, "norm": 1.0, **(scales or {})}
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # applied updates

    def _modules_for_ema(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        target = list(self.target_encoder.parameters()) + list(self.target_projector.parameters())
        online = list(self.online_encoder[0].parameters()) + list(self.obs_projector.parameters())
        return target, online

    def prepare(self, batch: dict[str, torch.Tensor], start: Latent) -> tuple[dict[str, torch.Tensor], Latent]:
        """Two views: the batch twice (2B), each sequence shifted by its own random offset."""
        doubled = {key: torch.cat([value, value]) for key, value in batch.items()}
        for key in self.cnn_keys:
            doubled[key] = random_shift(doubled[key], self.shift)
        return doubled, Latent(torch.cat([start.deter, start.deter]), torch.cat([start.stoch, start.stoch]))

    def _assign(self, log_scores: torch.Tensor) -> torch.Tensor:
        """Sinkhorn targets (V, N, P) computed separately for each view."""
        return torch.stack([sinkhorn(view, self.sinkhorn_epsilon, self.sinkhorn_iterations) for view in log_scores])

    def forward(self, inputs: ObjectiveInputs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        views = 2
        # Frozen for the first updates: the gradient is zeroed on the device (the host never
        # reads the count), which leaves the optimiser's zero moments and the prototypes as they are.
        thawed = self.updates >= self.freeze_prototypes
        prototypes = torch.where(thawed, self.prototypes, self.prototypes.detach())
        start = self.warm_up

        with torch.no_grad():
            target_embedding = self.target_encoder(inputs.batch)  # (2B, T, E)
            target = F.normalize(self.target_projector(target_embedding), dim=-1)[:, start:]  # (2B, T', P_dim)
            target_scores = target @ self.prototypes.T  # (2B, T', P)
            targets = self._assign(target_scores.reshape(views, -1, target_scores.shape[-1]))  # (2, N, P)

        observation = self.obs_projector(inputs.embeddings)[:, start:]  # (2B, T', P_dim)
        observation_logits = F.normalize(observation, dim=-1) @ prototypes.T / self.temperature
        observation_log_probs = F.log_softmax(observation_logits, -1).reshape(views, -1, prototypes.shape[0])
        swapped = targets.flip(0)  # view 1 predicts view 2's assignment and vice versa
        swav = -(swapped * observation_log_probs).sum(-1).mean()

        latent = self.feature_projector(inputs.features)[:, start:]  # (2B, T', P_dim)
        latent_logits = F.normalize(latent, dim=-1) @ prototypes.T / self.temperature
        latent_log_probs = F.log_softmax(latent_logits, -1).reshape(views, -1, prototypes.shape[0])
        temporal = -(targets * latent_log_probs).sum(-1).mean()

        norm = (observation.norm(dim=-1) - 1.0).pow(2).mean() + (latent.norm(dim=-1) - 1.0).pow(2).mean()
        return {"swav": swav, "temp": temporal, "norm": norm}, {}

    @torch.no_grad()
    def after_update(self) -> None:
        target, online = self._modules_for_ema()
        fraction = torch.where(self.updates == 0, 1.0, self.ema_fraction)  # the first update copies
        ema_update_(target, online, fraction)
        self.prototypes.copy_(F.normalize(self.prototypes, dim=-1))
        self.updates += 1

    def updated_in_place(self) -> list[torch.Tensor]:
        return [self.prototypes]
