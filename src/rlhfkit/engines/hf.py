"""The `hf` and `hf-static` engines: `generation.generate` on the trained model itself (nothing to sync)."""

from __future__ import annotations

import torch

from rlhfkit.generation import Samples, generate


class HFEngine:
    """Samples from `model` directly. static: a static KV cache of width max_len (prompts left-padded to
    max_len − max_new_tokens, so every batch of a run has the same shapes), and on CUDA the model's forward
    compiled once into CUDA graphs (`torch.compile(mode="reduce-overhead")`); on CPU it runs eager."""

    def __init__(self, model, tokenizer, *, static: bool = False, max_len: int | None = None):
        self.model, self.tokenizer, self.static, self.max_len = model, tokenizer, static, max_len
        self.name = "hf-static" if static else "hf"
        self.forward, self.caches = None, {}
        if static and self.device.type == "cuda":
            self.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, prompts: list, **options) -> Samples:
        if self.static:
            options.setdefault("prompt_width", self.max_len - options["max_new_tokens"] if self.max_len else None)
            options.update(static=True, forward=self.forward, caches=self.caches)
        return generate(self.model, self.tokenizer, prompts, **options)

    def sync(self, model) -> float:
        """The engine samples from the trained model itself: nothing to copy."""
        return 0.0

    def close(self) -> None:
        pass
