"""InfoNCE: contrastive matching of P(s_t) and sg(e_t) with in-batch negatives (spec 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dreamer.functional import info_nce_loss
from dreamer.representation.base import ObjectiveInputs, ObjectiveContext, RepresentationObjective


class InfoNCEObjective(RepresentationObjective):
    """Dot-product logits by default; ``cosine=true`` normalises both sides first."""

    def __init__(self, context: ObjectiveContext, temperature: float = 1.0, cosine: bool = False, scale: float = 1.0):
        super().__init__()
        self.projector = nn.Linear(context.feature_size, context.embed_size, bias=False)
        self.temperature, self.cosine = temperature, cosine
        self.scales = {"infonce": scale}

    def forward(self, inputs: ObjectiveInputs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        projected = self.projector(inputs.features).flatten(0, 1)  # (N, E)
        target = inputs.embeddings.detach().flatten(0, 1)  # (N, E), sg on the embedding side
        if self.cosine:
            projected, target = F.normalize(projected, dim=-1), F.normalize(target, dim=-1)
        return {"infonce": info_nce_loss(projected, target, self.temperature)}, {}
