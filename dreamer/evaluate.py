"""``python -m dreamer.evaluate checkpoint=<path> episodes=10``: score a saved agent.

Runs the actor's mode for ``episodes`` episodes in the environment the checkpoint was
trained on, prints the mean and spread of the return (and the mean of each ``log_<name>``
metric the env reports, such as Meta-World's success or Crafter's achievements), writes
``evaluation.json`` and a GIF of the first episode next to the checkpoint (or to
``out=<dir>``).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import imageio.v2 as imageio
import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dreamer.runner import build_agent, pop_log_keys, resolve_device, seed_everything

log = logging.getLogger(__name__)


@dataclass
class EvaluateConfig:
    checkpoint: str | None = None  # path to checkpoint.pt (or the run directory holding it)
    episodes: int = 10
    seed: int = 12345  # environment seeds: seed, seed + 1, ...
    device: str = "auto"
    video: bool = True  # GIF of the first episode
    fps: int = 30
    out: str | None = None  # output directory; default: the checkpoint's directory


def parse(arguments: list[str]) -> EvaluateConfig:
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(EvaluateConfig), OmegaConf.from_dotlist(arguments))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        message = str(error).strip().splitlines()[0]
        valid = ", ".join(EvaluateConfig.__dataclass_fields__)
        raise ValueError(f"{message} (valid keys: {valid})") from None


def load(path: Path, device: torch.device):
    """The checkpoint's agent (in eval mode) and the config it was trained with."""
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise ValueError(f"checkpoint={path} does not exist; give a checkpoint.pt or a run directory holding one")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    cfg = OmegaConf.create(saved["config"])
    cfg.compile = False  # one env, a few episodes: compiling would cost more than it saves
    make_env = hydra.utils.instantiate(cfg.env, _convert_="all")
    probe = make_env(seed=0)
    agent = build_agent(cfg, probe.obs_space, probe.action_space, device)
    probe.close()
    agent.load_state_dict(saved["agent"])
    return agent.eval(), make_env, saved["step"], path


@torch.no_grad()
def run_episode(agent, env, record: bool) -> tuple[float, int, list[np.ndarray], dict[str, float]]:
    """Return, length, frames (if ``record``) and, for each ``log_<name>`` the env reports
    (Crafter achievements, Meta-World success), its maximum over the episode."""
    obs = env.reset()
    logs = {name: float(value) for name, value in pop_log_keys(obs).items()}
    latent = agent.initial_state(1)
    action = np.zeros((1, env.action_space.size), np.float32)
    total, length, frames = 0.0, 0, []
    while True:
        if record:
            frames.append(obs["image"] if "image" in obs else env.render())
        batch = {key: np.asarray(value)[None] for key, value in obs.items()}
        action, latent = agent.act({**batch, "action": action}, latent, explore=False)
        obs = env.step(action[0])
        for name, value in pop_log_keys(obs).items():
            logs[name] = max(logs.get(name, -np.inf), float(value))
        total += float(obs["reward"])
        length += 1
        if obs["is_last"]:
            if record:
                frames.append(obs["image"] if "image" in obs else env.render())
            return total, length, frames, logs


def main(arguments: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = parse(sys.argv[1:] if arguments is None else arguments)
        if cfg.checkpoint is None:
            raise ValueError("checkpoint=<path> is required (a checkpoint.pt or a run directory)")
        if cfg.episodes <= 0:
            raise ValueError(f"episodes={cfg.episodes} is invalid; it must be >= 1")
        device = resolve_device(cfg.device)
        agent, make_env, step, path = load(Path(cfg.checkpoint), device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seed_everything(cfg.seed)
    out = Path(cfg.out) if cfg.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    returns, lengths, logs = [], [], {}
    for episode in range(cfg.episodes):
        env = make_env(seed=cfg.seed + episode, **({"render": True} if cfg.video and episode == 0 else {}))
        total, length, frames, episode_logs = run_episode(agent, env, record=cfg.video and episode == 0)
        env.close()
        returns.append(total)
        lengths.append(length)
        for name, value in episode_logs.items():
            logs.setdefault(name, []).append(value)
        if frames:
            video = out / "evaluation_episode0.gif"
            imageio.mimsave(video, frames, duration=1000 / cfg.fps, loop=0)
            log.info("video of the first episode: %s", video)
    result = {
        "checkpoint": str(path), "step": step, "episodes": cfg.episodes,
        "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
        "return_min": float(np.min(returns)), "return_max": float(np.max(returns)),
        "returns": returns, "lengths": lengths,
        **{f"{name}_mean": float(np.mean(values)) for name, values in logs.items()},
        "logs": logs,  # per episode, each log_<name>'s maximum over the episode
    }
    (out / "evaluation.json").write_text(json.dumps(result, indent=2))
    print(f"return {result['return_mean']:.1f} ± {result['return_std']:.1f} over {cfg.episodes} episodes "
          f"(min {result['return_min']:.1f}, max {result['return_max']:.1f}) at step {step}")
    for name, values in logs.items():
        print(f"{name} {np.mean(values):.3f} (mean over episodes of its per-episode maximum)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
