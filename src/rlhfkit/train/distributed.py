"""One process or N: the few calls through which the trainers train data-parallel (`Parallel`).

`--num-processes N` (N > 1) spawns N worker processes on this machine (`launch`, gloo on 127.0.0.1 for CPU,
NCCL for GPUs); each runs the same training function with the same seed and config. Hugging Face
`accelerate` sets up the process group and wraps each trained model in DistributedDataParallel, so gradients
are averaged across processes after every backward pass. `--fsdp` instead shards parameters, gradients and
optimizer state with PyTorch's FSDP2 `fully_shard`, one unit per transformer block (in PPO the frozen reference
and reward model too; the policy is gathered whole for the decoding loop of each batch of rollouts, which then
runs without collectives, as in DeepSpeed-Chat's hybrid engine) — accelerate's own FSDP path runs on GPUs only,
`fully_shard` on CPU (gloo) as well, so the same code is tested here; the trained weights are gathered into
process 0 to be saved. Each process takes its share of every global batch (`Parallel.shard`) — in PPO, its
share of the prompts, so rollout generation is split across processes; metrics are reduced across processes;
only process 0 writes files. A run started by an outside launcher (`accelerate launch`, `torchrun`: WORLD_SIZE
is set) is not re-spawned.

Same global batch, same loss. The SFT loss is a mean over tokens, the reward-model and DPO losses a mean over
rankings, PPO's a mean over response tokens plus PPO-ptx's mean over its text tokens. Each process scales each
term of its loss by (its units / all units) · N, so that DDP's average of the gradients is the gradient of the
one-process loss over the whole global batch (`Parallel.backward`). Run with one process, `Parallel` is plain
PyTorch — no Accelerator, no process group, bit-for-bit the old loop.

A model is wrapped or sharded as one root, unless it names the parts that are each called on their own
(`parallel_roots`, as `models/scalar.py`'s `ScalarModel` does: `score()` does not pass through `forward()`);
such a model also makes the empty copy that gathered weights are loaded into (`empty_copy`). This module knows
nothing else of a model's insides.

`--bf16` runs forward passes under bfloat16 autocast (the weights, optimizer and losses stay float32). On a CPU
the attention runs as transformers' "eager" matmuls + softmax: torch's fused CPU attention kernel is ~3x
slower in bf16 than in fp32 backwards, where the eager matmuls take the fast bf16 path (`bench/attention_bf16.py`
at 64 × 4 heads × 80 positions × 64, one core: forward + backward 84 CPU-ms fused vs 24 eager in bf16, 37 fused
in fp32; docs/design.md §7).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import socket
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from accelerate import Accelerator
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.multiprocessing.spawn import ProcessException
from transformers import AutoModelForCausalLM

from rlhfkit.errors import UserError
from rlhfkit.models.loading import pick_device
from rlhfkit.models.precision import autocast_model


def should_launch(cfg) -> bool:
    """True in the process a user started with --num-processes N > 1 (not in the workers it spawns)."""
    return cfg.num_processes > 1 and "WORLD_SIZE" not in os.environ


# ------------------------------------------------------------------------------------------ launching

def launch(fn, cfg, *args):
    """Run `fn(cfg, *args)` in cfg.num_processes processes and return process 0's result (`args` are pickled
    once here and handed to every worker: what the launching process read is not read again).

    A `UserError` in any process comes back as one `UserError` here (the lowest rank's message); the other
    processes are stopped.
    """
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # "terminating process ..." is ours
    with tempfile.TemporaryDirectory(prefix="rlhfkit-launch-") as tmp:
        try:
            mp.start_processes(_worker, args=(fn, cfg, args, _free_port(), tmp), nprocs=cfg.num_processes,
                               start_method="spawn", join=True)
        except ProcessException:
            errors = sorted(Path(tmp).glob("error-*.txt"), key=lambda p: int(p.stem.split("-")[1]))
            if errors:
                raise UserError(errors[0].read_text(encoding="utf-8")) from None
            raise
        result = Path(tmp) / "result.pkl"
        return pickle.loads(result.read_bytes()) if result.exists() else None


def _worker(rank: int, fn, cfg, args: tuple, port: int, tmp: str) -> None:
    _die_with_parent()
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(cfg.num_processes),
                      LOCAL_WORLD_SIZE=str(cfg.num_processes), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if rank > 0:  # only process 0 prints
        sys.stdout = open(os.devnull, "w")
    code = 0
    try:
        result = fn(cfg, *args)
        if rank == 0:
            Path(tmp, "result.pkl").write_bytes(pickle.dumps(result))
    except UserError as exc:
        Path(tmp, f"error-{rank}.txt").write_text(str(exc), encoding="utf-8")
        code = 2
    _destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    # Interpreter finalization is skipped: it tears down the objects that still hold gloo's threads (DDP's
    # reducer, the process group) in no set order, and process 1 of a two-process PPO run on CPU died there
    # now and then ("terminate called without an active exception", SIGABRT: 2 runs of 10 without this line).
    os._exit(code)


def _destroy_process_group() -> None:
    """Tear the process group down once the work is done (what torch.distributed asks of every process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _die_with_parent() -> None:
    """A worker goes when the process that launched it goes, even by SIGKILL (Linux), so a killed run leaves no
    process behind that could still write into OUT while it is resumed."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------- parallel

class Parallel:
    """The calls a training loop makes that differ between one process and N. This class: one process."""

    rank, world_size, is_main = 0, 1, True

    def __init__(self, device: torch.device, bf16: bool = False):
        self.device, self.bf16 = device, bf16

    @staticmethod
    def create(cfg) -> "Parallel":
        """One process, or — inside a multi-process run — `DistributedParallel`. With --fsdp the trainer must run
        every forward pass of a sharded model in all processes (each gathers shards from all)."""
        device = pick_device(cfg.device)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return DistributedParallel(device, cfg.bf16, cfg.fsdp)
        return Parallel(device, cfg.bf16)

    def shard(self, items: list) -> list:
        """This process's part of a global batch (all of it, with one process)."""
        return items

    def shard_range(self, n: int) -> range:
        """The indices of this process's part of a global batch of n (`shard(list(range(n)))`)."""
        return range(n)

    # Every process evaluates a sharded (FSDP) model, since each forward pass gathers its shards from all.
    evaluates = True

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to run the training forward pass through (DDP-wrapped with N processes; FSDP shards it in
        place). Call it before making the optimizer: FSDP replaces the parameters by shards."""
        return self.autocast(model)

    def frozen(self, model: torch.nn.Module) -> torch.nn.Module:
        """A model that is run but never trained (PPO's reference and reward model): sharded like the trained
        ones under FSDP, left whole in every process otherwise."""
        return self.autocast(model)

    def gather(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The trained model with all its weights, in process 0 (the model itself unless FSDP sharded it)."""
        return model

    def inference(self):
        """The context of forward passes without gradients (PPO's sampling and scoring): torch.no_grad, not
        inference_mode, which would stop autocast from caching weight casts (`generation.without_autograd`)."""
        return torch.no_grad()

    @contextlib.contextmanager
    def whole(self, model: torch.nn.Module):
        """FSDP: the model's whole weights in every process while the block runs — one all-gather per unit, not
        one per forward pass — for PPO's decoding loop, where each token is a forward pass."""
        yield model

    def autocast(self, model: torch.nn.Module) -> torch.nn.Module:
        """With --bf16, the model's forward runs under bfloat16 autocast and returns float32 tensors
        (`precision.autocast_model`); without it, the model as it is."""
        return autocast_model(model, self.device.type) if self.bf16 else model

    def backward(self, loss: torch.Tensor, units=None, *more: tuple[torch.Tensor, object],
                 totals: list[float] | None = None) -> torch.Tensor:
        """Backward pass of `loss` (a mean over `units` items of this process's share) plus any further
        (loss, units) terms — e.g. PPO's clipped loss over response tokens and PPO-ptx's LM loss over text
        tokens; returns the loss of the whole global batch (detached), for logging. `totals`: the units of each
        term over the whole global batch (`total`) when this is one micro-batch of it (--max-tokens-per-batch):
        each term is weighed by its units over those, and the loss returned is the micro-batch's part."""
        if totals is not None:
            terms = [(loss, units), *more]
            more = ()
            loss = sum((t * (float(u) / max(float(n), 1.0)) for (t, u), n in zip(terms, totals)),
                       torch.zeros((), dtype=terms[0][0].dtype, device=terms[0][0].device))
        for term, _ in more:
            loss = loss + term
        loss.backward()
        return loss.detach()

    def total(self, units: list[float]) -> list[float]:
        """Each of `units` summed over processes (the global batch's units of each loss term)."""
        return [float(u) for u in units]

    def token_mean(self, values: dict[str, float], units) -> dict[str, float]:
        """Means over this process's `units` items (tokens, rankings) -> the means over the global batch."""
        return values

    def lowest(self, values: dict[str, float]) -> dict[str, float]:
        """Minimum over processes of each value."""
        return values

    def highest(self, values: dict[str, float]) -> dict[str, float]:
        """Maximum over processes of each value."""
        return values

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of per-item values over the global batch."""
        return values.mean()

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's rows of a batch, in rank order (each process holds as many)."""
        return tensor

    def gather_objects(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass


class DistributedParallel(Parallel):
    """N processes through accelerate: DDP, or FSDP2 with --fsdp; gloo on CPU, NCCL on GPUs."""

    def __init__(self, device: torch.device, bf16: bool = False, fsdp: bool = False):
        self.accelerator = Accelerator(cpu=device.type == "cpu")
        super().__init__(self.accelerator.device, bf16)
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.fsdp = fsdp
        self.evaluates = fsdp or self.is_main

    def _shard(self, model, frozen: bool = False):
        """FSDP2: each transformer block (a `_no_split_modules` class of the model) a unit, then each root (the
        model, or the parts it names in `parallel_roots`: every call then passes through a module whose forward
        gathers the shards it needs). A trained root keeps its gathered weights after forward for the backward
        pass that follows (FSDP's default); a frozen one has no backward pass and frees them."""
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        roots = _roots(model)
        blocks = {name for root in roots.values() for name in getattr(root, "_no_split_modules", None) or []}
        for root in roots.values():
            for module in root.modules():
                if type(module).__name__ in blocks:
                    fully_shard(module, mesh=mesh)
        for root in roots.values():
            fully_shard(root, mesh=mesh, reshard_after_forward=True if frozen else None)
        return model

    def frozen(self, model):
        self.autocast(model)
        return self._shard(model, frozen=True) if self.fsdp else model

    @contextlib.contextmanager
    def whole(self, model):
        if not self.fsdp:
            yield model
            return
        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
        try:
            yield model
        finally:
            for unit in units:  # the root too from now on: gathered again for the backward pass
                unit.reshard()
                unit.set_reshard_after_forward(True, recurse=False)

    def gather(self, model):
        if not self.fsdp:
            return model
        full = get_model_state_dict(model, options=whole_tensors())
        if not self.is_main:
            return None
        plain = model.empty_copy() if hasattr(model, "empty_copy") else AutoModelForCausalLM.from_config(model.config)
        plain.load_state_dict(full)
        return plain

    def shard(self, items: list) -> list:
        """Contiguous, near-equal parts; a batch smaller than N goes whole to every process (each then weighs
        1/N of it in `backward`, so the gradient is still the batch's)."""
        return [items[i] for i in self.shard_range(len(items))]

    def shard_range(self, n: int) -> range:
        if n < self.world_size:
            return range(n)
        return range(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def wrap(self, model):
        self.autocast(model)
        if self.fsdp:
            return self._shard(model)
        if hasattr(model, "parallel_roots"):
            # Parts called on their own (a scalar model's score() skips its forward()): wrapping each means every
            # call reaches DDP's forward (which readies the gradient all-reduce), whichever method makes it.
            return model.with_roots({name: self.accelerator.prepare_model(root)
                                     for name, root in model.parallel_roots().items()})
        return self.accelerator.prepare_model(model)

    def backward(self, loss, units=None, *more, totals=None):
        if units is None:  # a per-process mean: DDP's average over processes
            loss.backward()
            return self._all_reduce(loss.detach().double()) / self.world_size
        terms = [(loss, units), *more]
        counts = torch.tensor([float(u) for _, u in terms], dtype=torch.float64, device=self.device)
        whole = (torch.tensor([float(n) for n in totals], dtype=torch.float64, device=self.device)
                 if totals is not None else self._all_reduce(counts.clone()))
        shares = counts / whole.clamp(min=1.0)
        scaled = [term * (share * self.world_size).to(term.dtype) for (term, _), share in zip(terms, shares)]
        total = scaled[0]
        for term in scaled[1:]:
            total = total + term
        total.backward()
        parts = torch.stack([term.detach().double() for term, _ in terms]) * shares
        return self._all_reduce(parts).sum().to(loss.dtype)

    def total(self, units):
        return self._all_reduce(torch.tensor([float(u) for u in units], dtype=torch.float64,
                                             device=self.device)).tolist()

    def token_mean(self, values, units):
        keys = list(values)
        n = float(units)
        total = self._all_reduce(torch.tensor([values[k] * n for k in keys] + [n], dtype=torch.float64,
                                              device=self.device))
        return {k: float(v) for k, v in zip(keys, (total[:-1] / total[-1].clamp(min=1.0)).tolist())}

    def lowest(self, values):
        return self._reduce_each(values, dist.ReduceOp.MIN)

    def highest(self, values):
        return self._reduce_each(values, dist.ReduceOp.MAX)

    def mean(self, values):
        total = torch.stack([values.double().sum(), torch.tensor(float(values.numel()), dtype=torch.float64,
                                                                 device=values.device)]).to(self.device)
        total = self._all_reduce(total)
        return (total[0] / total[1].clamp(min=1.0)).to(values.dtype)

    def gather_rows(self, tensor):
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def gather_objects(self, obj):
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        self.accelerator.wait_for_everyone()

    def _reduce_each(self, values: dict[str, float], op) -> dict[str, float]:
        keys = list(values)
        reduced = self._all_reduce(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                                                device=self.device), op)
        return {k: float(v) for k, v in zip(keys, reduced.tolist())}

    def _all_reduce(self, tensor, op=None):
        dist.all_reduce(tensor, op=op if op is not None else dist.ReduceOp.SUM)
        return tensor


def whole_tensors():
    """torch.distributed.checkpoint's options for whole (unsharded) tensors on the CPU: how FSDP shards are
    gathered into one model (to save it) or one checkpoint, and handed back to every process on resume."""
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _roots(model) -> dict[str, torch.nn.Module]:
    """The modules that must each be a DDP/FSDP root: the parts a model names, or the model itself."""
    return model.parallel_roots() if hasattr(model, "parallel_roots") else {"model": model}
