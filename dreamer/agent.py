"""The agent: world model + actor-critic + one optimiser; acts and trains."""

from __future__ import annotations

import contextlib
import math
import shutil
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dreamer.actor_critic import ActorCritic
from dreamer.networks import BlockSharedLinear, ChannelNorm, NormedLinear, rms_norm_silu
from dreamer.optim import Optimizer
from dreamer.rssm import Latent
from dreamer.world_model import WorldModel


PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class LossScaler(nn.Module):
    """Dynamic loss scaling for fp16: gradients too small for fp16 survive the backward.

    The scale doubles after ``interval`` updates with finite gradients and halves on an
    overflow, whose update is skipped.  It is a buffer, so checkpoints keep it; it changes
    on the device, without the host reading it.
    """

    def __init__(self, initial: float = 2.0**15, interval: int = 1000, enabled: bool = True):
        super().__init__()
        self.enabled, self.interval = enabled, interval
        self.register_buffer("scale", torch.tensor(initial if enabled else 1.0))
        self.register_buffer("good_steps", torch.zeros((), dtype=torch.long))

    def unscale_(self, params: list[torch.Tensor]) -> None:
        """Divide the gradients by the scale."""
        if self.enabled:
            torch._foreach_mul_([p.grad for p in params if p.grad is not None], self.scale.reciprocal())

    @torch.no_grad()
    def update(self, loss_finite: torch.Tensor, grads_finite: torch.Tensor) -> None:
        """Count a good step, or halve the scale when a finite loss gave non-finite
        gradients (an overflow); a non-finite loss leaves the scale alone."""
        if not self.enabled:
            return
        overflow = loss_finite & ~grads_finite
        good_steps = torch.where(overflow, 0, self.good_steps + (loss_finite & grads_finite).long())
        grow = good_steps >= self.interval
        self.scale.mul_(torch.where(grow, 2.0, torch.where(overflow, 0.5, 1.0)))
        self.good_steps.copy_(torch.where(grow, 0, good_steps))


def cpu_compiler_available() -> bool:
    """torch.compile on CPU builds C++ against Python's headers; without either it fails on
    the first call."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return headers.exists() and any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Measured FLOP/s of a square matmul in ``dtype``: the machine's practical peak."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def slow_low_precision(precision: str) -> str | None:
    """Why ``precision`` would slow this CPU down, or None: CPUs without native bf16/fp16
    instructions (AVX512-BF16, AMX) emulate those matrix products tens to hundreds of
    times slower than float32.  Timed on a 256x256 product (well under a second even when emulated)."""
    if precision not in AUTOCAST_DTYPES:
        return None
    cpu = torch.device("cpu")
    low = matmul_peak(cpu, AUTOCAST_DTYPES[precision], size=256, repeats=2)
    full = matmul_peak(cpu, torch.float32, size=256, repeats=2)
    if low >= full:
        return None
    return (f"precision={precision}: this CPU multiplies {precision} matrices at {low / 1e9:.1f} GFLOP/s, slower "
            f"than float32 ({full / 1e9:.1f} GFLOP/s), as CPUs without native {precision} instructions "
            f"(AVX512-BF16, AMX) do; precision=fp32 will run faster here")


def compile_hot_paths(agent: "Agent", cuda_graphs: bool = False) -> None:
    """``torch.compile`` the per-time-step functions the update loops over, and the
    normalisation + activation tails of the layers outside them.

    The posterior and imagination steps (and imagination's actor step) run T and H times
    per update with identical shapes, so one compiled graph each is reused; the loops
    themselves stay in Python, which keeps compile time to seconds instead of unrolling
    whole sequences.

    ``cuda_graphs``: the update uses second compilations of the two steps that replay
    CUDA graphs (one kernel launch per step instead of dozens); acting and reports keep
    the plain ones, whose outputs may outlive the next call.
    """
    rssm = agent.world_model.rssm
    if cuda_graphs:
        agent.graphed_steps = (
            torch.compile(rssm.obs_step, dynamic=False, mode="reduce-overhead"),
            torch.compile(rssm.img_step, dynamic=False, mode="reduce-overhead"),
        )
    rssm.obs_step = torch.compile(rssm.obs_step, dynamic=False)
    rssm.img_step = torch.compile(rssm.img_step, dynamic=False)
    # Imagination's actor step: an MLP, unimix softmax and sample, H times per update.
    agent.actor_critic.sample_action = torch.compile(agent.actor_critic.sample_action, dynamic=False)
    # Convolution stages: only the channel norms are compiled (one fused pass instead of
    # several eager ones at 64x64).  Convolutions, pooling and upsampling stay library kernels: compiled,
    # the max-pool backward became a gather loop that cost more than the convolutions.
    # Each image size, batch size and grad/autocast mode is its own specialised graph (the
    # four encoder stages alone need eight: training and acting); the shared hidden-layer
    # tail turns dynamic after its first new shape.  Compiled graphs are cached on disk.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    norm_silu = torch.compile(rms_norm_silu, dynamic=None)
    for module in agent.modules():
        if isinstance(module, ChannelNorm):
            module.forward = torch.compile(module.forward, dynamic=False)
        elif isinstance(module, NormedLinear):
            module.norm_silu = norm_silu


class Agent(nn.Module):
    """Holds every trained module; ``train_step`` is one full update (spec 1-4)."""

    def __init__(
        self,
        world_model: WorldModel,
        actor_critic: ActorCritic,
        optimizer: Callable[[list[torch.nn.Parameter]], Optimizer],
        precision: str = "fp32",
        compile: bool = False,
        channels_last: bool = False,
        cuda_graphs: bool = False,
    ):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.world_model = world_model
        self.actor_critic = actor_critic
        if channels_last:
            self.to(memory_format=torch.channels_last)  # 4-d conv weights; convolutions follow them
        self.optimizer = optimizer(list(self.parameters()))
        self.scaler = LossScaler(enabled=precision == "fp16")
        if cuda_graphs and not compile:
            raise ValueError("cuda_graphs=true replays compiled graphs; it needs compile=true")
        self.graphed_steps: tuple[Callable, Callable] | None = None
        if compile:
            compile_hot_paths(self, cuda_graphs)
        self.loss_scales = {**world_model.loss_scales, **actor_critic.loss_scales}
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.inject_nan: str | None = None  # test hook: name of a loss to make NaN

    def load_training_state(self, agent_state: dict, optimizer_state: dict) -> None:
        """Weights and optimiser state from a checkpoint; older layouts are upgraded (the
        layer's own load hook converts its weight, this converts the weight's moments)."""
        self.load_state_dict(agent_state)
        metadata = getattr(agent_state, "_metadata", {})
        index = {name: i for i, (name, _) in enumerate(self.named_parameters())}
        for name, module in self.named_modules():
            if isinstance(module, BlockSharedLinear) and module.saved_as_version_1(metadata.get(name, {})):
                moments = optimizer_state["state"].get(index[f"{name}.weight"], {})
                for key, value in moments.items():
                    if torch.is_tensor(value) and value.dim() == 3:
                        moments[key] = module.upgrade_weight(value)
        self.optimizer.load_state_dict(optimizer_state)

    @property
    def device(self) -> torch.device:
        return self.updates.device

    def initial_state(self, count: int) -> Latent:
        return self.world_model.rssm.initial(count, self.device)

    def autocast(self) -> torch.autocast:
        """Mixed precision for the losses; weights and optimiser stay in float32."""
        dtype = AUTOCAST_DTYPES.get(self.precision, torch.bfloat16)
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.precision in AUTOCAST_DTYPES)

    @contextlib.contextmanager
    def update_steps(self) -> Iterator[None]:
        """The RSSM steps of an update: the CUDA-graph ones when there are any.

        A new graph step begins here, so the previous update's graph outputs may be
        overwritten; everything an update returns is built outside the graphs.
        """
        if self.graphed_steps is None:
            yield
            return
        rssm = self.world_model.rssm
        plain = rssm.obs_step, rssm.img_step
        torch.compiler.cudagraph_mark_step_begin()
        rssm.obs_step, rssm.img_step = self.graphed_steps
        try:
            yield
        finally:
            rssm.obs_step, rssm.img_step = plain

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
        latent, _ = self.world_model.rssm.obs_step(latent, inputs["action"].float(), embedding, inputs["is_first"])
        policy = self.actor_critic.policy(latent.features())
        action = policy.sample() if explore else policy.mode()
        return action.cpu().numpy(), latent

    def train_step(
        self, batch: dict[str, torch.Tensor], start: Latent
    ) -> tuple[dict[str, torch.Tensor], Latent]:
        """World-model and actor-critic losses, one backward, one optimiser step.

        Returns detached metrics and the posterior latents (B, T, ...) for the replay.  The
        host never waits for the device here: an update whose loss or gradients are not
        finite is withheld on the device (``metrics["applied"]`` is 0 and nothing it would
        change has changed, the slow critic, return percentiles and EMA targets included);
        ``nonfinite`` names the cause once the caller has read the metrics.  In fp16 an
        update whose scaled gradients overflow is withheld and the loss scale halved.
        """
        with self.autocast(), self.update_steps():
            wm_losses, posterior, metrics = self.world_model.loss(batch, start)
            ac_losses, ac_metrics = self.actor_critic.loss(self.world_model, posterior, batch)
        losses = {**wm_losses, **ac_losses}
        if self.inject_nan is not None:
            losses[self.inject_nan] = losses[self.inject_nan] * float("nan")
        total = sum(self.loss_scales[name] * value for name, value in losses.items())
        loss_finite = torch.isfinite(total)
        self.optimizer.zero_grad()
        (total * self.scaler.scale).backward() if self.scaler.enabled else total.backward()
        self.scaler.unscale_(self.optimizer.params)
        step = self.optimizer.step(valid=loss_finite)  # grad_norm, applied
        self.scaler.update(loss_finite, torch.isfinite(step["grad_norm"]))
        self.actor_critic.after_update(step["applied"])
        self.world_model.objective.after_update(step["applied"])
        self.updates += step["applied"].long()
        metrics.update(step)
        if self.scaler.enabled:
            metrics["loss_scale"] = self.scaler.scale.clone()
        metrics.update(ac_metrics)
        metrics.update({f"loss/{name}": value.detach() for name, value in losses.items()})
        metrics["loss/total"] = total.detach()
        return metrics, posterior.detach()

    def nonfinite(self, values: dict[str, float]) -> list[str]:
        """Why an update was withheld, from its metrics read as floats: the names of its
        non-finite losses, or ``gradients``; empty when it was applied or when fp16's loss
        scaling withheld it for an overflow (the scale was halved instead)."""
        names = [key.removeprefix("loss/") for key, value in values.items()
                 if key.startswith("loss/") and key != "loss/total" and not math.isfinite(value)]
        if names or values["applied"] or self.scaler.enabled and math.isfinite(values["loss/total"]):
            return names
        return ["total"] if not math.isfinite(values["loss/total"]) else ["gradients"]
