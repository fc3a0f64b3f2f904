"""`--report-to wandb`: a Weights & Biases run whose files are in OUT/wandb.

W&B's own environment variables apply: WANDB_MODE=offline logs with no account and no network (`wandb sync
OUT/wandb/offline-run-*` uploads it later), WANDB_PROJECT names the project (default `rlhfkit`), WANDB_ENTITY,
WANDB_RUN_ID with WANDB_RESUME continue a run. W&B does not capture the console (rlhf's own output stays as it is).
"""

from __future__ import annotations

import os
from pathlib import Path

import wandb

from rlhfkit.errors import UserError


class WandB:
    def __init__(self, run):
        self.run = run

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def open_tracker(path: Path, name: str, config: dict, resume: bool) -> WandB:
    try:
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rlhfkit"), name=name, dir=str(path),
                         config=config, settings=wandb.Settings(console="off"))
    except wandb.errors.Error as exc:  # e.g. online with no API key: one line, the failed start undone
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--report-to wandb: {first} (WANDB_MODE=offline logs without an account)") from None
    return WandB(run)
