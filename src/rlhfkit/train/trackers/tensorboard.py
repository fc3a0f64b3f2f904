"""`--report-to tensorboard`: event files in OUT/tensorboard (`tensorboard --logdir OUT`)."""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class TensorBoard:
    def __init__(self, path: Path):
        self.writer = SummaryWriter(str(path / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


def open_tracker(path: Path, name: str, config: dict, resume: bool) -> TensorBoard:
    return TensorBoard(path)
