"""One way to start a training run: what SFT, the reward model, DPO and PPO did, each in its own copy, before
their loop.

    start(cfg, read_inputs, load_models, loop)
      1. cfg.check()                         every bad value a user can give, before anything is read
                                             (and a warning if --bf16 is asked where bf16 is emulated)
      2. inputs = read_inputs(cfg)           data read and validated once, in the process the user started
      3. prepare_out_dir                     an unusable OUT is refused before any work
      4. launch or join                      --num-processes N: N workers, each handed `inputs` (not re-read)
      5. Parallel.create, set_threads, seed_everything
      6. models = load_models(cfg, inputs, device)
      7. RunDir                              config.toml written only once the models have loaded
      8. loop(Run(...))                      the trainer's own loop

Nothing half-written: a start that fails (a UserError or any other exception, in any process of the run) before
a checkpoint or a saved model exists in OUT undoes what it wrote there (`undo_failed_start`), so the same
command can be rerun. A directory this start created is removed; one that existed before is kept, and only the
entries this start wrote into it are removed. With --overwrite the old contents are gone once the models have
loaded (RunDir replaces them then), so a start failing after that leaves OUT empty; one failing before leaves
it untouched. A run directory holding a checkpoint (OUT/resume) or a saved model is never touched.

Random numbers are drawn in the order each trainer always drew them: loading a transformers model draws
its initial weights from torch's global generator before it overwrites them, so a trainer that loaded before
seeding (SFT) loads under `before_seed` (docs/design.md §4: the same seed gives the same run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from rlhfkit.models.loading import pick_device
from rlhfkit.models.precision import warn_if_emulated
from rlhfkit.train.checkpoint import RESUME_DIR
from rlhfkit.train.common import RunDir, prepare_out_dir, seed_everything, set_threads
from rlhfkit.train.distributed import Parallel, is_main_process, launch, should_launch
from rlhfkit.train.trackers import with_inherited


@dataclass
class Run:
    """What a training loop is given."""
    cfg: Any                  # the command's config (checked)
    parallel: Parallel        # one process or N (train/distributed.py)
    device: torch.device
    generator: torch.Generator  # seeded with cfg.seed: data order, PPO's prompts and minibatches
    dir: RunDir               # config.toml, metrics.jsonl, the outputs (written by process 0 alone)
    inputs: Any               # what read_inputs returned
    models: Any               # what load_models returned


def start_run(cfg, read_inputs: Callable, load_models: Callable, loop: Callable[[Run], dict]) -> dict:
    """Check, read, prepare, launch or join, then run `loop`; returns process 0's result. `load_models` and
    `loop` must be module-level functions (they are pickled into the workers)."""
    cfg.report_to = with_inherited(cfg.report_to)  # inside `rlhf demo/compare/loop --report-to X`: X too
    cfg.check()
    warn_if_emulated(cfg.bf16, pick_device(cfg.device))  # a device this machine lacks: one line before any data
    inputs = read_inputs(cfg)
    prepare_out_dir(cfg.out, cfg.overwrite, cfg.resume)
    # The process that checked OUT (the launcher, or process 0 of an outside launch) undoes a failed start,
    # unless it continues an interrupted run (--resume of a run directory: its files are that run's).
    undo = is_main_process() and not (cfg.resume and (Path(cfg.out) / "config.toml").is_file())
    before = entries(cfg.out) if undo else None
    try:
        if should_launch(cfg):  # --num-processes N: N copies of the run, one per process
            return launch(_join, cfg, inputs, load_models, loop)
        return _join(cfg, inputs, load_models, loop)
    except BaseException:
        if undo:
            undo_failed_start(cfg.out, before)
        raise


def _join(cfg, inputs, load_models: Callable, loop: Callable[[Run], dict]) -> dict:
    parallel = Parallel.create(cfg)
    set_threads(cfg.threads)
    generator = seed_everything(cfg.seed)
    models = load_models(cfg, inputs, parallel.device)
    report_to = [*cfg.report_to, *(["tensorboard"] if cfg.tensorboard else [])]
    run_dir = RunDir(cfg.out, cfg, cfg.overwrite, report_to, resume=cfg.resume, main=parallel.is_main)
    return loop(Run(cfg, parallel, parallel.device, generator, run_dir, inputs, models))


# ----------------------------------------------------------------------------------- failed starts

def entries(out: str | os.PathLike) -> dict[str, tuple[int, int]] | None:
    """What OUT holds before a start: None when it does not exist, else each top-level entry's identity
    (inode, ctime: an entry removed and written again is a new one)."""
    out = Path(out)
    if not out.is_dir():
        return None
    found = {}
    for entry in out.iterdir():
        stat = entry.lstat()
        found[entry.name] = (stat.st_ino, stat.st_ctime_ns)
    return found


def holds_results(out: str | os.PathLike) -> bool:
    """True when OUT holds what a failed run must keep: a checkpoint (OUT/resume/step-N, also one being
    written), a saved model or adapter (a config.json / adapter_config.json anywhere in OUT, e.g. the final
    model or OUT/checkpoints/step-N)."""
    out = Path(out)
    if (out / RESUME_DIR).is_dir() and any((out / RESUME_DIR).iterdir()):
        return True
    return any(True for name in ("config.json", "adapter_config.json") for _ in out.rglob(name))


def undo_failed_start(out: str | os.PathLike, before: dict | None) -> None:
    """Remove what a failed start wrote into OUT (see the module's doc); never what was there before it, never
    a checkpoint or a saved model."""
    out = Path(out)
    if not out.is_dir() or holds_results(out):
        return
    if before is None:  # this start created OUT
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in list(out.iterdir()):
        stat = entry.lstat()
        if before.get(entry.name) == (stat.st_ino, stat.st_ctime_ns):
            continue  # there before this start: not ours
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@contextlib.contextmanager
def before_seed():
    """Draws made inside leave torch's global generator where it was: as if they came before seed_everything."""
    with torch.random.fork_rng(devices=[]):
        yield
