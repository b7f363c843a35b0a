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

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dreamer.config import CONF_DIR, GROUPS, ConfigError, check_group_choice, override_choices, validate
from dreamer.runner import Runner

log = logging.getLogger(__name__)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    run_dir = HydraConfig.get().runtime.output_dir
    result = Runner(cfg, run_dir).run()
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


def cli() -> None:
    arguments = sys.argv[1:]
    if not any(arg in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help") for arg in arguments):
        try:
            check_command_line(arguments)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
