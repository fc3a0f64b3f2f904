"""The policy's weights on their way into a rollout engine (`sync`, after every PPO update).

`full_weights`: the weights a plain transformers model of the policy would hold — FSDP's shards gathered whole
(a collective: every process calls it), a LoRA policy's adapted weights merged (W + ΔW, `models/lora`).

`WeightsGroup`: the two-member process group over which a trainer (member 0, the source) broadcasts them to a
rollout server (`rlhf rollout-serve`, member 1). It is a group of its own, made from a TCPStore the server
listens on — not torch.distributed's default group, which the trainers' own processes use (`--num-processes N`):
`ProcessGroupGloo` on CPU, `ProcessGroupNCCL` where the server's engine is on a GPU (each run that connects gets a
fresh group under its own store prefix). One broadcast per tensor, in the order of the names both sides agreed on.
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule

from rlhfkit.models.lora import merged_state_dict

TIMEOUT = datetime.timedelta(minutes=30)  # a broadcast waits this long for the other side


def is_sharded(model: torch.nn.Module) -> bool:
    return any(isinstance(m, FSDPModule) for m in model.modules())


def full_weights(model: torch.nn.Module, everywhere: bool = True) -> dict[str, torch.Tensor] | None:
    """The policy's full weights by name. FSDP: gathered from every process's shards (call it in every process);
    `everywhere` False: only process 0 gets them (None elsewhere; on the CPU), as a server's trainer needs."""
    if not is_sharded(model):
        return merged_state_dict(model)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not everywhere))
    if not everywhere and dist.get_rank() != 0:
        return None
    return state


def describe(weights: dict[str, torch.Tensor]) -> list[list]:
    """[[name, dtype, shape], ...]: what the receiving side allocates before the broadcasts."""
    return [[name, str(t.dtype).removeprefix("torch."), list(t.shape)] for name, t in weights.items()]


class WeightsGroup:
    """Member `rank` (0: the trainer, 1: the server) of the weights group of `session`, over `store`."""

    def __init__(self, store: dist.Store, session: int, rank: int, backend: str, device: torch.device):
        prefixed = dist.PrefixStore(f"rlhfkit-weights-{session}", store)
        self.device, self.rank = device, rank
        if backend == "nccl":
            self.group = dist.ProcessGroupNCCL(prefixed, rank, 2)
        else:
            self.group = dist.ProcessGroupGloo(prefixed, rank, 2, TIMEOUT)

    @staticmethod
    def client_store(host: str, port: int) -> dist.TCPStore:
        return dist.TCPStore(host, port, is_master=False, timeout=TIMEOUT)

    def _broadcast(self, tensor: torch.Tensor) -> None:
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self.group.broadcast([tensor], options).wait()

    def send(self, weights: dict[str, torch.Tensor]) -> None:
        """Member 0: every tensor, in order."""
        for tensor in weights.values():
            self._broadcast(tensor.detach().to(self.device).contiguous())

    def receive(self, specs: list[list]) -> list[tuple[str, torch.Tensor]]:
        """Member 1: the tensors `describe` named, in order."""
        out = []
        for name, dtype, shape in specs:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            self._broadcast(tensor)
            out.append((name, tensor))
        return out
