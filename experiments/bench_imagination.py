"""The imagination rollout with imagination's actor step eager and compiled, alternating in
one process (so both see the same machine load)::

    python experiments/bench_imagination.py                    # the default job's model, 60 rounds
    python experiments/bench_imagination.py --rounds 20 model=size12M env.obs=pixels

Prints the median and quartiles of each rollout's milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir

from dreamer.accelerate import StepFunctions
from dreamer.bench import synthetic_replay
from dreamer.config import CONF_DIR
from dreamer.setup import build_agent, env_factory, env_spaces, seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="rollouts of each kind, alternating")
    parser.add_argument("overrides", nargs="*", default=[])
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error(f"--rounds={args.rounds}: needs at least 2 to give quartiles")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*args.overrides, "compile=true"])
    seed_everything(cfg.seed)
    obs_space, action_space = env_spaces(env_factory(cfg), cfg.seed)
    agent = build_agent(cfg, obs_space, action_space, torch.device("cpu"))
    replay = synthetic_replay(agent, obs_space, action_space, cfg.batch_length, cfg.seed)
    batch, start, _ = replay.sample(cfg.batch_size, cfg.batch_length)
    compiled = agent.accelerator.acting
    if not hasattr(compiled.action, "_torchdynamo_orig_callable"):
        raise SystemExit("error: the actor step was not compiled (compile=true needs a C++ compiler and "
                         "Python's headers on CPU); nothing to compare")
    eager_action = StepFunctions(compiled.posterior, compiled.prior, compiled.action._torchdynamo_orig_callable)
    steps = {"eager": eager_action, "compiled": compiled}
    for _ in range(3):  # compiles, and warms both
        agent.train_step(batch, start)
    with torch.no_grad(), agent.accelerator.update() as update_steps:
        starts = agent.world_model.loss(batch, start, update_steps)[1].reshape(-1)
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, functions in steps.items():
            begin = time.perf_counter()
            agent.actor_critic.imagine(starts, functions)
            times[name].append(time.perf_counter() - begin)
    for name, seconds in times.items():
        low, _, high = statistics.quantiles(seconds, n=4)
        print(f"{name:9s} imagination median {1e3 * statistics.median(seconds):7.2f} ms "
              f"(quartiles {1e3 * low:.2f}-{1e3 * high:.2f})")


if __name__ == "__main__":
    main()
