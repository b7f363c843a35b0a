"""The training loop: collect with several environments, replay, update, evaluate."""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import pickle
import random
import signal
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dreamer.agent import Agent, cpu_compiler_available, slow_low_precision
from dreamer.config import ConfigError
from dreamer.envs import EnvBatch
from dreamer.envs.batch import seeded
from dreamer.networks import encoder_keys
from dreamer.logger import JSONLSink, Logger, Mean, TerminalSink, WandbSink
from dreamer.replay import Replay
from dreamer.rssm import Latent

log = logging.getLogger(__name__)


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


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    By default each block above glibc's mmap threshold (at most 32 MiB) is a fresh ``mmap``,
    unmapped when freed, so every update page-faults and zero-fills its large activations
    again (15-20 % of a ``size12M`` pixel update on CPU).  Like CUDA's caching allocator,
    the process then keeps its peak footprint.  Returns False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters from <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    compile = bool(cfg.get("compile", False))
    if compile and device.type == "cpu" and not cpu_compiler_available():
        log.warning("compile=true needs a C++ compiler and Python's headers on CPU, and this machine "
                    "lacks one; running eager. Install them (apt-get install g++ python3-dev) or set compile=false")
        compile = False
    precision = cfg.get("precision", "fp32")
    if device.type == "cpu" and (reason := slow_low_precision(precision)):
        log.warning(reason)
    cuda_graphs = bool(cfg.get("cuda_graphs", False))
    if cuda_graphs and not cfg.get("compile", False):
        raise ConfigError("cuda_graphs=true replays the compiled RSSM steps; it needs compile=true")
    if cuda_graphs and device.type != "cuda":
        log.warning(f"cuda_graphs=true needs a CUDA device and this run is on {device.type}; running without")
        cuda_graphs = False
    return Agent(
        world_model, actor_critic, optimizer, precision=precision,
        compile=compile, channels_last=bool(cfg.get("channels_last", False)), cuda_graphs=cuda_graphs,
    ).to(device)


def replay_spaces(obs_space: dict, action_size: int) -> dict:
    spaces = {key: (shape, torch.uint8 if len(shape) == 3 else torch.float32) for key, shape in obs_space.items()}
    spaces["action"] = ((action_size,), torch.float32)
    spaces["reward"] = ((), torch.float32)
    for key in ("is_first", "is_last", "is_terminal"):
        spaces[key] = ((), torch.bool)
    return spaces


def pop_log_keys(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Remove the ``log_<name>`` metrics an env reports, so they never reach the replay or
    the encoder; returns them by ``<name>``."""
    return {key.removeprefix("log_"): obs.pop(key) for key in [key for key in obs if key.startswith("log_")]}


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: temporary file, fsync, rename, fsync of the directory."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric rows written after the checkpoint we resume from (they will be redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (ValueError, KeyError):
            continue  # a line cut short by a kill
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)


def pickle_envs(envs: EnvBatch) -> bytes | None:
    """Environment state for exact resume, or None where an env cannot be pickled."""
    try:
        return pickle.dumps(envs.envs)
    except Exception:  # rendering back-ends and simulators often hold unpicklable handles
        return None


class NonFiniteLossError(RuntimeError):
    """Too many updates in a row had a non-finite loss."""


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
def evaluate(agent: Agent, envs: EnvBatch) -> dict[str, np.ndarray]:
    """One episode per environment with the actor's mode.

    Returns per-episode ``return`` and, for each ``log_<name>`` the envs report (e.g.
    Meta-World's success), its maximum over the episode as ``<name>``; each (episodes,).
    """
    obs = envs.reset()
    logs = pop_log_keys(obs)
    latent = agent.initial_state(len(envs))
    action = np.zeros((len(envs), envs.action_space.size), np.float32)
    results = {"return": np.zeros(len(envs)), **{name: values.astype(np.float64) for name, values in logs.items()}}
    done = np.zeros(len(envs), bool)
    while not done.all():
        action, latent = agent.act({**obs, "action": action}, latent, explore=False)
        obs = envs.step(action)
        for name, values in pop_log_keys(obs).items():
            results[name] = np.where(done, results[name], np.maximum(results[name], values))
        results["return"] += np.where(done, 0.0, obs["reward"])
        done |= obs["is_last"]
    return results


@dataclass
class LoopState:
    """Everything the training loop carries from one iteration to the next."""

    step: int = 0  # environment steps, action repeat included
    updates_due: float = 0.0
    last_log: int = 0
    last_eval: int = 0
    last_checkpoint: int = 0
    nonfinite_in_row: int = 0
    skipped_updates: int = 0
    latest: dict = field(default_factory=dict)
    episode_return: np.ndarray | None = None
    episode_length: np.ndarray | None = None
    episode_logs: dict = field(default_factory=dict)  # name -> (envs,) running max of log_<name>
    obs: dict | None = None
    latent: Latent | None = None
    action: np.ndarray | None = None


class Runner:
    """Owns environments, agent, replay and logger for one run directory."""

    def __init__(self, cfg: DictConfig, run_dir: str | Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        seed_everything(cfg.seed, cfg.deterministic)
        if cfg.get("keep_freed_memory", False):
            keep_freed_memory()
        self.device = resolve_device(cfg.device)
        make_env = hydra.utils.instantiate(cfg.env, _convert_="all")
        # Evaluation stays in this process: it runs rarely, and eval_episodes workers cost memory.
        workers = bool(cfg.get("env_workers", False)) and cfg.env_num > 1
        self.envs = EnvBatch(partial(seeded, make_env, cfg.seed * 1000), cfg.env_num, workers)
        self.eval_envs = EnvBatch(partial(seeded, make_env, cfg.seed * 1000 + 500), cfg.eval_episodes)
        self.action_repeat = int(cfg.env.get("action_repeat", 1))
        self.agent = build_agent(cfg, self.envs.obs_space, self.envs.action_space, self.device)
        self.agent.inject_nan = cfg.debug.inject_nan
        self.env_error_at: int | None = cfg.debug.get("env_error_at_step")  # test hook: simulated env failure
        if cfg.precision == "fp16" and self.device.type == "cpu":
            log.warning("precision=fp16 on CPU: most CPUs lack fp16 matmul units and run it far slower "
                        "than fp32 (docs/benchmarks.md); precision=bf16 is the fast CPU mode")
        model = cfg.model.world_model
        self.replay = Replay(
            cfg.replay.capacity, cfg.env_num, replay_spaces(self.envs.obs_space, self.envs.action_space.size),
            model.deter, model.stoch, model.classes, seed=cfg.seed,
        )
        self.means = Mean()
        self.state = LoopState()
        self.stop_signal: int | None = None
        resumed = self.restore()
        sinks = [JSONLSink(self.run_dir / "metrics.jsonl"), TerminalSink()]
        if cfg.logger.wandb:
            sinks.append(WandbSink(OmegaConf.to_container(cfg, resolve=True), self.run_dir, cfg.logger.project))
        self.logger = Logger(sinks)
        parameters = sum(p.numel() for p in self.agent.parameters())
        log.info("agent has %.2fM parameters on %s; run dir %s", parameters / 1e6, self.device, self.run_dir)
        if resumed:
            log.info("resumed from step %d", self.state.step)

    # -- checkpoints -------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def checkpoint(self, with_envs: bool = True) -> dict:
        """The run's state; ``with_envs=False`` leaves out the environments (after a crash
        they may be broken), so a resume starts new episodes."""
        state = self.state
        return {
            "step": state.step,
            "agent": self.agent.state_dict(),
            "optimizer": self.agent.optimizer.state_dict(),
            "replay": self.replay.state_dict(),
            "loop": {k: v for k, v in vars(state).items() if k not in ("latent",)},
            "latent": None if state.latent is None else (state.latent.deter.cpu(), state.latent.stoch.cpu()),
            "means": (self.means.sums, self.means.counts),
            "envs": pickle_envs(self.envs) if with_envs else None,
            "eval_envs": pickle_envs(self.eval_envs) if with_envs else None,
            "rng": rng_state(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def save(self, with_envs: bool = True) -> None:
        """Write ``checkpoint.pt`` and keep the last ``checkpoint.keep`` step copies.

        The state is serialised once: ``checkpoint.pt`` becomes a hard link to the newest
        step copy, swapped in atomically.
        """
        state = self.checkpoint(with_envs)
        if self.cfg.checkpoint.keep <= 0:
            save_checkpoint(self.checkpoint_path, state)
        else:
            history = self.run_dir / "checkpoints"
            history.mkdir(exist_ok=True)
            newest = history / f"step_{self.state.step:010d}.pt"
            save_checkpoint(newest, state)
            link = self.checkpoint_path.with_name(self.checkpoint_path.name + ".link")
            link.unlink(missing_ok=True)
            os.link(newest, link)
            os.replace(link, self.checkpoint_path)
            for old in sorted(history.glob("step_*.pt"))[: -self.cfg.checkpoint.keep]:
                old.unlink()
        self.state.last_checkpoint = self.state.step

    def restore(self) -> bool:
        """Continue from ``checkpoint.pt`` in the run directory, if there is one."""
        if not self.checkpoint_path.exists():
            return False
        saved = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        try:
            self.agent.load_training_state(saved["agent"], saved["optimizer"])
        except RuntimeError as error:  # torch lists every mismatching key: name the first
            detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
            raise ConfigError(
                f"resume={self.run_dir}: its checkpoint does not fit the agent this configuration builds "
                f"({detail[:200]}); drop the overrides that change the model"
            ) from None
        self.replay.load_state_dict(saved["replay"])
        self.state = LoopState(**saved["loop"])
        if saved["latent"] is not None:
            self.state.latent = Latent(*saved["latent"]).to(self.device)
        self.means.sums, self.means.counts = saved["means"]
        for batch, pickled in ((self.envs, saved["envs"]), (self.eval_envs, saved["eval_envs"])):
            if pickled is not None:
                batch.close()
                batch.envs = pickle.loads(pickled)
            elif batch is self.envs:
                self.state.obs = None  # episodes in flight are lost; start new ones
        set_rng_state(saved["rng"])
        truncate_metrics(self.run_dir / "metrics.jsonl", self.state.step)
        return True

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum

    # -- training ------------------------------------------------------------------

    def train_once(self) -> None:
        cfg, state = self.cfg, self.state
        batch, start, indices = self.replay.sample(cfg.batch_size, cfg.batch_length, self.device)
        metrics, posterior = self.agent.train_step(batch, start)
        values = to_floats(metrics, "")  # the loop's one wait for the device per update
        nonfinite = self.agent.nonfinite(values)
        if nonfinite:
            state.nonfinite_in_row += 1
            state.skipped_updates += 1
            if state.nonfinite_in_row >= cfg.nonfinite.max_in_row:
                self.save()  # the parameters are still those of the last good update
                raise NonFiniteLossError(
                    f"{state.nonfinite_in_row} updates in a row had non-finite losses "
                    f"({', '.join(nonfinite)}) at step {state.step}; last good state saved to {self.checkpoint_path}"
                )
            return
        state.nonfinite_in_row = 0
        self.replay.update_latents(indices, posterior)
        # An fp16 overflow's gradient norm is infinite: left out of the means.
        self.means.add({f"train/{key}": value for key, value in values.items() if math.isfinite(value)})

    def collect(self) -> None:
        """One policy step in every environment; stores the step and logs finished episodes."""
        state, envs = self.state, self.envs
        obs = state.obs
        obs["action"] = state.action * ~obs["is_first"][:, None]
        action, latent = self.agent.act(obs, state.latent, explore=True)
        if self.env_error_at is not None and state.step >= self.env_error_at:
            raise RuntimeError(f"debug.env_error_at_step={self.env_error_at}: simulated environment failure")
        next_obs = envs.step(action)  # the loop state changes only once the environments have stepped
        self.replay.add(obs, latent)
        state.action, state.latent, state.obs = action, latent, next_obs
        obs = next_obs
        logs = pop_log_keys(obs)
        state.step += len(envs) * self.action_repeat
        # A new episode can also begin without is_last: a crashed env worker was restarted.
        state.episode_return[obs["is_first"]] = 0.0
        state.episode_length[obs["is_first"]] = 0
        state.episode_return += obs["reward"]
        state.episode_length += ~obs["is_first"]  # the first observation is not a step
        for name, values in logs.items():
            running = state.episode_logs.get(name, values)
            state.episode_logs[name] = np.where(obs["is_first"], values, np.maximum(running, values))
        for index in np.flatnonzero(obs["is_last"]):
            state.latest["episode/return"] = float(state.episode_return[index])
            length = float(state.episode_length[index] * self.action_repeat)
            metrics = {"episode/return": state.latest["episode/return"], "episode/length": length}
            metrics.update({f"episode/{name}": float(values[index]) for name, values in state.episode_logs.items()})
            self.logger.write(state.step, metrics)

    def run(self) -> dict[str, float]:
        cfg, state, envs = self.cfg, self.state, self.envs
        updates_per_policy_step = cfg.train_ratio / (cfg.batch_size * cfg.batch_length)
        if state.obs is None:
            state.obs = envs.reset()
            pop_log_keys(state.obs)
            state.latent = self.agent.initial_state(len(envs))
            state.action = np.zeros((len(envs), envs.action_space.size), np.float32)
            state.episode_return = np.zeros(len(envs))
            state.episode_length = np.zeros(len(envs), int)
            state.episode_logs = {}  # after a resume whose envs restarted: drop the lost episodes' maxima
        log_time, log_step = time.time(), state.step
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        progress = tqdm(total=cfg.steps, initial=state.step, unit="step", dynamic_ncols=True, disable=not cfg.progress)
        try:
            while state.step < cfg.steps:
                before = state.step
                self.collect()
                progress.update(state.step - before)

                if self.replay.can_sample(cfg.batch_length) and state.step >= cfg.train_start:
                    state.updates_due += len(envs) * updates_per_policy_step
                    while state.updates_due >= 1.0:
                        self.train_once()
                        state.updates_due -= 1.0

                if state.step - state.last_log >= cfg.log_every:
                    now = time.time()
                    metrics = self.means.result()
                    metrics["fps"] = (state.step - log_step) / max(now - log_time, 1e-9)
                    metrics["updates"] = float(self.agent.updates)
                    metrics["skipped_updates"] = float(state.skipped_updates)
                    self.logger.write(state.step, metrics)
                    log_time, log_step, state.last_log = now, state.step, state.step
                    progress.set_postfix({k.split("/")[0]: f"{v:.1f}" for k, v in state.latest.items()}, refresh=False)

                if cfg.eval_every and state.step - state.last_eval >= cfg.eval_every and state.step < cfg.steps:
                    state.latest.update(self.evaluate(state.step))

                if cfg.checkpoint.every and state.step - state.last_checkpoint >= cfg.checkpoint.every:
                    self.save()
                if self.stop_signal is not None:
                    self.save()
                    log.warning("stopped by signal %d at step %d; checkpoint saved, resume with resume=%s",
                                self.stop_signal, state.step, self.run_dir)
                    raise SystemExit(128 + self.stop_signal)
            progress.close()
            if state.last_eval != state.step or "eval/return" not in state.latest:
                state.latest.update(self.evaluate(state.step))
            self.save()
            final = {"eval/return": state.latest["eval/return"]}
            return final
        except NonFiniteLossError:  # it saved the last good state already
            raise
        except Exception as error:
            self.save_after_crash(error)
            raise
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.close()

    def save_after_crash(self, error: Exception) -> None:
        """Keep the run's progress when something inside the loop raised: every completed
        step and update, without the environments, whose episodes restart on resume."""
        try:
            self.save(with_envs=False)
        except Exception as save_error:  # e.g. the disk is full; the original error matters more
            log.error("crashed at step %d (%s) and the checkpoint could not be written: %s",
                      self.state.step, error, save_error)
            return
        log.error("crashed at step %d (%s: %s); checkpoint saved, resume with resume=%s",
                  self.state.step, type(error).__name__, error, self.run_dir)

    def evaluate(self, step: int) -> dict[str, float]:
        results = evaluate(self.agent, self.eval_envs)
        self.state.last_eval = step
        metrics = {f"eval/{name}": float(np.mean(values)) for name, values in results.items()}
        metrics["eval/return_std"] = float(np.std(results["return"]))
        self.logger.write(step, metrics)
        self.save_report(step)
        return {"eval/return": metrics["eval/return"]}

    @torch.no_grad()
    def save_report(self, step: int, sequences: int = 4) -> None:
        """Image grids from the objective's report (open-loop predictions for ``dreamer``)."""
        if not self.replay.can_sample(self.cfg.batch_length):
            return
        # Reports must not change what training samples next: restore the generator after.
        generator_state = self.replay.rng.bit_generator.state
        batch, start, _ = self.replay.sample(sequences, self.cfg.batch_length, self.device)
        self.replay.rng.bit_generator.state = generator_state
        torch_state = torch.get_rng_state()
        inputs, _ = self.agent.world_model.observe(batch, start)
        for key, grid in self.agent.world_model.objective.report(inputs).items():
            path = self.run_dir / "openloop" / f"{key}_{step:08d}.png"
            path.parent.mkdir(exist_ok=True)
            save_image_grid(path, grid)
        torch.set_rng_state(torch_state)

    def close(self) -> None:
        self.logger.close()
        self.envs.close()
        self.eval_envs.close()
