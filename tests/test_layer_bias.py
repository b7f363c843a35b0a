"""Hidden layers have a bias before their RMSNorm, so the size of an input, not only its
direction, reaches the network; version-0.2 checkpoints (no bias) still evaluate, and a
run of one is not continued with the new layers."""

import tomllib

import pytest
import torch

import dreamer
from conftest import QUICK, ROOT, make_agent, run_cli
from dreamer.checkpoint import added_biases, from_bias_free, write_atomically
from dreamer.evaluate import load
from dreamer.networks import NormedLinear


def test_a_one_dimensional_input_keeps_its_size_through_a_hidden_layer():
    torch.manual_seed(0)
    layer = NormedLinear(1, 16)
    small, large = torch.tensor([[0.2]]), torch.tensor([[1.0]])
    assert torch.equal(layer[0].bias, torch.zeros(16))  # zero at the start, as in DreamerV3
    # without a bias, RMSNorm(w * a) = sign(a) * w / rms(w): 0.2 and 1.0 differ only by the eps
    torch.testing.assert_close(layer(small), layer(large), rtol=0.02, atol=1e-3)
    with torch.no_grad():
        layer[0].bias.copy_(torch.linspace(-1, 1, 16))
    assert (layer(small) - layer(large)).abs().max() > 0.1


def test_the_world_model_sees_how_hard_a_push_is_once_its_action_bias_is_learned():
    agent, _, _ = make_agent()
    rssm = agent.world_model.rssm
    with torch.no_grad():
        rssm.action_in[0].bias.normal_()
    latent = rssm.initial(1)
    gentle = rssm.sequence_step(latent, torch.tensor([[0.2, 0.0]]))
    hard = rssm.sequence_step(latent, torch.tensor([[1.0, 0.0]]))
    assert (gentle - hard).abs().max() > 1e-3


def bias_free(state: dict, agent) -> dict:
    """``state`` as version 0.2 wrote it: no bias in the layers 0.3 gave one."""
    added = set(added_biases(agent))
    return {key: value for key, value in state.items() if key not in added}


def test_a_version_02_agent_state_loads_with_zero_biases_and_computes_the_same():
    agent, batch, _ = make_agent()
    keys = added_biases(agent)
    # the RSSM's three inputs, every MLP layer, the image encoder's four convolutions
    assert "world_model.rssm.action_in.0.bias" in keys and any("stages.0.bias" in key for key in keys)
    old = bias_free(agent.state_dict(), agent)
    assert from_bias_free(agent.state_dict(), agent) is None  # a current state is left alone
    fresh, _, _ = make_agent()
    fresh.load_state_dict(from_bias_free(old, fresh))
    for key, value in agent.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    embed = lambda model: model.world_model.encoder({k: v[:, 0] for k, v in batch.items()})  # noqa: E731
    torch.testing.assert_close(embed(fresh), embed(agent), rtol=0, atol=0)


@pytest.fixture(scope="module")
def version_02_run(tmp_path_factory):
    """A short run whose checkpoints are rewritten as version 0.2 wrote them."""
    run_dir = tmp_path_factory.mktemp("old")
    result = run_cli(*QUICK, "steps=40", "train_ratio=8", "eval_every=0", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    agent = load(run_dir, torch.device("cpu"))[0]
    for path in [run_dir / "checkpoint.pt", *(run_dir / "checkpoints").glob("*.pt")]:
        saved = torch.load(path, weights_only=False)
        saved["agent"] = bias_free(saved["agent"], agent)
        write_atomically(path, saved)
    return run_dir


def test_a_version_02_checkpoint_is_scored_and_not_continued(version_02_run, tmp_path):
    saved = (version_02_run / "checkpoint.pt").read_bytes()
    result = run_cli(f"resume={version_02_run}")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr[-2000:]
    assert "written by version 0.2" in result.stderr and "dreamer.evaluate" in result.stderr
    assert (version_02_run / "checkpoint.pt").read_bytes() == saved  # untouched
    result = run_cli(f"checkpoint={version_02_run}", "episodes=1", f"out={tmp_path}", module="dreamer.evaluate")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "written by version 0.2" in result.stderr + result.stdout


def test_the_package_version_is_the_one_pyproject_declares():
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == dreamer.__version__ == "0.3.0"
