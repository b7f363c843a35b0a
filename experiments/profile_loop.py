"""Where the training loop's time goes: each part of ``dreamer.train``'s loop wrapped with
a wall-clock timer, over a short run of the training config::

    python experiments/profile_loop.py                       # the default job, 5,000 steps
    python experiments/profile_loop.py steps=3000 env.id=Pendulum-v1

Prints, per part, the number of calls and the median milliseconds per call over the last
three quarters of the calls (the first quarter pays the compiling), and the run's wall clock.
The run writes into a temporary directory; evaluation runs once, at the end.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir

from dreamer import runner
from dreamer.config import CONF_DIR
from dreamer.setup import build_training, prepare_process


def timed(owner: object, name: str, label: str, times: dict[str, list[float]]) -> None:
    """Replace ``owner.name`` with a version that records its seconds per call under ``label``."""
    function: Callable = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            times.setdefault(label, []).append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["steps=5000", "eval_every=0", "progress=false", "checkpoint.every=0",
                                          *overrides])
    run_dir = Path(tempfile.mkdtemp(prefix="profile_loop_"))
    loop = runner.Runner(cfg, build_training(cfg, run_dir, prepare_process(cfg)), run_dir)
    times: dict[str, list[float]] = {}
    parts = [
        (loop, "train_once", "training update, whole"),
        (loop.agent, "train_step", "  agent.train_step"),
        (runner, "to_floats", "  reading the metrics"),
        (loop.replay, "sample", "  replay.sample"),
        (loop.replay, "update_latents", "  replay.update_latents"),
        (loop, "collect", "policy step, whole"),
        (loop.agent, "act", "  agent.act"),
        (loop.envs, "step", "  envs.step"),
        (loop.replay, "add", "  replay.add"),
        (loop, "evaluate", "evaluation"),
    ]
    for owner, name, label in parts:
        timed(owner, name, label, times)
    start = time.perf_counter()
    loop.run()
    wall = time.perf_counter() - start
    print(f"{'part':28s} {'calls':>7s} {'median ms':>10s}")
    for _, _, label in parts:
        calls = times.get(label, [])
        steady = calls[len(calls) // 4:]
        if steady:
            print(f"{label:28s} {len(calls):7d} {1e3 * statistics.median(steady):10.2f}")
    print(f"wall clock {wall:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
