"""Building blocks: RMSNorm, MLPs, block-diagonal linear layers, CNN encoder (spec 1)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from dreamer.functional import block_diagonal_init_bound, symlog


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last axis with a learned scale."""

    def __init__(self, size: int, eps: float = 1e-4):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.scale, self.eps)


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last axis with a learned ``scale`` in ``x``'s dtype."""
    return F.rms_norm(x, (x.shape[-1],), scale.to(x.dtype), eps)


def rms_norm_silu(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """``SiLU(RMSNorm(x))`` over the last axis: the tail of every hidden layer."""
    return F.silu(rms_norm(x, scale, eps))


def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the autocast dtype when autocast is on: cast once for the several heads
    it feeds instead of once per head (each linear layer casts its own input)."""
    device = x.device.type
    return x.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else x


def zero_bias(layer: nn.Module) -> nn.Module:
    """``layer`` with its bias set to zero, as DreamerV3 initialises every bias."""
    nn.init.zeros_(layer.bias)
    return layer


class NormedLinear(nn.Sequential):
    """Linear (with bias), RMSNorm, SiLU: the hidden layer used everywhere in DreamerV3.

    RMSNorm divides by the root mean square of its input, so without the bias the layer
    would see only the direction of ``x``, not its size: a one-dimensional action of 0.2
    would look the same as 1.0.

    ``norm_silu`` computes the last two; ``dreamer.accelerate.compile_layer_tails`` sets a
    compiled version that makes one pass over the activations instead of several eager ones.
    """

    def __init__(self, in_size: int, out_size: int):
        super().__init__(nn.Linear(in_size, out_size), RMSNorm(out_size), nn.SiLU())
        zero_bias(self[0])
        self.norm_silu = rms_norm_silu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear, norm, _ = self
        return self.norm_silu(linear(x), norm.scale, norm.eps)


class MLP(nn.Module):
    """``layers`` hidden NormedLinear layers, then an optional output layer.

    ``out_scale`` rescales the output layer's initial weights; 0 zero-initialises it
    (reward and critic heads, spec 1 and 3).
    """

    def __init__(self, in_size: int, out_size: int | None, layers: int, units: int, out_scale: float = 1.0):
        super().__init__()
        hidden = []
        for index in range(layers):
            hidden.append(NormedLinear(in_size if index == 0 else units, units))
        self.hidden = nn.Sequential(*hidden)
        last = units if layers else in_size
        self.out = None
        if out_size is not None:
            self.out = nn.Linear(last, out_size)
            with torch.no_grad():
                self.out.weight.mul_(out_scale)
                self.out.bias.zero_()
        self.out_size = out_size if out_size is not None else last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hidden(x)
        return self.out(x) if self.out is not None else x


class BlockLinear(nn.Module):
    """Block-diagonal linear map: ``blocks`` independent (in/blocks -> out/blocks) layers."""

    def __init__(self, in_size: int, out_size: int, blocks: int, bias: bool = True):
        super().__init__()
        if in_size % blocks or out_size % blocks:
            raise ValueError(f"BlockLinear sizes {in_size}->{out_size} must divide into {blocks} blocks")
        self.blocks = blocks
        bound = block_diagonal_init_bound(in_size // blocks)
        self.weight = nn.Parameter(torch.empty(blocks, in_size // blocks, out_size // blocks).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(out_size)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        x = x.reshape(-1, self.blocks, x.shape[-1] // self.blocks).transpose(0, 1)  # (G, N, I)
        x = torch.bmm(x, self.weight).transpose(0, 1).reshape(*leading, -1)  # (..., G*O)
        return x + self.bias if self.bias is not None else x


class BlockSharedLinear(nn.Module):
    """The block GRU's input layer: block g maps its own slice of ``x`` (N, G * own/G) and
    all of ``shared`` (N, S) to its out/G outputs.

    The same map as :class:`BlockLinear` on the concatenation of each block's slice with a
    copy of ``shared``, with the same parameters, but ``shared`` goes through one dense
    matmul into every block instead of being copied G times: the weight is stored
    (own/G + S, G, out/G) so that its shared rows are a plain (S, out) matrix.
    """

    def __init__(self, own_size: int, shared_size: int, out_size: int, blocks: int):
        super().__init__()
        if own_size % blocks or out_size % blocks:
            raise ValueError(f"BlockSharedLinear sizes {own_size}->{out_size} must divide into {blocks} blocks")
        self.blocks, self.own = blocks, own_size // blocks
        bound = block_diagonal_init_bound(self.own + shared_size)
        # Drawn in BlockLinear's (G, own/G + S, out/G) order, so a seed gives the same map as BlockLinear.
        weight = torch.empty(blocks, self.own + shared_size, out_size // blocks).uniform_(-bound, bound)
        self.weight = nn.Parameter(weight.transpose(0, 1).contiguous())
        self.bias = nn.Parameter(torch.zeros(out_size))

    def forward(self, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        own = torch.einsum("ngi,igo->ngo", x.reshape(*x.shape[:-1], self.blocks, self.own), self.weight[: self.own])
        return own.flatten(-2) + shared @ self.weight[self.own :].flatten(1) + self.bias


class ChannelNorm(RMSNorm):
    """RMSNorm over the channels (axis 1) of an NCHW image, in float32 like ``F.rms_norm``.

    Reducing over axis 1 in place, instead of permuting channels last, lets a compiled
    kernel stream over contiguous pixels.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.float()
        inverse_rms = torch.rsqrt(wide.square().mean(1, keepdim=True) + self.eps)  # (N, 1, H, W)
        return (wide * inverse_rms * self.scale.float()[:, None, None]).to(x.dtype)


class ConvEncoder(nn.Module):
    """CNN over (..., H, W, C) uint8 images -> (..., E) (spec 1).

    Stages of ``depth * mult`` channels: kernel 5 stride 1 conv, 2x2 max-pool,
    channel RMSNorm, SiLU; flattened once the image is 4x4 or smaller.
    """

    def __init__(self, image_shape: Sequence[int], depth: int, mults: Sequence[int], kernel: int = 5):
        super().__init__()
        height, width, channels = image_shape
        stages = []
        for mult in mults:
            stages += [
                zero_bias(nn.Conv2d(channels, depth * mult, kernel, padding="same")),
                nn.MaxPool2d(2),
                ChannelNorm(depth * mult),
                nn.SiLU(),
            ]
            channels = depth * mult
            height, width = height // 2, width // 2
        self.stages = nn.Sequential(*stages)
        self.out_size = channels * height * width
        self.out_shape = (channels, height, width)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        leading = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).permute(0, 3, 1, 2)  # (N, C, H, W)
        x = x.float() / 255.0 - 0.5
        x = self.stages(x)
        return x.reshape(*leading, -1)  # (..., E_cnn)


def encoder_keys(obs_space: dict[str, tuple[int, ...]], cnn_pattern: str, mlp_pattern: str) -> tuple[list, list]:
    """Image keys (H, W, C) matching ``cnn_pattern`` and vector keys matching ``mlp_pattern``."""
    cnn = [key for key, shape in obs_space.items() if len(shape) == 3 and re.fullmatch(cnn_pattern, key)]
    mlp = [key for key, shape in obs_space.items() if len(shape) == 1 and re.fullmatch(mlp_pattern, key)]
    if not cnn and not mlp:
        raise ValueError(
            f"observation keys {sorted(obs_space)} match neither encoder "
            f"(model.cnn_keys={cnn_pattern!r}, model.mlp_keys={mlp_pattern!r})"
        )
    return cnn, mlp


class MultiEncoder(nn.Module):
    """Encodes an observation dict: CNN for image keys, MLP for vector keys (spec 1)."""

    def __init__(
        self,
        obs_space: dict[str, tuple[int, ...]],
        cnn_keys: Sequence[str],
        mlp_keys: Sequence[str],
        depth: int,
        mlp_layers: int,
        mlp_units: int,
        cnn_mults: Sequence[int],
        kernel: int = 5,
    ):
        super().__init__()
        self.cnn_keys = list(cnn_keys)
        self.mlp_keys = list(mlp_keys)
        self.out_size = 0
        self.cnn = None
        self.mlp = None
        if self.cnn_keys:
            first = obs_space[self.cnn_keys[0]]
            channels = sum(obs_space[key][-1] for key in self.cnn_keys)
            self.cnn = ConvEncoder((first[0], first[1], channels), depth, cnn_mults, kernel)
            self.out_size += self.cnn.out_size
        if self.mlp_keys:
            in_size = sum(math.prod(obs_space[key]) for key in self.mlp_keys)
            self.mlp = MLP(in_size, None, mlp_layers, mlp_units)
            self.out_size += self.mlp.out_size

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.cnn is not None:
            parts.append(self.cnn(torch.cat([obs[key] for key in self.cnn_keys], -1)))
        if self.mlp is not None:
            leading = obs[self.mlp_keys[0]].shape[: obs[self.mlp_keys[0]].dim() - 1]
            vectors = torch.cat([obs[key].reshape(*leading, -1).float() for key in self.mlp_keys], -1)
            parts.append(self.mlp(symlog(vectors)))
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]  # (..., E)


class ConvDecoder(nn.Module):
    """Features (..., F) -> images (..., H, W, C) in [0, 1] space, mirroring :class:`ConvEncoder`.

    Deterministic features enter through a block-linear layer and stochastic ones
    through a linear layer (spec 2, dreamer); both produce the 4x4 x channels start.
    """

    def __init__(
        self,
        deter: int,
        stoch_flat: int,
        image_shape: Sequence[int],
        depth: int,
        blocks: int,
        mults: Sequence[int],
        kernel: int = 5,
    ):
        super().__init__()
        height, width, channels = image_shape
        self.image_shape = tuple(image_shape)
        scale = 2 ** len(mults)
        self.start_shape = (depth * mults[-1], height // scale, width // scale)
        start_size = self.start_shape[0] * self.start_shape[1] * self.start_shape[2]
        self.deter_size = deter
        self.from_deter = BlockLinear(deter, start_size, blocks) if start_size % blocks == 0 else nn.Linear(deter, start_size)
        self.from_stoch = nn.Linear(stoch_flat, start_size, bias=False)
        stages = []
        in_channels = self.start_shape[0]
        out_channels = [depth * mult for mult in reversed(mults[:-1])] + [channels]
        for index, out in enumerate(out_channels):
            stages += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_channels, out, kernel, padding="same")]
            if index < len(out_channels) - 1:
                stages += [ChannelNorm(out), nn.SiLU()]
            in_channels = out
        self.stages = nn.Sequential(*stages)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        leading = features.shape[:-1]
        stoch, deter = features[..., : -self.deter_size], features[..., -self.deter_size :]
        x = self.from_deter(deter) + self.from_stoch(stoch)  # (..., C*h*w)
        x = x.reshape(-1, *self.start_shape)  # (N, C, 4, 4)
        x = self.stages(x) + 0.5  # (N, C, H, W), pixels in [0, 1] space
        return x.permute(0, 2, 3, 1).reshape(*leading, *self.image_shape)
