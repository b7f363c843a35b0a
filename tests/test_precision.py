"""The fast paths (bf16, fp16, torch.compile) compute the same losses as eager fp32
within stated tolerances, and fp16's loss scaling skips overflowing updates."""

import pytest
import torch
import torch._inductor.config  # noqa: F401  (patched below)
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import DEVICE, make_agent
from dreamer.accelerate import LossScaler, StepFunctions

# bf16 keeps 8 bits of mantissa, fp16 11: losses averaged over a batch agree to a few percent.
RELATIVE_TOLERANCE = {"bf16": 0.05, "fp16": 0.02}
ABSOLUTE_TOLERANCE = 0.02
# Compiled kernels reorder float32 reductions only.
COMPILE_TOLERANCE = 1e-4


def compiled_parts(agent) -> list[str]:
    """Names of the modules whose forward or norm + SiLU tail torch.compile wraps, and of
    the acting step functions that are compiled."""
    def compiled(function) -> bool:
        return hasattr(function, "_torchdynamo_orig_callable")

    parts = [name for name, module in agent.named_modules()
             if module._compiled_call_impl is not None or compiled(getattr(module, "norm_silu", None))]
    steps = agent.accelerator.acting
    return parts + [f"steps.{name}" for name in ("posterior", "prior", "action") if compiled(getattr(steps, name))]


def losses_with(*overrides: str) -> dict[str, float]:
    agent, batch, start = make_agent(*overrides)
    assert bool(compiled_parts(agent)) == ("compile=true" in overrides)
    torch.manual_seed(1)
    losses, _, _ = agent.losses(batch, start)
    return {name: value.item() for name, value in losses.items()}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("variant", ["r2dreamer", "dreamer"])
def test_low_precision_losses_match_fp32(variant, precision):
    reference = losses_with("precision=fp32", f"rep_variant={variant}")
    fast = losses_with(f"precision={precision}", f"rep_variant={variant}")
    assert reference.keys() == fast.keys()
    assert any(fast[name] != reference[name] for name in reference)  # low precision really ran
    for name in reference:
        assert fast[name] == pytest.approx(
            reference[name], rel=RELATIVE_TOLERANCE[precision], abs=ABSOLUTE_TOLERANCE
        ), name


@pytest.mark.parametrize("variant", ["r2dreamer", "dreamer"])  # dreamer: the compiled CNN decoder too
def test_compiled_losses_match_eager(variant):
    reference = losses_with("compile=false", f"rep_variant={variant}")
    # Inductor draws its own random numbers unless told to call the eager kernels.
    with torch._inductor.config.patch(fallback_random=True):
        compiled = losses_with("compile=true", f"rep_variant={variant}")
    assert reference.keys() == compiled.keys()
    parts = compiled_parts(make_agent("compile=true", f"rep_variant={variant}")[0])
    assert {"world_model.encoder.cnn.stages.2", "actor_critic.critic.hidden.0", "steps.posterior", "steps.prior",
            "steps.action"} <= set(parts)
    assert any("decoder" in part for part in parts) == (variant == "dreamer")
    for name in reference:
        assert compiled[name] == pytest.approx(reference[name], rel=COMPILE_TOLERANCE, abs=1e-5), name


@pytest.mark.skipif(DEVICE.type != "cpu", reason="only CPU compilation needs a C++ compiler")
def test_compile_without_a_cpu_compiler_warns_and_runs_eager(monkeypatch, caplog):
    monkeypatch.setattr("dreamer.accelerate.shutil.which", lambda name: None)
    agent, batch, start = make_agent("compile=true")
    assert compiled_parts(agent) == []
    assert "compile=true needs a C++ compiler" in caplog.text and "running eager" in caplog.text
    agent.train_step(batch, start)  # and the eager update runs


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the check times CPU matrix products")
def test_low_precision_slower_than_fp32_on_this_cpu_warns(monkeypatch, caplog):
    rates = {torch.float32: 50e9, torch.bfloat16: 1e9, torch.float16: 1e9}  # an AVX2-only CPU
    monkeypatch.setattr("dreamer.accelerate.matmul_peak", lambda device, dtype, **_: rates[dtype])
    make_agent("precision=bf16")
    assert "precision=bf16: this CPU multiplies bf16 matrices at 1.0 GFLOP/s, slower than float32 (50.0" in caplog.text
    assert "precision=fp32 will run faster" in caplog.text
    caplog.clear()
    rates[torch.bfloat16] = 150e9  # native bf16 (AVX512-BF16, AMX)
    make_agent("precision=bf16")
    rates[torch.bfloat16] = 40e9  # native, timed while another process had the cores
    make_agent("precision=bf16")
    make_agent("precision=fp32")
    assert "slower than float32" not in caplog.text


def test_fp16_update_reports_scale_and_changes_weights():
    agent, batch, start = make_agent("precision=fp16")
    before = [p.detach().clone() for p in agent.parameters()]
    metrics, _ = agent.train_step(batch, start)
    assert metrics["applied"].item() == 1.0
    assert metrics["loss_scale"].item() == 2.0**15
    assert agent.updates.item() == 1
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.parameters()))


def test_loss_scaler_unscales_grows_and_backs_off():
    weight = torch.nn.Parameter(torch.zeros(3))
    scaler = LossScaler(initial=8.0, interval=2)
    weight.grad = torch.tensor([8.0, 16.0, -24.0])
    scaler.unscale_([weight])
    assert weight.grad.tolist() == [1.0, 2.0, -3.0]
    finite, overflow = torch.tensor(True), torch.tensor(False)
    scaler.update(finite, finite)
    assert scaler.scale.item() == 8.0 and scaler.good_steps.item() == 1
    scaler.update(finite, finite)
    assert scaler.scale.item() == 16.0 and scaler.good_steps.item() == 0  # grew after `interval` finite steps
    scaler.update(finite, finite)
    scaler.update(finite, overflow)  # finite loss, non-finite gradients: an overflow
    assert scaler.scale.item() == 8.0 and scaler.good_steps.item() == 0
    scaler.update(overflow, overflow)  # a non-finite loss is not the scale's doing
    assert scaler.scale.item() == 8.0 and scaler.good_steps.item() == 0


def test_disabled_scaler_leaves_gradients_alone():
    weight = torch.nn.Parameter(torch.zeros(2))
    weight.grad = torch.tensor([3.0, float("nan")])
    scaler = LossScaler(enabled=False)
    scaler.unscale_([weight])
    scaler.update(torch.tensor(True), torch.tensor(False))
    assert scaler.scale.item() == 1.0 and weight.grad[0].item() == 3.0


class DeviceReads(TorchDispatchMode):
    """Records the operators that make the host wait for the device: reading a value back,
    or producing an output whose shape depends on the values."""

    WAITING = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "is_nonzero", "equal"}

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._overloadpacket.__name__ in self.WAITING:
            self.ops.append(func._overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("variant", ["r2dreamer", "dreamer", "infonce", "dreamerpro"])
def test_update_never_waits_for_the_device(variant):
    """No read-back in an update, the first one included: the finiteness checks gate the
    optimiser, slow critic, return percentiles, EMA targets and counters on the device
    (a one-hot's range check used to add two waits per RSSM step, the loss check one)."""
    agent, batch, start = make_agent(f"rep_variant={variant}")
    for _ in range(2):
        with DeviceReads() as reads:
            agent.train_step(batch, start)
        assert reads.ops == []


def test_fp16_update_never_waits_for_the_device():
    agent, batch, start = make_agent("precision=fp16")
    with DeviceReads() as reads:
        agent.train_step(batch, start)
    assert reads.ops == []


def training_state(agent) -> list[torch.Tensor]:
    """Everything an update may change: parameters, buffers, optimiser moments and counts."""
    optimizer = agent.optimizer.state_dict()
    moments = [value for state in optimizer["state"].values() for value in state.values()]
    counts = [torch.as_tensor(group["step"]) for group in optimizer["param_groups"]]
    return [value.clone() for value in (*agent.state_dict().values(), *moments, *counts)]


@pytest.mark.parametrize("variant", ["r2dreamer", "dreamer", "infonce", "dreamerpro"])
@pytest.mark.parametrize("cause", ["loss", "gradient"])
def test_withheld_update_changes_nothing_and_names_its_cause(variant, cause):
    """An update with a NaN loss, or a finite loss and a NaN gradient, leaves every
    parameter, buffer and optimiser state as it was; the caller learns why from the metrics."""
    agent, batch, start = make_agent(f"rep_variant={variant}")
    agent.train_step(batch, start)  # moments, slow critic and EMA targets away from their start
    before = training_state(agent)
    if cause == "loss":
        agent.inject_nan = "reward"
    else:
        agent.actor_critic.critic.out.weight.register_hook(lambda grad: grad * float("nan"))
    metrics, _ = agent.train_step(batch, start)
    values = {key: value.item() for key, value in metrics.items()}
    assert values["applied"] == 0.0
    assert agent.nonfinite(values) == (["reward"] if cause == "loss" else ["gradients"])
    after = training_state(agent)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        assert torch.equal(a, b)


def test_update_uses_the_graphed_steps_and_acting_the_plain_ones():
    """With CUDA graphs the update calls its own posterior and prior steps and acting the
    plain ones (counted here with stand-ins that call the plain steps, so it runs on any device)."""
    agent, batch, start = make_agent()
    plain = agent.accelerator.acting
    calls = {"posterior": 0, "prior": 0}

    def counted(name, step):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return step(*args, **kwargs)
        return wrapper

    agent.accelerator.graphed = StepFunctions(counted("posterior", plain.posterior), counted("prior", plain.prior),
                                              plain.action)
    agent.train_step(batch, start)
    assert calls == {"posterior": batch["action"].shape[1], "prior": agent.actor_critic.horizon}
    agent.act({key: value[:, 0].cpu().numpy() for key, value in batch.items()}, agent.initial_state(4))
    assert calls["posterior"] == batch["action"].shape[1]  # acting kept the plain step


@pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("variant", ["r2dreamer", "dreamer"])
def test_cuda_graph_updates_match_compiled_ones(variant):
    """Three updates each (warm-up, recording, replay): the replayed graphs compute the
    compiled update's losses, and no step fell back to running without graphs."""
    from torch._dynamo.utils import counters

    histories = {}
    for graphs in ("false", "true"):
        counters.clear()
        with torch._inductor.config.patch(fallback_random=True):
            agent, batch, start = make_agent("compile=true", f"cuda_graphs={graphs}", f"rep_variant={variant}")
            assert (agent.accelerator.graphed is not None) == (graphs == "true")
            torch.manual_seed(1)
            histories[graphs] = [
                {name: value.item() for name, value in agent.train_step(batch, start)[0].items()
                 if name.startswith("loss/")}
                for _ in range(3)
            ]
        if graphs == "true":
            assert counters["inductor"]["cudagraph_skips"] == 0
    for compiled, graphed in zip(histories["false"], histories["true"]):
        assert compiled.keys() == graphed.keys()
        for name in compiled:
            assert graphed[name] == pytest.approx(compiled[name], rel=1e-3, abs=1e-5), name
