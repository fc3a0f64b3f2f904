"""The config of `rlhf rollout-serve` (light: `rlhf rollout-serve --help` loads no torch, FastAPI or vLLM)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import check_at_least, option, required
from rlhfkit.errors import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ServeConfig:
    model: str | None = required("the model vLLM starts from: a directory `save_pretrained` wrote, of the trained "
                                 "policy's architecture and shapes (each run pushes its own weights on connecting)")
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: trainers on other machines)")
    port: int = option(8100, "HTTP port the trainers send prompts to (--rollout-server HOST:PORT)")
    weights_port: int | None = option(None, "TCP port of the weights group's store (default PORT + 1)")
    max_len: int = option(2048, "longest prompt + response served (vLLM's max_model_len; at most the model's "
                          "positions)")
    dtype: str = option("auto", "the served weights' dtype: auto (the dtype in the model's config.json, float32 "
                        "kept, where vLLM's own auto serves float32 in 16 bits), float32, bfloat16 or float16")
    gpu_memory: float = option(0.9, "on a GPU: the fraction of its memory vLLM takes (weights + KV cache)")
    seed: int = option(0, "vLLM's seed (each request carries its own seeds: the trainer's)")

    def check(self) -> None:
        check_at_least(self, 1, "port", "max_len")
        for key in ("port", "weights_port"):
            value = getattr(self, key)
            if value is not None and not 0 < value < 65536:
                raise UserError(f"config key '{key}' must be a TCP port (1-65535)")
        if (self.weights_port or self.port + 1) == self.port:
            raise UserError("config key 'weights_port' must differ from 'port'")
        if self.dtype not in DTYPES:
            raise UserError(f"config key 'dtype': {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not 0 < self.gpu_memory < 1:
            raise UserError("config key 'gpu_memory' must be in (0, 1)")
