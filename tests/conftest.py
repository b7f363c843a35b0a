"""Helpers shared by the tests: the real command line, and agents built from the real config."""

import contextlib
import fcntl
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from dreamer.config import CONF_DIR, ConfigError

ROOT = Path(__file__).resolve().parents[1]
# compile=false: torch.compile's first calls cost seconds per shape; tests that need the
# compiled path ask for it.
COMPILED = [
    "model=tiny", "batch_size=4", "batch_length=16", "env_num=2", "eval_episodes=2",
    "eval_every=200", "log_every=100", "train_ratio=32", "progress=false",
]
QUICK = [*COMPILED, "compile=false"]
# DREAMER_TEST_DEVICE=cuda runs the agent-level comparisons on a GPU.
DEVICE = torch.device(os.environ.get("DREAMER_TEST_DEVICE", "cpu"))
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    # pytest -n N: the cores split between the workers, in this process and the training
    # processes the tests start.
    THREADS = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))


def cli_environment(pythonpath: str | None = None) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), pythonpath) if p)
    return {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "0"}


def run_cli(*overrides: str, module: str = "dreamer.train", timeout: int = 300,
            pythonpath: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m <module> <overrides>``, from the repository root unless ``cwd`` is given.
    On a timeout (or ^C) every process the command started goes with it, a launcher's
    workers included, so none is left training beside the next test."""
    with subprocess.Popen([sys.executable, "-m", module, *overrides], cwd=cwd, env=cli_environment(pythonpath),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):  # the whole group may have ended meanwhile
                os.killpg(process.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def start_cli(*overrides: str, cwd: Path = ROOT, threads: int | None = None) -> subprocess.Popen:
    """``python -m dreamer.train <overrides>`` in the background, with ``threads`` torch
    threads (give runs side by side one core each); stderr is kept."""
    env = cli_environment() | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    return subprocess.Popen([sys.executable, "-m", "dreamer.train", *overrides], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def load_experiment(name: str):
    """The script ``experiments/<name>.py`` as a module, for tests of its functions."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_config(*overrides: str, config: str = "train"):
    """The configuration ``python -m dreamer.train <overrides>`` would run."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config, overrides=list(overrides))


def make_agent(*overrides: str):
    """An agent for CartPole with state and pixels, eager unless ``compile=true`` is given,
    and one (4, 16) batch of random replay data."""
    from dreamer.bench import synthetic_replay
    from dreamer.envs.gym import GymEnv
    from dreamer.setup import build_agent

    if not any(override.startswith("compile=") for override in overrides):
        overrides = (*overrides, "compile=false")  # the tiny preset compiles; eager unless asked
    cfg = compose_config("env.obs=both", "batch_size=4", "batch_length=16", *overrides)
    env = GymEnv(obs="both", seed=0)
    env.close()
    torch.manual_seed(0)
    agent = build_agent(cfg, env.obs_space, env.action_space, DEVICE)
    replay = synthetic_replay(agent, env.obs_space, env.action_space, 16, seed=0)
    batch, start, _ = replay.sample(4, 16, DEVICE)
    return agent, batch, start


def refusal(*arguments: str) -> str:
    """The one-line reason ``python -m dreamer.train <arguments>`` stops before starting."""
    from dreamer.train import prepare

    with pytest.raises(ConfigError) as refused:
        prepare(list(arguments))
    return str(refused.value)


@pytest.fixture(scope="session")
def smoke_ablation(tmp_path_factory) -> Path:
    """``+experiment=ablation_smoke`` (four objectives x seeds 0 and 100, 200 steps,
    evaluations at 100 and 200) through the joblib launcher, two jobs at a time, logging to
    wandb offline: the sweep directory, run once for every test that reads it.  Under
    ``pytest -n N`` the first worker to ask runs it while the others wait for it."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base  # the workers' common parent
    sweep = shared / "ablation_smoke"
    with open(shared / "ablation_smoke.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "ablation_smoke.done").exists():
            result = run_cli("-m", "+experiment=ablation_smoke", "eval_every=100", "hydra/launcher=joblib",
                             "hydra.launcher.n_jobs=2", "logger=wandb", "logger.wandb.mode=offline",
                             f"hydra.sweep.dir={sweep}", timeout=600)
            assert result.returncode == 0, result.stderr[-3000:]
            (shared / "ablation_smoke.done").touch()
    return sweep
