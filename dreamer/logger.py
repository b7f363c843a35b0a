"""Metrics go to one :class:`Logger` that forwards them to interchangeable sinks."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class Sink:
    def write(self, step: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

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


class WandbSink(Sink):
    """Forwards metrics to Weights & Biases (``logger.wandb=true``)."""

    def __init__(self, config: dict, run_dir: str | Path, project: str, **kwargs):
        import wandb  # imported here: wandb is optional

        self.run = wandb.init(project=project, config=config, dir=str(run_dir), **kwargs)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class Logger:
    """Fans metrics out to every sink."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if metrics:
            for sink in self.sinks:
                sink.write(step, metrics)

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
