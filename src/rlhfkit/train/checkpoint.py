"""Crash-safe checkpoints: everything a killed run needs to go on as if it had never stopped (docs/design.md §8).

A checkpoint is one directory, OUT/resume/step-N/state.pt, holding
  - the trainable parameters of each trained model (frozen weights are reloaded from their directories);
    with --fsdp the whole tensors, gathered from every process's shards (each process takes its own back);
  - the state of the optimizer, the learning-rate schedule and every trainer object with a `state_dict`
    (the data order and its position, PPO's KL controller and prompt stream);
  - the random number generators: Python's `random`, NumPy's, torch's global CPU (and CUDA) generator and
    each `torch.Generator` the trainer draws from — one set per process;
  - the length of metrics.jsonl when it was written: a resumed run cuts the log back to it, so the finished
    log equals the log of a run that was never interrupted.

It is written into a temporary directory and renamed into place (one atomic rename on POSIX), then the oldest
checkpoints beyond --keep-checkpoints are removed: a kill at any moment leaves the previous checkpoint or the new
one, never half of one. A full disk is a fault, not a traceback (docs/design.md §8): the free space is checked
for the state's tensors before writing, a write that still fails removes its temporary directory, and the error
is one line naming the checkpoint, the space it needs and the one kept (`rlhfkit.storage`). Parameters are
checked before writing, so a checkpoint never holds NaN or inf weights — the last good one stays intact when a
run diverges.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from rlhfkit.errors import UserError
from rlhfkit.runtime.options import DEFAULT_KEEP, check_keep
from rlhfkit.storage import atomic_dir, needed_bytes
from rlhfkit.train.distributed import whole_tensors

RESUME_DIR = "resume"
STATE_FILE = "state.pt"
FORMAT = 1
def checkpoint_dirs(out: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run directory, oldest first (temporary directories are not complete)."""
    root = Path(out) / RESUME_DIR
    found = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit() and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name[5:]))


class Checkpoints:
    """Saves and restores the named objects of a training loop.

    `objects` maps a name to a model (its trainable parameters are saved), an optimizer, a scheduler or any
    object with `state_dict()`/`load_state_dict()`, or a `torch.Generator`. With N processes every process
    calls `save` and `restore` (they exchange their random states); only the main process writes.
    """

    def __init__(self, run, parallel, every: int, **objects):
        self.run, self.parallel, self.every, self.objects = run, parallel, every, objects
        self.keep = check_keep(getattr(run, "keep_checkpoints", DEFAULT_KEEP))
        # A model's trained parameters are those its optimizer holds (whatever requires_grad says at the moment).
        self.optimized = {id(p) for o in objects.values() if isinstance(o, torch.optim.Optimizer)
                          for group in o.param_groups for p in group["params"]}
        # With --fsdp the models hold shards: their states (and their optimizer's) are gathered whole from every
        # process into the checkpoint, and each process takes its shards back on restore. One optimizer may span
        # several sharded models (PPO's policy and value model): its state is keyed by their parameters' names
        # in a container of them all.
        sharded = [o for o in objects.values() if isinstance(o, torch.nn.Module) and _is_sharded(o)]
        self.sharded = {id(o) for o in sharded}
        self.sharded_models = (sharded[0] if len(sharded) == 1 else torch.nn.ModuleList(sharded)) if sharded else None

    # -------------------------------------------------------------------------------------------- save

    def maybe_save(self, step: int) -> None:
        if self.every > 0 and step % self.every == 0:
            self.save(step)

    def save(self, step: int) -> Path:
        self._check_finite(step)
        rng = self.parallel.gather_objects(self._random_state())  # one entry per process, in rank order
        final = self.run.path / RESUME_DIR / f"step-{step}"
        if self.parallel.is_main or self.sharded:  # gathering shards takes every process
            objects = {name: self._state_of(obj) for name, obj in self.objects.items()
                       if not isinstance(obj, torch.Generator)}
        if self.parallel.is_main:
            state = {"format": FORMAT, "step": step, "world_size": self.parallel.world_size, "rng": rng,
                     "elapsed_s": time.time() - self.run.start, "metrics_bytes": _size(self.run.metrics_path),
                     "objects": objects}
            _remove_temporary(self.run.path)  # left by a run killed while saving: space the new one may need
            with atomic_dir(final, needed_bytes(state), _kept(self.run.path)) as tmp:
                with open(tmp / STATE_FILE, "wb") as handle:
                    torch.save(state, handle)  # fsynced by atomic_dir before the rename
            self._rotate()
        self.parallel.barrier()
        return final

    def _rotate(self) -> None:
        """Keep the newest `keep` complete checkpoints (--keep-checkpoints), removing the oldest first."""
        for old in checkpoint_dirs(self.run.path)[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _random_state(self) -> dict:
        state = {"python": random.getstate(), "numpy": _numpy_state(), "torch": torch.get_rng_state(),
                 "generators": {name: g.get_state() for name, g in self.objects.items()
                                if isinstance(g, torch.Generator)}}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _check_finite(self, step: int) -> None:
        for name, obj in self.objects.items():
            if isinstance(obj, torch.nn.Module) and not all(torch.isfinite(_local(p)).all()
                                                            for p in self._trainable(obj).values()):
                last = checkpoint_dirs(self.run.path)
                kept = f"the last checkpoint ({last[-1]}) is intact" if last else "no checkpoint was written"
                raise UserError(f"step {step}: the {name}'s parameters are not finite; stopping without a "
                                f"checkpoint ({kept}; lower the learning rate)")

    # ----------------------------------------------------------------------------------------- restore

    def restore(self) -> int:
        """Load the last checkpoint of OUT into the objects and return its step; 0 (and an emptied metrics
        log) when the run has none yet, so it starts from the beginning."""
        found = checkpoint_dirs(self.run.path)
        if not found:
            if self.parallel.is_main:
                _truncate(self.run.metrics_path, 0)
            return 0
        path = found[-1] / STATE_FILE
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a damaged file is the user's disk, not a bug: one line
            raise UserError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise UserError(f"{path}: not an rlhfkit checkpoint (format {FORMAT})")
        if state["world_size"] != self.parallel.world_size:
            raise UserError(f"{path}: written by {state['world_size']} processes; resume with "
                            f"--num-processes {state['world_size']}")
        missing = set(self.objects) - set(state["objects"]) - set(state["rng"][0]["generators"])
        if missing:
            raise UserError(f"{path}: the checkpoint has no state for {', '.join(sorted(missing))}")
        for name, obj in self.objects.items():
            if isinstance(obj, torch.Generator):
                obj.set_state(state["rng"][self.parallel.rank]["generators"][name])
            else:
                self._load_state(obj, state["objects"][name], name, path)
        _set_random_state(state["rng"][self.parallel.rank])
        self.run.start = time.time() - state["elapsed_s"]
        if self.parallel.is_main:
            _truncate(self.run.metrics_path, state["metrics_bytes"])
        return int(state["step"])


    # -------------------------------------------------------------------------------------- per object

    def _trainable(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Parameters that training changes (with LoRA: the adapters; tied weights appear once)."""
        return {name: p for name, p in model.named_parameters()
                if (id(p) in self.optimized if self.optimized else p.requires_grad)}

    def _state_of(self, obj):
        if id(obj) in self.sharded:
            return get_model_state_dict(obj, options=whole_tensors())  # FSDP refuses LoRA: everything is trained
        if isinstance(obj, torch.nn.Module):
            return {name: p.detach().cpu().clone() for name, p in self._trainable(obj).items()}
        if isinstance(obj, torch.optim.Optimizer) and self.sharded:
            return get_optimizer_state_dict(self.sharded_models, obj, options=whole_tensors())
        return obj.state_dict()

    def _load_state(self, obj, saved, name: str, path: Path) -> None:
        other = UserError(f"{path}: the {name} in the checkpoint has other trainable parameters than this run's "
                          "(same command and flags as the interrupted run?)")
        if id(obj) in self.sharded:  # each process keeps its shards of the whole tensors
            try:
                set_model_state_dict(obj, saved, options=whole_tensors())
            except (RuntimeError, KeyError, ValueError):
                raise other from None
            return
        if isinstance(obj, torch.nn.Module):
            expected = self._trainable(obj)
            if set(saved) != set(expected):
                raise other
            with torch.no_grad():
                for key, value in saved.items():
                    expected[key].copy_(value)
            return
        if isinstance(obj, torch.optim.Optimizer) and self.sharded:
            set_optimizer_state_dict(self.sharded_models, obj, saved, options=whole_tensors())
            return
        obj.load_state_dict(saved)


# ------------------------------------------------------------------------------------------- helpers

def _is_sharded(model: torch.nn.Module) -> bool:
    """True for a model that FSDP2 sharded (its parameters are DTensors)."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def _local(p: torch.Tensor) -> torch.Tensor:
    """This process's part of a parameter (the parameter itself unless it is an FSDP shard)."""
    return p.to_local() if hasattr(p, "to_local") else p


def _numpy_state():
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return (kind, key.copy(), pos, has_gauss, gauss)


def _set_random_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _truncate(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)


def _kept(out: Path) -> str:
    """What a checkpoint that could not be written leaves to resume from (the end of its one-line error)."""
    last = checkpoint_dirs(out)
    if last:
        return f"the previous checkpoint {last[-1]} is intact: free space and rerun with --resume"
    return "no checkpoint was written yet"


def _remove_temporary(out: Path) -> None:
    for tmp in (Path(out) / RESUME_DIR).glob(".tmp-step-*"):
        shutil.rmtree(tmp, ignore_errors=True)
