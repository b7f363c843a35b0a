"""Paper experiments as presets: one command expands to every job, runs them through a
Hydra launcher, and names each job's directory after its task, objective and seed."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import read_metrics, refusal
from dreamer.config import CONF_DIR
from dreamer.train import sweep_jobs

VARIANTS = ["dreamer", "dreamerpro", "infonce", "r2dreamer"]


def jobs(*arguments: str) -> list[list[str]]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return sweep_jobs(list(arguments), True, compose, GlobalHydra.instance().config_loader())


@pytest.mark.parametrize("arguments, count", [
    (["+experiment=ablation_smoke"], 4 * 2),
    (["+experiment=ablation"], 4 * 3 * 5),
    (["+experiment=ablation", "env.task=walker_walk", "seed=0,100"], 4 * 1 * 2),  # the command line wins
    (["+experiment=dmc_vision"], 4 * 20 * 5),
    (["+experiment=dmc_proprio"], 4 * 20 * 5),
    (["+experiment=dmc_subtle"], 4 * 5 * 5),
    (["+experiment=metaworld"], 4 * 50 * 5),
    (["+experiment=atari100k"], 4 * 26 * 5),
    (["+experiment=crafter"], 4 * 1 * 5),
    (["+experiment=dmc_vision_smoke"], 4 * 2 * 2),
    (["+experiment=crafter_smoke"], 4 * 1 * 2),
    (["+experiment=dmc_cpu"], 2 * 4 * 2),
    (["+experiment=dmc_cpu_vision"], 2 * 2 * 2),
    (["+experiment=dmc_cpu_vision_bf16"], 2 * 2 * 2),
])
def test_preset_expands_to_every_job(arguments, count):
    assert len(jobs(*arguments)) == count


def test_ablation_smoke_runs_eight_jobs_two_at_a_time_in_readable_directories_grouped_in_wandb(smoke_ablation):
    from test_loggers import wandb_runs

    for variant in VARIANTS:
        for seed in (0, 100):
            run_dir = smoke_ablation / "CartPole-v1" / variant / f"seed{seed}"
            rows = read_metrics(run_dir)
            assert rows[-1]["step"] == 200 and "eval/return" in rows[-1], run_dir
            assert "torch thread(s): 2 jobs at once" in (run_dir / "train.log").read_text()
            # In wandb's UI: group ablation_smoke, then group by job_type to see the ablation.
            [run] = wandb_runs(run_dir)
            assert (run.run_group, run.job_type, run.display_name) == (
                "ablation_smoke", variant, f"CartPole-v1/{variant}/seed{seed}")
            assert list(run.tags) == [variant, "gym", "CartPole-v1", f"seed{seed}", "tiny"]
            assert {"rep_variant", "model", "seed"} <= {item.key for item in run.config.update}


@pytest.mark.parametrize("arguments, message", [
    (["-m", "+experiment=nope"], "experiment=nope is not a known option; choose one of: ablation"),
    (["-m", "+experiment=ablation_smoke", "hydra/launcher=nope"], "hydra/launcher=nope is not a known option"),
    (["-m", "+experiment=ablation_smoke", "seed=0,-1"], "seed=-1 is invalid"),
    (["-m", "+experiment=dmc_cpu", "--cfg", "job"], "--cfg shows one job's configuration and cannot be combined with -m"),
])
def test_bad_preset_launcher_or_swept_value_stops_before_any_job(tmp_path, arguments, message):
    assert message in refusal(*arguments, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("preset, steps, model, train_ratio", [
    ("dmc_vision", 1_000_000, 2048, 512), ("dmc_proprio", 500_000, 2048, 512), ("atari100k", 400_000, 8192, 128),
    ("dmc_vision_smoke", 200, 256, 32), ("dmc_cpu", 100_000, 256, 128), ("dmc_cpu_vision", 100_000, 256, 64),
    ("dmc_cpu_vision_bf16", 100_000, 256, 128),
])
def test_preset_carries_the_suites_budget_model_and_train_ratio(preset, steps, model, train_ratio):
    from conftest import compose_config

    cfg = compose_config(f"+experiment={preset}")
    assert (cfg.steps, cfg.model.deter, cfg.train_ratio, cfg.experiment) == (steps, model, train_ratio, preset)


def test_cpu_presets_run_seed_by_seed_with_the_cpu_choices():
    # dmc_cpu runs both objectives on every task for seed 0 before any seed 100 job.
    listed = jobs("+experiment=dmc_cpu")
    assert [job for job in listed[:8] if "seed=100" in job] == [] and all("seed=100" in job for job in listed[8:])
    from conftest import compose_config

    proprio, vision = compose_config("+experiment=dmc_cpu"), compose_config("+experiment=dmc_cpu_vision")
    assert (proprio.env.obs, proprio.env_workers, proprio.model.cnn_kernel, proprio.eval_episodes) == ("state", False, 5, 10)
    assert (proprio.model.units, proprio.model.hidden, proprio.model.deter) == (128, 128, 256)  # tiny, twice as wide
    assert proprio.model.world_model.units == proprio.model.actor_critic.units == 128
    assert (vision.env.obs, vision.env_workers, vision.model.cnn_kernel, vision.eval_episodes) == ("pixels", True, 3, 10)
    assert (vision.model.units, vision.model.hidden, vision.model.world_model.units) == (128, 128, 128)


def test_bf16_vision_preset_is_the_vision_preset_with_twice_the_updates_in_bf16():
    from omegaconf import OmegaConf

    from conftest import compose_config

    fp32, bf16 = (OmegaConf.to_container(compose_config(f"+experiment={preset}"))
                  for preset in ("dmc_cpu_vision", "dmc_cpu_vision_bf16"))
    changed = {key: (fp32[key], bf16[key]) for key in fp32 if fp32[key] != bf16[key]}
    assert changed == {"experiment": ("dmc_cpu_vision", "dmc_cpu_vision_bf16"), "train_ratio": (64, 128),
                       "precision": ("fp32", "bf16")}
    assert jobs("+experiment=dmc_cpu_vision_bf16") == [
        [*job[:-1], "+experiment=dmc_cpu_vision_bf16"] for job in jobs("+experiment=dmc_cpu_vision")]
