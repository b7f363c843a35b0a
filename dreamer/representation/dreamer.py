"""DreamerV3 reconstruction: decoders from s_t back to every observation key (spec 2)."""

from __future__ import annotations

import torch
from torch import nn

from dreamer.functional import symlog
from dreamer.networks import MLP, ConvDecoder
from dreamer.representation.base import ObjectiveInputs, ObjectiveContext, RepresentationObjective


def image_mse(prediction: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Squared error summed over pixels; prediction in [0, 1], image uint8 (..., H, W, C) -> (...)."""
    return (prediction.float() - image.float() / 255.0).pow(2).sum((-3, -2, -1))


def vector_mse(prediction: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Squared error in symlog space summed over dimensions (..., D) -> (...)."""
    return (prediction.float() - symlog(vector.float())).pow(2).sum(-1)


class ReconstructionObjective(RepresentationObjective):
    """CNN decoder for image keys, MLP decoder for vector keys; one loss per key."""

    def __init__(self, context: ObjectiveContext, mlp_layers: int | None = None, scale: float = 1.0):
        super().__init__()
        deter = context.deter_size
        self.cnn_keys, self.mlp_keys = list(context.cnn_keys), list(context.mlp_keys)
        self.image_decoder = None
        if self.cnn_keys:
            height, width = context.obs_space[self.cnn_keys[0]][:2]
            self.image_channels = [context.obs_space[key][-1] for key in self.cnn_keys]
            self.image_decoder = ConvDecoder(
                deter, context.feature_size - deter, (height, width, sum(self.image_channels)), context.depth, context.blocks,
                context.cnn_mults, context.cnn_kernel,
            )
        self.vector_decoder = None
        if self.mlp_keys:
            self.vector_sizes = [context.obs_space[key][0] for key in self.mlp_keys]
            layers = mlp_layers if mlp_layers is not None else context.layers
            self.vector_decoder = MLP(context.feature_size, sum(self.vector_sizes), layers, context.units)
        self.scales = {f"recon_{key}": scale for key in self.cnn_keys + self.mlp_keys}

    def decode(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predicted observations (..., shape) per key: images in [0, 1], vectors in symlog space."""
        out = {}
        if self.image_decoder is not None:
            images = self.image_decoder(features).split(self.image_channels, -1)
            out.update(zip(self.cnn_keys, images))
        if self.vector_decoder is not None:
            out.update(zip(self.mlp_keys, self.vector_decoder(features).split(self.vector_sizes, -1)))
        return out

    def forward(self, inputs: ObjectiveInputs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        losses = {}
        for key, prediction in self.decode(inputs.features).items():
            error = image_mse if key in self.cnn_keys else vector_mse
            losses[f"recon_{key}"] = error(prediction, inputs.batch[key])  # (B, T)
        return losses, {}

    @torch.no_grad()
    def report(self, inputs: ObjectiveInputs, context: int = 5) -> dict[str, torch.Tensor]:
        """Truth, model and error rows for each image key (B', 3, T, H, W, C) in [0, 1].

        The first ``context`` frames are reconstructed from posteriors, the rest imagined
        from the prior with the recorded actions.
        """
        posterior = inputs.posterior
        latent = type(posterior)(posterior.deter[:, context - 1], posterior.stoch[:, context - 1])
        imagined = []
        for t in range(context, inputs.batch["action"].shape[1]):
            latent = inputs.prior_step(latent, inputs.batch["action"][:, t])
            imagined.append(latent.features())
        features = torch.cat([inputs.features[:, :context], torch.stack(imagined, 1)], 1)  # (B, T, F)
        decoded = self.decode(features)
        rows = {}
        for key in self.cnn_keys:
            truth = inputs.batch[key].float() / 255.0
            model = decoded[key].clamp(0.0, 1.0)
            rows[key] = torch.stack([truth, model, (model - truth).abs()], 1)
        return rows
