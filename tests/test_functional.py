"""Pure math of algorithm.md, checked against hand-computed values."""

import math

import pytest
import torch

from dreamer.functional import (
    barlow_twins_loss,
    categorical_kl,
    info_nce_loss,
    kl_balance,
    lambda_returns,
    replay_lambda_returns,
    symexp,
    symlog,
    twohot_bins,
    twohot_encode,
    twohot_loss,
    twohot_mean,
    unimix_probs,
)


def test_symlog_hand_values():
    x = torch.tensor([0.0, 1.0, -1.0, math.e - 1, -(math.e**2 - 1)])
    expected = torch.tensor([0.0, math.log(2), -math.log(2), 1.0, -2.0])
    torch.testing.assert_close(symlog(x), expected)


def test_symexp_inverts_symlog():
    x = torch.tensor([-1e4, -3.5, -1e-3, 0.0, 2e-2, 7.0, 1e5])
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(symexp(torch.tensor([1.0, -2.0])), torch.tensor([math.e - 1, -(math.e**2 - 1)]))


def test_twohot_bins_are_symexp_of_linspace():
    bins = twohot_bins(255)
    assert bins.shape == (255,)
    assert bins[127].item() == 0.0
    torch.testing.assert_close(bins[-1], symexp(torch.tensor(20.0)))
    assert bins[-1].item() == pytest.approx(4.85e8, rel=1e-2)
    assert torch.all(bins[1:] > bins[:-1])


def test_twohot_splits_between_neighbours_by_closeness():
    bins = torch.tensor([-2.0, 0.0, 1.0, 3.0])
    encoded = twohot_encode(torch.tensor([0.25, 2.5, 1.0]), bins)
    expected = torch.tensor(
        [
            [0.0, 0.75, 0.25, 0.0],  # 0.25 is a quarter of the way from 0 to 1
            [0.0, 0.0, 0.25, 0.75],  # 2.5 is three quarters from 1 to 3
            [0.0, 0.0, 1.0, 0.0],  # exactly on a bin
        ]
    )
    torch.testing.assert_close(encoded, expected)


def test_twohot_outside_range_goes_to_end_bin():
    bins = torch.tensor([-2.0, 0.0, 1.0, 3.0])
    encoded = twohot_encode(torch.tensor([-10.0, 10.0]), bins)
    torch.testing.assert_close(encoded, torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]))


def test_twohot_loss_is_cross_entropy_against_the_two_hot_target():
    bins = torch.tensor([-2.0, 0.0, 1.0, 3.0])
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5], [1.0, 1.0, 1.0, 1.0]])
    loss = twohot_loss(logits, torch.tensor([0.25, 10.0]), bins)
    log_p = torch.log_softmax(logits, -1)
    expected = torch.stack([-(0.75 * log_p[0, 1] + 0.25 * log_p[0, 2]), -log_p[1, 3]])  # 10 -> the end bin
    torch.testing.assert_close(loss, expected)
    assert loss[1].item() == pytest.approx(math.log(4))
    # the same as the dense form on many targets, gradient included
    bins = twohot_bins(255)
    logits = torch.randn(6, 7, 255, requires_grad=True)
    targets = torch.randn(6, 7) * 50
    dense = -(twohot_encode(targets, bins) * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(twohot_loss(logits, targets, bins), dense)
    (grad,) = torch.autograd.grad(twohot_loss(logits, targets, bins).sum(), logits)
    (dense_grad,) = torch.autograd.grad(dense.sum(), logits)
    torch.testing.assert_close(grad, dense_grad)


def test_twohot_expected_value_recovers_target():
    bins = twohot_bins(255)
    targets = torch.tensor([0.0, 0.37, -12.5, 1234.0])
    torch.testing.assert_close(twohot_mean(twohot_encode(targets, bins), bins), targets, rtol=1e-4, atol=1e-4)


def test_twohot_mean_cancels_symmetric_extreme_bins_exactly():
    bins = twohot_bins(255)
    probs = torch.zeros(255)
    probs[0] = probs[-1] = 0.5  # ±4.8e8 with equal weight
    assert twohot_mean(probs, bins).item() == 0.0


def test_unimix_probabilities_hand_values():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    probs = unimix_probs(logits, 0.01)
    expected = 0.99 * torch.tensor([[0.5, 0.25, 0.25]]) + 0.01 / 3
    torch.testing.assert_close(probs, expected)
    assert probs.min() >= 0.01 / 3


def test_categorical_kl_hand_value_sums_groups():
    q = torch.tensor([[[0.5, 0.5], [1.0 - 1e-7, 1e-7]]])  # (1, S=2, K=2)
    p = torch.tensor([[[0.25, 0.75], [0.5, 0.5]]])
    first = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    second = math.log(2.0)  # KL of a near-one-hot against uniform
    assert categorical_kl(q, p).item() == pytest.approx(first + second, rel=1e-4)


def test_kl_balance_free_bits_clamp_and_value():
    q = torch.tensor([[[0.5, 0.5]]])
    p = torch.tensor([[[0.25, 0.75]]])
    kl = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    dyn, rep = kl_balance(q, p, free=0.0)
    assert dyn.item() == pytest.approx(kl) and rep.item() == pytest.approx(kl)
    dyn, rep = kl_balance(q, p, free=1.0)
    assert dyn.item() == 1.0 and rep.item() == 1.0


def test_kl_balance_gradients_go_to_prior_for_dyn_and_posterior_for_rep():
    q_logits = torch.randn(3, 2, 4, requires_grad=True)
    p_logits = torch.randn(3, 2, 4, requires_grad=True)
    dyn, rep = kl_balance(q_logits.softmax(-1), p_logits.softmax(-1), free=0.0)
    q_grad, p_grad = torch.autograd.grad(dyn.sum(), [q_logits, p_logits], allow_unused=True)
    assert q_grad is None or q_grad.abs().max() == 0
    assert p_grad.abs().max() > 0
    q_grad, p_grad = torch.autograd.grad(rep.sum(), [q_logits, p_logits], allow_unused=True)
    assert q_grad.abs().max() > 0
    assert p_grad is None or p_grad.abs().max() == 0


def test_lambda_returns_hand_computed_two_steps():
    gamma, lam = 0.9, 0.5
    rewards = torch.tensor([[0.0, 1.0, 2.0]])
    continues = torch.tensor([[1.0, 1.0, 1.0]])
    values = torch.tensor([[0.0, 3.0, 4.0]])
    returns = lambda_returns(rewards, continues, values, gamma, lam)
    r1 = 2.0 + gamma * 4.0  # R_1 = r_2 + γ ((1-λ) v_2 + λ R_2), R_2 = v_2
    r0 = 1.0 + gamma * ((1 - lam) * 3.0 + lam * r1)
    torch.testing.assert_close(returns, torch.tensor([[r0, r1]]))


def test_lambda_returns_stop_at_terminal():
    rewards = torch.tensor([[0.0, 1.0, 5.0, 7.0]])
    continues = torch.tensor([[1.0, 0.0, 1.0, 1.0]])  # the state reached at t=1 is terminal
    values = torch.tensor([[0.0, 100.0, 100.0, 100.0]])
    returns = lambda_returns(rewards, continues, values, 0.99, 0.95)
    assert returns[0, 0].item() == pytest.approx(1.0)  # nothing after the terminal counts


def test_lambda_returns_horizon_length_and_lambda_one_is_discounted_sum():
    horizon, gamma = 15, 0.99
    rewards = torch.ones(2, horizon + 1)
    values = torch.full((2, horizon + 1), 10.0)
    returns = lambda_returns(rewards, torch.ones(2, horizon + 1), values, gamma, 1.0)
    assert returns.shape == (2, horizon)
    expected = sum(gamma**k for k in range(horizon)) + gamma**horizon * 10.0
    assert returns[0, 0].item() == pytest.approx(expected, rel=1e-5)


def test_replay_lambda_returns_cut_at_episode_end():
    rewards = torch.tensor([[0.0, 1.0, 0.0]])
    terminals = torch.tensor([[False, True, False]])
    lasts = torch.tensor([[False, True, False]])
    bootstrap = torch.tensor([[9.0, 9.0, 9.0]])
    returns = replay_lambda_returns(rewards, terminals, lasts, bootstrap, 0.9, 0.5)
    assert returns[0, 0].item() == pytest.approx(1.0)  # terminal: no bootstrap after it
    assert returns[0, 1].item() == pytest.approx(0.0 + 0.9 * 9.0)  # new episode: bootstrap only


def test_barlow_invariance_zero_for_identical_standardised_inputs():
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    x = (x - x.mean(0)) / x.std(0)
    loss, terms = barlow_twins_loss(x, x, 5e-4)
    # C_ii = (N-1)/N with the unbiased std: invariance is E*(1/N)^2.
    assert terms["invariance"].item() == pytest.approx(8 * (1 / 512) ** 2, abs=1e-6)
    assert terms["invariance"].item() < 1e-4


def test_barlow_hand_computed_two_dimensions():
    first = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    second = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    # standardised with std sqrt(2): x̂ = ±1/sqrt(2); C = [[0.5, -0.5], [0.5, -0.5]]
    loss, terms = barlow_twins_loss(first, second, off_diagonal_weight=0.1)
    assert terms["invariance"].item() == pytest.approx(0.25 + 2.25, abs=1e-6)
    assert terms["redundancy"].item() == pytest.approx(0.5, abs=1e-6)
    assert loss.item() == pytest.approx(2.5 + 0.05, abs=1e-6)


def test_info_nce_identical_rows_is_log_n():
    x = torch.ones(6, 4)
    assert info_nce_loss(x, x).item() == pytest.approx(math.log(6), rel=1e-6)


def test_info_nce_perfectly_separated_pairs_near_zero():
    x = 20.0 * torch.eye(5)
    assert info_nce_loss(x, x).item() < 1e-6
