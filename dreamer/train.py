"""``python -m dreamer.train``: train an agent; Hydra overrides pick every part.

Examples::

    python -m dreamer.train                                   # R2-Dreamer on CartPole-v1
    python -m dreamer.train env.id=Pendulum-v1 steps=20000
    python -m dreamer.train env.obs=pixels model=size12M
    python -m dreamer.train -m rep_variant=dreamer,r2dreamer,infonce,dreamerpro seed=0,1
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dreamer import rundir
from dreamer.checkpoint import CheckpointWriteError
from dreamer.config import CONF_DIR, ConfigError, check
from dreamer.runner import NonFiniteLossError, Runner
from dreamer.setup import build_training, check_buildable, check_resumable, prepare_process

log = logging.getLogger(__name__)

HELP_FLAGS = ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help")


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        rundir.lock(run_dir)  # already held when the command line named the directory
        if cfg.resume is None:
            rundir.refuse_overwrite(run_dir)
        rundir.write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    try:
        return train(cfg, run_dir)
    finally:
        rundir.release(run_dir)


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Build the run's parts, continue its checkpoint if there is one, and run the loop."""
    device = prepare_process(cfg)
    jobs_at_once = HydraConfig.get().launcher.get("n_jobs")  # a parallel launcher's jobs (joblib)
    if jobs_at_once:
        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // (cores if jobs_at_once < 0 else jobs_at_once)))
        log.info("%d torch thread(s): %d jobs at once on %d cores", torch.get_num_threads(), jobs_at_once, cores)
    runner = Runner(cfg, build_training(cfg, run_dir, device), run_dir)
    try:
        runner.restore()
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
    return result.get("eval/return", float("nan"))


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


def check_command_line(arguments: list[str]) -> DictConfig:
    """Compose and check every run the command line asks for, before Hydra creates any
    output directory.  Environments are built once per distinct environment setting.
    Returns the last job's configuration."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [arg for arg in arguments if not arg.startswith("-") and "=" in arg]
    multirun = any(arg in ("-m", "--multirun") for arg in arguments)
    probed = set()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            jobs = sweep_jobs(overrides, multirun, compose, GlobalHydra.instance().config_loader())
        except (HydraException, OmegaConfBaseException) as error:
            raise ConfigError(one_line(error)) from None
        for job in jobs:
            # Hydra's own settings are not composed here, except where configs are searched for.
            plain = [o for o in job if not o.startswith(("hydra.", "hydra/")) or o.startswith("hydra.searchpath=")]
            try:
                cfg = compose("train", overrides=plain)
                check(cfg)
            except (HydraException, OmegaConfBaseException) as error:
                raise ConfigError(one_line(error)) from None
            environment = OmegaConf.to_yaml(cfg.env) + cfg.model.cnn_keys + "|" + cfg.model.mlp_keys
            if environment not in probed:
                check_buildable(cfg)
                probed.add(environment)
    return cfg


def claim_run_directory(arguments: list[str], cfg: DictConfig) -> None:
    """For a single run in a directory the command line names (``hydra.run.dir=``, or
    ``resume=``): check that a resume can continue its checkpoint, or that a new run does
    not land on one, then hold the directory's lock; all before Hydra writes into it."""
    named = [arg.partition("=")[2] for arg in arguments if arg.startswith("hydra.run.dir=")]
    if not named or any(arg in ("-m", "--multirun") for arg in arguments):
        return  # default run directories are new; each job of a sweep locks its own
    run_dir = Path(named[-1]).expanduser()
    if cfg.resume is not None:
        check_resumable(cfg, run_dir)
    else:
        rundir.refuse_overwrite(run_dir)
    rundir.lock(run_dir)


def resume_arguments(arguments: list[str]) -> list[str]:
    """``resume=<run dir>``: the run's own overrides, then the new ones, in that directory."""
    import yaml

    chosen = [arg for arg in arguments if arg.startswith("resume=")]
    if not chosen:
        return arguments
    run_dir = Path(chosen[-1].partition("=")[2]).expanduser()
    if not rundir.holds_checkpoint(run_dir):
        raise ConfigError(f"resume={run_dir} has no checkpoint.pt; give a run directory that holds one")
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    original = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    original = [o for o in original if not o.startswith(("resume=", "hydra.run.dir="))]
    return [*original, *arguments, f"hydra.run.dir={run_dir.resolve()}"]


def cli() -> None:
    arguments = sys.argv[1:]
    try:
        arguments = resume_arguments(arguments)
        if not any(arg in HELP_FLAGS for arg in arguments):
            claim_run_directory(arguments, check_command_line(arguments))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *arguments]
    main()


if __name__ == "__main__":
    cli()
