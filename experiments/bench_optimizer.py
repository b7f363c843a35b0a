"""Time the optimiser step alone: clipping, the gated update and its bookkeeping, over all
parameters of an agent built from the training config (random gradients)::

    python experiments/bench_optimizer.py                          # size12M, pixels
    python experiments/bench_optimizer.py --steps 40 model=tiny env.obs=state

Prints the median and range of the timed steps (the first three are untimed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir

from dreamer.config import CONF_DIR
from dreamer.setup import build_agent, env_factory, env_spaces

WARMUP = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25, help=f"steps to run, the first {WARMUP} untimed")
    parser.add_argument("overrides", nargs="*", default=["model=size12M", "env.obs=pixels"])
    args = parser.parse_args()
    if args.steps <= WARMUP:
        parser.error(f"--steps={args.steps}: needs more than the {WARMUP} untimed steps")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*args.overrides, "compile=false"])
    agent = build_agent(cfg, *env_spaces(env_factory(cfg)), torch.device("cpu"))
    params = [p for p in agent.parameters() if p.requires_grad]
    times = []
    for _ in range(args.steps):
        for p in params:
            p.grad = torch.randn_like(p)
        start = time.perf_counter()
        agent.optimizer.step()
        times.append(time.perf_counter() - start)
    timed = times[WARMUP:]
    print(f"{sum(p.numel() for p in params) / 1e6:.2f}M parameters, {type(agent.optimizer).__name__}: "
          f"step median {statistics.median(timed) * 1e3:.1f} ms (min {min(timed) * 1e3:.1f}, max {max(timed) * 1e3:.1f})")


if __name__ == "__main__":
    main()
