"""Bad configuration stops before anything starts: one line, exit code 2, no output.

A few cases run the real command line; the rest call the same checks in this process
(what ``dreamer.train`` runs before Hydra starts), which is much faster."""

import pytest

from conftest import refusal, run_cli

THROUGH_THE_COMMAND_LINE = {"model=huge", "env.id=CartPol-v1", "batch_size=1.5", "steps=0", "rep_variant.scale=abc",
                            "debug.inject_nan=bogus", "nosuchkey=3"}


def assert_refused(tmp_path, overrides: str, message: str) -> None:
    run_dir = tmp_path / "run"
    if overrides in THROUGH_THE_COMMAND_LINE:
        result = run_cli(*overrides.split(), f"hydra.run.dir={run_dir}")
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    else:
        reason = refusal(*overrides.split(), f"hydra.run.dir={run_dir}")
        assert "\n" not in reason and message in reason, reason
    assert not run_dir.exists()

CASES = [
    ("model=huge", "model=huge is not a known option; choose one of:"),
    ("rep_variant=bogus", "rep_variant=bogus is not a known option"),
    ("optimizer=sgd", "optimizer=sgd is not a known option; choose one of: adam, laprop"),
    ("env=nope", "env=nope is not a known option"),
    ("env.id=CartPol-v1", "env.id=CartPol-v1 is not a registered gymnasium environment; similar: CartPole-v0"),
    ("steps=0", "steps=0 is invalid; it must be a number > 0"),
    ("batch_length=1", "batch_length=1 is invalid; it must be a number >= 2"),
    ("train_ratio=-1", "train_ratio=-1.0 is invalid; it must be a number > 0"),
    ("env.obs=pixels env.size=[60,60]", "env.size=[60, 60] is invalid: both sides must be positive multiples of the encoder's stride 16"),
    ("model.mlp_keys=foo", "observation keys ['state'] match neither encoder"),
    ("device=tpu", "device=tpu is not one of auto, cpu, cuda"),
    ("debug.env_error_at_step=soon", "debug.env_error_at_step=soon is invalid: Value 'soon' of type 'str' could not be converted to Integer"),
    ("debug.env_error_at_step=-3", "debug.env_error_at_step=-3 is invalid; it must be a number >= 0"),
    ("cuda_graphs=maybe", "cuda_graphs=maybe is invalid: Value 'maybe' is not a valid bool"),
    ("batch_size=1.5", "batch_size=1.5 is invalid: Value '1.5' of type 'float' could not be converted to Integer"),
    ("log_every=abc", "log_every=abc is invalid: Value 'abc' of type 'str' could not be converted to Integer"),
    ("seed=-1", "seed=-1 is invalid; it must be a number >= 0"),
    ("model.deter=0", "model.deter=0 is invalid; it must be a number > 0"),
    ("model.cnn_kernel=4", "model.cnn_kernel=4 is invalid; it must be an odd whole number >= 1 (3, 5, ...)"),
    ("model.cnn_kernel=0", "model.cnn_kernel=0 is invalid; it must be a number > 0"),
    ("compile=false cuda_graphs=true", "cuda_graphs=true replays the compiled RSSM steps; it needs compile=true"),
    ("nosuchkey=3", "Could not override 'nosuchkey'"),
    ("logger=nope", "logger=nope is not a known option; choose one of: jsonl, tensorboard, wandb"),
    ("logger=wandb logger.wandb.mode=sometimes", "logger.wandb.mode=sometimes is not one of online, offline, disabled"),
]


@pytest.mark.parametrize("overrides, message", CASES)
def test_bad_config_one_line_exit_2_and_no_output(tmp_path, overrides, message):
    assert_refused(tmp_path, overrides, message)


def test_bad_value_inside_a_sweep_is_caught_before_any_job(tmp_path):
    result = run_cli("-m", "rep_variant=r2dreamer,bogus", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 2 and "rep_variant=bogus" in result.stderr
    assert not (tmp_path / "sweep").exists()


def test_sweep_expanded_by_hydras_own_parser_is_checked_before_any_job(tmp_path):
    result = run_cli("-m", "seed=range(-1,1)", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 2 and "seed=-1 is invalid" in result.stderr
    assert not (tmp_path / "sweep").exists()


GROUP_CASES = [
    ("env.action_repeat=0", "env.action_repeat=0 is invalid; it must be a whole number >= 1"),
    ("env.action_repeat=two", "env.action_repeat=two is invalid; it must be a whole number >= 1"),
    ("optimizer.lr=-1e-4", "optimizer.lr=-0.0001 is invalid; it must be a number > 0"),
    ("optimizer.warmup=1.5", "optimizer.warmup=1.5 is invalid; it must be a whole number >= 0"),
    ("debug.inject_nan=bogus", "debug.inject_nan=bogus is not a loss of this agent; choose one of: actor, barlow"),
    ("model.deter=250", "must divide into 4 blocks"),
    ("rep_variant.scale=abc", "rep_variant.scale=abc is invalid: dreamer.representation.r2dreamer.BarlowTwinsObjective takes float"),
    ("optimizer.betas=[0.9]", "optimizer.betas=[0.9] is invalid: dreamer.optim.LaPropAGC takes tuple[float, float]"),
    ("model.actor_critic.horizon=1.5", "model.actor_critic.horizon=1.5 is invalid: dreamer.actor_critic.ActorCritic takes int"),
    ("+rep_variant.scal=1", "rep_variant.scal is not an argument of dreamer.representation.r2dreamer.BarlowTwinsObjective"),
    ("rep_variant._target_=nowhere.Objective", "rep_variant._target_=nowhere.Objective cannot be imported"),
]


@pytest.mark.parametrize("overrides, message", GROUP_CASES)
def test_bad_group_values_stop_before_any_directory(tmp_path, overrides, message):
    assert_refused(tmp_path, overrides, message)


@pytest.mark.parametrize("hint, good, bad", [
    (float, [1, 2.5], ["1", True, None]),
    (int, [3], [3.0, False]),
    (int | None, [None, 2], ["2"]),
    (tuple[float, float], [[0.9, 0.999], (1, 2)], [[0.9], [0.9, "x"], 0.9]),
    (tuple[int, ...], [[1, 2, 3], []], [[1.5]]),
    (dict[str, float] | None, [{"a": 1.0}, None], [{"a": "x"}]),
])
def test_values_are_matched_against_constructor_type_hints(hint, good, bad):
    from dreamer.setup import fits

    assert all(fits(value, hint) for value in good)
    assert not any(fits(value, hint) for value in bad)
