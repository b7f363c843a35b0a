"""The training loop: collect from several environments, replay, update, and on schedule
log, evaluate and checkpoint."""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import imageio
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dreamer.checkpoint import (
    Checkpoints, bias_free_refusal, mismatch_detail, pickled, rng_state, set_aside_metrics, set_rng_state,
    truncate_metrics, unpickled,
)
from dreamer.config import ConfigError
from dreamer.envs.base import pop_log_keys
from dreamer.evaluation import evaluate
from dreamer.logger import Mean, save_image_grid, to_floats
from dreamer.rssm import Latent
from dreamer.setup import TrainingParts

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many updates in a row had a non-finite loss."""


# SIGTERM: a cluster preempts or cancels the job (SLURM, Kubernetes); SIGUSR2: SLURM's warning
# before the time limit (submitit asks for it); SIGINT: Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


def hand_over(signum: int, previous) -> None:
    """After the checkpoint a stop signal asked for: let the handler that was installed
    before the loop act on the signal (submitit's requeues the job and exits), then exit
    with the signal's status."""
    if signum == signal.SIGUSR2 and callable(previous):
        previous(signum, None)
    raise SystemExit(128 + signum)


def due(step: int, last: int, every: int) -> bool:
    """Whether an event that runs every ``every`` steps (0: never) is due at ``step``,
    ``last`` being the step it last ran at."""
    return every > 0 and step - last >= every


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
    seconds: float = 0.0  # wall clock spent training, over every start of the run
    obs: dict | None = None
    latent: Latent | None = None
    action: np.ndarray | None = None


class Runner:
    """Trains built parts for ``cfg.steps`` environment steps in one run directory."""

    def __init__(self, cfg: DictConfig, parts: TrainingParts, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.envs, self.eval_envs, self.agent = parts.envs, parts.eval_envs, parts.agent
        self.replay, self.logger = parts.replay, parts.logger
        self.checkpoints = Checkpoints(self.run_dir, cfg.checkpoint.keep)
        self.means = Mean()
        self.state = LoopState()
        self.stop_signal: int | None = None
        self.clock = (time.time(), 0.0)  # when this start began, and the run's seconds before it

    # -- checkpoints -------------------------------------------------------------

    def seconds(self) -> float:
        began, before = self.clock
        return before + time.time() - began

    def save(self, with_envs: bool = True) -> None:
        """Checkpoint the run; ``with_envs=False`` leaves out the environments (after a
        crash they may be broken), so a resume starts new episodes."""
        state = self.state
        state.seconds = self.seconds()
        self.checkpoints.save({
            "step": state.step,
            "agent": self.agent.state_dict(),
            "optimizer": self.agent.optimizer.state_dict(),
            "replay": self.replay.state_dict(),
            "loop": {k: v for k, v in vars(state).items() if k != "latent"},
            "latent": None if state.latent is None else (state.latent.deter.cpu(), state.latent.stoch.cpu()),
            "means": (self.means.sums, self.means.counts),
            "envs": pickled(self.envs.envs) if with_envs else None,
            "eval_envs": pickled(self.eval_envs.envs) if with_envs else None,
            "rng": rng_state(),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }, state.step)
        state.last_checkpoint = state.step

    def restore(self) -> bool:
        """Continue from the run directory's newest loadable checkpoint, if there is one."""
        self.checkpoints.remove_orphans()
        if not self.checkpoints.exists():
            if aside := set_aside_metrics(self.run_dir / "metrics.jsonl"):
                log.warning("metrics of an earlier start that left no checkpoint moved to %s; "
                            "this run starts at step 0", aside)
            return False
        try:
            saved, _ = self.checkpoints.load()
        except ValueError as error:
            raise ConfigError(f"resume={self.run_dir}: {error}") from None
        if reason := bias_free_refusal(saved["agent"], self.agent, self.run_dir):
            raise ConfigError(reason)
        try:
            self.agent.load_state_dict(saved["agent"])
            self.agent.optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ConfigError(
                f"resume={self.run_dir}: its checkpoint does not fit the agent this configuration builds "
                f"({mismatch_detail(error)[:200]}); drop the overrides that change the model"
            ) from None
        self.replay.load_state_dict(saved["replay"])
        self.state = LoopState(**saved["loop"])
        if saved["latent"] is not None:
            self.state.latent = Latent(*saved["latent"]).to(self.agent.device)
        self.means.sums, self.means.counts = saved["means"]
        for batch, saved_envs in ((self.envs, saved["envs"]), (self.eval_envs, saved["eval_envs"])):
            envs = unpickled(saved_envs)
            if envs is not None:
                batch.close()
                batch.envs = envs
            elif batch is self.envs:
                self.state.obs = None  # episodes in flight are lost; start new ones
        set_rng_state(saved["rng"])
        self.clock = (time.time(), self.state.seconds)
        truncate_metrics(self.run_dir / "metrics.jsonl", self.state.step)
        log.info("resumed from step %d", self.state.step)
        return True

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum

    # -- one iteration -------------------------------------------------------------

    def train_once(self) -> None:
        cfg, state = self.cfg, self.state
        batch, start, indices = self.replay.sample(cfg.batch_size, cfg.batch_length, self.agent.device)
        metrics, posterior = self.agent.train_step(batch, start)
        values = to_floats(metrics)  # the loop's one wait for the device per update
        nonfinite = self.agent.nonfinite(values)
        if nonfinite:
            state.nonfinite_in_row += 1
            state.skipped_updates += 1
            if state.nonfinite_in_row >= cfg.nonfinite.max_in_row:
                self.save()  # the parameters are still those of the last good update
                raise NonFiniteLossError(
                    f"{state.nonfinite_in_row} updates in a row had non-finite losses "
                    f"({', '.join(nonfinite)}) at step {state.step}; last good state saved to {self.checkpoints.path}"
                )
            return
        state.nonfinite_in_row = 0
        self.replay.update_latents(indices, posterior)
        # An fp16 overflow's gradient norm is infinite: left out of the means.
        self.means.add({f"train/{key}": value for key, value in values.items() if math.isfinite(value)})

    def train_due(self, step: int) -> None:
        """The updates the train ratio asks for once the environments have reached ``step``."""
        cfg, state = self.cfg, self.state
        if self.replay.can_sample(cfg.batch_length) and step >= cfg.train_start:
            state.updates_due += len(self.envs) * cfg.train_ratio / (cfg.batch_size * cfg.batch_length)
            while state.updates_due >= 1.0:
                self.train_once()
                state.updates_due -= 1.0

    def collect(self, meanwhile: Callable[[int], None] | None = None) -> None:
        """One policy step in every environment; stores the step and logs finished episodes.
        ``meanwhile(step after this one)`` runs while worker processes step the environments:
        the replay already holds this step, so it sees what it would see after the step."""
        state, envs = self.state, self.envs
        obs = state.obs
        obs["action"] = state.action * ~obs["is_first"][:, None]
        action, latent = self.agent.act(obs, state.latent, explore=True)
        error_at = self.cfg.debug.env_error_at_step  # test hook: a simulated environment failure
        if error_at is not None and state.step >= error_at:
            raise RuntimeError(f"debug.env_error_at_step={error_at}: simulated environment failure")
        self.replay.add(obs, latent)
        envs.step_async(action)
        if meanwhile is not None:
            meanwhile(state.step + len(envs) * envs.action_repeat)
        next_obs = envs.step_wait()  # the loop state changes only once the environments have stepped
        state.action, state.latent, state.obs = action, latent, next_obs
        obs = next_obs
        logs = pop_log_keys(obs)
        state.step += len(envs) * envs.action_repeat
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
            length = float(state.episode_length[index] * envs.action_repeat)
            metrics = {"episode/return": state.latest["episode/return"], "episode/length": length}
            metrics.update({f"episode/{name}": float(values[index]) for name, values in state.episode_logs.items()})
            self.logger.write(state.step, metrics)

    def start_episodes(self) -> None:
        state, envs = self.state, self.envs
        state.obs = envs.reset()
        pop_log_keys(state.obs)
        state.latent = self.agent.initial_state(len(envs))
        state.action = np.zeros((len(envs), envs.action_space.size), np.float32)
        state.episode_return = np.zeros(len(envs))
        state.episode_length = np.zeros(len(envs), int)
        state.episode_logs = {}  # after a resume whose envs restarted: drop the lost episodes' maxima

    def write_train_metrics(self, seconds: float, steps: int) -> None:
        state = self.state
        metrics = self.means.result()
        metrics["fps"] = steps / max(seconds, 1e-9)
        metrics["updates"] = float(self.agent.updates)
        metrics["skipped_updates"] = float(state.skipped_updates)
        self.logger.write(state.step, metrics)
        state.last_log = state.step

    # -- the loop --------------------------------------------------------------------

    def run(self) -> dict[str, float]:
        cfg, state = self.cfg, self.state
        overlap = cfg.overlap and self.envs.workers  # environments in this process cannot step meanwhile
        if state.obs is None:
            self.start_episodes()
        log_time, log_step = time.time(), state.step
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        progress = tqdm(total=cfg.steps, initial=state.step, unit="step", dynamic_ncols=True, disable=not cfg.progress)
        try:
            while state.step < cfg.steps:
                before = state.step
                self.collect(self.train_due if overlap else None)
                if not overlap:
                    self.train_due(state.step)
                progress.update(state.step - before)

                if due(state.step, state.last_log, cfg.log_every):
                    now = time.time()
                    self.write_train_metrics(now - log_time, state.step - log_step)
                    log_time, log_step = now, state.step
                    progress.set_postfix({k.split("/")[0]: f"{v:.1f}" for k, v in state.latest.items()}, refresh=False)
                if due(state.step, state.last_eval, cfg.eval_every) and state.step < cfg.steps:
                    self.evaluate()
                if due(state.step, state.last_checkpoint, cfg.checkpoint.every):
                    self.save()
                if self.stop_signal is not None:
                    self.save()
                    log.warning("stopped by %s at step %d; checkpoint saved, resume with resume=%s "
                                "(a sweep: its command with resume=auto)",
                                signal.Signals(self.stop_signal).name, state.step, self.run_dir)
                    break
            else:
                return self.finish(progress)
        except NonFiniteLossError:  # it saved the last good state already
            raise
        except Exception as error:
            self.save_after_crash(error)
            raise
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.close()
        hand_over(self.stop_signal, handlers[self.stop_signal])

    def finish(self, progress: tqdm) -> dict[str, float]:
        state = self.state
        progress.close()
        if state.last_eval != state.step or "eval/return" not in state.latest:
            self.evaluate()
        self.save()
        result = {"eval/return": state.latest["eval/return"], "hours": state.seconds / 3600}
        self.logger.finish({"final/eval_return": result["eval/return"], "final/step": float(state.step),
                            "wall_clock_hours": result["hours"]})
        return result

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

    def evaluate(self) -> None:
        step = self.state.step
        record = self.logger.wants_media and "image" in self.eval_envs.obs_space
        results, frames = evaluate(self.agent, self.eval_envs, record=record)
        results.pop("length")  # the training metrics keep episode/length only
        self.state.last_eval = step
        metrics = {f"eval/{name}": float(np.mean(values)) for name, values in results.items()}
        metrics["eval/return_std"] = float(np.std(results["return"]))
        self.logger.write(step, metrics)
        if frames:
            path = self.run_dir / "eval" / f"episode_{step:08d}.gif"
            path.parent.mkdir(exist_ok=True)
            imageio.mimsave(path, frames, duration=1000 / 30, loop=0)
            self.logger.media(step, "eval/episode", path)
        self.save_report(step)
        self.state.latest["eval/return"] = metrics["eval/return"]

    @torch.no_grad()
    def save_report(self, step: int, sequences: int = 4) -> None:
        """Image grids from the objective's report (open-loop predictions for ``dreamer``)."""
        if not self.replay.can_sample(self.cfg.batch_length):
            return
        # Reports must not change what training samples next: restore the generators after.
        generator_state = self.replay.rng.bit_generator.state
        batch, start, _ = self.replay.sample(sequences, self.cfg.batch_length, self.agent.device)
        self.replay.rng.bit_generator.state = generator_state
        torch_state = torch.get_rng_state()
        world_model = self.agent.world_model
        inputs, _ = world_model.observe(batch, start, self.agent.accelerator.acting)
        for key, grid in world_model.objective.report(inputs).items():
            path = self.run_dir / "openloop" / f"{key}_{step:08d}.png"
            path.parent.mkdir(exist_ok=True)
            save_image_grid(path, grid)
            self.logger.media(step, f"openloop/{key}", path)
        torch.set_rng_state(torch_state)

    def close(self) -> None:
        self.logger.close()
        self.envs.close()
        self.eval_envs.close()
