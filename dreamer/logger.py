"""Metrics go to one :class:`Logger` that forwards them to interchangeable sinks."""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


class Sink:
    """Where metrics go.  ``media`` is an image (PNG) or animation (GIF) the run wrote to disk."""

    def write(self, step: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def media(self, step: int, name: str, path: Path) -> None:
        pass

    def finish(self, summary: dict[str, float]) -> None:
        """The run reached its budget: ``summary`` holds its final scores and wall-clock hours."""

    def close(self) -> None:
        pass


class JSONLSink(Sink):
    """One JSON object per line with ``step`` and the metrics, flushed every write.

    The file is opened at the first write, so a resume can first drop the rows it redoes.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if self.file is None:
            self.file = open(self.path, "a", encoding="utf-8")
        record = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class TerminalSink(Sink):
    """Logs periodic summaries and evaluations through Python logging.

    Single episodes only update the latest return shown with the next summary.
    """

    KEYS = ("episode/return", "eval/return", "train/loss/total", "fps")

    def __init__(self):
        self.latest_return: float | None = None

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if set(metrics) <= {"episode/return", "episode/length"}:
            self.latest_return = metrics.get("episode/return", self.latest_return)
            return
        shown = {key: metrics[key] for key in self.KEYS if key in metrics}
        if "fps" in metrics and self.latest_return is not None:
            shown["episode/return"] = self.latest_return
        if shown:
            log.info("step %d  %s", step, "  ".join(f"{k} {v:.4g}" for k, v in shown.items()))


def wandb_credentials() -> bool:
    """Whether this machine has a Weights & Biases API key (environment, netrc or wandb's settings)."""
    import netrc

    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


WANDB_HOST = "api.wandb.ai"
WANDB_ID_FILE = "wandb-run-id"  # in the run directory: a resumed run continues the same wandb run


class WandbSink(Sink):
    """Weights & Biases (``logger=wandb``): one wandb run per run directory, grouped by
    experiment, typed by objective, environment steps as the x-axis; the full resolved
    configuration; media; a summary with the final score and wall-clock hours.

    ``group``, ``job_type``, ``name`` default (null) to the experiment (or the sweep's
    directory name), the objective and ``<task>/<objective>/seed<k>``; ``tags`` are added to
    objective, suite, task, seed and model.  ``mode=online`` without credentials runs
    offline and says so (``wandb sync <run dir>/wandb/offline-run-*`` uploads it later).
    """

    def __init__(self, run_dir: str | Path, facts: dict, run_config: dict, project: str, entity: str | None = None,
                 group: str | None = None, job_type: str | None = None, name: str | None = None,
                 tags: list[str] | tuple = (), mode: str = "online"):
        import wandb  # imported here: only logger=wandb needs it

        if mode == "online" and not wandb_credentials():
            log.warning("logger.wandb.mode=online but no wandb API key (WANDB_API_KEY or `wandb login`): "
                        "logging offline to %s/wandb; upload with `wandb sync`", run_dir)
            mode = "offline"
        run_dir = Path(run_dir)
        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        objective, task, seed = facts.get("objective"), facts.get("task"), facts.get("seed")
        automatic = [objective, facts.get("suite"), task, f"seed{seed}", facts.get("model")]
        self.run = wandb.init(
            project=project, entity=entity, dir=str(run_dir), id=run_id, resume="allow", mode=mode,
            group=group or facts.get("experiment") or facts.get("sweep"), job_type=job_type or objective,
            name=name or f"{task}/{objective}/seed{seed}", config=run_config,
            tags=[str(tag) for tag in (*automatic, *tags) if tag is not None],
            settings=wandb.Settings(silent=True, console="off"),
        )
        id_file.write_text(run_id)
        self.run.define_metric("env_step")
        self.run.define_metric("*", step_metric="env_step")  # resumed runs may log a step again

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({**metrics, "env_step": step})

    def media(self, step: int, name: str, path: Path) -> None:
        import wandb

        item = wandb.Video(str(path), format="gif") if path.suffix == ".gif" else wandb.Image(str(path))
        self.run.log({name: item, "env_step": step})

    def finish(self, summary: dict[str, float]) -> None:
        self.run.summary.update(summary)

    def close(self) -> None:
        self.run.finish()


class TensorBoardSink(Sink):
    """TensorBoard event files (``logger=tensorboard``) under ``<run dir>/tensorboard``:
    every scalar against environment steps, and the PNG media as images."""

    def __init__(self, run_dir: str | Path, facts: dict, run_config: dict, directory: str | None = None):
        from torch.utils.tensorboard import SummaryWriter  # imported here: only logger=tensorboard needs it

        self.writer = SummaryWriter(log_dir=str(directory or Path(run_dir) / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def media(self, step: int, name: str, path: Path) -> None:
        if path.suffix == ".png":
            from PIL import Image

            self.writer.add_image(name, np.asarray(Image.open(path).convert("RGB")), step, dataformats="HWC")

    def finish(self, summary: dict[str, float]) -> None:
        for key, value in summary.items():
            self.writer.add_scalar(key, value)

    def close(self) -> None:
        self.writer.close()


class Logger:
    """Fans metrics out to every sink."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks
        self.wants_media = any(type(sink).media is not Sink.media for sink in sinks)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if metrics:
            for sink in self.sinks:
                sink.write(step, metrics)

    def media(self, step: int, name: str, path: Path) -> None:
        for sink in self.sinks:
            sink.media(step, name, path)

    def finish(self, summary: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.finish(summary)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class Mean:
    """Running means of scalar metrics between two writes."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
            self.counts[key] = self.counts.get(key, 0) + 1

    def result(self) -> dict[str, float]:
        out = {key: self.sums[key] / self.counts[key] for key in self.sums}
        self.sums.clear()
        self.counts.clear()
        return out


def to_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar metric tensors as floats, in one transfer from the device."""
    if not metrics:
        return {}
    values = torch.stack([value.detach().float() for value in metrics.values()]).tolist()
    return dict(zip(metrics, values))


def save_image_grid(path: Path, grid: torch.Tensor) -> None:
    """Write (B, rows, T, H, W, C) images in [0, 1] as one PNG: sequences stacked, time across."""
    from PIL import Image

    batch, rows, length, height, width, channels = grid.shape
    image = grid.permute(0, 1, 3, 2, 4, 5).reshape(batch * rows * height, length * width, channels)
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(path)
