"""``python -m dreamer.train``: train an agent; Hydra overrides pick every part.

Examples::

    python -m dreamer.train                                   # R2-Dreamer on CartPole-v1
    python -m dreamer.train env.id=Pendulum-v1 steps=20000
    python -m dreamer.train env.obs=pixels model=size12M
    python -m dreamer.train -m rep_variant=dreamer,r2dreamer,infonce,dreamerpro seed=0,1
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import platform
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

import dreamer
from dreamer import rundir
from dreamer.accelerate import cpu_capability
from dreamer.checkpoint import CheckpointWriteError
from dreamer.config import CONF_DIR, ConfigError, check
from dreamer.runner import NonFiniteLossError, Runner
from dreamer.setup import build_training, check_buildable, check_resumable, prepare_process

log = logging.getLogger(__name__)

HELP_FLAGS = ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help")
EXTRA_LAUNCHERS = {"ray": "ray"}  # launcher -> the optional extra that installs its plugin
JOB_LIST = "jobs.yaml"  # at a sweep's root: every job, its directory and how it starts


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    job_id = rundir.cluster_job_id()
    try:
        rundir.lock(run_dir)  # already held when the command line named the directory
        start = rundir.how_to_start(run_dir, cfg.resume, cfg.steps, job_id)
        if start == "finished":
            log.info("%s finished already (its checkpoint reached steps=%d); skipped", run_dir, cfg.steps)
            return float("nan")
        rundir.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    try:
        return train(cfg, run_dir, job_id)
    finally:
        rundir.release(run_dir)


def train(cfg: DictConfig, run_dir: Path, job_id: str | None = None) -> float:
    """Build the run's parts, continue its checkpoint if there is one, and run the loop."""
    device = prepare_process(cfg)
    share_cores(HydraConfig.get().launcher)
    facts = run_facts(cfg, device)
    runner = Runner(cfg, build_training(cfg, run_dir, device, facts), run_dir)
    try:
        runner.restore()
        rundir.record(run_dir, facts, job_id, runner.state.step)
        parameters = sum(p.numel() for p in runner.agent.parameters())
        log.info("agent has %.2fM parameters on %s; run dir %s", parameters / 1e6, device, run_dir)
        result = runner.run()
    except (NonFiniteLossError, CheckpointWriteError) as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as error:  # found only once the run starts, e.g. a checkpoint that does not fit
        runner.close()
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    log.info("final %s", "  ".join(f"{k} {v:.4g}" for k, v in result.items()))
    rundir.record_result(run_dir, {"step": cfg.steps, **result})
    return result.get("eval/return", float("nan"))


def share_cores(launcher: DictConfig) -> None:
    """Torch threads for a job that shares the machine: the CPUs a submitit or Ray launcher
    gives each job when its config names them, else cores / jobs at once for joblib.
    (Under SLURM the job's CPU mask already limits the default; Ray sets one thread.)"""
    cores = os.cpu_count() or 1
    for key in ("cpus_per_task", "ray.remote.num_cpus"):
        if cpus := OmegaConf.select(launcher, key):
            torch.set_num_threads(int(cpus))
            log.info("%d torch thread(s): hydra.launcher.%s", torch.get_num_threads(), key)
            return
    if jobs_at_once := launcher.get("n_jobs"):
        torch.set_num_threads(max(1, cores // (cores if jobs_at_once < 0 else jobs_at_once)))
        log.info("%d torch thread(s): %d jobs at once on %d cores", torch.get_num_threads(), jobs_at_once, cores)


def run_facts(cfg: DictConfig, device: torch.device) -> dict:
    """What a report needs to know about a run besides its metrics."""
    hydra_config = HydraConfig.get()
    choices = hydra_config.runtime.choices
    multirun = str(hydra_config.mode) == "RunMode.MULTIRUN"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "experiment": cfg.experiment, "sweep": Path(hydra_config.sweep.dir).name if multirun else None,
        "objective": choices.get("rep_variant"), "suite": choices.get("env"),
        "task": cfg.env.get("task", cfg.env.get("id")), "obs": cfg.env.get("obs"), "seed": cfg.seed,
        "model": choices.get("model"), "steps": cfg.steps, "train_ratio": cfg.train_ratio,
        "device": str(device), "cpu": cpu, "cpu_capability": cpu_capability(),
        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "torch": torch.__version__,
        "version": dreamer.__version__,
    }


def one_line(error: Exception) -> str:
    """A Hydra or OmegaConf error as one line that names the key."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ValidationError

    cause = error.__cause__ or error
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        return f"{cause.full_key}={cause.value} is invalid: {str(cause.msg).strip().splitlines()[0]}"
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", str(error))
    if isinstance(error, MissingConfigException) and missing:
        group, choice = missing.groups()
        if group == "hydra/launcher" and choice in EXTRA_LAUNCHERS:
            return f"hydra/launcher={choice} needs its plugin: pip install -e '.[{EXTRA_LAUNCHERS[choice]}]' (README, Ray)"
        options = [line.strip() for line in str(error).split("Available options", 1)[-1].splitlines()[1:]
                   if line.startswith("\t") and not line.strip().startswith("_")]
        options = [option for option in options if "=" not in option]  # the search path follows
        return f"{group}={choice} is not a known option; choose one of: {', '.join(options)}"
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return " ".join(lines[:3])


def sweep_jobs(overrides: list[str], multirun: bool, compose: Callable, config_loader) -> list[list[str]]:
    """The override list of every job the command line asks for, expanded as Hydra's basic
    sweeper does: a preset's ``hydra.sweeper.params`` first, then the command line
    (``a=1,2``, ``range(0,3)``, ``glob(*)``)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=config_loader)
    parsed = parser.parse_overrides(overrides)
    single = [override.input_line for override in parsed if not override.is_sweep_override()]
    hydra_config = compose("train", overrides=single, return_hydra_config=True).hydra  # also checks hydra/ choices
    if not multirun:
        return [overrides]
    params = [f"{key}={value}" for key, value in (hydra_config.sweeper.get("params") or {}).items()]
    return [job for batch in BasicSweeper.split_arguments(parser.parse_overrides(params + overrides), None)
            for job in batch]


@dataclass
class Job:
    """One job of the command line: its overrides, its configuration's run directory and
    how it will start there."""

    num: int
    overrides: list[str]
    sweep_dir: Path  # for a single run: its run directory's parent
    run_dir: Path
    steps: int
    start: str = "new"


def check_command_line(arguments: list[str]) -> tuple[DictConfig, list[Job]]:
    """Compose and check every run the command line asks for, before Hydra creates any
    output directory.  Environments are built once per distinct environment setting.
    Returns the last job's configuration and every job."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [arg for arg in arguments if not arg.startswith("-") and "=" in arg]
    multirun = any(arg in ("-m", "--multirun") for arg in arguments)
    probed, jobs = set(), []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            expanded = sweep_jobs(overrides, multirun, compose, GlobalHydra.instance().config_loader())
        except (HydraException, OmegaConfBaseException) as error:
            raise ConfigError(one_line(error)) from None
        for num, job in enumerate(expanded):
            try:
                cfg = compose("train", overrides=job, return_hydra_config=True)
                sweep_dir, run_dir = job_directory(cfg, num, multirun)
                with open_dict(cfg):
                    del cfg["hydra"]
                check(cfg)
            except (HydraException, OmegaConfBaseException) as error:
                raise ConfigError(one_line(error)) from None
            jobs.append(Job(num, job, sweep_dir, run_dir, cfg.steps))
            environment = OmegaConf.to_yaml(cfg.env) + cfg.model.cnn_keys + "|" + cfg.model.mlp_keys
            if environment not in probed:
                check_buildable(cfg)
                probed.add(environment)
    return cfg, jobs


def job_directory(cfg: DictConfig, num: int, multirun: bool) -> tuple[Path, Path]:
    """The sweep directory and the run directory Hydra will give job ``num`` of this
    configuration (composed with its Hydra settings)."""
    with open_dict(cfg):
        cfg.hydra.job.num = num
    HydraConfig.instance().set_config(cfg)
    if not multirun:
        run_dir = Path(cfg.hydra.run.dir)
        return run_dir.parent, run_dir
    return Path(cfg.hydra.sweep.dir), Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)


def plan_sweep(arguments: list[str], cfg: DictConfig, jobs: list[Job]) -> list[str]:
    """Before a sweep starts: say how each job will start in its directory (refusing to
    land new jobs on checkpoints unless ``resume=auto``), write the job list at the
    sweep's root, and pin the sweep directory so every job (and every cluster node)
    resolves the same one.  Returns the arguments to launch."""
    taken = []
    for job in jobs:
        try:
            job.start = rundir.how_to_start(job.run_dir, cfg.resume, job.steps)
        except ConfigError:
            if cfg.resume is not None:
                raise  # resume=auto and a checkpoint that does not load: the error names it
            taken.append(job)
    if taken:
        raise ConfigError(
            f"{len(taken)} of {len(jobs)} jobs' run directories already hold checkpoints (first: {taken[0].run_dir}); "
            "relaunch with resume=auto to skip finished jobs and continue unfinished ones, "
            "or choose another hydra.sweep.dir"
        )
    sweep_dir = jobs[0].sweep_dir
    counts = {start: sum(job.start == start for job in jobs) for start in ("new", "continue", "finished")}
    listing = {
        "command": "python -m dreamer.train " + " ".join(arguments),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "counts": counts,
        "jobs": [{"num": job.num, "dir": os.path.relpath(job.run_dir, sweep_dir), "start": job.start,
                  "overrides": job.overrides} for job in jobs],
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_text(sweep_dir / JOB_LIST, yaml.safe_dump(listing, sort_keys=False, width=1000))
    print(f"{len(jobs)} jobs ({', '.join(f'{n} {start}' for start, n in counts.items() if n)}); "
          f"job list: {sweep_dir / JOB_LIST}", file=sys.stderr)
    return [*arguments, f"hydra.sweep.dir={quoted(str(sweep_dir))}"]


def claim_run_directory(arguments: list[str], cfg: DictConfig) -> None:
    """For a single run in a directory the command line names (``hydra.run.dir=``, or
    ``resume=``): check that a resume can continue its checkpoint, or that a new run does
    not land on one, then hold the directory's lock; all before Hydra writes into it."""
    named = [arg.partition("=")[2] for arg in arguments if arg.startswith("hydra.run.dir=")]
    if not named or any(arg in ("-m", "--multirun") for arg in arguments):
        return  # default run directories are new; each job of a sweep locks its own
    run_dir = Path(named[-1]).expanduser()
    if rundir.how_to_start(run_dir, cfg.resume, cfg.steps) == "continue":
        check_resumable(cfg, run_dir)
    rundir.lock(run_dir)


def quoted(value: str) -> str:
    """``value`` as one Hydra override value, quoted when it holds characters the override grammar reads."""
    if re.fullmatch(r"[\w./:+@-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_arguments(arguments: list[str]) -> list[str]:
    """``resume=<run dir>``: the run's own overrides, then the new ones, in that directory."""
    chosen = [arg for arg in arguments if arg.startswith("resume=")]
    if not chosen or chosen[-1] == "resume=auto":
        return arguments
    run_dir = Path(chosen[-1].partition("=")[2]).expanduser()
    if not rundir.holds_checkpoint(run_dir):
        raise ConfigError(f"resume={run_dir} has no checkpoint.pt; give a run directory that holds one, or resume=auto")
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    original = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    original = [o for o in original if not o.startswith(("resume=", "hydra.run.dir="))]
    return [*original, *arguments, f"hydra.run.dir={run_dir.resolve()}"]


def prepare(arguments: list[str]) -> tuple[list[str], list[Path]]:
    """Everything checked before Hydra starts: the arguments to run and, for a sweep, its
    jobs' run directories; or a ConfigError."""
    multirun = any(arg in ("-m", "--multirun") for arg in arguments)
    resume = [arg.partition("=")[2] for arg in arguments if arg.startswith("resume=")]
    shown = [arg for arg in arguments if arg in ("--cfg", "-c", "--info", "-i")]
    if multirun and shown:
        raise ConfigError(f"{shown[0]} shows one job's configuration and cannot be combined with -m; "
                          f"drop -m and give one value per key (for a sweep, its job list is in <sweep dir>/jobs.yaml)")
    if multirun and resume and resume[-1] not in ("auto", "null"):
        raise ConfigError(f"resume={resume[-1]} continues one run; a sweep (-m) takes resume=auto, "
                          "which continues each job's own directory")
    arguments = resume_arguments(arguments)
    if any(arg in HELP_FLAGS for arg in arguments):
        return arguments, []
    cfg, jobs = check_command_line(arguments)
    if multirun:
        return plan_sweep(arguments, cfg, jobs), [job.run_dir for job in jobs]
    claim_run_directory(arguments, cfg)
    return arguments, []


def pass_stops_to_jobs(run_dirs: list[Path], signals=(signal.SIGTERM, signal.SIGINT)) -> None:
    """A sweep's launcher told to stop passes the signal on to the jobs it runs in worker
    processes (``hydra/launcher=joblib``), waits until each has written its checkpoint and
    let go of its run directory, then exits with the signal's status.  Without this, a
    launcher stopped with SIGTERM left its workers training on their own, and a later kill
    lost everything since their last checkpoint.  Jobs that run in this process (the basic
    launcher) stop on the signal themselves."""
    # A signal this process ignores (SIGINT in a job a script started with &) stays ignored.
    previous = {signum: handler for signum in signals if (handler := signal.getsignal(signum)) != signal.SIG_IGN}

    def on_stop(signum, frame):
        workers = {child.pid for child in multiprocessing.active_children()}
        training = {run_dir: pid for run_dir in run_dirs if (pid := rundir.holder(run_dir)) in workers}
        if not training:  # as if this handler were not here
            if callable(previous[signum]):
                return previous[signum](signum, frame)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for pid in set(training.values()):
            os.kill(pid, signum)
        print(f"{signal.Signals(signum).name}: waiting for {len(training)} job(s) to write a checkpoint and stop; "
              "relaunch the sweep with resume=auto to continue", file=sys.stderr)
        while any(rundir.holder(run_dir) == pid for run_dir, pid in training.items()):
            time.sleep(0.2)
        raise SystemExit(128 + signum)

    for signum in previous:
        signal.signal(signum, on_stop)


def cli() -> None:
    try:
        arguments, run_dirs = prepare(sys.argv[1:])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if run_dirs:
        pass_stops_to_jobs(run_dirs)
    sys.argv = [sys.argv[0], *arguments]
    main()


if __name__ == "__main__":
    cli()
