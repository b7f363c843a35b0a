"""``python -m dreamer.bench``: time the full training update on synthetic replay data.

Same config groups as training; the extra keys live under ``bench`` in ``conf/bench.yaml``::

    python -m dreamer.bench model=size12M bench.variants=[dreamer,r2dreamer] bench.updates=5
    python -m dreamer.bench precision=bf16 env.obs=pixels
    python -m dreamer.bench precision=bf16 compile=true channels_last=true
    python -m dreamer.bench bench.profile=true     # also: the operators that take the time
"""

from __future__ import annotations

import gc
import json
import logging
import resource
import statistics
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from dreamer.accelerate import AUTOCAST_DTYPES, keep_freed_memory, matmul_peak, synchronize
from dreamer.agent import Agent
from dreamer.config import CONF_DIR, ConfigError
from dreamer.envs.base import ActionSpace
from dreamer.replay import Replay
from dreamer.report import PAPER_TABLE1_HOURS, PAPER_TABLE1_SOURCE
from dreamer.runner import Runner
from dreamer.setup import (build_agent, build_replay, build_training, env_factory, env_spaces, prepare_process,
                           resolve_device, seed_everything)

log = logging.getLogger(__name__)


def synthetic_replay(agent: Agent, obs_space: dict, action_space: ActionSpace, length: int, seed: int) -> Replay:
    """A replay of ``length + 8`` steps of random data of the environment's shapes."""
    rows = length + 8
    replay = build_replay(rows, 1, obs_space, action_space, agent, seed)
    rng = np.random.default_rng(seed)
    latent = agent.initial_state(1).to("cpu")
    for row in range(rows):
        step = {key: rng.integers(0, 256, (1, *shape), dtype=np.uint8) if len(shape) == 3
                else rng.standard_normal((1, *shape)).astype(np.float32) for key, shape in obs_space.items()}
        step["action"] = np.eye(action_space.size, dtype=np.float32)[rng.integers(action_space.size)][None]
        step["reward"] = rng.standard_normal(1).astype(np.float32)
        step["is_first"] = np.array([row == 0])
        step["is_last"] = step["is_terminal"] = np.array([False])
        replay.add(step, latent)
    return replay


class Timer:
    """Wall-clock seconds of named phases, synchronised with the device."""

    def __init__(self, device: torch.device):
        self.device, self.totals = device, {}

    def __call__(self, name: str):
        timer = self

        class Phase:
            def __enter__(self):
                synchronize(timer.device)
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                synchronize(timer.device)
                timer.totals[name] = timer.totals.get(name, 0.0) + time.perf_counter() - self.start

        return Phase()


def phase_shares(agent, batch, start, device) -> dict[str, float]:
    """Fraction of one update spent in world model, imagination + actor-critic, backward, optimiser."""
    timer = Timer(device)
    with agent.accelerator.update() as steps:
        with timer("world_model"):
            wm_losses, posterior, _ = agent.world_model.loss(batch, start, steps)
        with timer("imagination"):
            ac_losses, _ = agent.actor_critic.loss(agent.world_model, posterior, batch, steps)
    total = sum(agent.loss_scales[k] * v for k, v in {**wm_losses, **ac_losses}.items())
    agent.optimizer.zero_grad()
    with timer("backward"):
        total.backward()
    with timer("optimizer"):
        agent.optimizer.step()
    whole = sum(timer.totals.values())
    return {name: seconds / whole for name, seconds in timer.totals.items()}


def profile_update(agent, batch, start, path: Path, rows: int = 40) -> None:
    """torch.profiler over one update: the operators that take the most time, by their own
    time (children excluded), written to ``path`` and logged."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if agent.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        agent.train_step(batch, start)
        synchronize(agent.device)
    sort = "self_device_time_total" if agent.device.type == "cuda" else "self_cpu_time_total"
    text = profiler.key_averages().table(sort_by=sort, row_limit=rows)
    path.write_text(text)
    log.info("profile of one update (%s):\n%s", path, text)


def bench_variant(cfg: DictConfig, variant: str, model_name: str, peak: float) -> dict:
    """Time the update of ``rep_variant=variant`` (composed with the command line's overrides)."""
    cfg = hydra.compose("bench", overrides=[*HydraConfig.get().overrides.task, f"rep_variant={variant}"])
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    if device.type == "cuda":  # each variant's own peak, not the process's so far
        gc.collect()  # the previous variant's agent may sit in reference cycles
        torch.cuda.reset_peak_memory_stats(device)
    obs_space, action_space = env_spaces(env_factory(cfg), cfg.seed)
    agent = build_agent(cfg, obs_space, action_space, device)
    replay = synthetic_replay(agent, obs_space, action_space, cfg.batch_length, cfg.seed)

    def sample():
        batch, start, _ = replay.sample(cfg.batch_size, cfg.batch_length, device)
        return batch, start

    for _ in range(cfg.bench.warmup):
        agent.train_step(*sample())
    times = []
    for _ in range(cfg.bench.updates):
        batch, start = sample()
        synchronize(device)
        begin = time.perf_counter()
        agent.train_step(batch, start)
        synchronize(device)
        times.append(time.perf_counter() - begin)
    batch, start = sample()
    shares = phase_shares(agent, batch, start, device)
    # Counted on the eager kernels: compiled graphs hide their matmuls from the counter.
    with torch.compiler.set_stance("force_eager"), FlopCounterMode(display=False) as counter:
        agent.train_step(batch, start)
    flops = counter.get_total_flops()

    obs = {k: v[0, :1].cpu().numpy() for k, v in batch.items()}
    latent = agent.initial_state(1)
    act_times = []
    for _ in range(20):
        synchronize(device)
        begin = time.perf_counter()
        agent.act(obs, latent)
        synchronize(device)
        act_times.append(time.perf_counter() - begin)

    if cfg.bench.profile:
        profile_update(agent, *sample(), Path(HydraConfig.get().runtime.output_dir) / f"profile_{variant}.txt")

    median = statistics.median(times)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB, whole process
    return {
        "variant": variant,
        "model": model_name,
        "precision": cfg.precision,
        "compile": bool(cfg.compile),
        "channels_last": bool(cfg.channels_last),
        "cuda_graphs": agent.accelerator.graphed is not None,
        "device": str(device),
        "batch": [cfg.batch_size, cfg.batch_length],
        "update_seconds_median": median,
        "update_seconds_min": min(times),
        "update_seconds_max": max(times),
        "updates_per_second": 1.0 / median,
        "replayed_steps_per_second": cfg.batch_size * cfg.batch_length / median,
        "shares": shares,
        "policy_step_ms": 1000 * statistics.median(act_times),
        "peak_memory_mib": memory,
        "parameters": sum(p.numel() for p in agent.parameters()),
        "flops_per_update": flops,
        "matmul_peak_flops": peak,
        "fraction_of_peak": flops / median / peak,
    }


def end_to_end(cfg: DictConfig, variant: str, run_dir: Path) -> dict:
    """A real training run of ``bench.run_steps`` environment steps (collection, updates at
    the configured train ratio, logging; no evaluation until its end): environment steps
    per second, the median of its five log intervals after the first (which pays the
    compilation), and the hours 1M environment steps would take at that rate."""
    steps = cfg.bench.run_steps
    interval = max(steps // 6, 1)
    run_cfg = hydra.compose("bench", overrides=[
        *HydraConfig.get().overrides.task, f"rep_variant={variant}", f"steps={steps}", f"log_every={interval}",
        "eval_every=0", "eval_episodes=1", "checkpoint.every=0", "progress=false"])
    run_dir.mkdir(parents=True, exist_ok=True)
    runner = Runner(run_cfg, build_training(run_cfg, run_dir, prepare_process(run_cfg)), run_dir)
    runner.run()
    rates = [row["fps"] for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "fps" in row]
    if len(rates) < 2:
        raise ConfigError(f"bench.run_steps={steps} is too short to time: it must span at least two log intervals of "
                          f"env_num x action repeat steps (try bench.run_steps=3000)")
    rate = statistics.median(rates[1:])
    return {"run_steps": steps, "env_steps_per_second": rate, "hours_per_million_steps": 1e6 / rate / 3600,
            "train_ratio": float(run_cfg.train_ratio), "overlap": bool(run_cfg.overlap and run_cfg.env_workers)}


def mode(row: dict) -> str:
    """``fp32``, ``bf16+compile+cl``, ...: the speed switches a row ran with."""
    return "+".join([row["precision"]] + [name for name, key in (("compile", "compile"), ("cl", "channels_last"), ("graphs", "cuda_graphs"))
                                       if row.get(key)])


def table(rows: list[dict]) -> str:
    header = f"{'variant':<11}{'model':<9}{'mode':<18}{'upd/s':>8}{'s/upd':>9}{'steps/s':>10}{'GFLOP':>9}{'%peak':>7}" \
             f"{'wm':>6}{'imag':>6}{'bwd':>6}{'opt':>6}{'act ms':>8}{'MiB':>8}{'params':>10}"
    lines = [header]
    for r in rows:
        s = r["shares"]
        lines.append(
            f"{r['variant']:<11}{r['model']:<9}{mode(r):<18}{r['updates_per_second']:>8.3f}"
            f"{r['update_seconds_median']:>9.3f}{r['replayed_steps_per_second']:>10.0f}{r['flops_per_update'] / 1e9:>9.1f}"
            f"{100 * r['fraction_of_peak']:>7.1f}{100 * s['world_model']:>6.0f}{100 * s['imagination']:>6.0f}"
            f"{100 * s['backward']:>6.0f}{100 * s['optimizer']:>6.0f}{r['policy_step_ms']:>8.2f}"
            f"{r['peak_memory_mib']:>8.0f}{r['parameters'] / 1e6:>9.2f}M"
        )
    return "\n".join(lines)


def paper_hours(suite: str | None, task: str | None) -> dict[str, float] | None:
    """The paper's Table 1 hours per objective where it timed this suite and task (DMC Vision walker_walk)."""
    return PAPER_TABLE1_HOURS if (suite, task) == ("dmc_vision", "walker_walk") else None


def run_table(rows: list[dict], paper: dict[str, float] | None = None) -> str:
    """The real runs' rates; with ``paper`` (DMC Vision walker_walk), the paper's Table 1 beside them."""
    lines = [f"{'variant':<11}{'run steps':>10}{'train ratio':>12}{'overlap':>9}{'env steps/s':>13}{'h / 1M steps':>14}"
             + (f"{'paper Table 1 h':>17}" if paper else "")]
    for r in rows:
        e = r["end_to_end"]
        lines.append(f"{r['variant']:<11}{e['run_steps']:>10}{e['train_ratio']:>12g}{str(e['overlap']).lower():>9}"
                     f"{e['env_steps_per_second']:>13.1f}{e['hours_per_million_steps']:>14.1f}"
                     + (f"{paper.get(r['variant'], float('nan')):>17.1f}" if paper else ""))
    if paper:
        lines.append(f"paper: {PAPER_TABLE1_SOURCE}")
    return "\n".join(lines)


@hydra.main(config_path=str(CONF_DIR), config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    model_name = HydraConfig.get().runtime.choices.get("model", "?")
    if cfg.keep_freed_memory:
        keep_freed_memory()
    # The peak is measured once, before any model exists, so every row shares it.
    dtype = AUTOCAST_DTYPES.get(cfg.precision, torch.float32)
    peak = matmul_peak(resolve_device(cfg.device), dtype, repeats=10)
    log.info("matmul peak (%s): %.1f GFLOP/s", cfg.precision, peak / 1e9)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        rows = [bench_variant(cfg, variant, model_name, peak) for variant in cfg.bench.variants]
        if cfg.bench.run_steps:
            for row in rows:
                row["end_to_end"] = end_to_end(cfg, row["variant"], out_dir / f"run_{row['variant']}")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(table(rows))
    if cfg.bench.run_steps:
        print(run_table(rows, paper_hours(HydraConfig.get().runtime.choices.get("env"), cfg.env.get("task"))))
    out = out_dir / "bench.json"
    out.write_text(json.dumps(rows, indent=2))
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
