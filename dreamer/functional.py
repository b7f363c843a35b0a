"""Pure tensor functions of the algorithm (``algorithm.md`` sections 1-3).

Every function here is stateless; modules hold parameters and call these.
Shapes use the spec's letters: B batch, T time, H horizon, S groups, K classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)`` (spec 1)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`: ``sign(x) * (exp(|x|) - 1)``."""
    return torch.sign(x) * torch.expm1(x.abs())


def twohot_bins(num_bins: int = 255, low: float = -20.0, high: float = 20.0) -> torch.Tensor:
    """Bin positions ``symexp(linspace(low, high, num_bins))`` (spec 1, two-hot)."""
    # Built from integer offsets around the centre so a symmetric range gives exactly
    # symmetric bins with an exact zero in the middle.
    centre = (num_bins - 1) / 2
    offsets = torch.arange(num_bins, dtype=torch.float64) - centre
    positions = (low + high) / 2 + offsets * (high - low) / (num_bins - 1)
    return symexp(positions).float()


def twohot_split(target: torch.Tensor, bins: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The two neighbouring bins of each scalar and their weights.

    target: (...,) raw values; bins: (N,) increasing.  Returns the indices below and
    above (...,) and their weights, which sum to one and are proportional to closeness;
    values outside the range put all weight on the end bin.
    """
    target = target.float()
    num_bins = bins.shape[0]
    count_below = torch.searchsorted(bins, target.contiguous(), right=True)  # bins <= target
    below = (count_below - 1).clamp(0, num_bins - 1)
    above = count_below.clamp(0, num_bins - 1)  # equals ``below`` outside the range
    distance_below = (bins[below] - target).abs()
    distance_above = (bins[above] - target).abs()
    same = below == above
    total = torch.where(same, torch.ones_like(target), distance_below + distance_above)
    weight_below = torch.where(same, torch.ones_like(target), distance_above / total)
    weight_above = torch.where(same, torch.zeros_like(target), distance_below / total)
    return below, above, weight_below, weight_above


def twohot_encode(target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot vectors (..., N) of the scalars (...,): see :func:`twohot_split`."""
    below, above, weight_below, weight_above = twohot_split(target, bins)
    encoded = torch.zeros(*target.shape, bins.shape[0], device=bins.device)
    encoded.scatter_add_(-1, below.unsqueeze(-1), weight_below.unsqueeze(-1))
    return encoded.scatter_add_(-1, above.unsqueeze(-1), weight_above.unsqueeze(-1))


def twohot_mean(probs: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Expected value ``sum_i p_i b_i`` (..., N) -> (...,).

    Each bin is first paired with its mirror image, so large bins of opposite sign
    cancel before they meet small ones (spec 1): exact zero for symmetric probs.
    """
    num_bins = bins.shape[0]
    half = num_bins // 2
    weighted = probs * bins  # (..., N)
    lower = weighted[..., :half].flip(-1)  # from the centre outwards
    upper = weighted[..., num_bins - half :]
    total = (lower + upper).sum(-1)
    if num_bins % 2:
        total = total + weighted[..., half]
    return total


def twohot_loss(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross entropy of softmax(logits) (..., N) against the two-hot target (...,).

    Only the two target bins have weight, so their log-probabilities are gathered instead
    of multiplying a mostly-zero (..., N) two-hot tensor.
    """
    below, above, weight_below, weight_above = twohot_split(target.detach(), bins)
    log_probs = F.log_softmax(logits.float(), -1)
    picked = log_probs.gather(-1, torch.stack([below, above], -1))  # (..., 2)
    return -(weight_below * picked[..., 0] + weight_above * picked[..., 1])


def unimix_probs(logits: torch.Tensor, unimix: float = 0.01) -> torch.Tensor:
    """Softmax over the last axis mixed with ``unimix`` uniform (spec 1)."""
    probs = F.softmax(logits.float(), -1)
    return (1.0 - unimix) * probs + unimix / logits.shape[-1]


def categorical_kl(probs_q: torch.Tensor, probs_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) of categoricals (..., S, K), summed over groups S -> (...,)."""
    log_ratio = torch.log(probs_q) - torch.log(probs_p)
    return (probs_q * log_ratio).sum((-2, -1))


def kl_balance(
    posterior_probs: torch.Tensor, prior_probs: torch.Tensor, free: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamics and representation KL losses with free bits (spec 1).

    posterior_probs, prior_probs: (..., S, K).  Returns ``(L_dyn, L_rep)``, each (...,):
    ``L_dyn = max(free, KL(sg(q) || p))``, ``L_rep = max(free, KL(q || sg(p)))``.
    """
    dyn = categorical_kl(posterior_probs.detach(), prior_probs)
    rep = categorical_kl(posterior_probs, prior_probs.detach())
    return dyn.clamp(min=free), rep.clamp(min=free)


def lambda_returns(
    rewards: torch.Tensor,
    continues: torch.Tensor,
    values: torch.Tensor,
    discount: float,
    lam: float,
) -> torch.Tensor:
    """Imagined λ-returns, computed backwards along axis 1 (spec 3).

    rewards, continues, values: (N, H + 1); index 0 is the start state (its reward and
    continue are unused).  Returns (N, H) with
    ``R_t = r_{t+1} + γ c_{t+1} ((1 - λ) v_{t+1} + λ R_{t+1})`` and ``R_H = v_H``.
    """
    horizon = rewards.shape[1] - 1
    live = discount * continues[:, 1:]  # (N, H)
    interm = rewards[:, 1:] + live * (1 - lam) * values[:, 1:]  # (N, H)
    returns = [values[:, -1]]
    for t in reversed(range(horizon)):
        returns.append(interm[:, t] + live[:, t] * lam * returns[-1])
    return torch.stack(returns[::-1][:-1], 1)  # (N, H)


def replay_lambda_returns(
    rewards: torch.Tensor,
    terminals: torch.Tensor,
    lasts: torch.Tensor,
    bootstrap: torch.Tensor,
    discount: float,
    lam: float,
) -> torch.Tensor:
    """λ-returns along real replay sequences (spec 3, replay value).

    All inputs (B, T).  ``bootstrap`` holds each step's imagined return; the recursion
    is cut at episode ends (``is_last``) and uses no value past a terminal.
    Returns (B, T - 1).
    """
    live = (1.0 - terminals[:, 1:].float()) * discount  # (B, T-1)
    cont = (1.0 - lasts[:, 1:].float()) * lam  # (B, T-1)
    interm = rewards[:, 1:] + (1.0 - cont) * live * bootstrap[:, 1:]
    returns = [bootstrap[:, -1]]
    for t in reversed(range(live.shape[1])):
        returns.append(interm[:, t] + live[:, t] * cont[:, t] * returns[-1])
    return torch.stack(returns[::-1][:-1], 1)


def barlow_twins_loss(
    first: torch.Tensor, second: torch.Tensor, off_diagonal_weight: float = 5e-4, eps: float = 1e-8
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Barlow-Twins redundancy reduction between two (N, E) batches (spec 2, r2dreamer).

    Each dimension is standardised over the batch; ``C = x̂1ᵀ x̂2 / N`` (E, E);
    loss ``Σ_i (1 - C_ii)² + λ Σ_{i≠j} C_ij²``.  Returns the loss and its two terms.
    """
    first = first.float()
    second = second.float()
    count = first.shape[0]
    first = (first - first.mean(0)) / (first.std(0) + eps)  # (N, E)
    second = (second - second.mean(0)) / (second.std(0) + eps)  # (N, E)
    correlation = first.T @ second / count  # (E, E)
    diagonal = torch.diagonal(correlation)
    invariance = (1.0 - diagonal).pow(2).sum()
    redundancy = correlation.pow(2).sum() - diagonal.pow(2).sum()
    loss = invariance + off_diagonal_weight * redundancy
    return loss, {"invariance": invariance, "redundancy": redundancy}


def info_nce_loss(first: torch.Tensor, second: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Contrastive loss with in-batch negatives (spec 2, infonce).

    first, second: (N, E).  Logits ``first @ secondᵀ / temperature`` (N, N), each row
    shifted by its maximum; the positive of row i is column i.
    """
    logits = first.float() @ second.float().T / temperature  # (N, N)
    logits = logits - logits.max(-1, keepdim=True).values.detach()
    labels = torch.arange(first.shape[0], device=first.device)
    return F.cross_entropy(logits, labels)


def percentile_range(values: torch.Tensor, low: float = 0.05, high: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``low`` and ``high`` quantiles of all entries of ``values``."""
    flat = values.detach().float().flatten()
    quantiles = torch.quantile(flat, torch.tensor([low, high], device=flat.device))
    return quantiles[0], quantiles[1]


def block_diagonal_init_bound(fan_in: int) -> float:
    """Uniform init bound of a linear layer with ``fan_in`` inputs (PyTorch's default)."""
    return 1.0 / math.sqrt(fan_in)


def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp soft assignment of N samples to P prototypes, in log space (spec 2).

    scores: (N, P).  Alternately normalises prototype columns to total 1/P and sample
    rows to total 1/N; returns (N, P) targets whose rows sum to one and whose columns
    approach N/P.
    """
    samples, prototypes = scores.shape
    log_q = scores.float() / epsilon
    log_q = log_q - torch.logsumexp(log_q.flatten(), 0)
    for _ in range(iterations):
        log_q = log_q - torch.logsumexp(log_q, 0, keepdim=True) - math.log(prototypes)
        log_q = log_q - torch.logsumexp(log_q, 1, keepdim=True) - math.log(samples)
    return torch.exp(log_q) * samples


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each sequence of images by up to ``pad`` pixels (spec 2, dreamerpro).

    images: (B, T, H, W, C).  One integer shift per sequence, the same for all T steps,
    with replicate padding, applied by bilinear sampling.  Keeps shape and dtype.
    """
    batch, length, height, width, channels = images.shape
    shifts = torch.randint(-pad, pad + 1, (batch, 2), generator=generator).to(images.device)  # (B, 2) in pixels
    x = images.float().permute(0, 1, 4, 2, 3).reshape(batch, length * channels, height, width)  # (B, T*C, H, W)
    ys = torch.linspace(-1.0, 1.0, height, device=images.device)
    xs = torch.linspace(-1.0, 1.0, width, device=images.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W)
    grid = torch.stack([grid_x, grid_y], -1).unsqueeze(0).repeat(batch, 1, 1, 1)  # (B, H, W, 2)
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=images.device)
    grid = grid + (shifts.float() * scale).view(batch, 1, 1, 2)  # shifts[:, 0] along x, [:, 1] along y
    shifted = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    shifted = shifted.reshape(batch, length, channels, height, width).permute(0, 1, 3, 4, 2)
    if images.dtype == torch.uint8:
        return shifted.round().clamp(0, 255).to(torch.uint8)
    return shifted.to(images.dtype)


@torch.no_grad()
def ema_update_(target: list[torch.Tensor], online: list[torch.Tensor], fraction: float | torch.Tensor) -> None:
    """``target <- (1 - fraction) * target + fraction * online``, in place; ``fraction`` may
    be a 0-dim tensor on the device (0 leaves the targets exactly as they are, 1 copies)."""
    if isinstance(fraction, torch.Tensor):
        for t, o in zip(target, online):  # the foreach lerp would read a tensor weight back to the host
            t.lerp_(o, fraction)
    else:
        torch._foreach_lerp_(target, online, fraction)
