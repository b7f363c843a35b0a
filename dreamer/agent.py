"""The agent: world model + actor-critic + one optimiser; acts and trains."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from dreamer.accelerate import Accelerator, LossScaler, eager_steps
from dreamer.actor_critic import ActorCritic
from dreamer.optim import Optimizer
from dreamer.rssm import Latent
from dreamer.world_model import WorldModel


def state_outside_optimizer(*modules: nn.Module) -> list[torch.Tensor]:
    """The tensors an update changes besides the optimiser's step: persistent buffers
    (return percentiles, counters), frozen parameters (slow critic, EMA targets) and what
    a module lists in ``updated_in_place`` (DreamerPro's renormalised prototypes)."""
    tensors = []
    for module in modules:
        for owner in module.modules():
            tensors += [buffer for name, buffer in owner.named_buffers(recurse=False)
                        if name not in owner._non_persistent_buffers_set]
            tensors += [parameter for parameter in owner.parameters(recurse=False) if not parameter.requires_grad]
            tensors += list(getattr(owner, "updated_in_place", lambda: [])())
    return list({id(tensor): tensor for tensor in tensors}.values())


class Agent(nn.Module):
    """Holds every trained module; ``train_step`` is one full update (spec 1-4).

    ``speed`` builds the :class:`~dreamer.accelerate.Accelerator` (precision, compile, CUDA
    graphs) from the agent's modules and eager step functions.
    """

    def __init__(
        self,
        world_model: WorldModel,
        actor_critic: ActorCritic,
        optimizer: Callable[[list[torch.nn.Parameter]], Optimizer],
        device: torch.device,
        precision: str = "fp32",
        compile: bool = False,
        cuda_graphs: bool = False,
        channels_last: bool = False,
    ):
        super().__init__()
        self.world_model = world_model
        self.actor_critic = actor_critic
        self.to(device)
        if channels_last:
            self.to(memory_format=torch.channels_last)  # 4-d conv weights; convolutions follow them
        self.optimizer = optimizer(list(self.parameters()))
        self.scaler = LossScaler(enabled=precision == "fp16").to(device)
        self.accelerator = Accelerator(
            self, eager_steps(world_model.rssm, actor_critic), device, precision, compile, cuda_graphs
        )
        self.loss_scales = {**world_model.loss_scales, **actor_critic.loss_scales}
        self.register_buffer("updates", torch.zeros((), dtype=torch.long, device=device))
        self.rollback_state = state_outside_optimizer(world_model, actor_critic)
        self.inject_nan: str | None = None  # test hook: name of a loss to make NaN

    @property
    def device(self) -> torch.device:
        return self.updates.device

    def initial_state(self, count: int) -> Latent:
        return self.world_model.rssm.initial(count, self.device)

    @torch.no_grad()
    def act(
        self, obs: dict[str, np.ndarray], latent: Latent, explore: bool = True
    ) -> tuple[np.ndarray, Latent]:
        """One policy step for a batch of environments (n, ...).

        ``obs["action"]`` is the action that led to each observation.
        Returns actions (n, A) and the posterior latents (n, ...).
        """
        inputs = {key: torch.as_tensor(value, device=self.device) for key, value in obs.items()}
        embedding = self.world_model.encoder(inputs)  # (n, E)
        posterior_step = self.accelerator.acting.posterior
        latent, _ = posterior_step(latent, inputs["action"].float(), embedding, inputs["is_first"])
        policy = self.actor_critic.policy(latent.features())
        action = policy.sample() if explore else policy.mode()
        return action.cpu().numpy(), latent

    def losses(self, batch: dict[str, torch.Tensor], start: Latent):
        """World-model and actor-critic losses (unscaled), the posterior (B, T, ...) and metrics."""
        with self.accelerator.update() as steps:
            wm_losses, posterior, metrics = self.world_model.loss(batch, start, steps)
            ac_losses, ac_metrics = self.actor_critic.loss(self.world_model, posterior, batch, steps)
        return {**wm_losses, **ac_losses}, posterior, {**metrics, **ac_metrics}

    def train_step(
        self, batch: dict[str, torch.Tensor], start: Latent
    ) -> tuple[dict[str, torch.Tensor], Latent]:
        """World-model and actor-critic losses, one backward, one optimiser step.

        Returns detached metrics and the posterior latents (B, T, ...) for the replay.  The
        host never waits for the device here: an update whose loss or gradients are not
        finite is withheld on the device (``metrics["applied"]`` is 0 and nothing it would
        change has changed: the optimiser gates its own step, and every other tensor the
        update touches is restored from a copy taken before it).  ``nonfinite`` names the
        cause once the caller has read the metrics.  In fp16 an update whose scaled
        gradients overflow is withheld and the loss scale halved.
        """
        before = [tensor.clone() for tensor in self.rollback_state]
        losses, posterior, metrics = self.losses(batch, start)
        if self.inject_nan is not None:
            losses[self.inject_nan] = losses[self.inject_nan] * float("nan")
        total = sum(self.loss_scales[name] * value for name, value in losses.items())
        loss_finite = torch.isfinite(total)
        self.optimizer.zero_grad()
        (total * self.scaler.scale).backward() if self.scaler.enabled else total.backward()
        self.scaler.unscale_(self.optimizer.params)
        step = self.optimizer.step(valid=loss_finite)  # grad_norm, applied
        self.scaler.update(loss_finite, torch.isfinite(step["grad_norm"]))
        self.actor_critic.after_update()
        self.world_model.objective.after_update()
        self.take_back_unless(step["applied"], before)
        self.updates += step["applied"].long()
        metrics.update(step)
        if self.scaler.enabled:
            metrics["loss_scale"] = self.scaler.scale.clone()
        metrics.update({f"loss/{name}": value.detach() for name, value in losses.items()})
        metrics["loss/total"] = total.detach()
        return {key: value.detach() for key, value in metrics.items()}, posterior.detach()

    @torch.no_grad()
    def take_back_unless(self, applied: torch.Tensor, before: list[torch.Tensor]) -> None:
        """Where ``applied`` is 0, restore the state outside the optimiser, decided on the device."""
        keep = applied > 0
        for tensor, saved in zip(self.rollback_state, before):
            tensor.copy_(torch.where(keep, tensor, saved))

    def nonfinite(self, values: dict[str, float]) -> list[str]:
        """Why an update was withheld, from its metrics read as floats: the names of its
        non-finite losses, or ``gradients``; empty when it was applied or when fp16's loss
        scaling withheld it for an overflow (the scale was halved instead)."""
        names = [key.removeprefix("loss/") for key, value in values.items()
                 if key.startswith("loss/") and key != "loss/total" and not math.isfinite(value)]
        if names or values["applied"] or self.scaler.enabled and math.isfinite(values["loss/total"]):
            return names
        return ["total"] if not math.isfinite(values["loss/total"]) else ["gradients"]
