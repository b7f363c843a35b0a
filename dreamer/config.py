"""The configuration schema: the type and valid range of every setting, and the few rules
that relate two settings.

The values live in ``conf/``; Hydra merges them onto the dataclasses below, so a wrong
type or an unknown key fails while composing, with the key named.  :func:`check` adds the
ranges (declared next to each field) and the cross-field rules, each as one line.
This module builds nothing: it imports neither the agent nor the environments.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("online", "offline", "disabled")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names it and what is valid."""


def above(minimum: float, default: Any = MISSING) -> Any:
    """A field whose value must be a number > ``minimum``."""
    return field(default=default, metadata={"above": minimum})


def at_least(minimum: float, default: Any = MISSING) -> Any:
    """A field whose value must be a number >= ``minimum`` (or null, where the type allows)."""
    return field(default=default, metadata={"at_least": minimum})


@dataclass
class ModelConfig:
    """``conf/model/``: sizes shared by the world model and the actor-critic."""

    deter: int = above(0)
    hidden: int = above(0)
    stoch: int = above(0)
    classes: int = above(0)
    blocks: int = above(0)
    depth: int = above(0)
    units: int = above(0)
    layers: int = at_least(0)
    cnn_mults: list[int] = MISSING  # channel multipliers of the CNN stages; each halves the image
    cnn_kernel: int = above(0, 5)  # odd: 'same' padding centres it
    cnn_keys: str = MISSING  # regex over image observation keys
    mlp_keys: str = MISSING  # regex over vector observation keys
    world_model: Any = MISSING  # dreamer.world_model.WorldModel arguments
    actor_critic: Any = MISSING  # dreamer.actor_critic.ActorCritic arguments


@dataclass
class CheckpointConfig:
    every: int = at_least(0)
    keep: int = at_least(0)


@dataclass
class NonfiniteConfig:
    max_in_row: int = above(0)


@dataclass
class DebugConfig:
    inject_nan: Optional[str] = None
    env_error_at_step: Optional[int] = at_least(0, None)


@dataclass
class ReplayConfig:
    capacity: int = above(0)


@dataclass
class Config:
    """The training configuration (``conf/config.yaml`` holds the values and says what each does)."""

    model: ModelConfig = MISSING
    rep_variant: Any = MISSING  # a RepresentationObjective's arguments
    env: Any = MISSING  # an Env's arguments; each suite has its own
    optimizer: Any = MISSING  # a dreamer.optim.Optimizer's arguments
    steps: int = above(0)
    seed: int = at_least(0)
    device: str = MISSING
    train_ratio: float = above(0)
    train_start: int = at_least(0)
    env_num: int = above(0)
    env_workers: bool = MISSING
    overlap: bool = MISSING
    batch_size: int = above(0)
    batch_length: int = at_least(2)
    eval_every: int = at_least(0)
    eval_episodes: int = above(0)
    log_every: int = above(0)
    progress: bool = MISSING
    precision: str = MISSING
    compile: bool = MISSING
    channels_last: bool = MISSING
    cuda_graphs: bool = MISSING
    deterministic: bool = MISSING
    keep_freed_memory: bool = MISSING
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    nonfinite: NonfiniteConfig = field(default_factory=NonfiniteConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    resume: Optional[str] = None
    experiment: Optional[str] = None  # the preset (conf/experiment/) a sweep runs; names its directory
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    logger: Any = field(default_factory=dict)  # conf/logger/: sinks besides metrics.jsonl, each a _target_


@dataclass
class BenchSettings:
    variants: list[str] = MISSING
    warmup: int = at_least(0)
    updates: int = above(0)
    profile: bool = MISSING
    run_steps: int = at_least(0)


@dataclass
class BenchConfig(Config):
    """``python -m dreamer.bench``: the training configuration and what the benchmark times."""

    bench: BenchSettings = field(default_factory=BenchSettings)


ConfigStore.instance().store(name="schema", node=Config)
ConfigStore.instance().store(name="bench_schema", node=BenchConfig)
# ${pid:} in conf/config.yaml's run directories: two runs started in the same second differ.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


def _check_ranges(node: DictConfig, schema: type, prefix: str = "") -> None:
    hints = typing.get_type_hints(schema)
    for spec in dataclasses.fields(schema):
        key, value = f"{prefix}{spec.name}", node[spec.name]
        if dataclasses.is_dataclass(hints[spec.name]):
            _check_ranges(value, hints[spec.name], f"{key}.")
        elif "above" in spec.metadata and not value > spec.metadata["above"]:
            raise ConfigError(f"{key}={value} is invalid; it must be a number > {spec.metadata['above']}")
        elif "at_least" in spec.metadata and value is not None and not value >= spec.metadata["at_least"]:
            raise ConfigError(f"{key}={value} is invalid; it must be a number >= {spec.metadata['at_least']}")


def check(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for a value out of its range or two values that cannot go together."""
    _check_ranges(cfg, BenchConfig if "bench" in cfg else Config)
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision={cfg.precision} is not one of {', '.join(PRECISIONS)}")
    if cfg.device not in DEVICES and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device={cfg.device} is not one of {', '.join(DEVICES)} (or cuda:N)")
    if str(cfg.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device={cfg.device} but no CUDA device is available; use device=cpu or device=auto")
    wandb_mode = OmegaConf.select(cfg, "logger.wandb.mode")
    if wandb_mode is not None and wandb_mode not in WANDB_MODES:
        raise ConfigError(f"logger.wandb.mode={wandb_mode} is not one of {', '.join(WANDB_MODES)}")
    if cfg.cuda_graphs and not cfg.compile:
        raise ConfigError("cuda_graphs=true replays the compiled RSSM steps; it needs compile=true")
    if cfg.replay.capacity // cfg.env_num < cfg.batch_length + 1:
        raise ConfigError(
            f"replay.capacity={cfg.replay.capacity} is too small: it must hold batch_length + 1 = "
            f"{cfg.batch_length + 1} steps for each of env_num={cfg.env_num} environments"
        )
    for key, value, minimum in (("env.action_repeat", cfg.env.get("action_repeat", 1), 1),
                                ("optimizer.warmup", cfg.optimizer.get("warmup", 0), 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"{key}={value} is invalid; it must be a whole number >= {minimum}")
    lr = cfg.optimizer.get("lr")
    if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0):
        raise ConfigError(f"optimizer.lr={lr} is invalid; it must be a number > 0")
    kernel = cfg.model.cnn_kernel
    if kernel % 2 == 0:
        raise ConfigError(f"model.cnn_kernel={kernel} is invalid; it must be an odd whole number >= 1 (3, 5, ...)")
    size = cfg.env.get("size")
    stride = 2 ** len(cfg.model.cnn_mults)
    if size is not None and any(int(side) % stride or int(side) <= 0 for side in size):
        raise ConfigError(
            f"env.size={list(size)} is invalid: both sides must be positive multiples of the encoder's stride {stride}"
        )

