"""Replay, RSSM, optimiser and distributions against hand-computed behaviour."""

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamer.distributions import BoundedNormal, OneHotCategorical, straight_through_sample
from dreamer.networks import BlockLinear, BlockSharedLinear, ChannelNorm
from dreamer.optim import AdamClip, LaPropAGC, adaptive_clip_
from dreamer.replay import Replay
from dreamer.rssm import RSSM, Latent


def filled_replay(rows=20, envs=2, deter=3, capacity=None):
    spaces = {"state": ((1,), torch.float32), "action": ((1,), torch.float32), "reward": ((), torch.float32),
              "is_first": ((), torch.bool), "is_last": ((), torch.bool), "is_terminal": ((), torch.bool)}
    replay = Replay(capacity or rows * envs, envs, spaces, deter=deter, stoch=2, classes=4, seed=0)
    for row in range(rows):
        step = {"state": np.array([[row], [100 + row]], np.float32), "action": np.zeros((2, 1), np.float32),
                "reward": np.zeros(2, np.float32), "is_first": np.array([row == 0] * 2),
                "is_last": np.zeros(2, bool), "is_terminal": np.zeros(2, bool)}
        deter_values = torch.tensor([[float(row)] * deter, [100.0 + row] * deter])
        replay.add(step, Latent(deter_values, torch.nn.functional.one_hot(torch.tensor([[row % 4] * 2] * 2), 4).float()))
    return replay


def test_replay_sequences_are_contiguous_and_start_from_previous_latent():
    replay = filled_replay()
    batch, start, (rows, envs) = replay.sample(8, 5)
    states = batch["state"][..., 0]  # (B, T)
    assert states.shape == (8, 5)
    assert torch.all(states[:, 1:] - states[:, :-1] == 1)  # consecutive steps of one environment
    torch.testing.assert_close(start.deter[:, 0], states[:, 0] - 1)  # stored latent of the step before
    assert start.stoch.shape == (8, 2, 4)


def test_replay_update_latents_overwrites_sampled_steps():
    replay = filled_replay()
    _, _, indices = replay.sample(4, 5)
    fresh = Latent(torch.full((4, 5, 3), -7.0), torch.nn.functional.one_hot(torch.full((4, 5, 2), 3), 4).float())
    replay.update_latents(indices, fresh)
    rows, envs = indices
    assert torch.all(replay.deter[rows, envs] == -7.0)
    assert torch.all(replay.stoch[rows, envs] == 3)


def test_replay_never_crosses_the_write_position_after_wrapping():
    replay = filled_replay(rows=30, capacity=20)  # 10 rows per env: oldest rows overwritten
    for _ in range(50):
        batch, _, _ = replay.sample(4, 6)
        states = batch["state"][..., 0] % 100
        assert torch.all(states[:, 1:] - states[:, :-1] == 1) and states.min() >= 21


def test_replay_state_dict_round_trip_keeps_only_filled_rows():
    replay = filled_replay(rows=5, capacity=100)
    state = replay.state_dict()
    assert state["deter"].shape[0] == 5
    other = filled_replay(rows=1, capacity=100)
    other.load_state_dict(state)
    assert torch.equal(other.data["state"][:5], replay.data["state"][:5]) and other.count == 5


def test_rssm_is_first_resets_state_and_action():
    torch.manual_seed(0)
    rssm = RSSM(embed_size=4, action_size=2, deter=8, hidden=4, stoch=2, classes=3, blocks=2)
    embedding = torch.randn(1, 4)
    busy = Latent(torch.randn(1, 8), torch.nn.functional.one_hot(torch.tensor([[1, 2]]), 3).float())
    torch.manual_seed(1)
    reset, _ = rssm.obs_step(busy, torch.ones(1, 2), embedding, torch.tensor([True]))
    torch.manual_seed(1)
    fresh, _ = rssm.obs_step(rssm.initial(1), torch.zeros(1, 2), embedding, torch.tensor([False]))
    torch.testing.assert_close(reset.deter, fresh.deter)
    torch.testing.assert_close(reset.stoch, fresh.stoch)


def test_rssm_observe_shapes_and_features():
    rssm = RSSM(embed_size=4, action_size=2, deter=8, hidden=4, stoch=2, classes=3, blocks=2)
    posterior, probs = rssm.observe(rssm.initial(3), torch.zeros(3, 5, 2), torch.randn(3, 5, 4), torch.zeros(3, 5))
    assert posterior.deter.shape == (3, 5, 8) and probs.shape == (3, 5, 2, 3)
    assert posterior.features().shape == (3, 5, 2 * 3 + 8)
    torch.testing.assert_close(posterior.stoch.sum(-1), torch.ones(3, 5, 2))  # one-hot samples


def test_straight_through_sample_is_one_hot_with_probability_gradient():
    probs = torch.tensor([[0.2, 0.8]], requires_grad=True)
    sample = straight_through_sample(probs)
    assert sorted(sample.detach()[0].tolist()) == [0.0, 1.0]
    (sample * torch.tensor([[1.0, 2.0]])).sum().backward()
    torch.testing.assert_close(probs.grad, torch.tensor([[1.0, 2.0]]))


def test_straight_through_sample_frequencies_follow_probs():
    torch.manual_seed(0)
    samples = straight_through_sample(torch.tensor([0.1, 0.6, 0.3]).expand(20000, 3)).detach()
    torch.testing.assert_close(samples.mean(0), torch.tensor([0.1, 0.6, 0.3]), atol=0.015, rtol=0)


def test_action_distributions_hand_values():
    categorical = OneHotCategorical(torch.zeros(1, 4), unimix=0.01)
    assert categorical.entropy().item() == pytest.approx(np.log(4))
    normal = BoundedNormal(torch.tensor([[0.0, -100.0]]))  # mean tanh(0) = 0, std at its minimum 0.1
    assert normal.std.item() == pytest.approx(0.1)
    expected = -0.5 * np.log(2 * np.pi) - np.log(0.1) - 0.5 * (0.2 / 0.1) ** 2
    assert normal.log_prob(torch.tensor([[0.2]])).item() == pytest.approx(expected, rel=1e-5)


def test_laprop_first_step_moves_by_learning_rate_times_sign():
    parameter = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = LaPropAGC([parameter], lr=0.1, agc=1e9, warmup=0)
    parameter.grad = torch.tensor([0.5, -3.0])
    optimizer.step()  # bias-corrected: m̂ = g / |g|, so each entry moves by lr
    torch.testing.assert_close(parameter.detach(), torch.tensor([0.9, -1.9]))


def test_warmup_scales_learning_rate_linearly():
    parameter = torch.nn.Parameter(torch.tensor([0.0]))
    optimizer = LaPropAGC([parameter], lr=0.1, agc=1e9, warmup=4)
    parameter.grad = torch.tensor([1.0])
    optimizer.step()
    torch.testing.assert_close(parameter.detach(), torch.tensor([-0.025]))


def test_adaptive_clip_limits_gradient_relative_to_parameter_norm():
    big, small = torch.nn.Parameter(torch.tensor([3.0, 4.0])), torch.nn.Parameter(torch.tensor([0.0]))
    big.grad, small.grad = torch.tensor([30.0, 40.0]), torch.tensor([1.0])
    norm = adaptive_clip_([big, small], clip=0.3, pmin=1e-3)
    torch.testing.assert_close(big.grad.norm(), torch.tensor(0.3 * 5.0))  # clipped to 0.3 |p|
    torch.testing.assert_close(small.grad, torch.tensor([0.3 * 1e-3]))  # |p| = 0 uses pmin
    assert norm.item() == pytest.approx(float(np.sqrt(50.0**2 + 1.0)))


def test_adam_clip_limits_global_norm():
    parameter = torch.nn.Parameter(torch.zeros(2))
    optimizer = AdamClip([parameter], lr=0.1, clip_norm=1.0, warmup=0)
    parameter.grad = torch.tensor([30.0, 40.0])
    metrics = optimizer.step()
    assert metrics["grad_norm"].item() == pytest.approx(50.0)
    torch.testing.assert_close(parameter.detach(), torch.tensor([-0.1, -0.1]))


def laprop_reference(params, grads_per_step, lr, betas, eps, warmup):
    """LaProp written out per tensor in float64 (spec 4), for comparison."""
    params = [p.double().clone() for p in params]
    momenta = [torch.zeros_like(p) for p in params]
    squares = [torch.zeros_like(p) for p in params]
    for step, grads in enumerate(grads_per_step, start=1):
        rate = lr * min(1.0, step / max(1, warmup))
        for p, g, m, v in zip(params, grads, momenta, squares):
            g = g.double()
            v.mul_(betas[1]).add_((1 - betas[1]) * g * g)
            m.mul_(betas[0]).add_((1 - betas[0]) * g / ((v / (1 - betas[1] ** step)).sqrt() + eps))
            p.sub_(rate * m / (1 - betas[0] ** step))
    return params


def random_gradients(shapes, steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(shape, generator=generator) for shape in shapes] for _ in range(steps)]


def test_laprop_matches_its_formula_over_steps_with_warmup():
    shapes = [(3, 4), (5,)]
    initial = [torch.randn(shape) for shape in shapes]
    grads = random_gradients(shapes, 4)
    params = [torch.nn.Parameter(p.clone()) for p in initial]
    optimizer = LaPropAGC(params, lr=0.01, betas=(0.9, 0.999), eps=1e-20, agc=1e9, warmup=3)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()
    expected = laprop_reference(initial, grads, 0.01, (0.9, 0.999), 1e-20, warmup=3)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach().double(), e, rtol=1e-5, atol=1e-7)


def test_adam_matches_torch_adam():
    shapes = [(3, 4), (5,)]
    initial = [torch.randn(shape) for shape in shapes]
    ours = [torch.nn.Parameter(p.clone()) for p in initial]
    theirs = [torch.nn.Parameter(p.clone()) for p in initial]
    optimizer = AdamClip(ours, lr=0.01, eps=1e-8, clip_norm=1e9, warmup=0)
    reference = torch.optim.Adam(theirs, lr=0.01, eps=1e-8)
    for step_grads in random_gradients(shapes, 4):
        for a, b, g in zip(ours, theirs, step_grads):
            a.grad, b.grad = g.clone(), g.clone()
        optimizer.step()
        reference.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def optimizer_snapshot(optimizer):
    return copy.deepcopy(optimizer.state_dict()), [p.detach().clone() for p in optimizer.params]


def assert_same_snapshot(before, after):
    (state_a, params_a), (state_b, params_b) = before, after
    for a, b in zip(params_a, params_b):
        assert torch.equal(a, b)
    assert state_a["state"].keys() == state_b["state"].keys()
    for index, moments in state_a["state"].items():
        for name, value in moments.items():
            assert torch.equal(value, state_b["state"][index][name]), (index, name)
    assert [float(g["step"]) for g in state_a["param_groups"]] == [float(g["step"]) for g in state_b["param_groups"]]


@pytest.mark.parametrize("make", [lambda p: LaPropAGC(p, lr=0.01, warmup=2), lambda p: AdamClip(p, lr=0.01, warmup=2)],
                         ids=["laprop", "adam"])
@pytest.mark.parametrize("cause", ["invalid loss", "nan gradient", "inf gradient"])
def test_withheld_step_changes_nothing_and_the_next_step_continues_as_if_none_happened(make, cause):
    shapes = [(3, 4), (5,)]
    initial = [torch.randn(shape) for shape in shapes]
    grads = random_gradients(shapes, 3)
    params, twin_params = ([torch.nn.Parameter(p.clone()) for p in initial] for _ in range(2))
    optimizer, twin = make(params), make(twin_params)

    def step(opt, opt_params, step_grads, valid=None):
        for p, g in zip(opt_params, step_grads):
            p.grad = g.clone()
        return opt.step(valid)

    for opt, opt_params in ((optimizer, params), (twin, twin_params)):
        assert step(opt, opt_params, grads[0])["applied"].item() == 1.0
    before = optimizer_snapshot(optimizer)
    bad = [g.clone() for g in grads[1]]
    valid = torch.tensor(cause != "invalid loss")
    if cause != "invalid loss":
        bad[0][1, 2] = float("nan") if cause == "nan gradient" else float("inf")
    metrics = step(optimizer, params, bad, valid)
    assert metrics["applied"].item() == 0.0
    assert_same_snapshot(before, optimizer_snapshot(optimizer))
    step(optimizer, params, grads[2])
    step(twin, twin_params, grads[2])
    for a, b in zip(params, twin_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_laprop_state_with_the_count_as_a_python_int_loads_and_continues():
    """Checkpoints kept the step count (and the warmed-up lr) as Python numbers in the
    parameter group before the count moved to the device."""
    shapes = [(3, 4), (5,)]
    initial = [torch.randn(shape) for shape in shapes]
    grads = random_gradients(shapes, 3)
    params, loaded_params = ([torch.nn.Parameter(p.clone()) for p in initial] for _ in range(2))
    optimizer = LaPropAGC(params, lr=0.01, warmup=10)
    for step_grads in grads[:2]:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step()
    saved = copy.deepcopy(optimizer.state_dict())
    for group in saved["param_groups"]:
        group.update(step=2, updates=2, lr=0.01 * 2 / 10)  # the earlier layout
    with torch.no_grad():
        for p, q in zip(loaded_params, params):
            p.copy_(q)
    loaded = LaPropAGC(loaded_params, lr=0.01, warmup=10)
    loaded.load_state_dict(saved)
    for opt, opt_params in ((optimizer, params), (loaded, loaded_params)):
        for p, g in zip(opt_params, grads[2]):
            p.grad = g.clone()
        opt.step()
    for a, b in zip(params, loaded_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def run_python(script: str, *args: str) -> str:
    """Stdout of ``script`` in a fresh interpreter: memory settings and counters are per process."""
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    return result.stdout


def test_replay_commits_memory_only_as_it_fills():
    # A 500k-step replay of 64x64 frames is 6 GiB; building it must not touch that memory.
    script = (
        "import resource, torch\n"
        "from dreamer.replay import Replay\n"
        "Replay(500_000, 4, {'image': ((64, 64, 3), torch.uint8)}, 256, 8, 8)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    assert int(run_python(script)) < 2048  # MiB of resident memory, torch included


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keep_freed_memory_reuses_large_blocks_without_page_faults():
    # Minor page faults while allocating and filling a 256 MiB tensor, ten times over: about
    # 65k each time (one per 4 KiB page) when malloc returns freed blocks to the OS; once
    # the heap has settled, none when it keeps them, and the footprint stops growing.
    script = (
        "import resource, sys, torch\n"
        "from dreamer.accelerate import keep_freed_memory\n"
        "from dreamer.replay import Replay\n"
        "if sys.argv[1] == 'keep': assert keep_freed_memory()\n"
        "faults = []\n"
        "for _ in range(10):\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    torch.ones(2**26).sum(), torch.ones(1000)\n"
        "    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
        "Replay(500_000, 4, {'image': ((64, 64, 3), torch.uint8)}, 256, 8, 8)\n"
        "print(sum(faults[5:]), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    results = {}
    for mode in ("default", "keep"):
        results[mode] = [int(value) for value in run_python(script, mode).split()]
    assert results["default"][0] > 5 * 60_000
    assert results["keep"][0] < 1_000
    assert results["keep"][1] < 2048  # MiB: bounded, and a big replay still commits memory only as it fills


def test_channel_norm_divides_each_pixel_by_its_channel_rms():
    norm = ChannelNorm(2, eps=0.0)
    with torch.no_grad():
        norm.scale.copy_(torch.tensor([1.0, 2.0]))
    x = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1).repeat(1, 1, 2, 3)  # rms over channels: sqrt(12.5)
    rms = 12.5**0.5
    expected = torch.tensor([3.0 / rms, 2 * 4.0 / rms]).reshape(1, 2, 1, 1).expand(1, 2, 2, 3)
    assert torch.allclose(norm(x), expected)
    # the same as RMSNorm over channels moved last, in either dtype
    x = torch.randn(3, 5, 4, 4)
    norm = ChannelNorm(5)
    with torch.no_grad():
        norm.scale.copy_(torch.arange(1.0, 6.0))
    reference = torch.nn.functional.rms_norm(x.permute(0, 2, 3, 1), (5,), norm.scale.detach(), 1e-4).permute(0, 3, 1, 2)
    assert torch.allclose(norm(x), reference, atol=1e-6)
    half = norm(x.bfloat16())
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), reference, atol=0.05)


def test_block_shared_linear_hand_values():
    # 2 blocks; block g sees its own slice x_g (1 value) and the shared input s (1 value):
    # out_g = w[0, g] * x_g + w[1, g] * s + b_g
    layer = BlockSharedLinear(own_size=2, shared_size=1, out_size=2, blocks=2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[[2.0], [3.0]], [[5.0], [7.0]]]))  # (own/G + S, G, out/G)
        layer.bias.copy_(torch.tensor([0.5, -1.0]))
    out = layer(torch.tensor([[1.0, 10.0]]), torch.tensor([[100.0]]))
    assert out.tolist() == [[2.0 * 1 + 5.0 * 100 + 0.5, 3.0 * 10 + 7.0 * 100 - 1.0]]


def test_block_shared_linear_equals_block_linear_on_tiled_inputs():
    """DreamerV3's GRU input: each block's state slice concatenated with a copy of the
    shared inputs, through a block-diagonal layer. Same weights, same outputs and gradients."""
    torch.manual_seed(0)
    blocks, own, shared, out = 4, 12, 5, 8
    layer = BlockSharedLinear(own, shared, out, blocks)
    reference = BlockLinear(blocks * (own // blocks + shared), out, blocks)
    with torch.no_grad():
        reference.weight.copy_(layer.weight.transpose(0, 1))  # (G, own/G + S, out/G)
        reference.bias.copy_(torch.randn(out))
        layer.bias.copy_(reference.bias)
    x, s = torch.randn(3, own), torch.randn(3, shared)
    tiled = torch.cat([x.reshape(3, blocks, -1), s[:, None].expand(3, blocks, shared)], -1).reshape(3, -1)
    expected = reference(tiled)
    actual = layer(x, s)
    torch.testing.assert_close(actual, expected)
    actual.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad.transpose(0, 1))
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)


def test_block_shared_linear_initialises_like_the_block_linear_it_replaces():
    torch.manual_seed(3)
    layer = BlockSharedLinear(own_size=8, shared_size=6, out_size=4, blocks=2)
    torch.manual_seed(3)
    reference = BlockLinear(2 * (8 // 2 + 6), 4, 2)
    torch.testing.assert_close(layer.weight, reference.weight.transpose(0, 1), rtol=0, atol=0)


def test_cnn_kernel_reaches_every_encoder_and_decoder_convolution():
    from conftest import compose_config
    from dreamer.envs.base import ActionSpace
    from dreamer.networks import ConvDecoder, ConvEncoder
    from dreamer.setup import build_agent

    config = compose_config("model=tiny", "model.cnn_kernel=3", "rep_variant=dreamer", "compile=false")
    agent = build_agent(config, {"image": (64, 64, 3)}, ActionSpace(2, True), torch.device("cpu"))
    convolutions = [m for m in agent.world_model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convolutions) == 8 and all(conv.kernel_size == (3, 3) for conv in convolutions)  # 4 encoder + 4 decoder stages
    # 3x3 'same' convolutions keep the shapes of the 5x5 ones: 64 -> 4x4 x (depth * 4) and back.
    encoder = ConvEncoder((64, 64, 3), 8, (2, 3, 4, 4), kernel=3)
    embedding = encoder(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
    assert embedding.shape == (2, 32 * 4 * 4) == (2, ConvEncoder((64, 64, 3), 8, (2, 3, 4, 4)).out_size)
    decoder = ConvDecoder(16, 8, (64, 64, 3), 8, 2, (2, 3, 4, 4), kernel=3)
    assert decoder(torch.zeros(2, 24)).shape == (2, 64, 64, 3)
