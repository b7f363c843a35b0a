"""From a configuration to built parts: process settings, environments, agent, replay and
logger.  The entry points call these; nothing else reads the configuration to build."""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import logging
import random
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dreamer.accelerate import keep_freed_memory, usable_speed_settings
from dreamer.agent import Agent
from dreamer.checkpoint import Checkpoints, bias_free_refusal, mismatch_detail
from dreamer.config import ConfigError
from dreamer.envs import EnvBatch
from dreamer.envs.base import ActionSpace, Env, EnvSetupError
from dreamer.envs.batch import seeded
from dreamer.logger import JSONLSink, Logger, TerminalSink
from dreamer.networks import encoder_keys
from dreamer.replay import Replay

log = logging.getLogger(__name__)

# Training and evaluation environments draw their seeds from disjoint ranges.
TRAIN_SEED_OFFSET, EVAL_SEED_OFFSET = 0, 500


@dataclass
class TrainingParts:
    """Everything a training run is made of."""

    envs: EnvBatch
    eval_envs: EnvBatch
    agent: Agent
    replay: Replay
    logger: Logger


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


def prepare_process(cfg: DictConfig) -> torch.device:
    """Seeds, deterministic kernels and the allocator setting; returns the device."""
    seed_everything(cfg.seed, cfg.deterministic)
    if cfg.keep_freed_memory:
        keep_freed_memory()
    return resolve_device(cfg.device)


def env_factory(cfg: DictConfig) -> Callable[..., Env]:
    """``make_env(seed=..., render=...)`` for the configured suite."""
    return hydra.utils.instantiate(cfg.env, _convert_="all")


def env_spaces(make_env: Callable[..., Env], seed: int = 0) -> tuple[dict[str, tuple[int, ...]], ActionSpace]:
    """The observation and action spaces of an environment, built and closed again."""
    env = make_env(seed=seed)
    try:
        return env.obs_space, env.action_space
    finally:
        env.close()


GROUPS_WITH_TARGETS = ("env", "rep_variant", "optimizer", "model.world_model", "model.actor_critic")


def fits(value, annotation) -> bool:
    """Whether a configuration value fits a constructor's type hint (plain types, optional,
    unions, sequences and dicts of them; anything else is accepted)."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any or annotation is inspect.Parameter.empty:
        return True
    if annotation is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, option) for option in arguments)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (tuple, list, collections.abc.Sequence):
        element = arguments[0] if arguments and (origin is not tuple or len(arguments) == 1 or arguments[1] is ...) else None
        elements = arguments if origin is tuple and arguments and arguments[-1] is not ... else None
        if not isinstance(value, (list, tuple)) or (elements and len(elements) != len(value)):
            return False
        return all(fits(item, element if elements is None else elements[i]) for i, item in enumerate(value)) \
            if element is not None or elements else True
    if origin is dict:
        return isinstance(value, dict) and (not arguments or all(fits(item, arguments[1]) for item in value.values()))
    return True


def check_arguments(cfg: DictConfig) -> None:
    """Each group's values against the type hints of the constructor its ``_target_`` names:
    an unknown argument or a value of the wrong type is a one-line :class:`ConfigError`."""
    for group in GROUPS_WITH_TARGETS:
        node = OmegaConf.to_container(OmegaConf.select(cfg, group), resolve=True)
        module, _, attribute = node["_target_"].rpartition(".")
        try:
            target = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError, ValueError) as error:
            raise ConfigError(f"{group}._target_={node['_target_']} cannot be imported ({error})") from None
        parameters = inspect.signature(target).parameters
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
        for name, value in node.items():
            if name.startswith("_"):
                continue
            if name not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                raise ConfigError(f"{group}.{name} is not an argument of {node['_target_']}; "
                                  f"its arguments: {', '.join(p for p in parameters if p not in ('self', 'context'))}")
            if name in hints and not fits(value, hints[name]):
                hint = hints[name].__name__ if isinstance(hints[name], type) else str(hints[name]).replace("typing.", "")
                raise ConfigError(f"{group}.{name}={value} is invalid: {node['_target_']} takes {hint}")


def without_speedups(cfg: DictConfig) -> DictConfig:
    """``cfg`` eager in fp32: an agent built only to check shapes needs no compiling or precision probe."""
    return OmegaConf.merge(cfg, {"compile": False, "cuda_graphs": False, "precision": "fp32"})


def check_buildable(cfg: DictConfig) -> None:
    """Build the configured environment once, and the agent on the meta device (shapes,
    no memory): raises :class:`ConfigError` with the one-line reason an environment, an
    objective, a model size or a debug hook cannot work."""
    from hydra.errors import InstantiationException

    plain = without_speedups(cfg)
    try:
        check_arguments(cfg)
        obs_space, action_space = env_spaces(env_factory(cfg))
        with torch.device("meta"):
            agent = build_agent(plain, obs_space, action_space, torch.device("meta"))
    except (EnvSetupError, ValueError, TypeError, InstantiationException) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        if isinstance(error, InstantiationException):  # "Error locating target 'x', set env var ...", "full_key: k"
            key = lines[-1].removeprefix("full_key: ") if len(lines) > 1 else "a _target_"
            raise ConfigError(f"{key}: {lines[0].split(', set env var')[0]}") from None
        raise ConfigError(" ".join(lines[:2])) from None
    losses = sorted(agent.loss_scales)
    if cfg.debug.inject_nan is not None and cfg.debug.inject_nan not in losses:
        raise ConfigError(f"debug.inject_nan={cfg.debug.inject_nan} is not a loss of this agent; "
                          f"choose one of: {', '.join(losses)}")


def build_agent(cfg: DictConfig, obs_space: dict, action_space: ActionSpace, device: torch.device) -> Agent:
    """World model, actor-critic and optimiser from the config groups, with the speed
    settings this machine can run."""
    cnn_keys, mlp_keys = encoder_keys(obs_space, cfg.model.cnn_keys, cfg.model.mlp_keys)
    world_model = hydra.utils.instantiate(cfg.model.world_model, _convert_="all")(
        obs_space=obs_space,
        action_size=action_space.size,
        representation=hydra.utils.instantiate(cfg.rep_variant, _convert_="all"),
        cnn_keys=cnn_keys,
        mlp_keys=mlp_keys,
    )
    actor_critic = hydra.utils.instantiate(cfg.model.actor_critic, _convert_="all")(
        feature_size=world_model.rssm.feature_size,
        action_size=action_space.size,
        discrete=action_space.discrete,
    )
    optimizer = hydra.utils.instantiate(cfg.optimizer, _convert_="all")
    compile, cuda_graphs = usable_speed_settings(cfg.compile, cfg.cuda_graphs, cfg.precision, device)
    return Agent(
        world_model, actor_critic, optimizer, device, precision=cfg.precision,
        compile=compile, cuda_graphs=cuda_graphs, channels_last=cfg.channels_last,
    )


def replay_spaces(obs_space: dict, action_size: int) -> dict:
    """Shape and dtype of every key the replay stores: images as uint8, the rest as floats and flags."""
    spaces = {key: (shape, torch.uint8 if len(shape) == 3 else torch.float32) for key, shape in obs_space.items()}
    spaces["action"] = ((action_size,), torch.float32)
    spaces["reward"] = ((), torch.float32)
    for key in ("is_first", "is_last", "is_terminal"):
        spaces[key] = ((), torch.bool)
    return spaces


def build_replay(capacity: int, streams: int, obs_space: dict, action_space: ActionSpace, agent: Agent,
                 seed: int) -> Replay:
    """A replay for these spaces that stores the latents of this agent's RSSM."""
    rssm = agent.world_model.rssm
    spaces = replay_spaces(obs_space, action_space.size)
    return Replay(capacity, streams, spaces, rssm.deter_size, rssm.stoch_size, rssm.classes, seed=seed)


def build_logger(cfg: DictConfig, run_dir: Path, facts: dict | None = None) -> Logger:
    """metrics.jsonl and the console, then each sink ``logger=`` chose (``conf/logger/``),
    given the run directory, the run's facts (``run.json``) and the resolved configuration."""
    sinks = [JSONLSink(run_dir / "metrics.jsonl"), TerminalSink()]
    config = OmegaConf.to_container(cfg, resolve=True)
    for node in cfg.logger.values():
        make_sink = hydra.utils.instantiate(node, _partial_=True, _convert_="all")
        sinks.append(make_sink(run_dir=run_dir, facts=facts or {}, run_config=config))
    return Logger(sinks)


def build_training(cfg: DictConfig, run_dir: Path, device: torch.device, facts: dict | None = None) -> TrainingParts:
    make_env = env_factory(cfg)
    # Evaluation stays in this process: it runs rarely, and eval_episodes workers cost memory.
    workers = cfg.env_workers and cfg.env_num > 1
    envs = EnvBatch(partial(seeded, make_env, cfg.seed * 1000 + TRAIN_SEED_OFFSET), cfg.env_num, workers)
    eval_envs = EnvBatch(partial(seeded, make_env, cfg.seed * 1000 + EVAL_SEED_OFFSET), cfg.eval_episodes)
    agent = build_agent(cfg, envs.obs_space, envs.action_space, device)
    agent.inject_nan = cfg.debug.inject_nan
    replay = build_replay(cfg.replay.capacity, cfg.env_num, envs.obs_space, envs.action_space, agent, cfg.seed)
    return TrainingParts(envs, eval_envs, agent, replay, build_logger(cfg, run_dir, facts))


def check_resumable(cfg: DictConfig, run_dir: Path) -> None:
    """Load the run's newest loadable checkpoint into the agent and replay this
    configuration builds (eager, on the CPU), so that a resume that cannot continue stops
    with one line before anything in the run directory changes."""
    try:
        saved, _ = Checkpoints(run_dir, cfg.checkpoint.keep).load()
    except ValueError as error:
        raise ConfigError(f"resume={run_dir}: {error}") from None
    obs_space, action_space = env_spaces(env_factory(cfg))
    agent = build_agent(without_speedups(cfg), obs_space, action_space, torch.device("cpu"))
    if reason := bias_free_refusal(saved["agent"], agent, run_dir):
        raise ConfigError(reason)
    try:
        agent.load_state_dict(saved["agent"])
        agent.optimizer.load_state_dict(saved["optimizer"])
        replay = build_replay(cfg.replay.capacity, cfg.env_num, obs_space, action_space, agent, cfg.seed)
        replay.load_state_dict(saved["replay"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise ConfigError(
            f"resume={run_dir}: its checkpoint does not fit the agent this configuration builds "
            f"({mismatch_detail(error)[:200]}); drop the overrides that change the model, the replay or env_num"
        ) from None
