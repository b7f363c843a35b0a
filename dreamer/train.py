"""``python -m dreamer.train``: train an agent; Hydra overrides pick every part.

Examples::

    python -m dreamer.train                                   # R2-Dreamer on CartPole-v1
    python -m dreamer.train env.id=Pendulum-v1 steps=20000
    python -m dreamer.train env.obs=pixels model=size12M
    python -m dreamer.train -m rep_variant=dreamer,r2dreamer,infonce,dreamerpro seed=0,1
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dreamer.config import CONF_DIR, GROUPS, ConfigError, check_group_choice, override_choices, validate
from dreamer.runner import NonFiniteLossError, Runner

log = logging.getLogger(__name__)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        result = Runner(cfg, run_dir).run()
    except NonFiniteLossError as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as error:  # found only once the run starts, e.g. a checkpoint that does not fit
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    log.info("final %s", "  ".join(f"{k} {v:.4g}" for k, v in result.items()))
    return result.get("eval/return", float("nan"))


def check_command_line(arguments: list[str]) -> None:
    """Compose and validate every run the command line asks for, before Hydra creates
    any output directory."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [arg for arg in arguments if not arg.startswith("-") and "=" in arg]
    for single in override_choices(overrides):
        for override in single:
            key, _, value = override.lstrip("+~").partition("=")
            if key in GROUPS:
                check_group_choice(key, value)
        plain = [o for o in single if not o.startswith("hydra.") and not o.startswith("hydra/")]
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                validate(compose("config", overrides=plain))
        except (HydraException, OmegaConfBaseException) as error:
            lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
            raise ConfigError(" ".join(lines[:3])) from None


def resume_arguments(arguments: list[str]) -> list[str]:
    """``resume=<run dir>``: the run's own overrides, then the new ones, in that directory."""
    import yaml

    chosen = [arg for arg in arguments if arg.startswith("resume=")]
    if not chosen:
        return arguments
    run_dir = Path(chosen[-1].partition("=")[2]).expanduser()
    if not (run_dir / "checkpoint.pt").exists():
        raise ConfigError(f"resume={run_dir} has no checkpoint.pt; give a run directory that holds one")
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    original = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    original = [o for o in original if not o.startswith(("resume=", "hydra.run.dir="))]
    return [*original, *arguments, f"hydra.run.dir={run_dir.resolve()}"]


def cli() -> None:
    arguments = sys.argv[1:]
    try:
        arguments = resume_arguments(arguments)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *arguments]
    if not any(arg in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help") for arg in arguments):
        try:
            check_command_line(arguments)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
