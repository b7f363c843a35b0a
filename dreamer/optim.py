"""Optimisers (spec 4): LaProp with adaptive gradient clipping, and Adam with
global-norm clipping; both with a linear learning-rate warm-up.

An update can be withheld without the host reading anything from the device: ``step``
takes a 0-dim ``apply`` tensor (1 or 0), and with 0 the parameters, moments and step
count stay exactly as they were.  The update counts and bias corrections live on the
device, so the training update never waits for it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch


def bias_correction(beta: float, count: torch.Tensor) -> torch.Tensor:
    """``1 - beta**count`` for count >= 1 (counts below 1 count as 1), accurate in float32:
    the direct form loses four digits to cancellation at count 1 with beta 0.999."""
    return -torch.expm1(count.clamp(min=1) * math.log(beta))


class GatedOptimizer(torch.optim.Optimizer):
    """Shared bookkeeping: one applied-update count per parameter group, on the device."""

    def _count(self, group: dict, params: list[torch.Tensor]) -> torch.Tensor:
        """The group's count as a float32 tensor on the parameters' device (a loaded
        checkpoint's count arrives on the CPU)."""
        group["step"] = torch.as_tensor(group.get("step", 0.0), dtype=torch.float32, device=params[0].device)
        return group["step"]

    def _moments(self, params: list[torch.Tensor], names: tuple[str, str]) -> tuple[list, list]:
        for p in params:
            for name in names:
                if name not in self.state[p]:
                    self.state[p][name] = torch.zeros_like(p)
        return [self.state[p][names[0]] for p in params], [self.state[p][names[1]] for p in params]

    def _groups(self, apply: torch.Tensor, names: tuple[str, str]):
        """Per parameter group with gradients: its parameters, their gradients, the two
        moments called ``names``, the group, and its count with this step (``apply``) added."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            first, second = self._moments(params, names)
            count = self._count(group, params)
            count += apply
            yield params, [p.grad for p in params], first, second, group, count


class LaProp(GatedOptimizer):
    """LaProp: momentum over RMS-normalised gradients, both moments bias-corrected.

    ``v = β2 v + (1-β2) g²``; ``m = β1 m + (1-β1) g / (sqrt(v̂) + ε)``; ``p -= lr m̂``.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 4e-5, betas=(0.9, 0.999), eps: float = 1e-20):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))

    @torch.no_grad()
    def step(self, closure=None, *, apply: torch.Tensor, lr: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """One update, or none where ``apply`` is 0 (gradients must then be zeros);
        ``lr`` gives the learning rate for the applied-update count, this one included."""
        for params, grads, momenta, squares, group, count in self._groups(apply, ("momentum", "square")):
            beta1, beta2 = group["betas"]
            # apply = 0: every decay is 1 (β**0) and the step size 0, so nothing moves.
            torch._foreach_mul_(squares, torch.pow(beta2, apply))
            torch._foreach_addcmul_(squares, grads, grads, value=1 - beta2)
            denominators = torch._foreach_sqrt(torch._foreach_div(squares, bias_correction(beta2, count)))
            torch._foreach_add_(denominators, group["eps"])
            normalized = torch._foreach_div(grads, denominators)
            torch._foreach_mul_(momenta, torch.pow(beta1, apply))
            torch._foreach_add_(momenta, normalized, alpha=1 - beta1)
            step_size = -lr(count) * apply / bias_correction(beta1, count)
            torch._foreach_add_(params, torch._foreach_mul(momenta, step_size))


class Adam(GatedOptimizer):
    """Adam (Kingma and Ba), as torch.optim.Adam computes it, with the gated step above."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-4, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))

    @torch.no_grad()
    def step(self, closure=None, *, apply: torch.Tensor, lr: Callable[[torch.Tensor], torch.Tensor]) -> None:
        moments = ("exp_avg", "exp_avg_sq")  # torch.optim.Adam's names
        for params, grads, means, squares, group, count in self._groups(apply, moments):
            beta1, beta2 = group["betas"]
            torch._foreach_mul_(means, torch.pow(beta1, apply))
            torch._foreach_add_(means, grads, alpha=1 - beta1)
            torch._foreach_mul_(squares, torch.pow(beta2, apply))
            torch._foreach_addcmul_(squares, grads, grads, value=1 - beta2)
            denominators = torch._foreach_sqrt(squares)
            torch._foreach_div_(denominators, bias_correction(beta2, count).sqrt())
            torch._foreach_add_(denominators, group["eps"])
            step_size = -lr(count) * apply / bias_correction(beta1, count)
            torch._foreach_addcdiv_(params, torch._foreach_mul(means, step_size), denominators)


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
        self.optimizer: GatedOptimizer

    def clip(self, params: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def step(self, valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Clip the gradients already in ``.grad`` and apply one update, unless ``valid``
        (a 0-dim bool tensor) is false or a gradient is not finite: then nothing changes.

        Returns the gradient norm before clipping and ``applied`` (1.0 or 0.0), as tensors
        the host has not waited for.
        """
        params = [p for p in self.params if p.grad is not None]
        grad_norm = self.clip(params)
        apply = torch.isfinite(grad_norm)
        if valid is not None:
            apply = apply & valid
        for p in params:  # a withheld update's NaNs would reach the moments even times 0
            p.grad.masked_fill_(~apply, 0.0)
        gate = apply.float()
        self.optimizer.step(apply=gate, lr=self.learning_rate)
        return {"grad_norm": grad_norm, "applied": gate}

    def learning_rate(self, count: torch.Tensor) -> torch.Tensor:
        """``lr`` scaled linearly from 0 over the first ``warmup`` applied updates."""
        return self.lr * (count / max(1, self.warmup)).clamp(max=1.0)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


class LaPropAGC(Optimizer):
    """LaProp (lr 4e-5, ε 1e-20) with adaptive gradient clipping (0.3, pmin 1e-3)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 4e-5, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-20, agc: float = 0.3, pmin: float = 1e-3, warmup: int = 1000):
        super().__init__(params, lr, warmup)
        self.agc, self.pmin = agc, pmin
        self.optimizer = LaProp(self.params, lr=lr, betas=betas, eps=eps)

    def clip(self, params: list[torch.Tensor]) -> torch.Tensor:
        return adaptive_clip_(params, self.agc, self.pmin)


class AdamClip(Optimizer):
    """Adam with global-norm gradient clipping."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, clip_norm: float = 100.0, warmup: int = 1000):
        super().__init__(params, lr, warmup)
        self.clip_norm = clip_norm
        self.optimizer = Adam(self.params, lr=lr, betas=betas, eps=eps)

    def clip(self, params: list[torch.Tensor]) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(params, self.clip_norm, foreach=True)
