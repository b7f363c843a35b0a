"""The training loop: collect with several environments, replay, update, evaluate."""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dreamer.agent import Agent
from dreamer.envs import EnvBatch
from dreamer.networks import encoder_keys
from dreamer.logger import JSONLSink, Logger, Mean, TerminalSink, WandbSink
from dreamer.replay import Replay

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_agent(cfg: DictConfig, obs_space: dict, action_space, device: torch.device) -> Agent:
    """Instantiate world model, actor-critic and optimiser from the config groups."""
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
    return Agent(world_model, actor_critic, optimizer).to(device)


def replay_spaces(obs_space: dict, action_size: int) -> dict:
    spaces = {key: (shape, torch.uint8 if len(shape) == 3 else torch.float32) for key, shape in obs_space.items()}
    spaces["action"] = ((action_size,), torch.float32)
    spaces["reward"] = ((), torch.float32)
    for key in ("is_first", "is_last", "is_terminal"):
        spaces[key] = ((), torch.bool)
    return spaces


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: temporary file, fsync, rename."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def save_image_grid(path: Path, grid: torch.Tensor) -> None:
    """Write (B, rows, T, H, W, C) images in [0, 1] as one PNG: sequences stacked, time across."""
    from PIL import Image

    batch, rows, length, height, width, channels = grid.shape
    image = grid.permute(0, 1, 3, 2, 4, 5).reshape(batch * rows * height, length * width, channels)
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(path)


def to_floats(metrics: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
    """One host transfer for all scalar metric tensors."""
    if not metrics:
        return {}
    values = torch.stack([value.detach().float() for value in metrics.values()]).tolist()
    return {f"{prefix}{key}": value for key, value in zip(metrics, values)}


@torch.no_grad()
def evaluate(agent: Agent, envs: EnvBatch) -> list[float]:
    """One episode per environment with the actor's mode; returns their returns."""
    obs = envs.reset()
    latent = agent.initial_state(len(envs))
    action = np.zeros((len(envs), envs.action_space.size), np.float32)
    returns = np.zeros(len(envs))
    done = np.zeros(len(envs), bool)
    while not done.all():
        action, latent = agent.act({**obs, "action": action}, latent, explore=False)
        obs = envs.step(action)
        returns += np.where(done, 0.0, obs["reward"])
        done |= obs["is_last"]
    return returns.tolist()


class Runner:
    """Owns environments, agent, replay and logger for one run directory."""

    def __init__(self, cfg: DictConfig, run_dir: str | Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        make_env = hydra.utils.instantiate(cfg.env, _convert_="all")
        self.envs = EnvBatch(lambda index: make_env(seed=cfg.seed * 1000 + index), cfg.env_num)
        self.eval_envs = EnvBatch(lambda index: make_env(seed=cfg.seed * 1000 + 500 + index), cfg.eval_episodes)
        self.action_repeat = int(cfg.env.get("action_repeat", 1))
        self.agent = build_agent(cfg, self.envs.obs_space, self.envs.action_space, self.device)
        model = cfg.model.world_model
        self.replay = Replay(
            cfg.replay.capacity, cfg.env_num, replay_spaces(self.envs.obs_space, self.envs.action_space.size),
            model.deter, model.stoch, model.classes, seed=cfg.seed,
        )
        sinks = [JSONLSink(self.run_dir / "metrics.jsonl"), TerminalSink()]
        if cfg.logger.wandb:
            sinks.append(WandbSink(OmegaConf.to_container(cfg, resolve=True), self.run_dir, cfg.logger.project))
        self.logger = Logger(sinks)
        parameters = sum(p.numel() for p in self.agent.parameters())
        log.info("agent has %.2fM parameters on %s; run dir %s", parameters / 1e6, self.device, self.run_dir)

    def train_once(self, means: Mean) -> None:
        cfg = self.cfg
        batch, start, indices = self.replay.sample(cfg.batch_size, cfg.batch_length)
        batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        start = type(start)(start.deter.to(self.device), start.stoch.to(self.device))
        metrics, posterior = self.agent.train_step(batch, start)
        self.replay.update_latents(indices, posterior)
        means.add(to_floats(metrics, "train/"))

    def run(self) -> dict[str, float]:
        cfg = self.cfg
        envs = self.envs
        step = 0  # environment steps, action repeat included
        updates_due = 0.0
        updates_per_policy_step = cfg.train_ratio / (cfg.batch_size * cfg.batch_length)
        means = Mean()
        episode_return = np.zeros(len(envs))
        episode_length = np.zeros(len(envs), int)
        last_log = last_eval = 0
        log_time, log_step = time.time(), 0
        final: dict[str, float] = {}
        latest = {}

        obs = envs.reset()
        latent = self.agent.initial_state(len(envs))
        action = np.zeros((len(envs), envs.action_space.size), np.float32)
        progress = tqdm(total=cfg.steps, unit="step", dynamic_ncols=True, disable=not cfg.progress)
        while step < cfg.steps:
            obs["action"] = action * ~obs["is_first"][:, None]
            action, latent = self.agent.act(obs, latent, explore=True)
            self.replay.add(obs, latent)
            obs = envs.step(action)
            step += len(envs) * self.action_repeat
            progress.update(len(envs) * self.action_repeat)

            episode_return += obs["reward"]
            episode_length += 1
            for index in np.flatnonzero(obs["is_last"]):
                latest["episode/return"] = float(episode_return[index])
                self.logger.write(step, {"episode/return": latest["episode/return"],
                                         "episode/length": float(episode_length[index] * self.action_repeat)})
                episode_return[index], episode_length[index] = 0.0, 0
            episode_return[obs["is_first"]] = 0.0

            if self.replay.can_sample(cfg.batch_length) and step >= cfg.train_start:
                updates_due += len(envs) * updates_per_policy_step
                while updates_due >= 1.0:
                    self.train_once(means)
                    updates_due -= 1.0

            if step - last_log >= cfg.log_every:
                now = time.time()
                metrics = means.result()
                metrics["fps"] = (step - log_step) / max(now - log_time, 1e-9)
                metrics["updates"] = float(self.agent.updates)
                self.logger.write(step, metrics)
                log_time, log_step, last_log = now, step, step
                progress.set_postfix({k.split("/")[0]: f"{v:.1f}" for k, v in latest.items()}, refresh=False)

            if cfg.eval_every and step - last_eval >= cfg.eval_every and step < cfg.steps:
                latest.update(self.evaluate(step))
                last_eval = step
        progress.close()
        final = self.evaluate(step)
        save_checkpoint(self.run_dir / "checkpoint.pt", self.checkpoint(step))
        self.close()
        return final

    def evaluate(self, step: int) -> dict[str, float]:
        returns = evaluate(self.agent, self.eval_envs)
        metrics = {"eval/return": float(np.mean(returns)), "eval/return_std": float(np.std(returns))}
        self.logger.write(step, metrics)
        self.save_report(step)
        return {"eval/return": metrics["eval/return"]}

    @torch.no_grad()
    def save_report(self, step: int, sequences: int = 4) -> None:
        """Image grids from the objective's report (open-loop predictions for ``dreamer``)."""
        if not self.replay.can_sample(self.cfg.batch_length):
            return
        batch, start, _ = self.replay.sample(sequences, self.cfg.batch_length)
        batch = {key: value.to(self.device) for key, value in batch.items()}
        start = type(start)(start.deter.to(self.device), start.stoch.to(self.device))
        inputs, _ = self.agent.world_model.observe(batch, start)
        for key, grid in self.agent.world_model.objective.report(inputs).items():
            path = self.run_dir / "openloop" / f"{key}_{step:08d}.png"
            path.parent.mkdir(exist_ok=True)
            save_image_grid(path, grid)

    def checkpoint(self, step: int) -> dict:
        return {
            "step": step,
            "agent": self.agent.state_dict(),
            "optimizer": self.agent.optimizer.state_dict(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def close(self) -> None:
        self.logger.close()
        self.envs.close()
        self.eval_envs.close()
