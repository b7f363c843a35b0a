"""DreamerV3 world model: encoder, RSSM, reward and continue heads, and a
pluggable representation objective (spec 1 and 2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from dreamer.distributions import Bernoulli, TwoHot
from dreamer.functional import kl_balance, twohot_bins
from dreamer.networks import MLP, MultiEncoder
from dreamer.representation.base import ObjectiveInputs, ObjectiveContext, RepresentationObjective
from dreamer.rssm import RSSM, Latent

if TYPE_CHECKING:
    from dreamer.accelerate import StepFunctions


class WorldModel(nn.Module):
    """Learns ``q(z_t | h_t, e_t)``, ``p(z_t | h_t)``, rewards and continues from replay."""

    def __init__(
        self,
        obs_space: dict[str, tuple[int, ...]],
        action_size: int,
        representation: Callable[[ObjectiveContext], RepresentationObjective],
        cnn_keys: Sequence[str],
        mlp_keys: Sequence[str],
        deter: int,
        hidden: int,
        stoch: int,
        classes: int,
        blocks: int,
        depth: int,
        units: int,
        cnn_mults: Sequence[int],
        cnn_kernel: int = 5,
        encoder_layers: int = 3,
        head_layers: int = 1,
        unimix: float = 0.01,
        kl_free: float = 1.0,
        bins: int = 255,
        loss_scales: dict[str, float] | None = None,
    ):
        super().__init__()
        self.encoder = MultiEncoder(obs_space, cnn_keys, mlp_keys, depth, encoder_layers, units, cnn_mults, cnn_kernel)
        self.rssm = RSSM(self.encoder.out_size, action_size, deter, hidden, stoch, classes, blocks, unimix)
        feature_size = self.rssm.feature_size
        self.reward_head = MLP(feature_size, bins, head_layers, units, out_scale=0.0)
        self.continue_head = MLP(feature_size, 1, head_layers, units)
        self.register_buffer("bins", twohot_bins(bins), persistent=False)
        self.kl_free = kl_free
        self.loss_scales = {"dyn": 1.0, "rep": 0.1, "reward": 1.0, "cont": 1.0, **(loss_scales or {})}
        context = ObjectiveContext(
            feature_size=feature_size,
            embed_size=self.encoder.out_size,
            deter_size=deter,
            obs_space=dict(obs_space),
            cnn_keys=tuple(cnn_keys),
            mlp_keys=tuple(mlp_keys),
            depth=depth,
            units=units,
            layers=encoder_layers,
            blocks=blocks,
            cnn_mults=tuple(cnn_mults),
            cnn_kernel=cnn_kernel,
            encoder=self.encoder,
        )
        self.objective = representation(context)
        self.loss_scales.update(self.objective.scales)

    def reward(self, features: torch.Tensor) -> TwoHot:
        return TwoHot(self.reward_head(features), self.bins)

    def continues(self, features: torch.Tensor) -> Bernoulli:
        return Bernoulli(self.continue_head(features))

    def loss(
        self, batch: dict[str, torch.Tensor], start: Latent, steps: StepFunctions | None = None
    ) -> tuple[dict[str, torch.Tensor], Latent, dict[str, torch.Tensor]]:
        """Unscaled mean losses, the posterior latents (B, T, ...) and metrics.

        ``steps``: the per-step functions to loop over (default: the RSSM's own methods).
        """
        batch_size = batch["reward"].shape[0]
        batch, start = self.objective.prepare(batch, start)  # may add views: (B', T, ...)
        inputs, posterior_probs = self.observe(batch, start, steps)
        posterior, features = inputs.posterior, inputs.features
        prior_probs = self.rssm.prior_probs(posterior.deter)  # (B, T, S, K)
        dyn, rep = kl_balance(posterior_probs, prior_probs, self.kl_free)  # (B, T) each
        losses = {
            "dyn": dyn.mean(),
            "rep": rep.mean(),
            "reward": self.reward(features).nll(batch["reward"]).mean(),
            "cont": self.continues(features).nll(1.0 - batch["is_terminal"].float()).mean(),
        }
        objective_losses, metrics = self.objective(inputs)
        losses.update({name: value.mean() for name, value in objective_losses.items()})
        with torch.no_grad():
            metrics["posterior_entropy"] = -(posterior_probs * posterior_probs.log()).sum((-2, -1)).mean()
            metrics["prior_entropy"] = -(prior_probs * prior_probs.log()).sum((-2, -1)).mean()
        first_view = Latent(posterior.deter[:batch_size], posterior.stoch[:batch_size])
        return losses, first_view, metrics

    def observe(
        self, batch: dict[str, torch.Tensor], start: Latent, steps: StepFunctions | None = None
    ) -> tuple[ObjectiveInputs, torch.Tensor]:
        """Encode a (B, T) batch and roll the posterior; also returns its probs (B, T, S, K)."""
        embeddings = self.encoder(batch)  # (B, T, E)
        posterior_step, prior_step = (steps.posterior, steps.prior) if steps else (self.rssm.obs_step, self.rssm.img_step)
        posterior, posterior_probs = self.rssm.observe(start, batch["action"], embeddings, batch["is_first"], posterior_step)
        inputs = ObjectiveInputs(batch, embeddings, posterior.features(), posterior, start, prior_step)
        return inputs, posterior_probs
