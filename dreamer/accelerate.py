"""Speed without changing the math: mixed precision and loss scaling, compiled and
CUDA-graphed step functions, and the hardware probes that choose between them.

The update loops over time in Python and calls three small functions once per step: the
posterior step, the prior step and imagination's actor step (:class:`StepFunctions`).
The agent passes them to the world model and actor-critic explicitly; this module builds
eager, compiled or graphed versions of them.  Nothing here reassigns a method.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dreamer.config import PRECISIONS
from dreamer.networks import ChannelNorm, NormedLinear, rms_norm_silu

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class StepFunctions:
    """The functions a sequence loop calls once per time step.

    ``posterior``: :meth:`RSSM.obs_step`; ``prior``: :meth:`RSSM.img_step`; ``action``:
    :meth:`ActorCritic.sample_action`, or compiled versions of them.
    """

    posterior: Callable
    prior: Callable
    action: Callable


def eager_steps(rssm: nn.Module, actor_critic: nn.Module) -> StepFunctions:
    return StepFunctions(rssm.obs_step, rssm.img_step, actor_critic.sample_action)


def compiled_steps(steps: StepFunctions, mode: str | None = None) -> StepFunctions:
    """Each step compiled for fixed shapes: every call of a loop has the same shapes, so one
    graph each is reused, and the loops stay in Python (seconds to compile, not minutes)."""
    def compile(function: Callable) -> Callable:
        return torch.compile(function, dynamic=False, mode=mode)

    return StepFunctions(compile(steps.posterior), compile(steps.prior), compile(steps.action))


def compile_layer_tails(model: nn.Module) -> None:
    """Compile the normalisation + activation of the layers outside the step functions:
    one fused pass over the activations instead of several eager ones.

    Convolutions, pooling and upsampling stay library kernels (compiled, the max-pool
    backward became slower).  Each image size, batch size and grad/autocast mode is its
    own graph, so the recompile limit is raised; graphs are cached on disk.
    """
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    norm_silu = torch.compile(rms_norm_silu, dynamic=None)
    for module in model.modules():
        if isinstance(module, ChannelNorm):
            module.compile(dynamic=False)
        elif isinstance(module, NormedLinear):
            module.norm_silu = norm_silu  # the layer's declared tail function


class Accelerator:
    """Precision, loss scaling and the step functions of one agent's updates and policy steps.

    ``compile``: the step functions and layer tails are compiled.  ``cuda_graphs`` (needs
    ``compile``): the update uses second compilations of the posterior and prior steps that
    replay CUDA graphs; acting and reports keep the plain compiled ones, whose outputs may
    outlive the next call.
    """

    def __init__(self, model: nn.Module, steps: StepFunctions, device: torch.device, precision: str = "fp32",
                 compile: bool = False, cuda_graphs: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
        if cuda_graphs and not compile:
            raise ValueError("cuda_graphs=true replays compiled graphs; it needs compile=true")
        self.precision, self.device_type = precision, device.type
        self.acting = compiled_steps(steps) if compile else steps
        self.graphed = compiled_steps(steps, mode="reduce-overhead") if cuda_graphs else None
        if compile:
            compile_layer_tails(model)

    def autocast(self) -> torch.autocast:
        """Mixed precision for the losses; weights and optimiser stay in float32."""
        dtype = AUTOCAST_DTYPES.get(self.precision, torch.bfloat16)
        return torch.autocast(self.device_type, dtype=dtype, enabled=self.precision in AUTOCAST_DTYPES)

    @contextlib.contextmanager
    def update(self) -> Iterator[StepFunctions]:
        """Autocast, and the step functions of one update.  With CUDA graphs a new graph
        step begins here, so the previous update's graph outputs may be overwritten:
        everything an update returns is built outside the graphs."""
        with self.autocast():
            if self.graphed is None:
                yield self.acting
                return
            torch.compiler.cudagraph_mark_step_begin()
            yield StepFunctions(self.graphed.posterior, self.graphed.prior, self.acting.action)


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


# -- hardware probes ---------------------------------------------------------------


def cpu_capability() -> str:
    """The vector instructions torch's CPU kernels use here ("AVX2", "AVX512", ...): CPUs of one
    model name differ in them, and so in matmul speed and in whether bf16 is native."""
    return torch.backends.cpu.get_cpu_capability()


def cpu_compiler_available() -> bool:
    """torch.compile on CPU builds C++ against Python's headers; without either it fails on
    the first call."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return headers.exists() and any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def slow_low_precision(precision: str) -> str | None:
    """Why ``precision`` would slow this CPU down, or None: CPUs without native bf16/fp16
    instructions (AVX512-BF16, AMX) emulate those matrix products far slower than float32
    (60-170x, docs/benchmarks.md).  Timed on a 256x256 product (well under a second even when
    emulated); under half of float32's rate counts, as a native CPU timed while busy can
    read somewhat below it."""
    if precision not in AUTOCAST_DTYPES:
        return None
    cpu = torch.device("cpu")
    low = matmul_peak(cpu, AUTOCAST_DTYPES[precision], size=256, repeats=2)
    full = matmul_peak(cpu, torch.float32, size=256, repeats=2)
    if 2 * low >= full:
        return None
    return (f"precision={precision}: this CPU multiplies {precision} matrices at {low / 1e9:.1f} GFLOP/s, slower "
            f"than float32 ({full / 1e9:.1f} GFLOP/s), as CPUs without native {precision} instructions "
            f"(AVX512-BF16, AMX) do; precision=fp32 will run faster here")


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    Otherwise each block above glibc's mmap threshold is a fresh ``mmap``, unmapped when
    freed, so every update page-faults and zero-fills its large activations again.  Like
    CUDA's caching allocator, the process then keeps its peak footprint.  Returns False
    where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters from <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def usable_speed_settings(compile: bool, cuda_graphs: bool, precision: str, device: torch.device) -> tuple[bool, bool]:
    """``compile`` and ``cuda_graphs`` as this machine can run them, with a warning for
    each one it cannot (and for a precision this CPU emulates)."""
    if compile and device.type == "cpu" and not cpu_compiler_available():
        log.warning("compile=true needs a C++ compiler and Python's headers on CPU, and this machine "
                    "lacks one; running eager. Install them (apt-get install g++ python3-dev) or set compile=false")
        compile = False
    if cuda_graphs and device.type != "cuda":
        log.warning(f"cuda_graphs=true needs a CUDA device and this run is on {device.type}; running without")
        cuda_graphs = False
    if device.type == "cpu" and (reason := slow_low_precision(precision)):
        log.warning(reason)
    return compile, cuda_graphs and compile
