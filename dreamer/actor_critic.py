"""Actor-critic trained in imagination, with a replay-value loss (spec 3)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dreamer.accelerate import StepFunctions, eager_steps
from dreamer.distributions import BoundedNormal, OneHotCategorical, TwoHot
from dreamer.functional import ema_update_, lambda_returns, percentile_range, replay_lambda_returns, twohot_bins
from dreamer.networks import MLP, autocast_input
from dreamer.rssm import Latent
from dreamer.world_model import WorldModel


class ReturnNormalizer(nn.Module):
    """EMA of the 5th and 95th return percentiles; ``scale = max(1, p95 - p5)`` (spec 3)."""

    def __init__(self, rate: float = 0.01, low: float = 0.05, high: float = 0.95, limit: float = 1.0):
        super().__init__()
        self.rate, self.low, self.high, self.limit = rate, low, high, limit
        self.register_buffer("low_value", torch.zeros(()))
        self.register_buffer("high_value", torch.zeros(()))

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> None:
        low, high = percentile_range(returns, self.low, self.high)
        self.low_value.lerp_(low, self.rate)
        self.high_value.lerp_(high, self.rate)

    def scale(self) -> torch.Tensor:
        return (self.high_value - self.low_value).clamp(min=self.limit)


class ActorCritic(nn.Module):
    """Actor and two-hot critic on model features; a slow critic regularises the critic."""

    def __init__(
        self,
        feature_size: int,
        action_size: int,
        discrete: bool,
        layers: int = 3,
        units: int = 256,
        horizon: int = 15,
        discount_horizon: float = 333.0,
        lam: float = 0.95,
        entropy: float = 3e-4,
        unimix: float = 0.01,
        min_std: float = 0.1,
        max_std: float = 1.0,
        slow_fraction: float = 0.02,
        slow_regularizer: float = 1.0,
        bins: int = 255,
        return_rate: float = 0.01,
        loss_scales: dict[str, float] | None = None,
    ):
        super().__init__()
        self.discrete = discrete
        self.horizon, self.lam, self.entropy_scale = horizon, lam, entropy
        self.discount = 1.0 - 1.0 / discount_horizon
        self.unimix, self.min_std, self.max_std = unimix, min_std, max_std
        self.slow_fraction, self.slow_regularizer = slow_fraction, slow_regularizer
        self.actor = MLP(feature_size, action_size * (1 if discrete else 2), layers, units, out_scale=0.01)
        self.critic = MLP(feature_size, bins, layers, units, out_scale=0.0)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("bins", twohot_bins(bins), persistent=False)
        self.return_normalizer = ReturnNormalizer(return_rate)
        self.loss_scales = {"actor": 1.0, "critic": 1.0, "repval": 0.3, **(loss_scales or {})}

    def policy(self, features: torch.Tensor) -> OneHotCategorical | BoundedNormal:
        raw = self.actor(features)
        if self.discrete:
            return OneHotCategorical(raw, self.unimix)
        return BoundedNormal(raw, self.min_std, self.max_std)

    def sample_action(self, features: torch.Tensor) -> torch.Tensor:
        """An action sampled from the policy at ``features``: imagination's per-step actor."""
        return self.policy(features).sample()

    def value(self, features: torch.Tensor, slow: bool = False) -> TwoHot:
        return TwoHot((self.slow_critic if slow else self.critic)(features), self.bins)

    @torch.no_grad()
    def imagine(self, start: Latent, steps: StepFunctions) -> tuple[torch.Tensor, torch.Tensor]:
        """Roll H steps from ``start`` (N, ...) with the prior (``steps.prior``) and the
        actor (``steps.action``).

        Returns features (N, H + 1, F) and the actions taken from them (N, H, A).
        """
        latent = start
        features, actions = [latent.features()], []
        for _ in range(self.horizon):
            action = steps.action(features[-1])
            latent = steps.prior(latent, action)
            actions.append(action)
            features.append(latent.features())
        return torch.stack(features, 1), torch.stack(actions, 1)

    def loss(
        self, world_model: WorldModel, posterior: Latent, batch: dict[str, torch.Tensor],
        steps: StepFunctions | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Actor, critic and replay-value losses (unscaled) and metrics.

        ``steps``: the per-step functions imagination loops over (default: eager ones).
        """
        steps = steps or eager_steps(world_model.rssm, self)
        batch_size, length = batch["reward"].shape
        start = posterior.detach().reshape(batch_size * length)  # (N = B*T, ...)
        features, actions = self.imagine(start, steps)  # (N, H+1, F), (N, H, A)
        features = autocast_input(features)  # five heads read them
        with torch.no_grad():
            rewards = world_model.reward(features).mean()  # (N, H+1)
            continues = world_model.continues(features).mean()  # (N, H+1)
            continues[:, 0] = 1.0 - batch["is_terminal"].flatten().float()
            slow_values = self.value(features, slow=True).mean()  # (N, H+1)
        critic = self.value(features)
        values = critic.mean().detach()  # (N, H+1)
        returns = lambda_returns(rewards, continues, values, self.discount, self.lam)  # (N, H)
        weights = (torch.cumprod(self.discount * continues, 1) / self.discount)[:, :-1]  # (N, H)

        self.return_normalizer.update(returns)
        advantages = (returns - values[:, :-1]) / self.return_normalizer.scale()  # (N, H)
        policy = self.policy(features[:, :-1])
        log_probs = policy.log_prob(actions)  # (N, H)
        entropy = policy.entropy()  # (N, H)
        actor_loss = -(weights * (log_probs * advantages.detach() + self.entropy_scale * entropy)).mean()
        critic = TwoHot(critic.logits[:, :-1], self.bins)  # (N, H, bins): states with a return
        critic_nll = critic.nll(returns) + self.slow_regularizer * critic.nll(slow_values[:, :-1])
        critic_loss = (weights * critic_nll).mean()

        # Replay value: the critic on real posteriors (gradient reaches the world model).
        replay_features = posterior.features()[:, :-1]  # (B, T-1, F)
        bootstrap = returns[:, 0].reshape(batch_size, length)  # (B, T)
        replay_returns = replay_lambda_returns(
            batch["reward"], batch["is_terminal"], batch["is_last"], bootstrap, self.discount, self.lam
        )  # (B, T-1)
        replay_critic = self.value(replay_features)
        with torch.no_grad():
            replay_slow = self.value(replay_features.detach(), slow=True).mean()
        replay_weight = 1.0 - batch["is_last"][:, :-1].float()
        repval = replay_weight * (replay_critic.nll(replay_returns) + self.slow_regularizer * replay_critic.nll(replay_slow))
        losses = {"actor": actor_loss, "critic": critic_loss, "repval": repval.mean()}
        metrics = {
            "imagined_return": returns.mean().detach(),
            "imagined_reward": rewards[:, 1:].mean(),
            "return_scale": self.return_normalizer.scale().detach(),
            "policy_entropy": entropy.mean().detach(),
            "value": values.mean(),
        }
        return losses, metrics

    @torch.no_grad()
    def after_update(self) -> None:
        """After an optimiser step the slow critic follows the critic (the agent takes it
        back, with the return percentiles, when the step was withheld)."""
        ema_update_(list(self.slow_critic.parameters()), list(self.critic.parameters()), self.slow_fraction)

    def train(self, mode: bool = True) -> "ActorCritic":
        super().train(mode)
        self.slow_critic.train(False)
        return self
