"""The run directory: config.toml, metrics.jsonl (one JSON object per logged step), TensorBoard, and the check that
a directory can be (re)used. Inputs are validated before the directory is created, so a bad input leaves nothing
behind."""

from __future__ import annotations

import math
import os
import shutil
import time
import tomllib
from pathlib import Path

import torch

from rlhfkit.config import to_toml, upgrade_saved
from rlhfkit.data.jsonl import append_jsonl
from rlhfkit.errors import UserError
from rlhfkit.runtime.options import DEFAULT_KEEP
from rlhfkit.runtime.processes import is_main_process
from rlhfkit.runtime.trackers import Trackers
from rlhfkit.storage import write_text_atomic


def prepare_out_dir(out: str | os.PathLike, overwrite: bool, resume: bool = False) -> Path:
    """Check the output directory can be (re)used; does not create it (see RunDir).

    With `resume` a non-empty directory must be a run directory (it has a config.toml). Only the main process
    checks: in a multi-process run the others may find the directory that process 0 has just made.
    """
    out = Path(out)
    if not is_main_process():
        return out
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if resume and out.exists() and any(out.iterdir()):
        if not (out / "config.toml").is_file():
            raise UserError(f"{out}: cannot resume: not a run directory (no config.toml)")
        return out
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: directory exists and is not empty (pass --overwrite to replace it, or --resume "
                        "to continue its run)")
    return out


class RunDir:
    """config.toml + metrics.jsonl (+ the trackers of --report-to) of one run."""

    def __init__(self, out: str | os.PathLike, config, overwrite: bool = False, report_to: list[str] = (), *,
                 resume: bool = False, main: bool = True):
        """`report_to`: trackers also fed each record (runtime/trackers); `resume`: keep the directory of an
        interrupted run (its config must match, see `check_same_config`); `main`: False in processes other than
        process 0 of a multi-process run, which write nothing."""
        self.path, self.main = Path(out), main
        self.metrics_path = self.path / "metrics.jsonl"
        self.keep_checkpoints = getattr(config, "keep_checkpoints", DEFAULT_KEEP)  # checked by RunOptions.check()
        self.start = time.time()
        self._trackers = None
        if not main:
            return
        self.path = prepare_out_dir(out, overwrite, resume)
        if resume and (self.path / "config.toml").exists():
            check_same_config(self.path / "config.toml", config)
        elif self.path.exists() and overwrite:
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path / "config.toml", to_toml(config))  # a full disk keeps the previous one
        if report_to:
            self._trackers = Trackers(report_to, self.path, config, resume)

    def log(self, step: int, **metrics) -> dict:
        record = {"step": step, "time_s": round(time.time() - self.start, 3)}
        record.update({k: _plain(v) for k, v in metrics.items()})
        if not self.main:
            return record
        append_jsonl(self.metrics_path, record)
        if self._trackers is not None:
            self._trackers.log(record)
        return record

    def close(self) -> None:
        if self._trackers is not None:
            self._trackers.close()


# Keys that may change between an interrupted run and its --resume (they change no number of the run).
RESUMABLE_CHANGES = ("out", "overwrite", "resume", "tensorboard", "report_to", "device", "threads", "checkpoint_every",
                     "keep_checkpoints")


def check_same_config(saved_path: Path, config) -> None:
    """--resume continues the same run: a changed key (other than bookkeeping) is a user error."""
    try:
        saved = upgrade_saved(type(config), tomllib.loads(saved_path.read_text(encoding="utf-8")))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{saved_path}: cannot resume: unreadable config ({exc})") from None
    shown = config_changes(saved, config, RESUMABLE_CHANGES)
    if shown:
        raise UserError(f"{saved_path.parent}: cannot resume with a different config: {shown} "
                        "(resume with the flags of the interrupted run)")


def config_changes(saved: dict, config, resumable) -> str:
    """The keys (up to three) whose value in `config` differs from the `saved` run's, other than `resumable`
    ones, as "key (old -> new)"; "" when none does."""
    now = tomllib.loads(to_toml(config))
    changed = sorted(k for k in set(saved) | set(now) if k not in resumable and saved.get(k) != now.get(k))
    return ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in changed[:3])


def _plain(value):
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else str(value)
    return value
