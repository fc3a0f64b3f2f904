"""One process or N: the few calls through which the trainers train data-parallel.

`--num-processes N` (N > 1) spawns N worker processes on this machine (`launch`, gloo on 127.0.0.1 for CPU,
NCCL for GPUs); each runs the same training function with the same seed and config. Hugging Face
`accelerate` sets up the process group and wraps each trained model in DistributedDataParallel, so gradients
are averaged across processes after every backward pass. `--fsdp` instead shards parameters, gradients and
optimizer state with PyTorch's FSDP2 `fully_shard`, one unit per transformer block (in PPO the frozen reference
and reward model too; the policy is gathered whole for the decoding loop of each batch of rollouts, which then
runs without collectives, as in DeepSpeed-Chat's hybrid engine) — accelerate's own FSDP path runs on GPUs only,
`fully_shard` on CPU (gloo) as well, so the same code is tested here; the trained weights are gathered into
process 0 to be saved. Each process
takes its share of every global batch (`Engine.shard`) — in PPO, its share of the prompts, so rollout
generation is split across processes; metrics are reduced across processes; only process 0 writes files.
A run started by an outside launcher (`accelerate launch`, `torchrun`: WORLD_SIZE is set) is not re-spawned.

Same global batch, same loss. The SFT loss is a mean over tokens, the reward-model and DPO losses a mean over
rankings. Each process scales its loss by (its units / all units) · N, so that DDP's average of the gradients
is the gradient of the one-process loss over the whole global batch (`Engine.backward`). Run with one
process, `Engine` is plain PyTorch — no accelerate import, no process group, bit-for-bit the old loop.

`--bf16` runs forward passes under bfloat16 autocast (the weights, optimizer and losses stay float32).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import sys
import tempfile
from pathlib import Path

import torch

from rlhfkit.errors import UserError


def should_launch(cfg) -> bool:
    """True in the process a user started with --num-processes N > 1 (not in the workers it spawns)."""
    return cfg.num_processes > 1 and "WORLD_SIZE" not in os.environ


def is_main_process() -> bool:
    """Process 0 of a multi-process run, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def check_options(cfg) -> None:
    if cfg.num_processes < 1:
        raise UserError("config key 'num_processes' must be at least 1")
    if cfg.fsdp and cfg.num_processes < 2 and int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise UserError("config key 'fsdp' shards models across processes: it needs --num-processes 2 or more")
    if cfg.fsdp and cfg.lora_r:
        raise UserError("config key 'fsdp' with LoRA: the adapters are small; use DDP (the default)")


# ------------------------------------------------------------------------------------------ launching

def launch(fn, cfg):
    """Run `fn(cfg)` in cfg.num_processes processes and return process 0's result.

    A `UserError` in any process comes back as one `UserError` here (the lowest rank's message); the other
    processes are stopped.
    """
    import logging

    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    check_options(cfg)
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # "terminating process ..." is ours
    with tempfile.TemporaryDirectory(prefix="rlhfkit-launch-") as tmp:
        try:
            mp.start_processes(_worker, args=(fn, cfg, _free_port(), tmp), nprocs=cfg.num_processes,
                               start_method="spawn", join=True)
        except ProcessException:
            errors = sorted(Path(tmp).glob("error-*.txt"), key=lambda p: int(p.stem.split("-")[1]))
            if errors:
                raise UserError(errors[0].read_text(encoding="utf-8")) from None
            raise
        result = Path(tmp) / "result.pkl"
        return pickle.loads(result.read_bytes()) if result.exists() else None


def _worker(rank: int, fn, cfg, port: int, tmp: str) -> None:
    _die_with_parent()
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(cfg.num_processes),
                      LOCAL_WORLD_SIZE=str(cfg.num_processes), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if rank > 0:  # only process 0 prints
        sys.stdout = open(os.devnull, "w")
    code = 0
    try:
        result = fn(cfg)
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
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _die_with_parent() -> None:
    """A worker goes when the process that launched it goes, even by SIGKILL (Linux), so a killed run leaves no
    process behind that could still write into OUT while it is resumed."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------- engine

class Engine:
    """The calls a training loop makes that differ between one process and N. This class: one process."""

    rank, world_size, is_main = 0, 1, True

    def __init__(self, device: torch.device, bf16: bool = False):
        self.device, self.bf16 = device, bf16

    @staticmethod
    def create(cfg) -> "Engine":
        """A one-process engine, or — inside a multi-process run — a distributed one. With --fsdp the trainer
        must run every forward pass of a sharded model in all processes (each gathers shards from all)."""
        from rlhfkit.models.loading import pick_device

        check_options(cfg)
        device = pick_device(cfg.device)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return DistributedEngine(device, cfg.bf16, cfg.fsdp)
        return Engine(device, cfg.bf16)

    def shard(self, items: list) -> list:
        """This process's part of a global batch (all of it, with one process)."""
        return items

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
        """The context of forward passes without gradients (PPO's sampling and scoring)."""
        return torch.inference_mode()

    @contextlib.contextmanager
    def whole(self, model: torch.nn.Module):
        """FSDP: the model's whole weights in every process while the block runs — one all-gather per unit, not
        one per forward pass — for PPO's decoding loop, where each token is a forward pass."""
        yield model

    def autocast(self, model: torch.nn.Module) -> torch.nn.Module:
        """With --bf16, the model's forward runs under bfloat16 autocast and returns float32 tensors."""
        if self.bf16 and not getattr(model, "_rlhfkit_autocast", False):
            target = model.backbone if hasattr(model, "backbone") else model  # scalar models: the transformer
            target.forward = _autocast_forward(target.forward, self.device.type)
            target._rlhfkit_autocast = model._rlhfkit_autocast = True
        return model

    def backward(self, loss: torch.Tensor, units=None) -> torch.Tensor:
        """loss.backward(); returns the loss of the whole global batch (detached), for logging."""
        loss.backward()
        return loss.detach()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of per-item values over the global batch."""
        return values.mean()

    def reduce_metrics(self, record: dict) -> dict:
        """Metrics of this process's share -> metrics of the global batch (mean; min/max for *_min/*_max)."""
        return record

    def gather_objects(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass


class DistributedEngine(Engine):
    """N processes through accelerate: DDP, or FSDP2 with --fsdp; gloo on CPU, NCCL on GPUs."""

    def __init__(self, device: torch.device, bf16: bool = False, fsdp: bool = False):
        from accelerate import Accelerator

        self.accelerator = Accelerator(cpu=device.type == "cpu")
        super().__init__(self.accelerator.device, bf16)
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.fsdp = fsdp
        self.evaluates = fsdp or self.is_main

    def _shard(self, model, frozen: bool = False):
        """FSDP2: each transformer block (the model's `_no_split_modules`) a unit, then the rest. A scalar model
        is called through `score()` as well as `forward()`, so its backbone and head are each a root of their
        own: every call then passes through a module whose forward gathers the shards it needs. A trained root
        keeps its gathered weights after forward for the backward pass that follows (FSDP's default); a frozen
        one has no backward pass and frees them."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.type, (self.world_size,))
        scalar = _is_scalar_model(model)
        transformer = model.backbone if scalar else model
        blocks = set(getattr(transformer, "_no_split_modules", None) or [])
        for module in transformer.modules():
            if type(module).__name__ in blocks:
                fully_shard(module, mesh=mesh)
        for root in ((model.backbone, model.head) if scalar else (model,)):
            fully_shard(root, mesh=mesh, reshard_after_forward=True if frozen else None)
        return model

    def frozen(self, model):
        self.autocast(model)
        return self._shard(model, frozen=True) if self.fsdp else model

    def inference(self):
        # FSDP fills buffers with the gathered weights that later training passes write into: no inference tensors
        return torch.no_grad() if self.fsdp else torch.inference_mode()

    @contextlib.contextmanager
    def whole(self, model):
        if not self.fsdp:
            yield model
            return
        from torch.distributed.fsdp import FSDPModule

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
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        full = get_model_state_dict(model, options=whole_tensors())
        if not self.is_main:
            return None
        plain = _unsharded_like(model)
        plain.load_state_dict(full)
        return plain

    def shard(self, items: list) -> list:
        """Contiguous, near-equal parts; a batch smaller than N goes whole to every process (each then weighs
        1/N of it in `backward`, so the gradient is still the batch's)."""
        n = len(items)
        if n < self.world_size:
            return items
        return items[self.rank * n // self.world_size:(self.rank + 1) * n // self.world_size]

    def wrap(self, model):
        self.autocast(model)
        if self.fsdp:
            return self._shard(model)
        if _is_scalar_model(model):
            # A scalar model is called through score() as well as forward(): wrapping its two parts means every
            # call reaches DDP's forward (which readies the gradient all-reduce), whichever method makes it.
            return type(model)(self.accelerator.prepare_model(model.backbone),
                               self.accelerator.prepare_model(model.head))
        return self.accelerator.prepare_model(model)

    def backward(self, loss, units=None):
        if units is None:  # a per-process mean: DDP's average over processes
            loss.backward()
            return self._all_reduce(loss.detach().double()) / self.world_size
        units = torch.as_tensor(units, dtype=torch.float64, device=self.device)
        share = units / self._all_reduce(units.clone()).clamp(min=1.0)
        (loss * (share * self.world_size).to(loss.dtype)).backward()
        return self._all_reduce(loss.detach().double() * share).to(loss.dtype)

    def mean(self, values):
        total = torch.stack([values.double().sum(), torch.tensor(float(values.numel()), dtype=torch.float64,
                                                                 device=values.device)]).to(self.device)
        total = self._all_reduce(total)
        return (total[0] / total[1].clamp(min=1.0)).to(values.dtype)

    def reduce_metrics(self, record):
        import torch.distributed as dist

        keys = [k for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        out = dict(record)
        for op, chosen in ((dist.ReduceOp.MIN, [k for k in keys if k.endswith("_min")]),
                           (dist.ReduceOp.MAX, [k for k in keys if k.endswith("_max")]),
                           (dist.ReduceOp.SUM, [k for k in keys if not k.endswith(("_min", "_max"))])):
            if not chosen:
                continue
            values = self._all_reduce(torch.tensor([float(record[k]) for k in chosen], dtype=torch.float64,
                                                   device=self.device), op)
            if op == dist.ReduceOp.SUM:
                values = values / self.world_size
            out.update({k: float(v) for k, v in zip(chosen, values.tolist())})
        return out

    def gather_objects(self, obj):
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        self.accelerator.wait_for_everyone()

    def _all_reduce(self, tensor, op=None):
        import torch.distributed as dist

        dist.all_reduce(tensor, op=op if op is not None else dist.ReduceOp.SUM)
        return tensor


def whole_tensors():
    """torch.distributed.checkpoint's options for whole (unsharded) tensors on the CPU: how FSDP shards are
    gathered into one model (to save it) or one checkpoint, and handed back to every process on resume."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _is_scalar_model(model) -> bool:
    return hasattr(model, "backbone") and hasattr(model, "head")


def _unsharded_like(model):
    """A model of the same architecture with ordinary (unsharded) parameters, on the CPU, to load weights into."""
    if _is_scalar_model(model):
        from transformers import AutoModel

        return type(model)(AutoModel.from_config(model.config), torch.nn.Linear(model.head.in_features, 1))
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(model.config)


def _autocast_forward(forward, device_type: str):
    def run(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return _to_float32(out)
    return run


def _to_float32(out):
    """Floating tensors of a model output back to float32 (caches and integer tensors untouched)."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):  # transformers' ModelOutput is an ordered dict
        for key, value in list(out.items()):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                out[key] = value.float()
    return out
