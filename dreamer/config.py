"""Configuration checks run before anything starts: one clear line per mistake."""

from __future__ import annotations

import itertools
from pathlib import Path

import gymnasium
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("model", "rep_variant", "env", "optimizer")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names it and what is valid."""


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def check_group_choice(group: str, choice: str) -> None:
    options = group_options(group)
    if choice not in options:
        raise ConfigError(f"{group}={choice} is not a known option; choose one of: {', '.join(options)}")


def _positive(cfg: DictConfig, key: str, minimum: float, strict: bool = True) -> None:
    value = OmegaConf.select(cfg, key)
    bad = value is None or not isinstance(value, (int, float)) or (value <= minimum if strict else value < minimum)
    if bad:
        relation = ">" if strict else ">="
        raise ConfigError(f"{key}={value} is invalid; it must be a number {relation} {minimum}")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for impossible numbers, unknown devices, envs or image sizes."""
    _positive(cfg, "steps", 0)
    _positive(cfg, "train_ratio", 0)
    _positive(cfg, "batch_size", 0)
    _positive(cfg, "batch_length", 2, strict=False)
    _positive(cfg, "env_num", 0)
    _positive(cfg, "eval_episodes", 0)
    _positive(cfg, "eval_every", 0, strict=False)
    _positive(cfg, "replay.capacity", 0)
    if cfg.replay.capacity // cfg.env_num < cfg.batch_length + 1:
        raise ConfigError(
            f"replay.capacity={cfg.replay.capacity} is too small: it must hold batch_length + 1 = "
            f"{cfg.batch_length + 1} steps for each of env_num={cfg.env_num} environments"
        )
    from dreamer.agent import PRECISIONS

    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision={cfg.precision} is not one of {', '.join(PRECISIONS)}")
    for key in ("compile", "channels_last", "cuda_graphs", "deterministic"):
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key}={cfg.get(key)} is invalid; it must be true or false")
    if cfg.get("cuda_graphs", False) and not cfg.compile:
        raise ConfigError("cuda_graphs=true replays the compiled RSSM steps; it needs compile=true")
    if cfg.device not in DEVICES and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device={cfg.device} is not one of {', '.join(DEVICES)} (or cuda:N)")
    if str(cfg.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device={cfg.device} but no CUDA device is available; use device=cpu or device=auto")
    error_at = cfg.debug.get("env_error_at_step")
    if error_at is not None and (type(error_at) is not int or error_at < 0):
        raise ConfigError(f"debug.env_error_at_step={error_at} is invalid; it must be null or a whole number >= 0")
    _validate_env(cfg)
    _validate_image_size(cfg)
    _validate_obs_keys(cfg)


def _validate_env(cfg: DictConfig) -> None:
    target = cfg.env.get("_target_", "")
    if target.endswith("GymEnv"):
        env_id = cfg.env.id
        if env_id not in gymnasium.registry:
            close = [name for name in gymnasium.registry if env_id.lower().split("-")[0] in name.lower()][:5]
            hint = f"; similar: {', '.join(close)}" if close else "; see gymnasium.registry for the ids"
            raise ConfigError(f"env.id={env_id} is not a registered gymnasium environment{hint}")
        from dreamer.envs.gym import OBS_CHOICES

        if cfg.env.obs not in OBS_CHOICES:
            raise ConfigError(f"env.obs={cfg.env.obs} is not one of {', '.join(OBS_CHOICES)}")


def _validate_image_size(cfg: DictConfig) -> None:
    size = cfg.env.get("size")
    if size is None:
        return
    stride = 2 ** len(cfg.model.get("cnn_mults", [2, 3, 4, 4]))
    if any(int(side) % stride or int(side) <= 0 for side in size):
        raise ConfigError(
            f"env.size={list(size)} is invalid: both sides must be positive multiples of the encoder's stride {stride}"
        )


def _validate_obs_keys(cfg: DictConfig) -> None:
    import hydra

    from dreamer.networks import encoder_keys

    from dreamer.envs.base import EnvSetupError

    try:
        env = hydra.utils.instantiate(cfg.env, _convert_="all")(seed=0)
    except EnvSetupError as error:  # unknown task, missing package or GL library
        raise ConfigError(str(error)) from None
    try:
        encoder_keys(env.obs_space, cfg.model.cnn_keys, cfg.model.mlp_keys)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    finally:
        env.close()


def override_choices(overrides: list[str]) -> list[list[str]]:
    """Every single-run override list a (possibly comma-swept) command line expands to."""
    options = []
    for override in overrides:
        key, _, value = override.partition("=")
        if "," in value and not value.startswith(("[", "{", "'", '"')):
            options.append([f"{key}={part}" for part in value.split(",")])
        else:
            options.append([override])
    return [list(combo) for combo in itertools.islice(itertools.product(*options), 256)]
