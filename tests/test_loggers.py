"""logger=wandb and logger=tensorboard: what lands in the offline wandb run and the event
files, the offline fallback without credentials, and a resumed run continuing its wandb run."""

import struct
import subprocess
import sys
from pathlib import Path

from conftest import QUICK, ROOT, cli_environment, read_metrics

SHORT = [*QUICK, "eval_every=0", "log_every=50"]


def wandb_records(run_dir: Path) -> list:
    """The protobuf records of a run directory's offline wandb runs, oldest first (wandb's
    transaction log: a 7-byte header, then LevelDB-style chunks in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    records = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, position, pending = path.read_bytes(), 7, b""
        assert data.startswith(b":W&B")
        while position + 7 <= len(data):
            left = 32768 - position % 32768
            _, length, kind = struct.unpack("<IHB", data[position:position + 7])
            if left < 7 or kind == 0:
                position += left
                continue
            pending += data[position + 7:position + 7 + length]
            position += 7 + length
            if kind in (1, 4):  # a full record, or the last chunk of one
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                records.append(record)
                pending = b""
    return records


def wandb_runs(run_dir: Path) -> list:
    return [record.run for record in wandb_records(run_dir) if record.WhichOneof("record_type") == "run"]


def train(home: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m dreamer.train`` on a machine with no wandb credentials (HOME without a netrc)."""
    env = {key: value for key, value in cli_environment().items() if not key.startswith("WANDB_")}
    env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "dreamer.train", *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_wandb_and_tensorboard_get_the_run_and_a_resume_continues_the_same_wandb_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    first = train(tmp_path, *SHORT, "steps=100", "train_ratio=8", "rep_variant=dreamer", "env.obs=both", "eval_episodes=1",
                  "logger=[wandb,tensorboard]", f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    # No credentials here: online falls back to offline, in one line.
    assert "logger.wandb.mode=online but no wandb API key" in (run_dir / "train.log").read_text()
    [run] = wandb_runs(run_dir)
    assert (run.display_name, run.job_type, run.project) == ("CartPole-v1/dreamer/seed0", "dreamer", "r2dreamer")
    assert list(run.tags) == ["dreamer", "gym", "CartPole-v1", "seed0", "tiny"]
    assert {"model", "rep_variant", "env", "optimizer", "steps", "seed"} <= {item.key for item in run.config.update}
    run_id = (run_dir / "wandb-run-id").read_text()
    assert run.run_id == run_id
    media = [path.name for path in run_dir.glob("wandb/offline-run-*/files/media/**/*") if path.is_file()]
    assert any(name.startswith("episode_") and name.endswith(".gif") for name in media), media  # evaluation GIF
    assert any(name.startswith("image_") or "openloop" in name for name in media), media  # open-loop grid
    assert (run_dir / "eval" / "episode_00000100.gif").stat().st_size > 1000

    resumed = train(tmp_path, f"resume={run_dir}", "steps=150")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [run.run_id for run in wandb_runs(run_dir)] == [run_id, run_id]
    summary = {item.key: item.value_json for record in wandb_records(run_dir)
               if record.WhichOneof("record_type") == "summary" for item in record.summary.update}
    assert float(summary["final/step"]) == 150 and float(summary["wall_clock_hours"]) > 0
    assert float(summary["final/eval_return"]) == read_metrics(run_dir)[-1]["eval/return"]

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    rows = read_metrics(run_dir)
    assert [event.step for event in events.Scalars("eval/return")] == [row["step"] for row in rows if "eval/return" in row]
    assert {key for row in rows for key in row if key != "step"} <= set(events.Tags()["scalars"])
    assert any(tag.startswith("openloop/") for tag in events.Tags()["images"])
