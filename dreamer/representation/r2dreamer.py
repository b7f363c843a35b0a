"""R2-Dreamer: Barlow-Twins redundancy reduction between latent and embedding (spec 2)."""

from __future__ import annotations

import torch
from torch import nn

from dreamer.functional import barlow_twins_loss
from dreamer.representation.base import ObjectiveInputs, ObjectiveContext, RepresentationObjective


class BarlowTwinsObjective(RepresentationObjective):
    """``L_BT(P(s_t), sg(e_t))`` with a bias-free linear projector P: F -> E."""

    def __init__(self, context: ObjectiveContext, off_diagonal_weight: float = 5e-4, scale: float = 0.05):
        super().__init__()
        self.projector = nn.Linear(context.feature_size, context.embed_size, bias=False)
        self.off_diagonal_weight = off_diagonal_weight
        self.scales = {"barlow": scale}

    def forward(self, inputs: ObjectiveInputs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        projected = self.projector(inputs.features).flatten(0, 1)  # (N, E)
        target = inputs.embeddings.detach().flatten(0, 1)  # (N, E), sg: no gradient to the encoder
        loss, terms = barlow_twins_loss(projected, target, self.off_diagonal_weight)
        return {"barlow": loss}, {f"barlow_{name}": value.detach() for name, value in terms.items()}
