"""``python -m dreamer.evaluate checkpoint=<path> episodes=10``: score a saved agent.

Runs the actor's mode for ``episodes`` episodes (one environment each, seeds ``seed``,
``seed + 1``, ...) in the environment the checkpoint was trained on, prints the mean and
spread of the return (and the mean of each ``log_<name>`` metric the env reports, such as
Meta-World's success or Crafter's achievements), writes ``evaluation.json`` and a GIF of
the first episode next to the checkpoint (or to ``out=<dir>``).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dreamer.checkpoint import Checkpoints, from_bias_free, load_checked, mismatch_detail
from dreamer.config import Config
from dreamer.envs import EnvBatch
from dreamer.evaluation import evaluate
from dreamer.setup import build_agent, env_factory, env_spaces, resolve_device, seed_everything

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
    """The checkpoint's agent (in eval mode), the environment factory it was trained with,
    its step and the checkpoint's path."""
    if path.is_dir():  # the run's newest checkpoint that loads
        try:
            saved, path = Checkpoints(path, keep=0).load()
        except ValueError as error:
            raise ValueError(f"checkpoint={path}: {error}") from None
    elif not path.exists():
        raise ValueError(f"checkpoint={path} does not exist; give a checkpoint.pt or a run directory holding one")
    else:
        saved, reason = load_checked(path)
        if reason:
            raise ValueError(f"checkpoint={path} does not load ({reason[:160]}); give another checkpoint or its run directory")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), saved["config"])
    except OmegaConfBaseException as error:
        raise ValueError(f"checkpoint={path} holds a configuration this version cannot read "
                         f"({str(error).splitlines()[0]})") from None
    cfg.compile = cfg.cuda_graphs = False  # one batch of episodes: compiling would cost more than it saves
    make_env = env_factory(cfg)
    agent = build_agent(cfg, *env_spaces(make_env), device)
    state = saved["agent"]
    if (upgraded := from_bias_free(state, agent)) is not None:
        log.info("%s was written by version 0.2 (hidden layers without bias): loaded with those biases "
                 "at zero, which computes what it computed then", path)
        state = upgraded
    try:
        agent.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"checkpoint={path} does not fit the agent its configuration builds "
                         f"({mismatch_detail(error)[:160]})") from None
    return agent.eval(), make_env, saved["step"], path


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

    def make(index: int):
        render = {"render": True} if cfg.video and index == 0 else {}
        return make_env(seed=cfg.seed + index, **render)

    envs = EnvBatch(make, cfg.episodes)
    try:
        results, frames = evaluate(agent, envs, record=cfg.video)
    finally:
        envs.close()
    if frames:
        video = out / "evaluation_episode0.gif"
        imageio.mimsave(video, frames, duration=1000 / cfg.fps, loop=0)
        log.info("video of the first episode: %s", video)
    returns, lengths = results.pop("return").tolist(), results.pop("length").tolist()
    logs = {name: values.tolist() for name, values in results.items()}
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
