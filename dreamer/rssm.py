"""Recurrent state-space model with a block-diagonal GRU (spec 1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dreamer.distributions import straight_through_sample
from dreamer.functional import unimix_probs
from dreamer.networks import MLP, BlockLinear, BlockSharedLinear, NormedLinear, RMSNorm


@dataclass
class Latent:
    """Model state: ``deter`` (..., D) and one-hot ``stoch`` (..., S, K)."""

    deter: torch.Tensor
    stoch: torch.Tensor

    def features(self) -> torch.Tensor:
        """``s = [flatten(z), h]`` (..., F)."""
        return torch.cat([self.stoch.flatten(-2), self.deter], -1)

    def detach(self) -> "Latent":
        return Latent(self.deter.detach(), self.stoch.detach())

    def to(self, device: torch.device | str) -> "Latent":
        return Latent(self.deter.to(device, non_blocking=True), self.stoch.to(device, non_blocking=True))

    def reshape(self, *shape: int) -> "Latent":
        return Latent(self.deter.reshape(*shape, self.deter.shape[-1]), self.stoch.reshape(*shape, *self.stoch.shape[-2:]))


class RSSM(nn.Module):
    """Sequence model ``h_t = f(h_{t-1}, z_{t-1}, a_{t-1})`` with posterior and prior over z."""

    def __init__(
        self,
        embed_size: int,
        action_size: int,
        deter: int,
        hidden: int,
        stoch: int,
        classes: int,
        blocks: int,
        unimix: float = 0.01,
        prior_layers: int = 2,
        posterior_layers: int = 1,
    ):
        super().__init__()
        self.deter_size, self.stoch_size, self.classes, self.blocks = deter, stoch, classes, blocks
        self.unimix = unimix
        self.feature_size = stoch * classes + deter
        self.deter_in = NormedLinear(deter, hidden)
        self.stoch_in = NormedLinear(stoch * classes, hidden)
        self.action_in = NormedLinear(action_size, hidden)
        self.gru_hidden = BlockSharedLinear(deter, 3 * hidden, deter, blocks)  # each block: its deter slice + all inputs
        self.gru_norm = RMSNorm(deter)
        self.gru_gates = BlockLinear(deter, 3 * deter, blocks)
        self.prior_net = MLP(deter, stoch * classes, prior_layers, hidden)
        self.posterior_net = MLP(deter + embed_size, stoch * classes, posterior_layers, hidden)

    def initial(self, batch: int, device: torch.device | str = "cpu") -> Latent:
        return Latent(
            torch.zeros(batch, self.deter_size, device=device),
            torch.zeros(batch, self.stoch_size, self.classes, device=device),
        )

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        return unimix_probs(logits.reshape(*logits.shape[:-1], self.stoch_size, self.classes), self.unimix)

    def sequence_step(self, latent: Latent, action: torch.Tensor) -> torch.Tensor:
        """Next deterministic state (N, D) from the previous latent and action (N, A)."""
        deter = latent.deter
        action = action / action.abs().clamp(min=1.0).detach()
        inputs = torch.cat([self.deter_in(deter), self.stoch_in(latent.stoch.flatten(-2)), self.action_in(action)], -1)
        x = torch.nn.functional.silu(self.gru_norm(self.gru_hidden(deter, inputs)))  # (N, D)
        batch = deter.shape[0]
        gates = self.gru_gates(x).reshape(batch, self.blocks, 3, -1)  # (N, G, 3, D/G)
        reset, candidate, update = (gates[:, :, i].reshape(batch, -1) for i in range(3))
        reset = torch.sigmoid(reset)
        candidate = torch.tanh(reset * candidate)
        update = torch.sigmoid(update - 1.0)
        return update * candidate + (1.0 - update) * deter  # (N, D)

    def prior_probs(self, deter: torch.Tensor) -> torch.Tensor:
        return self._probs(self.prior_net(deter))  # (..., S, K)

    def img_step(self, latent: Latent, action: torch.Tensor) -> Latent:
        """Imagine one step with the prior."""
        deter = self.sequence_step(latent, action)
        stoch = straight_through_sample(self.prior_probs(deter))
        return Latent(deter, stoch)

    def obs_step(
        self, latent: Latent, action: torch.Tensor, embedding: torch.Tensor, is_first: torch.Tensor
    ) -> tuple[Latent, torch.Tensor]:
        """One posterior step; ``is_first`` (N,) zeroes state and action first.

        Returns the posterior latent and the posterior probabilities (N, S, K).
        """
        keep = (~is_first.bool()).float().unsqueeze(-1)  # (N, 1)
        latent = Latent(latent.deter * keep, latent.stoch * keep.unsqueeze(-1))
        deter = self.sequence_step(latent, action * keep)
        probs = self._probs(self.posterior_net(torch.cat([deter, embedding], -1)))
        return Latent(deter, straight_through_sample(probs)), probs

    def observe(
        self,
        start: Latent,
        actions: torch.Tensor,
        embeddings: torch.Tensor,
        is_first: torch.Tensor,
        posterior_step: Callable | None = None,
    ) -> tuple[Latent, torch.Tensor]:
        """Posterior rollout over a (B, T) sequence.

        ``actions[:, t]`` is the action that led to observation t.  ``posterior_step`` is
        called once per step: :meth:`obs_step` by default, a compiled version of it when the
        agent runs compiled (``dreamer.accelerate``).  Returns stacked posterior latents
        (B, T, ...) and posterior probabilities (B, T, S, K).
        """
        posterior_step = posterior_step or self.obs_step
        latent = start
        deters, stochs, probs = [], [], []
        for t in range(actions.shape[1]):
            latent, step_probs = posterior_step(latent, actions[:, t], embeddings[:, t], is_first[:, t])
            deters.append(latent.deter)
            stochs.append(latent.stoch)
            probs.append(step_probs)
        return Latent(torch.stack(deters, 1), torch.stack(stochs, 1)), torch.stack(probs, 1)
