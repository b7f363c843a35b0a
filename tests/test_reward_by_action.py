"""experiments/reward_by_action.py: a world model that sees only an action's sign predicts the
same reward for every push of that sign; one that sees its size does not."""

import torch

from conftest import load_experiment, make_agent


def test_predicted_reward_is_flat_in_the_push_only_when_the_action_layer_has_no_bias():
    script = load_experiment("reward_by_action")
    agent, _, _ = make_agent()
    world_model = agent.world_model
    torch.manual_seed(1)
    with torch.no_grad():  # a reward head that reads its input (its output layer starts at zero)
        world_model.reward_head.out.weight.normal_(0, 0.1)
        latent = world_model.rssm.initial(1)
        pushes = torch.tensor([0.25, 0.5, 1.0])
        size = world_model.rssm.action_in[0].in_features
        flat = script.predicted_rewards(world_model, latent, pushes, size)  # the bias is zero at the start
        world_model.rssm.action_in[0].bias.normal_()
        seen = script.predicted_rewards(world_model, latent, pushes, size)
    assert abs(flat - flat[0]).max() < 0.1 * abs(seen - seen[0]).max()
    assert abs(seen - seen[0]).max() > 1e-3
