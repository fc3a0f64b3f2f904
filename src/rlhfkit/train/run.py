"""One way to start a training run: what SFT, the reward model, DPO and PPO did, each in its own copy, before
their loop.

    start(cfg, read_inputs, load_models, loop)
      1. cfg.check()                         every bad value a user can give, before anything is read
      2. inputs = read_inputs(cfg)           data read and validated once, in the process the user started
      3. prepare_out_dir                     an unusable OUT is refused before any work
      4. launch or join                      --num-processes N: N workers, each handed `inputs` (not re-read)
      5. Parallel.create, set_threads, seed_everything
      6. models = load_models(cfg, inputs, device)
      7. RunDir                              config.toml written only once the models have loaded
      8. loop(Run(...))                      the trainer's own loop

Random numbers are drawn in the order each trainer always drew them: loading a transformers model draws
its initial weights from torch's global generator before it overwrites them, so a trainer that loaded before
seeding (SFT) loads under `before_seed` (docs/design.md §4: the same seed gives the same run).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

from rlhfkit.train.common import RunDir, prepare_out_dir, seed_everything, set_threads
from rlhfkit.train.distributed import Parallel, launch, should_launch


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
    cfg.check()
    inputs = read_inputs(cfg)
    prepare_out_dir(cfg.out, cfg.overwrite, cfg.resume)
    if should_launch(cfg):  # --num-processes N: N copies of the run, one per process
        return launch(_join, cfg, inputs, load_models, loop)
    return _join(cfg, inputs, load_models, loop)


def _join(cfg, inputs, load_models: Callable, loop: Callable[[Run], dict]) -> dict:
    parallel = Parallel.create(cfg)
    set_threads(cfg.threads)
    generator = seed_everything(cfg.seed)
    models = load_models(cfg, inputs, parallel.device)
    run_dir = RunDir(cfg.out, cfg, cfg.overwrite, cfg.tensorboard, resume=cfg.resume, main=parallel.is_main)
    return loop(Run(cfg, parallel, parallel.device, generator, run_dir, inputs, models))


@contextlib.contextmanager
def before_seed():
    """Draws made inside leave torch's global generator where it was: as if they came before seed_everything."""
    with torch.random.fork_rng(devices=[]):
        yield
