"""Output distributions: unimix categoricals, two-hot scalars, Bernoulli, bounded normal."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dreamer.functional import twohot_loss, twohot_mean, unimix_probs


def one_hot(indices: torch.Tensor, classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``F.one_hot(indices, classes)`` as ``dtype``, without its range check: that check reads
    the indices back to the host, a device synchronisation in every RSSM step."""
    return (indices.unsqueeze(-1) == torch.arange(classes, device=indices.device)).to(dtype)


def straight_through_sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One-hot sample (..., K) from ``probs`` whose gradient is that of ``probs``."""
    # Inverse-CDF sampling: one uniform per distribution, cheaper than multinomial.
    cumulative = probs.detach().cumsum(-1)  # (..., K)
    uniform = torch.rand(probs.shape[:-1] + (1,), device=probs.device, generator=generator)
    uniform = uniform * cumulative[..., -1:]
    indices = (cumulative < uniform).sum(-1).clamp(max=probs.shape[-1] - 1)  # (...,)
    sample = one_hot(indices, probs.shape[-1], probs.dtype)
    return sample + (probs - probs.detach())  # exactly one-hot forward, gradient of probs


class OneHotCategorical:
    """Categorical over one-hot vectors with unimix, used for discrete actions (spec 3)."""

    def __init__(self, logits: torch.Tensor, unimix: float = 0.01):
        self.probs = unimix_probs(logits, unimix)  # (..., K)
        self.log_probs = torch.log(self.probs)

    def sample(self) -> torch.Tensor:
        return straight_through_sample(self.probs)

    def mode(self) -> torch.Tensor:
        return one_hot(self.probs.argmax(-1), self.probs.shape[-1])

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return (action.detach() * self.log_probs).sum(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.log_probs).sum(-1)


class BoundedNormal:
    """Diagonal normal with ``tanh`` mean and std in [min_std, max_std] (spec 3)."""

    def __init__(self, raw: torch.Tensor, min_std: float = 0.1, max_std: float = 1.0):
        mean, std = raw.float().chunk(2, -1)
        self.mean = torch.tanh(mean)
        self.std = (max_std - min_std) * torch.sigmoid(std + 2.0) + min_std

    def sample(self) -> torch.Tensor:
        return (self.mean + self.std * torch.randn_like(self.mean)).detach()

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        action = action.detach()
        log_density = -((action - self.mean) ** 2) / (2 * self.std**2) - self.std.log() - 0.5 * math.log(2 * math.pi)
        return log_density.sum(-1)

    def entropy(self) -> torch.Tensor:
        return (0.5 + 0.5 * math.log(2 * math.pi) + self.std.log()).sum(-1)


class TwoHot:
    """Scalar distribution over fixed bins, trained with two-hot targets (spec 1)."""

    def __init__(self, logits: torch.Tensor, bins: torch.Tensor):
        self.logits = logits.float()
        self.bins = bins

    def mean(self) -> torch.Tensor:
        return twohot_mean(F.softmax(self.logits, -1), self.bins)

    def nll(self, target: torch.Tensor) -> torch.Tensor:
        return twohot_loss(self.logits, target, self.bins)


class Bernoulli:
    """Bernoulli from a single logit (..., 1): the continue head (spec 1)."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits.float().squeeze(-1)

    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def nll(self, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.logits, target.float(), reduction="none")
