"""Optimisers (spec 4): LaProp with adaptive gradient clipping, and Adam with
global-norm clipping; both with a linear learning-rate warm-up."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class LaProp(torch.optim.Optimizer):
    """LaProp: momentum over RMS-normalised gradients, both moments bias-corrected.

    ``v = β2 v + (1-β2) g²``; ``m = β1 m + (1-β1) g / (sqrt(v̂) + ε)``; ``p -= lr m̂``.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 4e-5, betas=(0.9, 0.999), eps: float = 1e-20):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, step=0))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["momentum"] = torch.zeros_like(p)
                    self.state[p]["square"] = torch.zeros_like(p)
            momenta = [self.state[p]["momentum"] for p in params]
            squares = [self.state[p]["square"] for p in params]
            beta1, beta2 = group["betas"]
            group["step"] += 1
            step = group["step"]
            torch._foreach_mul_(squares, beta2)
            torch._foreach_addcmul_(squares, grads, grads, value=1 - beta2)
            denominators = torch._foreach_sqrt(torch._foreach_div(squares, 1 - beta2**step))
            torch._foreach_add_(denominators, group["eps"])
            normalized = torch._foreach_div(grads, denominators)
            torch._foreach_mul_(momenta, beta1)
            torch._foreach_add_(momenta, normalized, alpha=1 - beta1)
            torch._foreach_add_(params, momenta, alpha=-group["lr"] / (1 - beta1**step))


def adaptive_clip_(params: list[torch.Tensor], clip: float, pmin: float) -> torch.Tensor:
    """Rescale each gradient to norm at most ``clip * max(pmin, |param|)``.

    Returns the global gradient norm before clipping; runs without host sync.
    """
    grads = [p.grad for p in params]
    grad_norms = torch.stack(torch._foreach_norm(grads))
    param_norms = torch.stack(torch._foreach_norm([p.detach() for p in params]))
    limits = clip * param_norms.clamp(min=pmin)
    factors = (limits / grad_norms.clamp(min=1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(factors.unbind()))
    return grad_norms.norm()


class Optimizer:
    """One optimiser over all agent parameters: clip, warm up the learning rate, step."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, warmup: int = 1000):
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        self.warmup = warmup
        self.optimizer: torch.optim.Optimizer

    def clip(self) -> torch.Tensor:
        raise NotImplementedError

    def step(self) -> dict[str, torch.Tensor]:
        """Clip the gradients already in ``.grad`` and apply one update."""
        grad_norm = self.clip()
        updates = self.optimizer.param_groups[0].get("updates", 0) + 1
        for group in self.optimizer.param_groups:
            group["updates"] = updates
            group["lr"] = self.lr * min(1.0, updates / max(1, self.warmup))
        self.optimizer.step()
        return {"grad_norm": grad_norm}

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


class LaPropAGC(Optimizer):
    """LaProp (lr 4e-5, ε 1e-20) with adaptive gradient clipping (0.3, pmin 1e-3)."""

    def __init__(self, params, lr=4e-5, betas=(0.9, 0.999), eps=1e-20, agc=0.3, pmin=1e-3, warmup=1000):
        super().__init__(params, lr, warmup)
        self.agc, self.pmin = agc, pmin
        self.optimizer = LaProp(self.params, lr=lr, betas=betas, eps=eps)

    def clip(self) -> torch.Tensor:
        return adaptive_clip_([p for p in self.params if p.grad is not None], self.agc, self.pmin)


class AdamClip(Optimizer):
    """Adam with global-norm gradient clipping."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, clip_norm=100.0, warmup=1000):
        super().__init__(params, lr, warmup)
        self.clip_norm = clip_norm
        self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=tuple(betas), eps=eps, foreach=True)

    def clip(self) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm, foreach=True)
