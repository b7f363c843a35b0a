"""The four representation objectives: math on small tensors, gradients, and wiring."""

import math

import pytest
import torch
import torch.nn.functional as F

from dreamer.functional import ema_update_, random_shift, sinkhorn
from dreamer.networks import MultiEncoder
from dreamer.optim import LaPropAGC
from dreamer.representation.base import ObjectiveContext, ObjectiveInputs
from dreamer.representation.dreamer import ReconstructionObjective, image_mse, vector_mse
from dreamer.representation.dreamerpro import PrototypeObjective
from dreamer.representation.infonce import InfoNCEObjective
from dreamer.representation.r2dreamer import BarlowTwinsObjective
from dreamer.rssm import Latent

MODEL = dict(deter=16, hidden=8, stoch=2, classes=4, blocks=2, depth=2, units=8, layers=1, cnn_mults=(2, 3, 4, 4))
FEATURES = MODEL["stoch"] * MODEL["classes"] + MODEL["deter"]


def make_context(obs_space, encoder=None):
    cnn = tuple(k for k, s in obs_space.items() if len(s) == 3)
    mlp = tuple(k for k, s in obs_space.items() if len(s) == 1)
    encoder = encoder or MultiEncoder(obs_space, cnn, mlp, MODEL["depth"], 1, MODEL["units"], MODEL["cnn_mults"])
    context = ObjectiveContext(
        FEATURES, encoder.out_size, MODEL["deter"], obs_space, cnn, mlp, MODEL["depth"], MODEL["units"],
        MODEL["layers"], MODEL["blocks"], MODEL["cnn_mults"], encoder,
    )
    return context, encoder


def make_inputs(context, encoder, batch, features):
    embeddings = encoder(batch)
    latent = Latent(torch.zeros(*features.shape[:2], MODEL["deter"]), torch.zeros(*features.shape[:2], 2, 4))
    return ObjectiveInputs(batch, embeddings, features, latent, latent, None)


def test_image_and_vector_mse_hand_values():
    image = torch.tensor([[[[255, 0]]]], dtype=torch.uint8)  # (1, 1, 1, C=2)
    prediction = torch.tensor([[[[0.5, 0.25]]]])
    assert image_mse(prediction, image).item() == pytest.approx(0.25 + 0.0625)
    vector = torch.tensor([[math.e - 1, 0.0]])
    assert vector_mse(torch.tensor([[0.0, 2.0]]), vector).item() == pytest.approx(1.0 + 4.0)


def test_reconstruction_loss_equals_hand_computed_mse():
    obs_space = {"image": (16, 16, 3), "state": (3,)}
    context, encoder = make_context(obs_space)
    objective = ReconstructionObjective(context)
    batch = {"image": torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8), "state": torch.randn(2, 3, 3)}
    features = torch.randn(2, 3, FEATURES)
    losses, _ = objective(make_inputs(context, encoder, batch, features))
    decoded = objective.decode(features)
    expected_image = ((decoded["image"] - batch["image"].float() / 255) ** 2).sum((-3, -2, -1))
    expected_state = ((decoded["state"] - torch.sign(batch["state"]) * torch.log1p(batch["state"].abs())) ** 2).sum(-1)
    torch.testing.assert_close(losses["recon_image"], expected_image)
    torch.testing.assert_close(losses["recon_state"], expected_state)
    assert decoded["image"].shape == (2, 3, 16, 16, 3)


@pytest.mark.parametrize("objective_class", [BarlowTwinsObjective, InfoNCEObjective])
def test_embedding_side_is_stop_gradient(objective_class):
    context, encoder = make_context({"state": (5,)})
    objective = objective_class(context)
    batch = {"state": torch.randn(4, 6, 5)}
    features = torch.randn(4, 6, FEATURES, requires_grad=True)
    losses, _ = objective(make_inputs(context, encoder, batch, features))
    total = sum(losses.values())
    total.backward()
    assert all(p.grad is None for p in encoder.parameters())  # no gradient through sg(e_t)
    assert features.grad.abs().sum() > 0 and objective.projector.weight.grad.abs().sum() > 0


def test_infonce_cosine_option_changes_logits():
    context, encoder = make_context({"state": (5,)})
    batch = {"state": torch.randn(4, 6, 5)}
    features = torch.randn(4, 6, FEATURES)
    torch.manual_seed(0)
    plain = InfoNCEObjective(context)
    torch.manual_seed(0)
    cosine = InfoNCEObjective(context, cosine=True, temperature=0.1)
    inputs = make_inputs(context, encoder, batch, features)
    assert plain(inputs)[0]["infonce"].item() != pytest.approx(cosine(inputs)[0]["infonce"].item())


def test_sinkhorn_rows_sum_to_one_and_columns_to_n_over_p():
    torch.manual_seed(0)
    scores = torch.randn(12, 4)
    targets = sinkhorn(scores, epsilon=0.5, iterations=3)
    torch.testing.assert_close(targets.sum(1), torch.ones(12))
    converged = sinkhorn(scores, epsilon=0.5, iterations=200)
    torch.testing.assert_close(converged.sum(0), torch.full((4,), 3.0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(converged.sum(1), torch.ones(12))


def test_random_shift_bounded_and_keeps_shape_dtype():
    torch.manual_seed(0)
    images = torch.zeros(6, 3, 16, 16, 1, dtype=torch.uint8)
    images[:, :, 8, 8] = 255  # one bright pixel in the middle
    shifted = random_shift(images, pad=3)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    for sequence in shifted:
        rows, cols = torch.nonzero(sequence[0, ..., 0] == 255, as_tuple=True)
        assert len(rows) == 1 and abs(rows.item() - 8) <= 3 and abs(cols.item() - 8) <= 3
        assert torch.equal(sequence[0], sequence[-1])  # the same shift for every step


def test_random_shift_zero_pad_is_identity():
    images = torch.randint(0, 256, (2, 3, 8, 8, 3), dtype=torch.uint8)
    assert torch.equal(random_shift(images, pad=0), images)


def test_ema_update_fraction():
    target, online = [torch.zeros(3)], [torch.ones(3) * 10]
    ema_update_(target, online, 0.05)
    torch.testing.assert_close(target[0], torch.full((3,), 0.5))
    ema_update_(target, online, 1.0)
    torch.testing.assert_close(target[0], online[0])


def make_prototype_objective(freeze):
    context, encoder = make_context({"image": (16, 16, 3)})
    return PrototypeObjective(context, prototypes=10, projection=4, freeze_prototypes=freeze), context, encoder


def prototype_gradient(objective, context, encoder) -> torch.Tensor:
    objective.prototypes.grad = None
    batch = {"image": torch.randint(0, 256, (4, 5, 16, 16, 3), dtype=torch.uint8)}
    features = torch.randn(4, 5, FEATURES, requires_grad=True)
    losses, _ = objective(make_inputs(context, encoder, batch, features))
    sum(losses.values()).backward()
    return objective.prototypes.grad


def test_dreamerpro_prototypes_frozen_receive_zero_gradient():
    """Zero (not None): the freeze is decided on the device, from the update count."""
    objective, context, encoder = make_prototype_objective(freeze=5)
    assert torch.count_nonzero(prototype_gradient(objective, context, encoder)) == 0
    for _ in range(4):
        objective.after_update()
    assert torch.count_nonzero(prototype_gradient(objective, context, encoder)) == 0  # 4 updates: still frozen
    objective.after_update()
    assert prototype_gradient(objective, context, encoder).abs().sum() > 0


def test_frozen_prototypes_stay_exactly_as_they_are_under_laprop():
    objective, context, encoder = make_prototype_objective(freeze=5)
    before = objective.prototypes.detach().clone()
    optimizer = LaPropAGC([objective.prototypes], lr=0.1, warmup=0)
    for _ in range(3):
        prototype_gradient(objective, context, encoder)
        optimizer.step()
    assert torch.equal(objective.prototypes.detach(), before)
    assert all(torch.count_nonzero(moment) == 0 for moment in optimizer.optimizer.state[objective.prototypes].values())


def test_dreamerpro_update_count_comes_back_from_a_checkpoint():
    trained, _, _ = make_prototype_objective(freeze=5)
    for _ in range(5):
        trained.after_update()
    fresh, context, encoder = make_prototype_objective(freeze=5)
    assert torch.count_nonzero(prototype_gradient(fresh, context, encoder)) == 0
    fresh.load_state_dict(trained.state_dict())
    assert fresh.updates.item() == 5
    assert prototype_gradient(fresh, context, encoder).abs().sum() > 0  # past the freeze


def test_dreamerpro_lists_what_its_update_changes_outside_the_optimizer_and_holds_the_encoder_once():
    """The agent takes back a withheld update from this list: EMA targets, prototypes and
    the update count, but not the world model's online encoder, which it does not own."""
    from dreamer.agent import state_outside_optimizer

    objective, _, encoder = make_prototype_objective(freeze=0)
    listed = {id(tensor) for tensor in state_outside_optimizer(objective)}
    expected = [*objective.target_encoder.parameters(), *objective.target_projector.parameters(),
                objective.prototypes, objective.updates]
    assert listed == {id(tensor) for tensor in expected}
    assert not any(key.startswith("encoder.") for key in objective.state_dict())
    assert {id(p) for p in encoder.parameters()}.isdisjoint(id(p) for p in objective.parameters())


def test_dreamerpro_targets_carry_no_gradient_and_ema_copies_first():
    objective, context, encoder = make_prototype_objective(freeze=0)
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)  # online and target now differ
    objective.after_update()  # first update: exact copy
    for target, online in zip(objective.target_encoder.parameters(), encoder.parameters()):
        torch.testing.assert_close(target, online)
    assert all(not p.requires_grad for p in objective.target_encoder.parameters())
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)
    before = next(objective.target_encoder.parameters()).clone()
    objective.after_update()
    after = next(objective.target_encoder.parameters())
    torch.testing.assert_close(after, before + 0.05 * (next(encoder.parameters()) - before))


def test_dreamerpro_prepare_duplicates_and_shifts_views():
    objective, context, encoder = make_prototype_objective(freeze=0)
    batch = {"image": torch.randint(0, 256, (3, 4, 16, 16, 3), dtype=torch.uint8), "reward": torch.zeros(3, 4)}
    start = Latent(torch.randn(3, MODEL["deter"]), torch.zeros(3, 2, 4))
    doubled, doubled_start = objective.prepare(batch, start)
    assert doubled["image"].shape == (6, 4, 16, 16, 3) and doubled["reward"].shape == (6, 4)
    torch.testing.assert_close(doubled_start.deter[:3], doubled_start.deter[3:])
