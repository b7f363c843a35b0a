"""bf16 autocast computes the same losses as eager fp32 within a stated tolerance."""

import pytest
import torch
from hydra import compose, initialize_config_dir

from dreamer.bench import synthetic_replay
from dreamer.config import CONF_DIR
from dreamer.envs.gym import GymEnv
from dreamer.runner import build_agent

# bf16 keeps 8 bits of mantissa: losses averaged over a batch agree to a few percent.
RELATIVE_TOLERANCE = 0.05
ABSOLUTE_TOLERANCE = 0.02


def losses_with(precision: str, variant: str) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"precision={precision}", f"rep_variant={variant}", "env.obs=both",
                                           "batch_size=4", "batch_length=16"])
    env = GymEnv(obs="both", seed=0)
    torch.manual_seed(0)
    agent = build_agent(cfg, env.obs_space, env.action_space, torch.device("cpu"))
    env.close()
    batch, start, _ = synthetic_replay(cfg, env.obs_space, env.action_space, seed=0).sample(4, 16)
    torch.manual_seed(1)
    with agent.autocast():
        wm_losses, posterior, _ = agent.world_model.loss(batch, start)
        ac_losses, _ = agent.actor_critic.loss(agent.world_model, posterior, batch)
    return {name: value.item() for name, value in {**wm_losses, **ac_losses}.items()}


@pytest.mark.parametrize("variant", ["r2dreamer", "dreamer"])
def test_bf16_losses_match_fp32(variant):
    reference, fast = losses_with("fp32", variant), losses_with("bf16", variant)
    assert reference.keys() == fast.keys()
    assert any(fast[name] != reference[name] for name in reference)  # bf16 really ran
    for name in reference:
        assert fast[name] == pytest.approx(reference[name], rel=RELATIVE_TOLERANCE, abs=ABSOLUTE_TOLERANCE), name
