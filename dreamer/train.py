"""``python -m dreamer.train``: train an agent; Hydra overrides pick every part.

Examples::

    python -m dreamer.train                                   # R2-Dreamer on CartPole-v1
    python -m dreamer.train env.id=Pendulum-v1 steps=20000
    python -m dreamer.train env.obs=pixels model=size12M
"""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dreamer.runner import Runner

log = logging.getLogger(__name__)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    run_dir = HydraConfig.get().runtime.output_dir
    result = Runner(cfg, run_dir).run()
    log.info("final %s", "  ".join(f"{k} {v:.4g}" for k, v in result.items()))
    return result.get("eval/return", float("nan"))


if __name__ == "__main__":
    main()
