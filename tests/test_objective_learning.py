"""Each objective's loss falls when the world model trains on one fixed small batch."""

import pytest
import torch

from dreamer.representation.dreamer import ReconstructionObjective
from dreamer.representation.dreamerpro import PrototypeObjective
from dreamer.representation.infonce import InfoNCEObjective
from dreamer.representation.r2dreamer import BarlowTwinsObjective
from dreamer.rssm import Latent
from dreamer.world_model import WorldModel

SIZES = dict(deter=64, hidden=32, stoch=4, classes=4, blocks=2, depth=4, units=32, encoder_layers=2, cnn_mults=(2, 3, 4, 4))


def fixed_batch(batch=4, length=16, image=False):
    generator = torch.Generator().manual_seed(0)
    data = {
        "state": torch.randn(batch, length, 6, generator=generator),
        "action": torch.nn.functional.one_hot(torch.randint(0, 2, (batch, length), generator=generator), 2).float(),
        "reward": torch.ones(batch, length),
        "is_first": torch.zeros(batch, length, dtype=torch.bool),
        "is_last": torch.zeros(batch, length, dtype=torch.bool),
        "is_terminal": torch.zeros(batch, length, dtype=torch.bool),
    }
    data["is_first"][:, 0] = True
    if image:
        data["image"] = torch.randint(0, 256, (batch, length, 16, 16, 3), dtype=torch.uint8, generator=generator)
    return data


def train_objective(objective, names, image=False, updates=300):
    torch.manual_seed(0)
    obs_space = {"state": (6,), **({"image": (16, 16, 3)} if image else {})}
    model = WorldModel(
        obs_space, 2, objective, cnn_keys=["image"] if image else [], mlp_keys=["state"], **SIZES
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = fixed_batch(image=image)
    start = Latent(torch.zeros(4, SIZES["deter"]), torch.zeros(4, SIZES["stoch"], SIZES["classes"]))
    history = []
    for _ in range(updates):
        losses, _, _ = model.loss(batch, start)
        total = sum(model.loss_scales[name] * value for name, value in losses.items())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        model.objective.after_update()
        history.append(sum(losses[name].item() for name in names))
    return history[0], min(history[-20:])


@pytest.mark.parametrize(
    "factory, names",
    [
        (lambda c: BarlowTwinsObjective(c), ["barlow"]),
        (lambda c: InfoNCEObjective(c), ["infonce"]),
        (lambda c: ReconstructionObjective(c), ["recon_state"]),
    ],
    ids=["r2dreamer", "infonce", "dreamer"],
)
def test_objective_loss_at_least_halves_on_a_fixed_batch(factory, names):
    first, last = train_objective(factory, names)
    assert last <= 0.5 * first, (first, last)


def test_dreamerpro_swav_and_temporal_loss_fall_clearly():
    factory = lambda c: PrototypeObjective(c, prototypes=64, projection=8, freeze_prototypes=0)  # noqa: E731
    first, last = train_objective(factory, ["swav", "temp"], image=True, updates=200)
    assert last <= 0.8 * first, (first, last)
