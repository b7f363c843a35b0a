"""Where the training loop's time goes: each part of ``dreamer.train``'s loop wrapped with
a wall-clock timer, over a short run of the training config::

    python experiments/profile_loop.py                       # the default job, 5,000 steps
    python experiments/profile_loop.py steps=3000 env.id=Pendulum-v1

Prints, per part, the number of calls, the median, mean and 99th-percentile milliseconds per
call over the last three quarters of the calls (the first quarter pays the compiling), the
seconds of all its calls, the same for Python's garbage collections (all of them, by
generation; max instead of p99 in the tail column), and the run's wall clock.
The run writes into a temporary directory; evaluation runs once, at the end.
"""

from __future__ import annotations

import gc
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


def row(label: str, calls: int, seconds: list[float], tail: float, total: float) -> None:
    """One table row: calls, median and mean milliseconds of ``seconds``, ``tail`` (p99 or max) in
    milliseconds, and the total seconds of all calls."""
    print(f"{label:28s} {calls:7d} {1e3 * statistics.median(seconds):10.2f} {1e3 * statistics.fmean(seconds):8.2f} "
          f"{1e3 * tail:8.2f} {total:8.1f}")


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
        (loop.envs, "step_wait", "  envs.step_wait"),
        (loop.replay, "add", "  replay.add"),
        (loop, "evaluate", "evaluation"),
    ]
    for owner, name, label in parts:
        timed(owner, name, label, times)
    collections: dict[int, list[float]] = {}  # Python's garbage collector, per generation
    began = [0.0]

    def on_collection(phase: str, info: dict) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            collections.setdefault(info["generation"], []).append(time.perf_counter() - began[0])

    gc.callbacks.append(on_collection)
    start = time.perf_counter()
    loop.run()
    wall = time.perf_counter() - start
    gc.callbacks.remove(on_collection)
    print(f"{'part':28s} {'calls':>7s} {'median ms':>10s} {'mean ms':>8s} {'tail ms':>8s} {'total s':>8s}")
    for _, _, label in parts:
        calls = times.get(label, [])
        if calls:
            steady = sorted(calls[len(calls) // 4:])
            row(label, len(calls), steady, steady[int(0.99 * (len(steady) - 1))], sum(calls))
    for generation, pauses in sorted(collections.items()):
        row(f"gc generation {generation}", len(pauses), pauses, max(pauses), sum(pauses))
    accounted = sum(sum(times.get(label, [])) for label in ("training update, whole", "policy step, whole", "evaluation"))
    print(f"wall clock {wall:.1f} s, of which {wall - accounted:.1f} s outside the update, the policy step and evaluation")


if __name__ == "__main__":
    main(sys.argv[1:])
